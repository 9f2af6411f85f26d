"""What a client trusted last, kept on disk so a restarted client still catches a rollback.

One file per log origin holding the last checkpoint note this client verified. Replacing it is
atomic and durable (write a temporary file, fsync, rename over, fsync the directory), so after a
crash the file holds either the old checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Replace path with data atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class TrustStore:
    """The last trusted checkpoint note of each log, in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, origin: str) -> Path:
        # Origins are URLs-ish; a hash keeps the file name safe, the origin is in the note.
        return self.directory / f"{hashlib.sha256(origin.encode()).hexdigest()[:32]}.checkpoint"

    def load(self, origin: str) -> str | None:
        try:
            return self._path(origin).read_text()
        except FileNotFoundError:
            return None

    def save(self, origin: str, note: str) -> None:
        write_atomic(self._path(origin), note.encode())
