"""The sequencer: the one integrator that turns queued appends into durable, signed log growth.

Appends wait in a queue bounded in entries (server.append_queue); each queue item is one
caller's run of entries, kept in order. The integrator takes what is queued (whole items, up to
max_batch entries, waiting at most max_wait for more), and in a worker thread: hashes the batch
with the hashing core, drops entries already in the log or earlier in the batch (they get the
first index) and has the gate judge the rest (batch_admission), grows the tiles and, from the
same hashes, the root and the new entries' inclusion proofs (merkle.tiles.grow), signs the
checkpoint, and commits entries, hash index, tiles and checkpoint in one synced WriteBatch. On
a shared log (PostgreSQL + S3) the head lock is taken before the batch is complete (group
commit): what queued while another frontend held it joins the batch. What remains then runs on
a publisher thread, in commit order, while the integrator goes on with the next batches
(server.settling): a shared log's publications to object storage (IN_FLIGHT at most), and one
keep of the newest checkpoint outside the database (KeptCheckpoint). Only then are the callers
answered, each entry with its index, the checkpoint and an inclusion proof to it. While one
batch is being written the next one queues, so under load batches grow by themselves.

Invariant: the checkpoint served (checkpoint, note) is the one on disk, and its root is the
root of the tiles on disk; an acknowledged entry is on disk under that checkpoint. On a shared
log it is a published one (all its tiles readable); the head extended (the newest sequenced,
by this frontend or another) is held apart until it is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from affidavit.merkle import hashing
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.tiles import grow
from affidavit.server import batch_proofs
from affidavit.server.append_queue import AppendQueue, Pending
from affidavit.server.batch_admission import Gate, admit_batch
from affidavit.server.integrity import KeptCheckpoint, open_checkpoint
from affidavit.server.logstore import LogStore
from affidavit.server.settling import Committed, Integrated, finish
from affidavit.server.storage import (
    Batch,
    ConflictError,
    DataLossError,
    StorageError,
)
from affidavit.statements.errors import Rejection

FAULT_PROBE_S = 1.0
"""How often a failing log (a full disk) checks whether it can write again while idle."""

FOLLOW_INTERVAL = 0.25
"""Seconds between looks at a shared log's head for growth made by other frontends."""

IN_FLIGHT = 2
"""Batches committed but not yet published (a shared log's) at most: the integrator commits
the next batch meanwhile, and waits for the oldest beyond this. Batches waiting only for their
checkpoint to be kept are not counted: however many there are, one keep covers them all."""


class Receipt(NamedTuple):
    """What an appender gets back once its entry is durable: where it is in the log
    (leaf_index; the index of its first copy when duplicate), a checkpoint note covering it and
    that checkpoint's tree size, the inclusion proof to that checkpoint, and an agent action's
    verdict. A NamedTuple: the integrator makes one per entry."""

    leaf_index: int
    leaf_hash: bytes
    checkpoint: str
    tree_size: int
    proof: list[bytes]
    duplicate: bool
    verdict: int = 0
    verdict_reason: str = ""


class QueueFullError(Exception):
    """The append queue is full: the caller should back off and retry."""


class ShuttingDownError(Exception):
    """The sequencer is stopping and takes no more appends."""


Outcome = Receipt | Rejection
"""What one queued entry comes to: its receipt, or the gate's refusal."""

_Pending = Pending[Outcome]
_Integrated = Integrated[Outcome]
_Committed = Committed[Outcome]


def _joined(batch: list[_Pending]) -> tuple[list[bytes], list[object]]:
    """A batch's entries and what was prepared from them, in order."""
    return [e for p in batch for e in p.entries], [x for p in batch for x in p.prepared]


class Sequencer:
    """Owns the log's growth. Create it with recover(); run() integrates until stop()."""

    def __init__(
        self,
        storage: LogStore,
        origin: str,
        sign: Callable[[str], str],
        checkpoint: Checkpoint,
        note: str,
        *,
        gate: Gate | None = None,
        kept: KeptCheckpoint | None = None,
        max_batch: int = 1000,
        max_wait: float = 0.0,
        queue_size: int = 4096,
        on_batch: Callable[[int, float], None] | None = None,
        verifier_key: str | None = None,
    ) -> None:
        self._storage = storage
        self._on_batch = on_batch  # told each batch's entries and integration seconds
        self._verifier_key = verifier_key  # to adopt other frontends' checkpoints
        self._gate = gate
        self._origin = origin
        self._sign = sign
        self._checkpoint = checkpoint  # served: published, readable from any frontend
        self._note = note
        self._served = threading.Lock()  # set from the integrator and the event loop
        self._head, self._head_note = checkpoint, note  # the newest sequenced, to extend
        # The head the gate's cached records are current with (its own commits told to it):
        # a batch extending another has them read again (gate.reset) before it is admitted.
        self._gate_head = note
        self._max_wait = max_wait
        self._queue: AppendQueue[Outcome] = AppendQueue(queue_size, max_batch)
        # One thread: integrations are strictly sequential.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="integrator")
        # One thread: publications run in commit order, beside the integrator.
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publisher")
        self._unsettled: list[_Committed] = []  # committed, in order, not yet settling
        self._settler: asyncio.Task[None] | None = None  # settling groups of those
        self._unpublished = 0  # of those committed and not settled, batches with a publication
        self._settled = asyncio.Condition()  # notified when a group is settled
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Future[None] | None = None  # a look at the head under way
        self._grown = asyncio.Condition()
        self._kept = kept
        # The checkpoint last kept (recover() brought the file up to the one served): a batch
        # of duplicates only is answered once the head it answers with is kept too.
        self._kept_note = note
        self._holding = False  # the integrator thread holds the head (between lock and commit)
        self._fault: StorageError | None = None  # why the last integration failed, if it did
        self._halted: StorageError | None = None  # set, the log signs nothing more
        self._faults = asyncio.Condition()  # notified when fault changes

    @property
    def queue_size(self) -> int:
        """How many entries may wait in the queue (besides the batch being integrated)."""
        return self._queue.capacity

    @property
    def queued(self) -> int:
        """Entries waiting in the queue now."""
        return self._queue.queued

    @property
    def checkpoint(self) -> Checkpoint:
        """The latest committed checkpoint."""
        return self._checkpoint

    @property
    def note(self) -> str:
        """The latest committed checkpoint's signed note."""
        return self._note

    @property
    def fault(self) -> StorageError | None:
        """Why appends cannot be made durable now (None: they can). A DiskFullError clears by
        itself once the disk has room; a halt (another writer, damage) lasts until restart."""
        return self._halted or self._fault

    async def wait_fault_change(self, known: StorageError | None) -> StorageError | None:
        """Wait until fault is no longer known; the new fault (None once appends work)."""
        async with self._faults:
            await self._faults.wait_for(lambda: self.fault is not known or self._stopping)
        return self.fault

    async def halt(self, error: StorageError) -> None:
        """Sign nothing more: every append from now on is refused with error (damage found
        under the checkpoint, or another writer at work)."""
        self._halted = error
        async with self._faults:
            self._faults.notify_all()

    async def _set_fault(self, error: StorageError | None) -> None:
        if isinstance(error, ConflictError | DataLossError):
            self._halted = error
        elif error is not self._fault:
            self._fault = error
        async with self._faults:
            self._faults.notify_all()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="integrator")
        if self._storage.shared:
            self._follower = loop.create_task(self._follow(), name="follower")

    async def _follow(self) -> None:
        """Other frontends extend a shared log: pick up their growth while idle, so checkpoint
        watches see it (at most FOLLOW_INTERVAL late)."""
        while not self._stopping:
            await asyncio.sleep(FOLLOW_INTERVAL)
            await self.refresh()

    async def refresh(self) -> None:
        """On a shared log, adopt the newest stored checkpoint now: a reader that got a
        checkpoint from one frontend finds it (or a newer one) at any other. Callers arriving
        while a look is under way share it. While the storage is unreachable (a fault stands)
        the checkpoint held stays, without waiting: the fault's probe finds it back."""
        if not self._storage.shared or self._stopping or self._fault is not None:
            return
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._look())
        look = self._refreshing
        try:
            await asyncio.shield(look)
        finally:
            if look.done() and self._refreshing is look:
                self._refreshing = None

    async def _look(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            grew = await loop.run_in_executor(self._worker, self._refresh)
        except StorageError as e:
            await self._set_fault(e)
            return
        if grew:
            async with self._grown:
                self._grown.notify_all()

    def _refresh(self) -> bool:
        """Serve the stored (published) checkpoint if it is newer, and extend it if it is
        beyond the head held (in the integrator thread); whether it grew."""
        served = self._checkpoint  # before the read: a publication may serve a newer one
        text = self._storage.checkpoint()
        if text is None or text == self._note:
            return False
        grown = self._adoptable(text, served)
        if grown is None:
            return False
        if grown.size > self._head.size and not self._holding:
            # (While the head is held, the batch being formed extends it, read ahead for.)
            self._head, self._head_note = grown, text
            if self._gate is not None:
                # Cleared now for the readers of committed records; the next batch's records
                # are read when it has the head (its _extend, as self._gate_head is behind).
                self._gate.forget()
        return self._serve(grown, text)

    def _serve(self, checkpoint: Checkpoint, note: str) -> bool:
        """Serve a published checkpoint if it is newer than the one served; whether it is."""
        with self._served:
            if checkpoint.size <= self._checkpoint.size:
                return False
            self._checkpoint, self._note = checkpoint, note
            return True

    def _adoptable(self, text: str, held: Checkpoint) -> Checkpoint | None:
        """The stored checkpoint note, to serve or extend (a shared log's, grown by other
        frontends), or None if it is held: it must carry the log's signature, and extend
        held (not smaller, not another tree of the same size); ConflictError otherwise, as on
        a log only this process may write."""
        where = self._storage.location
        if not self._storage.shared or self._verifier_key is None:
            raise ConflictError(
                f"the latest checkpoint stored in {where} is not the one this server signed "
                "last: another process wrote to the log; refusing to sign over it"
            )
        cp = open_checkpoint(text, self._verifier_key, f"stored in {where}")
        if cp.size < held.size or (cp.size == held.size and cp.root_hash != held.root_hash):
            raise ConflictError(
                f"{where} holds a tree of size {cp.size} that does not extend the one of size "
                f"{held.size} this server holds (lost entries or a fork); refusing to extend it"
            )
        return None if cp.size == held.size else cp

    async def stop(self) -> None:
        """Refuse new appends, integrate everything already queued, then stop."""
        await self.begin_shutdown()
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        self._worker.shutdown(wait=True)
        self._publisher.shutdown(wait=True)

    async def wait_beyond(self, size: int) -> bool:
        """Wait until the log's committed size exceeds size (True) or the log stops (False)."""
        async with self._grown:
            await self._grown.wait_for(lambda: self._checkpoint.size > size or self._stopping)
        return self._checkpoint.size > size

    async def begin_shutdown(self) -> None:
        """Refuse new appends and release everyone waiting for growth."""
        self._stopping = True
        async with self._grown:
            self._grown.notify_all()
        async with self._faults:
            self._faults.notify_all()

    async def append(self, entry: bytes, prepared: object = None) -> Receipt:
        """Queue one entry (with what the gate prepared from it) and wait until it is durable.

        Raises QueueFullError at capacity, ShuttingDownError, or the gate's Rejection.
        """
        future, _ = self.enqueue([entry], [prepared])
        (outcome,) = await future
        if isinstance(outcome, Rejection):
            raise outcome
        return outcome

    def enqueue(
        self, entries: Sequence[bytes], prepared: Sequence[object]
    ) -> tuple[asyncio.Future[list[Outcome]], int]:
        """Queue the longest prefix of entries the queue has room for, as one item, in order;
        returns a future giving one Outcome per queued entry once they are durable (or the
        integration's exception), and how many entries were queued.

        Raises QueueFullError if not even one entry fits, and ShuttingDownError once
        stopping. Items are integrated in the order they were queued.
        """
        if len(prepared) != len(entries):
            raise ValueError("one prepared value per entry")
        if self._stopping:
            raise ShuttingDownError("the log is shutting down")
        if self._halted is not None:
            raise self._halted
        item = self._queue.put(entries, prepared)
        if item is None:
            raise QueueFullError(f"the append queue is full ({self._queue.capacity} entries)")
        return item.future, len(item.entries)

    async def _next_batch(self) -> list[_Pending]:
        """The next batch (server.append_queue): waiting for its first item, then at most
        max_wait for more."""
        batch = [await self._next_item()]
        await self._queue.fill(batch, time.monotonic() + self._max_wait)
        return batch

    async def _next_item(self) -> _Pending:
        """The next queued item; while a fault that may clear stands and nothing is queued,
        probe the storage every FAULT_PROBE_S so the fault clears without waiting for an append.
        """
        while self._fault is not None and self._halted is None:
            try:
                return await asyncio.wait_for(self._queue.first(), FAULT_PROBE_S)
            except TimeoutError:
                pass
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._worker, self._storage.check_writable)
            except StorageError as e:
                await self._set_fault(e)
            else:
                await self._set_fault(None)
        return await self._queue.first()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            began = time.monotonic()
            if self._unpublished >= IN_FLIGHT:
                async with self._settled:
                    await self._settled.wait_for(lambda: self._unpublished < IN_FLIGHT)
            try:
                if self._halted is not None:
                    raise self._halted
                done = await self._integrate_batch(batch)
            except Exception as e:
                await self._answer(batch, e)
                continue
            committed = _Committed(batch, done, began)
            if done.publish is None and done.keep is None:
                await self._answered([committed], 1, None)
                continue
            # Answered once published and kept; the next batch is committed meanwhile.
            self._unsettled.append(committed)
            self._unpublished += done.publish is not None
            if self._settler is None:
                self._settler = loop.create_task(self._settle())

    async def _integrate_batch(self, batch: list[_Pending]) -> _Integrated:
        """Integrate batch in the integrator thread. On a shared log, group commit: the head
        lock is taken first (other frontends may hold it for a while), and only then is the
        batch completed from what queued meanwhile, without waiting: one batch, one lock, for
        everything that arrived while it was awaited. The lock is never held while idle (batch
        has at least one item) and is released on every failure path."""
        loop = asyncio.get_running_loop()
        if not self._storage.shared:  # nothing to wait for: lock and extend in one hop
            return await loop.run_in_executor(self._worker, self._integrate, *_joined(batch))
        try:
            entries = [e for p in batch for e in p.entries]
            head, hashes = await loop.run_in_executor(self._worker, self._lock_head, entries)
            await self._queue.fill(batch, None)
            entries, prepared = _joined(batch)  # the batch as taken, then what joined it
            return await loop.run_in_executor(
                self._worker, self._extend, head, entries, prepared, hashes
            )
        except BaseException:
            # Cancelled, the thread goes on: release the head after it (a no-op if released).
            self._worker.submit(self._unlock_head)
            raise

    async def _settle(self) -> None:
        """Settle committed batches a group at a time (server.settling), then answer them."""
        loop = asyncio.get_running_loop()
        try:
            while self._unsettled:
                group, self._unsettled = self._unsettled, []
                try:
                    ready, failure = await loop.run_in_executor(
                        self._publisher, self._finish, [c.done for c in group]
                    )
                except Exception as e:  # (_finish tells its failures)
                    ready, failure = 0, e
                async with self._settled:
                    self._unpublished -= sum(c.done.publish is not None for c in group)
                    self._settled.notify_all()
                await self._answered(group, ready, failure)
        finally:
            self._settler = None

    def _finish(self, group: list[_Integrated]) -> tuple[int, Exception | None]:
        """server.settling.finish, in the publisher thread (the one that keeps checkpoints)."""
        ready, failure, self._kept_note = finish(group, self._kept, self._kept_note)
        return ready, failure

    async def _answered(
        self, group: list[_Committed], ready: int, failure: Exception | None
    ) -> None:
        """Answer the first ready batches of group (settled: serve their tree) with their
        outcomes, and the rest with failure."""
        published = [c.done.tree for c in group[:ready] if c.done.publish is not None]
        if published:
            self._serve(*published[-1])
        for c in group[:ready]:
            if self._on_batch is not None:
                entries = sum(len(p.entries) for p in c.batch)
                self._on_batch(entries, time.monotonic() - c.began)
            await self._answer(c.batch, c.done.outcomes)
        for c in group[ready:]:
            assert failure is not None
            await self._answer(c.batch, failure)

    async def _answer(self, batch: list[_Pending], result: list[Outcome] | Exception) -> None:
        """Tell every caller of batch its outcomes, or the failure (every waiter must hear)."""
        if isinstance(result, Exception):
            if isinstance(result, StorageError):
                await self._set_fault(result)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(result)
        else:
            if self._fault is not None:
                await self._set_fault(None)
            at = 0
            for p in batch:
                if not p.future.done():  # else the caller went away
                    p.future.set_result(result[at : at + len(p.entries)])
                at += len(p.entries)
        self._queue.done(batch)
        async with self._grown:
            self._grown.notify_all()

    def _integrate(self, entries: Sequence[bytes], prepared: Sequence[object]) -> _Integrated:
        """Add a batch to the log durably; runs in the integrator thread, one call at a time."""
        head, hashes = self._lock_head(entries)
        return self._extend(head, entries, prepared, hashes)

    def _lock_head(self, entries: Sequence[bytes]) -> tuple[str | None, list[bytes]]:
        """Take the head (in the integrator thread): the note the storage gives, to extend,
        and the leaf hashes of entries (the batch's, as far as known), looked up with the lock.

        With several frontends on one log, that may be another frontend's latest checkpoint,
        not yet published: it is held only once commit() or unlock_head() has returned.
        """
        hashes = hashing.leaf_hashes(entries)
        head = self._storage.lock_head(hashes)
        self._holding = True
        return head, hashes

    def _unlock_head(self) -> None:
        """Release the head if this thread still holds it (the first failure is the one told)."""
        self._holding = False
        with contextlib.suppress(StorageError):
            self._storage.unlock_head()  # a no-op once commit() has released it

    def _extend(
        self,
        head: str | None,
        entries: Sequence[bytes],
        prepared: Sequence[object],
        hashed: list[bytes],
    ) -> _Integrated:
        """Add a batch to the log durably, extending head (lock_head's, held); runs in the
        integrator thread. hashed: the leaf hashes of the batch's first entries (those it
        had when the head was asked for; the rest joined it after). The head is released by
        the commit, or here on failure."""
        try:
            if self._halted is not None:
                raise self._halted
            if head != self._head_note and head is not None:
                grown = self._adoptable(head, self._head)
                if grown is not None:
                    self._head, self._head_note = grown, head
            if self._gate is not None and self._gate_head != self._head_note:
                self._gate.reset(prepared)
                self._gate_head = self._head_note
            leaf_hashes = hashed + hashing.leaf_hashes(entries[len(hashed) :])
            return self._integrate_locked(entries, prepared, leaf_hashes)
        except BaseException:
            self._unlock_head()
            raise
        finally:
            self._holding = False

    def _integrate_locked(
        self, entries: Sequence[bytes], prepared: Sequence[object], leaf_hashes: list[bytes]
    ) -> _Integrated:
        """_integrate, with the head locked (leaf_hashes: the entries'); commit() or
        unlock_head() releases it."""
        size = self._head.size
        gate = self._gate
        stored = self._storage.indexes_of(leaf_hashes)
        admitted = admit_batch(entries, prepared, leaf_hashes, stored, size, gate)
        new_entries, new_hashes, outcomes = admitted.entries, admitted.hashes, admitted.outcomes

        growth = None
        if new_entries:
            growth = grow(size, new_hashes, self._storage.read_tiles)
            # The root is read from the same level rows the grown tiles are cut from (see
            # merkle.tiles.grow), so it is the root of the tiles written with it: a checkpoint
            # is never signed over anything but what is stored.
            checkpoint = Checkpoint(self._origin, growth.size, growth.root())
            # Never sign over a head other than the one this log signed last (a shared log's
            # head is locked by lock_head until the commit).
            if not self._storage.shared and self._storage.checkpoint() != self._head_note:
                raise ConflictError(
                    f"the latest checkpoint stored in {self._storage.location} is not the one "
                    "this server signed last: another process wrote to the log; refusing to sign"
                )
            note = self._sign(checkpoint.format())
            extra = gate.writes() if gate is not None else {}
            batch = Batch(size, new_entries, new_hashes, growth.tiles, note, extra)
            publish = self._storage.commit(batch, previous=self._head_note)
            self._head, self._head_note = checkpoint, note
            self._gate_head = note
            if publish is None:
                self._serve(checkpoint, note)
            if gate is not None:
                gate.durable()
            keep = note if self._kept is not None else None
        else:
            self._storage.unlock_head()  # a shared store returns once the head is published
            publish = None
            self._serve(self._head, self._head_note)
            keep = None
            if self._kept is not None and self._kept_note != self._head_note:
                # Duplicates of entries whose checkpoint is not kept yet (its keeping failed,
                # or is under way on the publisher thread): answered once it is.
                keep = self._head_note

        proof_of = batch_proofs.prover(
            [o[0] for o in outcomes if not isinstance(o, Rejection)],
            size,
            self._head.size,
            growth,
            self._storage.read_tiles,
        )
        receipts: list[Outcome] = []
        for outcome, leaf_hash in zip(outcomes, leaf_hashes, strict=True):
            if isinstance(outcome, Rejection):
                receipts.append(outcome)
                continue
            index, duplicate, (verdict, reason) = outcome
            receipts.append(
                Receipt(
                    index,
                    leaf_hash,
                    self._head_note,
                    self._head.size,
                    proof_of(index),
                    duplicate,
                    verdict,
                    reason,
                )
            )
        return _Integrated(receipts, publish, keep, (self._head, self._head_note))
