"""The statement gate: the server's side of statements.ingest.

prepare() runs the history-free checks (decode, schema, secret guard, signature) in the RPC
handler's worker threads against the committed state; the integrator then admits each entry in
log order against the committed state plus the batch so far, applies it, and indexes it. All of
that lands in the batch's one WriteBatch, so state and indexes never drift from the entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from server import search
from server.storage import Storage
from statements import ingest
from statements.build import now_ms
from statements.ingest import Prepared
from statements.state import LogState


class _CommittedKV:
    """Reads of committed records only: safe from any thread while a batch is in flight."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def get(self, key: bytes, /) -> bytes | None:
        return self._storage.get(key)

    def put(self, key: bytes, value: bytes, /) -> None:
        raise RuntimeError("committed state changes only through a batch")


class _BatchKV:
    """A batch's writes in front of the committed records."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.writes: dict[bytes, bytes] = {}

    def get(self, key: bytes, /) -> bytes | None:
        value = self.writes.get(key)
        return value if value is not None else self._storage.get(key)

    def put(self, key: bytes, value: bytes, /) -> None:
        self.writes[key] = value


class StatementGate:
    """Implements server.sequencer.Gate for signed statements."""

    def __init__(self, storage: Storage, clock: Callable[[], int] = now_ms) -> None:
        self._storage = storage
        self._clock = clock
        self.committed = LogState(_CommittedKV(storage))
        self._batch = _BatchKV(storage)
        self._state = LogState(self._batch)

    def prepare(self, entry: bytes) -> Prepared:
        """History-free checks; raises Rejection. Thread-safe."""
        return ingest.prepare(entry, self.committed.key)

    def begin(self) -> None:
        self._batch = _BatchKV(self._storage)
        self._state = LogState(self._batch)

    def admit(
        self, entry: bytes, prepared: object, leaf_hash: bytes, index: int
    ) -> tuple[int, str]:
        if not isinstance(prepared, Prepared):
            prepared = ingest.prepare(entry, self._state.key)
        verdict = ingest.admit(prepared, self._state, self._clock())
        self._state.apply(index, leaf_hash, prepared.statement, verdict)
        search.index_statement(self._batch, self._state, index, leaf_hash, prepared, verdict)
        return (verdict.verdict, verdict.reason) if verdict is not None else (0, "")

    def writes(self) -> Mapping[bytes, bytes]:
        return self._batch.writes

    def known(self, index: int) -> tuple[int, str]:
        verdict = self.committed.verdict(index)
        return (verdict.verdict, verdict.reason) if verdict is not None else (0, "")
