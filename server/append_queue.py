"""The append queue: appends waiting for the sequencer's integrator, and how batches are cut
from it.

Each item is one caller's run of entries (one Append, one AppendBatch, one chunk of a stream),
with what the gate prepared from each and the future its caller waits on. The queue is bounded
in entries (capacity). A batch is whole items in queue order up to max_batch entries: an item
that does not fit is carried to the next batch (it stays first in line), and an item larger
than max_batch goes alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Pending(Generic[T]):
    """One caller's entries (and what the gate prepared from each), answered together."""

    entries: Sequence[bytes]
    prepared: Sequence[object]
    future: asyncio.Future[list[T]]


class AppendQueue(Generic[T]):
    """Items in order, bounded in entries; one consumer (the integrator) takes batches."""

    def __init__(self, capacity: int, max_batch: int) -> None:
        self.capacity = capacity
        self._max_batch = max_batch
        self._items: asyncio.Queue[Pending[T]] = asyncio.Queue()
        self._queued = 0  # entries waiting (a carried item included)
        self._carry: Pending[T] | None = None  # taken from _items, first of the next batch

    @property
    def queued(self) -> int:
        """Entries waiting now."""
        return self._queued

    def put(self, entries: Sequence[bytes], prepared: Sequence[object]) -> Pending[T] | None:
        """Queue the longest prefix of entries there is room for, as one item; None if there is
        room for none."""
        room = min(len(entries), self.capacity - self._queued)
        if room <= 0:
            return None
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        item = Pending(entries[:room], prepared[:room], future)
        self._items.put_nowait(item)
        self._queued += room
        return item

    async def first(self) -> Pending[T]:
        """The first item of the next batch (the carried one, or the next queued, waiting)."""
        if self._carry is not None:
            item, self._carry = self._carry, None
        else:
            item = await self._items.get()
        self._queued -= len(item.entries)
        return item

    async def fill(self, batch: list[Pending[T]], deadline: float | None) -> None:
        """Add queued items to batch, in queue order, while they fit in max_batch entries (the
        first that does not is carried to the next batch), waiting for more until deadline
        (time.monotonic(); None: without waiting, so without yielding to the event loop)."""
        count = sum(len(p.entries) for p in batch)
        while self._carry is None and count < self._max_batch:
            try:
                item = self._items.get_nowait()
            except asyncio.QueueEmpty:
                remaining = 0.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    item = await asyncio.wait_for(self._items.get(), remaining)
                except TimeoutError:
                    return
            if count + len(item.entries) > self._max_batch:
                self._carry = item
                return
            batch.append(item)
            count += len(item.entries)
            self._queued -= len(item.entries)

    def done(self, batch: list[Pending[T]]) -> None:
        """batch's callers are answered."""
        for _ in batch:
            self._items.task_done()

    async def join(self) -> None:
        """Wait until every item queued is answered."""
        await self._items.join()
