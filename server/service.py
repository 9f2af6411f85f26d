"""The gRPC service affidavit.v1.Log over a LogStore and its Sequencer.

Every refusal is a gRPC status with a message a person can act on, and a refused request
changes nothing. Proofs are served from stored tiles: O(log n) tile reads each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import grpc
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note, proofs
from affidavit.merkle.errors import MerkleError, UnverifiedNoteError
from affidavit.merkle.keys import Verifier
from affidavit.merkle.tiles import TileCache, TileHashReader
from affidavit.proto import affidavit_pb2 as pb
from affidavit.proto import affidavit_pb2_grpc as pb_grpc
from affidavit.server import search
from affidavit.server.access import Auditors
from affidavit.server.admission import StatementGate
from affidavit.server.errors import (
    RETRY_AFTER_MS,
    Context,
    RequestError,
    abort,
    invalid,
    out_of_range,
    refusal_status,
    storage_refusal,
    unexpected_failure,
)
from affidavit.server.ingest_workers import IngestWorkers
from affidavit.server.leaf_lookups import LeafLookups
from affidavit.server.logstore import LogStore, read_off_loop
from affidavit.server.metrics import Metrics
from affidavit.server.published import Published
from affidavit.server.refusals import RefusalRecorder
from affidavit.server.sequencer import Outcome as SequencerOutcome
from affidavit.server.sequencer import QueueFullError, Receipt, Sequencer, ShuttingDownError
from affidavit.server.storage import (
    StorageError,
)
from affidavit.statements.errors import Rejection
from affidavit.statements.state import VerdictRecord, read_verdicts

log = logging.getLogger("affidavit.server")
refusals = logging.getLogger("affidavit.server.refusals")

STREAM_WINDOW = 1024
"""Entries of one AppendStream read but not yet submitted; reading pauses beyond it."""

STREAM_CHUNKS = 2
"""Chunks of one AppendStream submitted and waiting for their results; beyond it, arriving
entries gather into the next chunk."""

VERIFIER_THREADS = 2
"""Threads checking entries (signatures release the GIL, so two verify in parallel)."""

Outcome = Receipt | RequestError
"""What one appended entry comes to: its receipt, or why it was refused."""


class LogService(pb_grpc.LogServicer):
    def __init__(
        self,
        storage: LogStore,
        sequencer: Sequencer,
        *,
        gate: StatementGate | None,
        refusals: RefusalRecorder | None = None,
        auditors: Auditors,
        witnesses: list[Verifier],
        published: Published,
        max_entry_bytes: int,
        max_batch_entries: int,
        page_size: int,
        metrics: Metrics | None = None,
        ingest_workers: IngestWorkers | None = None,
    ) -> None:
        self._storage = storage
        self._metrics = metrics
        # The proof counters' children, looked up once: labels() per read cost a lock and a
        # tuple each (about 1% of a proof read's CPU).
        self._proof_counts = (
            {kind: metrics.proof_requests.labels(kind) for kind in ("inclusion", "consistency")}
            if metrics is not None
            else None
        )
        self._sequencer = sequencer
        self._gate = gate
        self._refusals = refusals
        self._auditors = auditors
        self._witnesses = witnesses
        self._published = published
        # Signature checks release the GIL: the threads verify in parallel, off the event loop;
        # with ingest workers, each thread hands its run to a worker process and waits.
        self._ingest = ingest_workers
        self._runs = max(VERIFIER_THREADS, ingest_workers.workers if ingest_workers else 0)
        self._verifiers = ThreadPoolExecutor(max_workers=self._runs, thread_name_prefix="verify")
        # Proofs and leaf hashes are read through one tile cache (bounded; see TileCache).
        self._tiles = TileCache(storage.read_tiles)
        self._leaves = LeafLookups(storage)
        self._max_entry = max_entry_bytes
        self._max_batch = max_batch_entries
        self._page = page_size

    # Appends.

    async def _submit(
        self, entries: Sequence[bytes], source: str = ""
    ) -> asyncio.Task[list[Outcome]]:
        """Check entries (sizes, then the gate's history-free checks in the verifier threads)
        and queue those that pass as one sequencer item, in order. Returns, once they are
        queued, a task giving one Outcome per entry, in order, when every queued entry is
        durable. An entry refused here, by the gate, or for want of queue room fails alone;
        the gate's refusals are noted for the log's record of attempts (from source)."""
        entries = list(entries)  # each entry copied out of the request message once
        outcomes: list[Outcome | None] = [None] * len(entries)
        positions = self._sized(entries, outcomes)
        accepted = entries if len(positions) == len(entries) else [entries[i] for i in positions]
        prepared: list[object] = [None] * len(accepted)
        if self._gate is not None and accepted:
            prepared = await self._prepare(accepted)
            passed = [k for k, p in enumerate(prepared) if not isinstance(p, Rejection)]
            for k, p in enumerate(prepared):
                if isinstance(p, Rejection):
                    self._note_refusal(accepted[k], p, source)
                    outcomes[positions[k]] = refusal_status(p)
            positions = [positions[k] for k in passed]
            accepted = [accepted[k] for k in passed]
            prepared = [prepared[k] for k in passed]
        queued: asyncio.Future[list[SequencerOutcome]] | None = None
        room = 0
        if accepted:
            try:
                queued, room = self._sequencer.enqueue(accepted, prepared)
            except QueueFullError:
                pass
            except ShuttingDownError as e:
                for i in positions:
                    outcomes[i] = RequestError(
                        grpc.StatusCode.UNAVAILABLE, f"{e}; retry once it is back"
                    )
                positions = []
            except StorageError as e:  # the log is halted
                for i in positions:
                    outcomes[i] = storage_refusal(e)
                positions = []
        # What the queue had no room for is asked to come back later (its order kept).
        for i in positions[room:]:
            outcomes[i] = RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the append queue is full ({self._sequencer.queue_size} entries); "
                f"retry in {RETRY_AFTER_MS} ms",
            )
        positions = positions[:room]

        async def settle() -> list[Outcome]:
            if queued is not None:
                try:
                    results: list[SequencerOutcome | RequestError] = list(await queued)
                except Exception as e:  # the integration failed: nothing of it was acknowledged
                    results = [storage_refusal(e)] * len(positions)
                for i, result in zip(positions, results, strict=True):
                    if isinstance(result, Rejection):
                        self._note_refusal(entries[i], result, source)
                        outcomes[i] = refusal_status(result)
                    else:
                        outcomes[i] = result
            assert None not in outcomes, "every entry is refused, or queued and answered"
            settled = cast(list[Outcome], outcomes)
            self._account(settled)
            return settled

        return asyncio.ensure_future(settle())

    async def _submit_answered(
        self, entries: Sequence[bytes], source: str = ""
    ) -> asyncio.Future[list[Outcome]]:
        """_submit, whose result answers every entry even if submitting itself failed."""
        try:
            return await self._submit(entries, source)
        except Exception as e:
            failed: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
            refused: list[Outcome] = [storage_refusal(e)] * len(entries)
            self._account(refused)
            failed.set_result(refused)
            return failed

    def _sized(self, entries: Sequence[bytes], outcomes: list[Outcome | None]) -> list[int]:
        """The positions of the entries of an allowed size; the others' refusals go into
        outcomes. (Two C-level passes find the usual case, every entry allowed.)"""
        if not entries or (
            min(map(len, entries)) > 0 and max(map(len, entries)) <= self._max_entry
        ):
            return list(range(len(entries)))
        positions = []
        for i, entry in enumerate(entries):
            if not entry:
                outcomes[i] = invalid("entry is empty; an entry is 1 byte or more")
            elif len(entry) > self._max_entry:
                outcomes[i] = invalid(
                    f"entry is {len(entry)} bytes; this log takes at most {self._max_entry} "
                    "(the server's --max-entry-bytes; never more than 65,535, the most a "
                    "tlog-tiles entry bundle can hold)"
                )
            else:
                positions.append(i)
        return positions

    def _note_refusal(self, entry: bytes, rejection: Rejection, source: str) -> None:
        if self._refusals is not None:
            self._refusals.note(entry, rejection, source)

    def _account(self, outcomes: Sequence[Outcome]) -> None:
        """Count a call's outcomes (receipts once per call, by kind); log a line for each
        refusal (its status and the rule's message, which names a field and rule, never a
        value: Rejection's contract)."""
        receipts = duplicates = 0
        for outcome in outcomes:
            if isinstance(outcome, RequestError):
                refusals.info(
                    "refused an entry: %s: %s",
                    outcome.code.name,
                    outcome.message,
                    extra={"event": "refusal", "code": outcome.code.name},
                )
                if self._metrics is not None:
                    self._metrics.refusals.labels(outcome.code.name).inc()
            else:
                receipts += 1
                duplicates += outcome.duplicate
        if self._metrics is not None:
            if receipts > duplicates:
                self._metrics.appends.labels("new").inc(receipts - duplicates)
            if duplicates:
                self._metrics.appends.labels("duplicate").inc(duplicates)

    async def _prepare(self, entries: Sequence[bytes]) -> list[object]:
        """The gate's history-free checks of each entry (its Prepared, or its Rejection), in the
        verifier threads (or the ingest workers): the entries split in one contiguous run per
        thread."""
        assert self._gate is not None
        loop = asyncio.get_running_loop()
        step = -(-len(entries) // self._runs)
        runs = [entries[at : at + step] for at in range(0, len(entries), step)]
        done = await asyncio.gather(
            *(loop.run_in_executor(self._verifiers, self._prepare_run, run) for run in runs)
        )
        return [p for run in done for p in run]

    def _prepare_run(self, entries: Sequence[bytes]) -> list[object]:
        assert self._gate is not None
        out: list[object] = []
        if self._ingest is not None:
            try:
                out += self._ingest.prepare(entries, self._gate.committed.key)
            except Exception as e:  # a worker failed: this run's entries fail, nothing else
                return [unexpected_failure(e)] * len(entries)
        else:
            for entry in entries:
                try:
                    out.append(self._gate.prepare(entry))
                except Rejection as e:
                    out.append(e)
                except Exception as e:  # this entry alone fails
                    out.append(unexpected_failure(e))
        # Prepared either way, what admission will read is read here, outside the integrator.
        self._gate.read_ahead(out)
        return out

    async def Append(self, request: pb.AppendRequest, context: Context) -> pb.AppendResponse:
        (outcome,) = await (await self._submit_answered([request.entry], context.peer()))
        if isinstance(outcome, RequestError):
            await abort(context, outcome)
        response = pb.AppendResponse()
        _put_receipt(response, outcome)
        # The proof from the client's trusted size to the receipt's checkpoint spares it a
        # second round trip; none where there is nothing to prove (it then asks, or fails).
        first, size = request.consistency_from, outcome.tree_size
        if 0 < first < size:
            response.consistency_proof.extend(
                proofs.prove_consistency(first, size, TileHashReader(size, self._tiles))
            )
        return response

    async def AppendBatch(
        self, request: pb.AppendBatchRequest, context: Context
    ) -> pb.AppendBatchResponse:
        if len(request.entries) > self._max_batch:
            await abort(
                context,
                invalid(
                    f"batch has {len(request.entries)} entries; "
                    f"send at most {self._max_batch} per call"
                ),
            )
        outcomes = await (await self._submit_answered(request.entries, context.peer()))
        response = pb.AppendBatchResponse()
        add = response.results.add
        for outcome in outcomes:
            _put_result(add(), outcome)
        return response

    async def AppendStream(
        self, request_iterator: AsyncIterator[pb.AppendRequest], context: Context
    ) -> AsyncIterator[pb.AppendResult]:
        # A reader takes entries as they arrive; a submitter sends everything read so far (at
        # most max_batch entries) as one chunk (one sequencer item: prepared together, appended
        # in order) whenever fewer than STREAM_CHUNKS chunks await their results, so under load
        # chunks grow by themselves. Reading pauses while STREAM_WINDOW entries are read and not
        # yet submitted. Results go back in the order the entries came. (The read entries are a
        # plain list and two events, not an asyncio.Queue: no queue bookkeeping per entry.)
        arrived: list[bytes] = []
        ended = False
        more = asyncio.Event()  # arrived grew, or the request stream ended
        room = asyncio.Event()  # arrived shrank below STREAM_WINDOW
        chunks: asyncio.Queue[asyncio.Future[list[Outcome]] | None] = asyncio.Queue(STREAM_CHUNKS)

        async def read() -> None:
            nonlocal ended
            try:
                async for request in request_iterator:
                    arrived.append(request.entry)
                    more.set()
                    while len(arrived) >= STREAM_WINDOW:  # the window is full: wait for room
                        room.clear()
                        await room.wait()
            finally:
                ended = True
                more.set()

        async def submit() -> None:
            try:
                while arrived or not ended:
                    if not arrived:
                        more.clear()
                        await more.wait()
                        continue
                    chunk = arrived[: self._max_batch]
                    del arrived[: self._max_batch]
                    room.set()
                    await chunks.put(await self._submit_answered(chunk, context.peer()))
            finally:  # the responder always learns the stream's end: it never waits forever
                await chunks.put(None)

        reader = asyncio.ensure_future(read())
        submitter = asyncio.ensure_future(submit())
        try:
            while (task := await chunks.get()) is not None:
                for outcome in await task:
                    result = pb.AppendResult()
                    _put_result(result, outcome)
                    yield result
            await reader  # surfaces a broken request stream
            await submitter
        finally:
            for helper in (reader, submitter):
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            while not chunks.empty():
                if (left := chunks.get_nowait()) is not None:
                    left.cancel()

    # Reads.

    def _checkpoint(self) -> pb.Checkpoint:
        cp = self._sequencer.checkpoint
        message = pb.Checkpoint(note=self._sequencer.note, size=cp.size, root_hash=cp.root_hash)
        cosigned = self._published.cosigned()
        if cosigned is not None:
            message.cosigned_size, message.cosigned_note = cosigned
        return message

    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: Context
    ) -> pb.Checkpoint:
        await self._sequencer.refresh()  # several frontends: the newest any of them made
        return self._checkpoint()

    async def WatchCheckpoints(
        self, request: pb.WatchCheckpointsRequest, context: Context
    ) -> AsyncIterator[pb.Checkpoint]:
        size = -1
        while await self._sequencer.wait_beyond(size):
            message = self._checkpoint()
            size = message.size
            yield message

    async def AddCosignature(
        self, request: pb.AddCosignatureRequest, context: Context
    ) -> pb.AddCosignatureResponse:
        try:
            # Signature checks and a synced write: off the event loop.
            loop = asyncio.get_running_loop()
            merged = await loop.run_in_executor(
                self._verifiers, self._add_cosignature, request.note
            )
            return pb.AddCosignatureResponse(cosigned_note=merged)
        except RequestError as e:
            await abort(context, e)

    def _add_cosignature(self, cosigned: str) -> str:
        if not self._witnesses:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this log trusts no witnesses; its operator adds them with serve --witness-key",
            )
        try:
            text, _ = note.parse_note(cosigned)
            cp = checkpoints.parse(text)
        except MerkleError as e:
            raise invalid(f"not a cosigned checkpoint note: {e}") from None
        issued = self._storage.checkpoint_at(cp.size)
        if issued is None or note.parse_note(issued)[0] != text:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this log never signed that checkpoint of size {cp.size}; cosign one it served",
            )
        try:
            opened = note.open_note(cosigned, self._witnesses)
        except UnverifiedNoteError:
            raise RequestError(
                grpc.StatusCode.PERMISSION_DENIED,
                "the note has no cosignature from a witness this log trusts",
            ) from None
        except MerkleError as e:
            raise invalid(f"a cosignature does not verify: {e}") from None
        lines = "".join(sig.line() for sig in opened.signatures)
        return self._published.add(cp.size, issued, f"{text}\n{lines}")

    async def _catch_up(self, asked: int) -> None:
        """The current tree (asked 0) or one this frontend has not seen may be another
        frontend's newer one: on a shared log, look first."""
        if not asked or asked > self._sequencer.checkpoint.size:
            await self._sequencer.refresh()

    def _tree_size(self, asked: int) -> int:
        size = self._sequencer.checkpoint.size
        if asked > size:
            raise out_of_range(f"tree size {asked} is beyond the log's current size {size}")
        return asked or size

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: Context
    ) -> pb.InclusionProof:
        if self._proof_counts is not None:
            self._proof_counts["inclusion"].inc()
        try:
            await self._catch_up(request.tree_size)
            size = self._tree_size(request.tree_size)
            if request.HasField("leaf_hash"):
                if len(request.leaf_hash) != 32:
                    raise invalid(f"leaf_hash is {len(request.leaf_hash)} bytes; a leaf hash is 32")
                index = await self._leaves.index_of(request.leaf_hash)
                if index is None:
                    raise RequestError(
                        grpc.StatusCode.NOT_FOUND, "no entry with that leaf hash in this log"
                    )
            elif request.HasField("index"):
                index = request.index
            else:
                raise invalid("give the entry's index or its leaf_hash")
            if index >= size and not request.tree_size:
                await self._catch_up(index + 1)  # appended through another frontend
                size = self._tree_size(0)
            if index >= size:
                raise out_of_range(f"entry {index} is not in the tree of size {size}")
            reader = TileHashReader(size, self._tiles)
            leaf = reader.read_hashes([(0, index)])[0]
            hashes = proofs.prove_inclusion(index, size, reader)
        except RequestError as e:
            await abort(context, e)
        return pb.InclusionProof(index=index, tree_size=size, leaf_hash=leaf, hashes=hashes)

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: Context
    ) -> pb.ConsistencyProof:
        if self._proof_counts is not None:
            self._proof_counts["consistency"].inc()
        try:
            await self._catch_up(max(request.first, request.second))
            second = self._tree_size(request.second)
            if request.first == 0:
                raise invalid(
                    "first is 0: every tree extends the empty tree, so there is nothing to prove"
                )
            if request.first > second:
                raise invalid(f"first ({request.first}) is larger than second ({second})")
            hashes = proofs.prove_consistency(
                request.first, second, TileHashReader(second, self._tiles)
            )
        except RequestError as e:
            await abort(context, e)
        return pb.ConsistencyProof(first=request.first, second=second, hashes=hashes)

    async def GetEntries(
        self, request: pb.GetEntriesRequest, context: Context
    ) -> AsyncIterator[pb.Entry]:
        try:
            self._auditors.check(context)
            await self._catch_up(request.end)
            end = self._tree_size(request.end)
            if request.start >= end:
                raise out_of_range(f"start {request.start} is not before end {end}")
        except RequestError as e:
            await abort(context, e)
        end = min(end, request.start + self._page)
        # A shared store's reads are round trips (a bundle, the page's verdicts): off the loop.
        batch, verdicts = await read_off_loop(self._storage, self._stored_page, request.start, end)
        try:
            hashes = self._checked_leaf_hashes(request.start, end, batch)
        except RequestError as e:
            await abort(context, e)
        for (index, data), leaf_hash, verdict in zip(batch, hashes, verdicts, strict=True):
            entry = pb.Entry(index=index, data=data, leaf_hash=leaf_hash)
            if verdict is not None:
                entry.verdict = pb.Verdict.ValueType(verdict.verdict)
                entry.verdict_reason = verdict.reason
                entry.admitted_ms = verdict.admitted_ms
            yield entry

    def _stored_page(
        self, start: int, end: int
    ) -> tuple[list[tuple[int, bytes]], list[VerdictRecord | None]]:
        """Entries [start, end) as stored (fewer if the store stops early) and the verdict
        recorded for each (none on a log of opaque entries): one read of each, for GetEntries."""
        batch = list(self._storage.entries(start, end))
        if self._gate is None:
            return batch, [None] * len(batch)
        return batch, read_verdicts(self._storage.get_many, [index for index, _ in batch])

    def _checked_leaf_hashes(
        self, start: int, end: int, batch: list[tuple[int, bytes]]
    ) -> list[bytes]:
        """The tree's leaf hashes of entries [start, end), after checking the stored entries are
        exactly those leaves: a damaged database is reported, never served as genuine."""
        tree = TileHashReader(end, self._tiles).read_hashes([(0, i) for i in range(start, end)])
        stored = hashing.leaf_hashes([data for _, data in batch])
        for offset, index in enumerate(range(start, end)):
            if offset >= len(batch) or batch[offset][0] != index or stored[offset] != tree[offset]:
                raise RequestError(
                    grpc.StatusCode.DATA_LOSS,
                    f"entry {index} on disk does not match the log's tree; "
                    "the database was altered or damaged",
                )
        return tree

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        try:
            self._auditors.check(context)
            if self._gate is None:
                raise RequestError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "this log holds opaque entries; there is nothing to search",
                )
            await self._catch_up(0)
            size = self._sequencer.checkpoint.size
            # Index scans of a shared store are round trips: off the loop.
            found = await read_off_loop(self._storage, search.search, self._storage, request)
            # On a shared log the index may hold a batch another frontend has committed but
            # not yet published: hits stop at the tree served (oldest first, so the rest is a
            # tail, found again from next_index once published).
            beyond = next((k for k, hit in enumerate(found.hits) if hit.index >= size), None)
            if beyond is not None:
                found.next_index = found.hits[beyond].index
                del found.hits[beyond:]
            return found
        except search.SearchError as e:
            await abort(context, invalid(str(e)))
        except RequestError as e:
            await abort(context, e)


def _put_result(result: pb.AppendResult, outcome: Outcome) -> None:
    """Write an entry's outcome into a new, empty AppendResult (in place: no message copies)."""
    if isinstance(outcome, RequestError):
        result.error.code = outcome.code.value[0]
        result.error.message = outcome.message
    else:
        _put_receipt(result.ok, outcome)


def _put_receipt(response: pb.AppendResponse, r: Receipt) -> None:
    """Write a receipt into a new, empty AppendResponse (fields at their defaults stay unset)."""
    response.index = r.leaf_index
    response.leaf_hash = r.leaf_hash
    response.checkpoint = r.checkpoint
    response.inclusion_proof.extend(r.proof)
    if r.duplicate:
        response.duplicate = True
    if r.verdict:
        response.verdict = r.verdict  # type: ignore[assignment]
        response.verdict_reason = r.verdict_reason
