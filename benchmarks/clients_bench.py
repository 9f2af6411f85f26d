"""The client side of bench_append.py: the echo server (the ceiling of gRPC itself in Python,
with the log's own messages; its StreamShaped answers each message with a real receipt taken
from the log, take_receipt) and the client processes that load a server.

A load is a job per client process (Workers): its callers (asyncio tasks, or threads for the
threads harness) call one method of one or more targets for --warmup and --duration seconds,
closed loop or at a rate, and report calls, entries, refusals, scope verdicts and per-call
latencies (a stream's per message). The requests are random opaque entries, proof requests at
a tree size, or (statements_batch) AppendBatch requests of signed statements each process
built and serialized ahead of the load (build_statements jobs, untimed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import threading
import time
from array import array
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import grpc
from affidavit.proto import affidavit_pb2 as pb

ENTRY_SIZE = 1024
BATCH = 100
STREAM_WINDOW = 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 256 << 20),
]

LOG = "/affidavit.v1.Log/"
ECHO = "/bench.Echo/"


# --------------------------------------------------------------------------------------------
# The echo server: the ceiling of gRPC itself in Python, with the log's own messages.
# --------------------------------------------------------------------------------------------


async def _echo_unary(req: pb.AppendRequest, ctx: Any) -> pb.AppendResponse:
    return pb.AppendResponse(index=len(req.entry))


async def _echo_batch(req: pb.AppendBatchRequest, ctx: Any) -> pb.AppendBatchResponse:
    return pb.AppendBatchResponse(
        results=[pb.AppendResult(ok=pb.AppendResponse(index=i)) for i in range(len(req.entries))]
    )


async def _echo_stream(requests: Any, ctx: Any) -> Any:
    """The first stream ceiling (echo_stream): each request answered with an AppendResult of
    a few bytes (its index alone), built per message. Kept as it was so that earlier sessions'
    append_stream/echo_stream figures stay comparable; it is not the load's shape, since a real
    receipt is 0.6-0.7 KB (see _shaped_stream)."""
    i = 0
    async for _ in requests:
        yield pb.AppendResult(ok=pb.AppendResponse(index=i))
        i += 1


def _shaped_stream(receipt: bytes) -> Callable[[Any, Any], Any]:
    """The fair stream ceiling (echo_stream_shaped): each request answered with `receipt`, the
    serialized AppendResult of a real AppendStream receipt (take_receipt: checkpoint note, leaf
    hash, inclusion proof at the load's tree size), sent as the same prebuilt bytes each time.
    gRPC then moves the messages AppendStream moves, in both directions, and the echo does no
    work per message beyond gRPC's own."""

    async def answer(requests: Any, ctx: Any) -> Any:
        async for _ in requests:
            yield receipt

    return answer


def take_receipt(target: str) -> bytes:
    """A real receipt of the log at target, of the size the load's receipts have: the
    serialized AppendResult of median length among those AppendStream answers for one window
    (STREAM_WINDOW) of fresh random entries, sent at once as a stream caller does (the log
    grows by them). Not the receipt of one entry sent alone: a checkpoint's newest leaf has
    the shortest inclusion proof (one hash per set bit of the tree size), while a leaf of a
    chunk of many has about as many hashes as the tree has levels."""
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stream = channel.stream_stream(
            LOG + "AppendStream",
            request_serializer=pb.AppendRequest.SerializeToString,
            response_deserializer=_as_is,
        )
        blob = random.randbytes(ENTRY_SIZE * STREAM_WINDOW)
        requests = (
            pb.AppendRequest(entry=blob[i * ENTRY_SIZE : (i + 1) * ENTRY_SIZE])
            for i in range(STREAM_WINDOW)
        )
        receipts = sorted(stream(requests, timeout=60), key=len)
    refused = [r for r in receipts if not pb.AppendResult.FromString(r).HasField("ok")]
    if len(receipts) != STREAM_WINDOW or refused:
        raise RuntimeError(
            f"the log answered {len(receipts)} of {STREAM_WINDOW} entries, refused "
            f"{len(refused)}: {refused[:1]!r}"
        )
    return bytes(receipts[len(receipts) // 2])


async def echo_serve(receipt: bytes = b"") -> None:
    """Serve bench.Echo on a free loopback port, printed as `PORT <n>` (bench_append.py
    --echo-server runs this in its own process); with a receipt, StreamShaped answers it."""
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                _echo_unary,
                request_deserializer=pb.AppendRequest.FromString,
                response_serializer=pb.AppendResponse.SerializeToString,
            ),
            "Batch": grpc.unary_unary_rpc_method_handler(
                _echo_batch,
                request_deserializer=pb.AppendBatchRequest.FromString,
                response_serializer=pb.AppendBatchResponse.SerializeToString,
            ),
            "Stream": grpc.stream_stream_rpc_method_handler(
                _echo_stream,
                request_deserializer=pb.AppendRequest.FromString,
                response_serializer=pb.AppendResult.SerializeToString,
            ),
            "StreamShaped": grpc.stream_stream_rpc_method_handler(
                _shaped_stream(receipt),
                request_deserializer=pb.AppendRequest.FromString,
                response_serializer=_as_is,
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"PORT {port}", flush=True)
    await server.wait_for_termination()


# --------------------------------------------------------------------------------------------
# Client jobs: run in worker processes, one job per process per load.
# --------------------------------------------------------------------------------------------

# kind -> (method path, streaming, request type, response type, entries per call)
KINDS: dict[str, tuple[str, bool, Any, Any]] = {
    "append": (LOG + "Append", False, pb.AppendRequest, pb.AppendResponse),
    "append_batch": (LOG + "AppendBatch", False, pb.AppendBatchRequest, pb.AppendBatchResponse),
    "append_stream": (LOG + "AppendStream", True, pb.AppendRequest, pb.AppendResult),
    "fill": (LOG + "AppendBatch", False, pb.AppendBatchRequest, pb.AppendBatchResponse),
    "echo": (ECHO + "Unary", False, pb.AppendRequest, pb.AppendResponse),
    "echo_batch": (ECHO + "Batch", False, pb.AppendBatchRequest, pb.AppendBatchResponse),
    "echo_stream": (ECHO + "Stream", True, pb.AppendRequest, pb.AppendResult),
    "echo_stream_shaped": (ECHO + "StreamShaped", True, pb.AppendRequest, pb.AppendResult),
    "inclusion": (LOG + "GetInclusionProof", False, pb.GetInclusionProofRequest, pb.InclusionProof),
    "consistency": (
        LOG + "GetConsistencyProof",
        False,
        pb.GetConsistencyProofRequest,
        pb.ConsistencyProof,
    ),
    # AppendBatch requests of signed statements, built and serialized before the load starts.
    "statements_batch": (LOG + "AppendBatch", False, None, pb.AppendBatchResponse),
}

_BUILT: dict[str, list[list[bytes]]] = {}
"""Per worker process: serialized requests built ahead of a load, by build id, per caller."""


def _request_maker(
    job: dict[str, Any], rng: random.Random, caller: int
) -> tuple[Callable[[], Any], int]:
    """A function making one request of the job's kind (None once a job's prebuilt requests
    run out), and the entries each request carries."""
    kind = job["kind"]
    if kind == "statements_batch":
        prebuilt = iter(_BUILT[job["build_id"]][caller])
        return (lambda: next(prebuilt, None)), job["batch"]
    if kind in ("append", "echo", "append_stream", "echo_stream", "echo_stream_shaped"):
        return (lambda: pb.AppendRequest(entry=rng.randbytes(ENTRY_SIZE))), 1
    if kind in ("append_batch", "echo_batch"):
        n = job.get("batch", BATCH)

        def batch() -> Any:
            blob = rng.randbytes(ENTRY_SIZE * n)
            return pb.AppendBatchRequest(
                entries=[blob[i * ENTRY_SIZE : (i + 1) * ENTRY_SIZE] for i in range(n)]
            )

        return batch, n
    size = job["tree_size"]
    if kind == "inclusion":
        return (lambda: pb.GetInclusionProofRequest(index=rng.randrange(size), tree_size=size)), 1
    if kind == "consistency":
        return (
            lambda: pb.GetConsistencyProofRequest(first=rng.randrange(1, size + 1), second=size)
        ), 1
    raise ValueError(kind)


def _errors_in(resp: Any) -> int:
    """Per-entry refusals inside a successful batch or stream response."""
    if isinstance(resp, pb.AppendBatchResponse):
        return sum(1 for r in resp.results if r.HasField("error"))
    if isinstance(resp, pb.AppendResult):
        return 1 if resp.HasField("error") else 0
    return 0


class _Tally:
    def __init__(self) -> None:
        self.calls = 0
        self.entries = 0
        self.errors = 0
        self.lat = array("d")
        self.error_codes: collections.Counter[str] = collections.Counter()
        self.verdict_counts: collections.Counter[str] = collections.Counter()
        self.first_error = ""
        self.exhausted = False

    def entry_errors(self, resp: Any) -> None:
        """Count a batch's per-entry refusals by code; keep the first message."""
        if isinstance(resp, pb.AppendBatchResponse):
            for r in resp.results:
                if r.HasField("error"):
                    self.error_codes[f"entry:{r.error.code}"] += 1
                    self.first_error = self.first_error or r.error.message

    def verdicts(self, resp: Any) -> None:
        """Count the scope verdicts a batch of agent actions got."""
        if isinstance(resp, pb.AppendBatchResponse):
            for r in resp.results:
                if r.HasField("ok") and r.ok.verdict:
                    self.verdict_counts[pb.Verdict.Name(r.ok.verdict)] += 1

    def result(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "entries": self.entries,
            "errors": self.errors,
            "error_codes": dict(self.error_codes),
            "verdicts": dict(self.verdict_counts),
            "first_error": self.first_error,
            "exhausted": self.exhausted,
            "lat": self.lat.tobytes(),
        }


def _clock(job: dict[str, Any]) -> tuple[float, float, float]:
    """(start, measure-from, end) on this process's perf_counter, from the job's wall time."""
    start = time.perf_counter() + (job["start_at"] - time.time())
    return start, start + job["warmup"], start + job["warmup"] + job["duration"]


async def _aio_job(job: dict[str, Any]) -> dict[str, Any]:
    path, streaming, req_t, resp_t = KINDS[job["kind"]]
    # Requests of req_t None are bytes already (prebuilt): sent as they are.
    serialize = _as_is if req_t is None else req_t.SerializeToString
    tally = _Tally()
    # Several comma-separated targets (frontends of one log): caller k calls target k mod n.
    async with contextlib.AsyncExitStack() as stack:
        methods: list[Any] = []
        for target in job["target"].split(","):
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            )
            await asyncio.wait_for(channel.channel_ready(), 10)
            make_method = channel.stream_stream if streaming else channel.unary_unary
            methods.append(
                make_method(
                    path, request_serializer=serialize, response_deserializer=resp_t.FromString
                )
            )
        t_start, t_measure, t_end = _clock(job)
        callers = job["callers"]
        rate = job.get("rate")  # calls/s for this process, open loop; None = closed loop

        async def unary_caller(k: int) -> None:
            method = methods[k % len(methods)]
            rng = random.Random(job["seed"] * 1000 + k)
            make, per_call = _request_maker(job, rng, k)
            interval = callers / rate if rate else 0.0
            sched = t_start + (k / callers) * interval
            await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
            while True:
                now = time.perf_counter()
                if rate:
                    if sched >= t_end:
                        break
                    if now < sched:
                        await asyncio.sleep(sched - now)
                    t0 = sched
                    sched += interval
                else:
                    if now >= t_end:
                        break
                    t0 = now
                req = make()
                if req is None:
                    tally.exhausted = True
                    break
                try:
                    resp = await method(req, timeout=60)
                except grpc.aio.AioRpcError as e:
                    tally.errors += 1
                    tally.error_codes[e.code().name] += 1
                    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        await asyncio.sleep(0.01)
                    continue
                t1 = time.perf_counter()
                bad = _errors_in(resp)
                tally.errors += bad
                if bad:
                    tally.entry_errors(resp)
                if t_measure <= t1 < t_end:
                    tally.calls += 1
                    tally.entries += per_call - bad
                    tally.lat.append((t1 - t0) * 1000)
                    tally.verdicts(resp)

        async def stream_caller(k: int) -> None:
            method = methods[k % len(methods)]
            rng = random.Random(job["seed"] * 1000 + k)
            make, _ = _request_maker(job, rng, k)
            call = method(timeout=job["warmup"] + job["duration"] + 60)
            window = asyncio.Semaphore(job.get("window", STREAM_WINDOW))
            sent: collections.deque[float] = collections.deque()

            async def writer() -> None:
                await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
                while time.perf_counter() < t_end:
                    await window.acquire()
                    sent.append(time.perf_counter())
                    await call.write(make())
                await call.done_writing()

            w = asyncio.ensure_future(writer())
            async for resp in call:
                t0 = sent.popleft()
                window.release()
                t1 = time.perf_counter()
                if resp.HasField("error"):
                    tally.errors += 1
                    tally.error_codes[str(resp.error.code)] += 1
                elif t_measure <= t1 < t_end:
                    tally.calls += 1
                    tally.entries += 1
                    tally.lat.append((t1 - t0) * 1000)
            await w

        async def fill_caller(k: int, remaining: list[int]) -> None:
            method = methods[k % len(methods)]
            rng = random.Random(job["seed"] * 1000 + k)
            while remaining[0] > 0:
                n = min(job["batch"], remaining[0])
                remaining[0] -= n
                blob = rng.randbytes(ENTRY_SIZE * n)
                req = pb.AppendBatchRequest(
                    entries=[blob[i * ENTRY_SIZE : (i + 1) * ENTRY_SIZE] for i in range(n)]
                )
                try:
                    resp = await method(req, timeout=120)
                except grpc.aio.AioRpcError as e:
                    tally.errors += n
                    tally.error_codes[e.code().name] += 1
                    remaining[0] += n
                    await asyncio.sleep(0.05)
                    continue
                bad = _errors_in(resp)
                if bad:
                    tally.errors += bad
                    remaining[0] += bad  # refused (queue full): send that many again
                    await asyncio.sleep(0.01)
                tally.calls += 1
                tally.entries += n - bad

        if job["kind"] == "fill":
            remaining = [job["quota"]]
            await asyncio.gather(*(fill_caller(k, remaining) for k in range(callers)))
        elif streaming:
            await asyncio.gather(*(stream_caller(k) for k in range(callers)))
        else:
            await asyncio.gather(*(unary_caller(k) for k in range(callers)))
    return tally.result()


def _as_is(request: bytes) -> bytes:
    return request


def _threads_job(job: dict[str, Any]) -> dict[str, Any]:
    path, streaming, req_t, resp_t = KINDS[job["kind"]]
    if streaming or job["kind"] == "fill" or req_t is None:
        raise ValueError("the threads harness drives unary calls of built requests only")
    tally = _Tally()
    lock = threading.Lock()
    with grpc.insecure_channel(job["target"], options=CHANNEL_OPTIONS) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        method = channel.unary_unary(
            path,
            request_serializer=req_t.SerializeToString,
            response_deserializer=resp_t.FromString,
        )
        t_start, t_measure, t_end = _clock(job)
        callers = job["callers"]
        rate = job.get("rate")

        def caller(k: int) -> None:
            rng = random.Random(job["seed"] * 1000 + k)
            make, per_call = _request_maker(job, rng, k)
            interval = callers / rate if rate else 0.0
            sched = t_start + (k / callers) * interval
            mine = _Tally()
            time.sleep(max(0.0, t_start - time.perf_counter()))
            while True:
                now = time.perf_counter()
                if rate:
                    if sched >= t_end:
                        break
                    if now < sched:
                        time.sleep(sched - now)
                    t0 = sched
                    sched += interval
                else:
                    if now >= t_end:
                        break
                    t0 = now
                try:
                    resp = method(make(), timeout=60)
                except grpc.RpcError as e:
                    mine.errors += 1
                    mine.error_codes[e.code().name] += 1
                    continue
                t1 = time.perf_counter()
                bad = _errors_in(resp)
                mine.errors += bad
                if t_measure <= t1 < t_end:
                    mine.calls += 1
                    mine.entries += per_call - bad
                    mine.lat.append((t1 - t0) * 1000)
            with lock:
                tally.calls += mine.calls
                tally.entries += mine.entries
                tally.errors += mine.errors
                tally.error_codes.update(mine.error_codes)
                tally.lat.extend(mine.lat)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return tally.result()


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    if job["kind"] == "build_statements":
        return _build_statements(job)
    return asyncio.run(_aio_job(job)) if job["mode"] == "aio" else _threads_job(job)


def _build_statements(job: dict[str, Any]) -> dict[str, Any]:
    """Build and keep (in _BUILT) the AppendBatch requests of a statements load (see
    signed_requests). The log has never seen them, so every ingest check runs on each."""
    t0 = time.perf_counter()
    per_caller = signed_requests(job)
    _BUILT.clear()  # one load's requests at a time
    _BUILT[job["build_id"]] = per_caller
    count = job["callers"] * job["requests"] * job["batch"]
    return {"built": count, "seconds": time.perf_counter() - t0}


def signed_requests(job: dict[str, Any]) -> list[list[bytes]]:
    """The serialized AppendBatch requests of a build_statements job, per caller: `batch`
    sessions of one agent, and request j holding statement j of each session — an AgentAction
    INTENT under the job's grant, signed, chained to the session's previous statement."""
    from affidavit.statements import build
    from affidavit.statements.canonical import canonical_json
    from affidavit.statements.ids import uuid7
    from affidavit.statements.redact import parameters_digest
    from affidavit.statements.signing import IdentityKey

    key = IdentityKey.from_text(job["agent_key"])
    actor = pb.Actor(agent_id=key.identity_id, agent_version="1.0.0", model="bench-model")
    authorization = pb.Authorization(
        policy_id="agents", decision=pb.ALLOW, enforcement_point="bench-gateway"
    )
    per_caller = []
    for caller in range(job["callers"]):
        sessions = [build.SessionSigner(key) for _ in range(job["batch"])]
        requests = []
        for j in range(job["requests"]):
            leaves = []
            for s, session in enumerate(sessions):
                params = {"path": f"src/pkg/module_{caller}_{s}_{j}.py", "ref": "main"}
                body = pb.AgentAction(
                    phase=pb.AgentAction.INTENT,
                    action_id=uuid7(),
                    actor=actor,
                    grant_ids=[job["grant_id"]],
                    authorization=authorization,
                    operation=pb.Operation(
                        operation_name="execute_tool",
                        tool_name="bench.read_file",
                        resource=f"repo:bench/service-{s % 8}",
                        access=pb.READ,
                        parameters_json=canonical_json(params),
                        parameters_digest=parameters_digest(params),
                    ),
                    correlation=pb.Correlation(trace_id=os.urandom(16).hex()),
                )
                leaf = session.sign(body)
                session.advance(leaf)
                leaves.append(leaf)
            requests.append(pb.AppendBatchRequest(entries=leaves).SerializeToString())
        per_caller.append(requests)
    return per_caller


def _worker_loop(conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(_run_job(job))
        except Exception as e:  # reported to the parent, which raises it there
            conn.send({"exception": f"{type(e).__name__}: {e}"})


class Workers:
    """Client processes, each taking one job per load; the jobs start together by wall clock."""

    def __init__(self, n: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conns = []
        self._procs = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_loop, args=(child,), daemon=True)
            p.start()
            self._conns.append(parent)
            self._procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def run(
        self, jobs: list[dict[str, Any]], during: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """Run one job per process (all started together); during() runs here meanwhile."""
        if len(jobs) > len(self._conns):
            raise ValueError("more jobs than client processes")
        for conn, job in zip(self._conns, jobs, strict=False):
            conn.send(job)
        if during is not None:
            during()
        out = [conn.recv() for conn in self._conns[: len(jobs)]]
        for r in out:
            if "exception" in r:
                raise RuntimeError(f"client job failed: {r['exception']}")
        return out

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for p in self._procs:
            p.join(5)
