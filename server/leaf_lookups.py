"""Leaf-hash lookups for readers (GetInclusionProof by leaf hash): on a shared store, off the
event loop and gathered.

A lookup in a shared store (PostgreSQL) is a round trip: made on the event loop, it stalled
every other call on the frontend for its length, so a frontend answered at most one such read
per round trip. There, the lookups asked while one read is under way wait together and go as
the next single read (LogStore.indexes_of, one query for all of them) in a thread of their own:
one read in flight at a time, each carrying every lookup that arrived meanwhile. The embedded
LevelDB is read in place, on the event loop, as before: its lookup is a local read of a few µs,
less than the hand-off to a thread (measured through the thread: 1.11x the CPU per read).

Invariant: each caller gets exactly what LogStore.index_of would give for its hash at some
moment between its asking and its answer (a leaf's index never changes once stored), or the
store's exception.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from affidavit.server.logstore import LogStore


class LeafLookups:
    """index_of for readers (see the module doc). Used from one event loop."""

    def __init__(self, storage: LogStore) -> None:
        self._storage = storage
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leaf-lookups")
        self._waiting: dict[bytes, list[asyncio.Future[int | None]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def index_of(self, leaf_hash: bytes) -> int | None:
        """The index of the leaf with this hash, or None if the log holds none."""
        if not self._storage.shared:
            return self._storage.index_of(leaf_hash)
        answer: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(leaf_hash, []).append(answer)
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        return await answer

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                hashes = list(batch)
                try:
                    found = await loop.run_in_executor(
                        self._thread, self._storage.indexes_of, hashes
                    )
                except Exception as e:
                    for answers in batch.values():
                        for answer in answers:
                            if not answer.done():
                                answer.set_exception(e)
                    continue
                for leaf_hash, index in zip(hashes, found, strict=True):
                    for answer in batch[leaf_hash]:
                        if not answer.done():  # its caller may have gone (cancelled)
                            answer.set_result(index)
        finally:
            self._reading = None
