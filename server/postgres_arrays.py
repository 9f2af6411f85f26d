"""Byte strings sent to PostgreSQL as one bytea[] parameter, already in the binary wire format.

psycopg adapts a list of bytes element by element, about 5 µs of interpreter time each; a
batch of signed statements sends some 11,000 derived records (keys and values) under the head
lock, so that adaptation was a third of the step-2 round trip and held the interpreter lock
meanwhile. ByteaArray builds the array's binary form (PostgreSQL's array_send layout) in one
join, and its dumper hands those bytes over as they are: the server decodes them with
array_recv, as for any binary array parameter.

Layout (all integers big-endian int32): dimensions (1), has-nulls flag (0), element type
(bytea's OID, 17), then the one dimension's length and lower bound (1), then per element
its length and bytes. No element is NULL.
"""

from __future__ import annotations

import struct
from collections.abc import Collection

from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

BYTEA_OID = 17
BYTEA_ARRAY_OID = 1001

_HEADER = struct.Struct("!iiiii")
_LENGTH = struct.Struct("!i").pack


class ByteaArray:
    """A sequence of byte strings, as one bytea[] parameter (register() its dumper first)."""

    __slots__ = ("wire",)

    def __init__(self, items: Collection[bytes]) -> None:
        self.wire = _HEADER.pack(1, 0, BYTEA_OID, len(items), 1) + b"".join(
            [_LENGTH(len(item)) + item for item in items]
        )


class ByteaArrayDumper(Dumper):
    """Passes a ByteaArray's wire form through, typed bytea[] in binary."""

    format = Format.BINARY
    oid = BYTEA_ARRAY_OID

    def dump(self, obj: ByteaArray) -> bytes:
        return obj.wire


def register(adapters: AdaptersMap) -> None:
    """Let the connection (or context) of adapters send ByteaArray parameters."""
    adapters.register_dumper(ByteaArray, ByteaArrayDumper)
