"""A durable local spool: signed statements kept on disk, in order, while the log is unreachable.

Fail-open adapters write here instead of failing the tool call; the spool is replayed (in order,
oldest first) before the next statement and by `Spool.replay`. Each statement is one file,
`<20-digit sequence>.leaf`, written atomically and durably (client.trust.write_atomic), and
removed only after the log's receipt for it has verified. A crash between the append and the
removal only makes the next replay send the same bytes again, which the log answers with the
existing index (appends are idempotent), so nothing is lost and nothing is doubled.
"""

from __future__ import annotations

import threading
from pathlib import Path

from affidavit.client.client import Client, Receipt
from affidavit.client.errors import RefusedError
from affidavit.client.trust import write_atomic

_SUFFIX = ".leaf"


class Spool:
    """Statements (exact leaf bytes) waiting for the log, oldest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def __len__(self) -> int:
        return len(self._files())

    def put(self, leaf: bytes) -> Path:
        """Keep leaf after every statement already waiting; durable when this returns."""
        with self._lock:
            files = self._files()
            sequence = int(files[-1].name.removesuffix(_SUFFIX)) + 1 if files else 1
            path = self.directory / f"{sequence:020d}{_SUFFIX}"
            write_atomic(path, leaf)
            return path

    def leaves(self) -> list[bytes]:
        """What is waiting, oldest first."""
        return [p.read_bytes() for p in self._files()]

    def replay(self, client: Client) -> list[Receipt]:
        """Append every waiting statement in order, removing each once its receipt verifies.

        Stops at the first failure: UnavailableError leaves the rest waiting; RefusedError
        names the file and keeps it (the log will not take it, and the statements after it in
        its session follow it: a person must look)."""
        receipts: list[Receipt] = []
        with self._lock:
            for path in self._files():
                try:
                    receipts.append(client.append(path.read_bytes()))
                except RefusedError as e:
                    raise RefusedError(
                        e.code, f"spooled statement {path} refused by the log: {e.message}"
                    ) from None
                path.unlink()
        return receipts
