"""Frames between a process and the worker processes it feeds through pipes (the auditor's
prepare workers, the server's ingest workers): an 8-byte big-endian length, then a pickle.

Only ever read from a pipe to a process this one started (or that started this one): pickle
trusts its input, and these frames never cross a network or a file.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import IO, Any

_LENGTH = struct.Struct(">Q")


def write_frame(stream: IO[bytes], obj: object) -> None:
    """One frame (length, pickle) onto stream, flushed. obj must be a tree of plain values
    (nothing in it refers to itself): it is pickled without a memo (Pickler.fast), since
    memoizing each of a frame's thousands of small strings and bytes was most of the cost
    (an ingest worker's answer: ≈7 -> ≈1 µs of CPU a statement). A value held twice is
    written twice, and read back as two equal values."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(obj)
    data = buffer.getvalue()
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's object, or None at the end of the stream (none, or a torn frame: the
    writer died mid-frame)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)
