"""The witness's state: per origin, the last checkpoint note it cosigned, the lock that
serialises checking and replacing it, and the marker that blocks an origin after a refusal."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from affidavit.client.errors import ClientError
from affidavit.client.trust import write_atomic


class StateError(ClientError):
    """The witness's own state cannot be read or does not verify: nothing can be checked."""


class StateStore:
    """Per-origin files in one directory: ``<stem>.checkpoint`` (the last cosigned note),
    ``<stem>.lock`` (flock target) and ``<stem>.blocked`` (present after a refusal).

    The stem is the origin made file-safe plus 8 hex of its SHA-256, so distinct origins never
    share files and an operator can still tell which file is which log's.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def stem(origin: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", origin)[:80]
        return f"{safe}-{hashlib.sha256(origin.encode()).hexdigest()[:8]}"

    def path(self, origin: str) -> Path:
        return self.directory / f"{self.stem(origin)}.checkpoint"

    def marker(self, origin: str) -> Path:
        return self.directory / f"{self.stem(origin)}.blocked"

    @contextlib.contextmanager
    def lock(self, origin: str) -> Iterator[None]:
        """Hold the origin's exclusive flock (blocking until any other holder lets go)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / f"{self.stem(origin)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self, origin: str) -> str | None:
        try:
            return self.path(origin).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise StateError(f"cannot read the state {self.path(origin)}: {e}") from None

    def save(self, origin: str, cosigned: str) -> None:
        write_atomic(self.path(origin), cosigned.encode("utf-8"))

    def blocked(self, origin: str) -> str | None:
        """Why the origin is blocked (the marker's text), or None."""
        try:
            return self.marker(origin).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def block(self, origin: str, reason: str, evidence: Path) -> None:
        text = (
            f"{reason}\nevidence: {evidence}\n"
            "This witness will not cosign this log while this file exists. Investigate; "
            "remove it only once the log is trustworthy again (and the state file matches it).\n"
        )
        write_atomic(self.marker(origin), text.encode("utf-8"))
