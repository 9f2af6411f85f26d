#!/usr/bin/env python3
"""Append and proof throughput of a real `affidavit serve` over loopback, with ceilings.

Starts the real server (durable: every batch is one synced LevelDB WriteBatch, as shipped) and
drives it from separate client processes, then measures, in the same run, what the machine can
do without the log at all: a trivial gRPC echo server (generic handlers, same client harness),
LevelDB synced writes, and in-process proof generation from the stored tiles. Prints one JSON
object per line, one per figure; ratio lines compare figures with the project's targets.

    .venv/bin/python benchmarks/bench_append.py              # full run, log of 1,000,000
    .venv/bin/python benchmarks/bench_append.py --quick      # a short smoke run
    .venv/bin/python benchmarks/bench_append.py --log-entries 200000 --profile /tmp/prof
    .venv/bin/python benchmarks/bench_append.py --sections statements --profile /tmp/prof

Every load runs --runs times (default 3) for --duration seconds after --warmup seconds; the
figures are medians over runs. Latencies are per call (per message for streams), in ms; under a
rate limit they are measured from the call's scheduled start, so a server falling behind shows.
server_cpu is the server process's CPU time per wall second (1.0 = one core busy), and
server_cpu_us_per_entry its CPU time per entry answered (all its threads, LevelDB's own
compaction thread included), and, with py-spy installed, server_threads_us_per_entry the same
split by thread (integrator, main: gRPC and the service, verify, publisher, grpc_poller, and
native: threads running no Python, mostly LevelDB's compaction), so the interpreter-lock
threads' share is seen apart from LevelDB's; workers_cpu (and workers_cpu_us_per_entry) that
of the server's ingest worker processes, client_cpu the client processes', other_cpu the rest of the
machine's busy time in the same window: on a shared machine a run with a high other_cpu is a
noisy one, and the CPU time per entry is the steadier figure to compare.

The append and proof sections use random 1 KiB entries, so their log is created with
--entry-format opaque (signed statements would be refused). The statements section creates a
log of the default format and registers (with the genesis admin's key) a human and one agent
per client process, each agent under a grant from the human; each load then sends AppendBatch
requests of 100 AgentAction INTENTs, one from each of 100 sessions per caller, signed and
chained ahead of the load (untimed), so every ingest check runs on each statement: decoding,
schema, secret scan, signature, key, session chain, scope verdict, indexing. Its ceiling is
statements.signing.verify (PyNaCl) on one and on two threads, measured in the same run; with
--profile it is sampled twice: the GIL holder (where the interpreter's time goes) and every
thread on a CPU (which adds the signature checks and LevelDB work done without the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from affidavit.proto import affidavit_pb2 as pb  # noqa: E402

ENTRY_SIZE = 1024
BATCH = 100
STREAM_WINDOW = 1024
BUILD_BATCH = 1000
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 256 << 20),
]

# Targets (from the project's performance card).
TARGET_BATCH = 50_000
TARGET_STREAM = 10_000
TARGET_UNARY_VS_ECHO = 0.70
TARGET_P99_MS = 50.0
TARGET_PROOF_VS_ECHO = 0.70
TARGET_PROOFS_IN_PROCESS = 20_000
TARGET_STATEMENTS = 8_000

LOG = "/affidavit.v1.Log/"
ECHO = "/bench.Echo/"


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def note(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


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
    i = 0
    async for _ in requests:
        yield pb.AppendResult(ok=pb.AppendResponse(index=i))
        i += 1


async def _echo_serve() -> None:
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
    if kind in ("append", "echo", "append_stream", "echo_stream"):
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
    """Build and keep (in _BUILT) the AppendBatch requests of a statements load: for each
    caller, `batch` sessions of one agent, and request j holding statement j of each session —
    an AgentAction INTENT under the job's grant, signed, chained to the session's previous
    statement. The log has never seen them, so every ingest check runs on each."""
    from affidavit.statements import build
    from affidavit.statements.canonical import canonical_json
    from affidavit.statements.ids import uuid7
    from affidavit.statements.redact import parameters_digest
    from affidavit.statements.signing import IdentityKey

    t0 = time.perf_counter()
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
    _BUILT.clear()  # one load's requests at a time
    _BUILT[job["build_id"]] = per_caller
    count = job["callers"] * job["requests"] * job["batch"]
    return {"built": count, "seconds": time.perf_counter() - t0}


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


# --------------------------------------------------------------------------------------------
# Processes under test.
# --------------------------------------------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    return _stat_cpu_s(f"/proc/{pid}/stat")


def _stat_cpu_s(path: str) -> float:
    """User and system CPU seconds from a /proc stat file (a process's or one thread's)."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads_cpu_s(pid: int) -> dict[int, float]:
    """The CPU seconds of each of pid's threads, by thread id."""
    found = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found[int(task)] = _stat_cpu_s(f"/proc/{pid}/task/{task}/stat")
    return found


def _thread_parts(pid: int) -> dict[int, str]:
    """pid's Python threads by thread id, named by what they do (`py-spy dump` names them;
    verify_1 counts as verify). Empty without py-spy: the split is then not printed. Threads
    it does not list run no Python: LevelDB's compaction, gRPC's event engine ("native")."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        return {}
    dump = subprocess.run(
        [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60
    ).stdout
    named = re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, re.M)
    return {int(tid): _part(name) for tid, name in named}


def _part(thread_name: str) -> str:
    """A thread's part: its name less a pool's number (verify_1: verify); MainThread: main."""
    if thread_name == "MainThread":
        return "main"
    if thread_name.endswith("(_poll_wrapper)"):
        return "grpc_poller"
    return re.sub(r"_\d+$", "", thread_name)


def _children(pid: int) -> set[int]:
    """pid's child processes (a server's ingest workers)."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found |= {int(c) for c in f.read().split()}
    return found


def _procs_cpu_s(pids: set[int]) -> float:
    """The CPU seconds of those of pids still running (one that ended counts no more)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += _proc_cpu_s(pid)
    return total


def _machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class Process:
    """A server subprocess whose port is read from its output; stderr is drained to a tail."""

    def __init__(
        self, argv: list[str], port_re: str, *, stream: str, env: dict[str, str] | None = None
    ) -> None:
        # The repository first on the path: the server runs this checkout's code even when the
        # editable install's package list is behind it.
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self.tail: collections.deque[str] = collections.deque(maxlen=50)
        src = self.proc.stdout if stream == "stdout" else self.proc.stderr
        assert src is not None
        found: list[int] = []
        ready = threading.Event()

        def drain(f: Any, look: bool) -> None:
            for line in f:
                self.tail.append(line.rstrip())
                if look and not found and (m := re.search(port_re, line)):
                    found.append(int(m.group(1)))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, args=(src, True), daemon=True).start()
        if stream == "stdout":
            threading.Thread(target=drain, args=(self.proc.stderr, False), daemon=True).start()
        if not ready.wait(60) or not found:
            self.stop()
            raise RuntimeError(f"{argv[0]} did not report its port:\n" + "\n".join(self.tail))
        self.port = found[0]
        self.target = f"127.0.0.1:{self.port}"

    def wait_serving(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as ch:
            stub: Any = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + 30
            while True:
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server never became SERVING:\n" + "\n".join(self.tail))
                time.sleep(0.05)

    def cpu_s(self) -> float:
        return _proc_cpu_s(self.pid)

    def rss_kb(self) -> tuple[int, int]:
        return proc_status(self.pid, "VmRSS"), proc_status(self.pid, "VmHWM")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _serve_help(exe: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [exe, "serve", "--help"], capture_output=True, text=True, env=env, timeout=60
    ).stdout


def start_log_server(
    data_dir: Path,
    *,
    statements: bool = False,
    ingest_workers: int | None = None,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Process:
    """`affidavit serve` creating a log in data_dir: of opaque entries (random bytes are not
    signed statements), or with statements=True the default, checked signed statements (with
    --ingest-workers when given); extra flags and environment (the storage section's
    --storage, --objects)."""
    exe = shutil.which("affidavit", path=str(Path(sys.executable).parent)) or shutil.which(
        "affidavit"
    )
    if exe is None:
        raise RuntimeError("the `affidavit` command is not installed in this environment")
    argv = [exe, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *(extra or [])]
    if not statements and "--entry-format" in _serve_help(exe):
        argv += ["--entry-format", "opaque"]
    if ingest_workers is not None:
        argv += ["--ingest-workers", str(ingest_workers)]
    srv = Process(argv, r" at 127\.0\.0\.1:(\d+),", stream="stderr", env=env)
    srv.wait_serving()
    return srv


def start_echo_server() -> Process:
    return Process(
        [sys.executable, str(Path(__file__).resolve()), "--echo-server"],
        r"^PORT (\d+)",
        stream="stdout",
    )


# --------------------------------------------------------------------------------------------
# Loads and statistics.
# --------------------------------------------------------------------------------------------


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def r3(x: float) -> float:
    return round(x, 3)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workers = Workers(args.procs)
        self.seed = 1
        self.server: Process | None = None  # the process whose CPU a load reports

    def close(self) -> None:
        self.workers.close()

    def load_once(
        self,
        target: str,
        kind: str,
        callers: int,
        mode: str,
        procs: int,
        *,
        duration: float | None = None,
        rate: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """One run: callers split over procs client processes; totals and latency percentiles."""
        procs = max(1, min(procs, callers))
        duration = duration or self.args.duration
        split = [callers // procs + (1 if i < callers % procs else 0) for i in range(procs)]
        start_at = time.time() + 0.5
        jobs = []
        for i, c in enumerate(split):
            self.seed += 1
            jobs.append(
                {
                    "target": target,
                    "kind": kind,
                    "callers": c,
                    "mode": mode,
                    "start_at": start_at,
                    "warmup": self.args.warmup,
                    "duration": duration,
                    "rate": rate * c / callers if rate else None,
                    "seed": self.seed * 7919 + i,
                    **extra,
                }
            )
        cpu: dict[str, float] = {}
        threads: dict[int, float] = {}  # the server's CPU by thread, per wall second
        server, clients = self.server, self.workers.pids

        def sample() -> None:
            # CPU over exactly the measured window: the server's and all client processes'.
            time.sleep(max(0.0, start_at + self.args.warmup - time.time()))
            s0 = server.cpu_s() if server else 0.0
            t0s = _threads_cpu_s(server.pid) if server else {}
            helpers = _children(server.pid) if server else set()  # its ingest workers
            w0 = _procs_cpu_s(helpers)
            c0 = sum(_proc_cpu_s(pid) for pid in clients)
            m0 = _machine_busy_s()
            t0 = time.perf_counter()
            time.sleep(duration)
            wall = time.perf_counter() - t0
            cpu["server"] = ((server.cpu_s() if server else 0.0) - s0) / wall
            for tid, spent in (_threads_cpu_s(server.pid) if server else {}).items():
                threads[tid] = (spent - t0s.get(tid, 0.0)) / wall
            cpu["workers"] = (_procs_cpu_s(helpers) - w0) / wall
            cpu["client"] = (sum(_proc_cpu_s(pid) for pid in clients) - c0) / wall
            # Whatever else kept the cores busy meanwhile (other work on a shared machine):
            # a run with a high figure here is a noisy one.
            cpu["other"] = (
                (_machine_busy_s() - m0) / wall - cpu["server"] - cpu["workers"] - cpu["client"]
            )

        results = self.workers.run(jobs, during=sample)
        parts: dict[str, float] = {}
        if server is not None and threads:
            named = _thread_parts(server.pid)
            if named:
                for tid, share in threads.items():
                    part = named.get(tid, "native")
                    parts[part] = parts.get(part, 0.0) + share
        lat: list[float] = []
        for r in results:
            a = array("d")
            a.frombytes(r["lat"])
            lat.extend(a)
        lat.sort()
        codes: collections.Counter[str] = collections.Counter()
        verdicts: collections.Counter[str] = collections.Counter()
        for r in results:
            codes.update(r["error_codes"])
            verdicts.update(r["verdicts"])
        return {
            "calls_per_s": sum(r["calls"] for r in results) / duration,
            "entries_per_s": sum(r["entries"] for r in results) / duration,
            "p50_ms": pct(lat, 0.50),
            "p99_ms": pct(lat, 0.99),
            "errors": sum(r["errors"] for r in results),
            "error_codes": dict(codes),
            "verdicts": dict(verdicts),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
            "exhausted": any(r["exhausted"] for r in results),
            "server_cpu": cpu["server"],
            "workers_cpu": cpu["workers"],
            "client_cpu": cpu["client"],
            "other_cpu": cpu["other"],
            "server_threads_cpu": parts,
        }

    def load(
        self,
        bench: str,
        target: str,
        kind: str,
        callers: int,
        mode: str,
        procs: int,
        *,
        emit_it: bool = True,
        before: Callable[[], dict[str, Any]] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """--runs runs of one load; the medians, printed as one figure. before() runs ahead of
        each run, untimed, and gives more job keys."""
        runs = [
            self.load_once(target, kind, callers, mode, procs, **kw, **(before() if before else {}))
            for _ in range(self.args.runs)
        ]
        fig: dict[str, Any] = {"bench": bench, "callers": callers, "mode": mode}
        fig["client_procs"] = max(1, min(procs, callers))
        keys = ("calls_per_s", "entries_per_s", "p50_ms", "p99_ms")
        for key in keys + ("server_cpu", "workers_cpu", "client_cpu", "other_cpu"):
            fig[key] = r3(statistics.median(r[key] for r in runs))
        fig["runs"] = len(runs)
        fig["entries_per_s_each"] = [round(r["entries_per_s"]) for r in runs]
        # The server's CPU time per entry: steadier than the rate on a shared machine.
        fig["server_cpu_us_per_entry"] = r3(
            statistics.median(1e6 * r["server_cpu"] / max(1.0, r["entries_per_s"]) for r in runs)
        )
        # Where the server's CPU goes, by thread (its integrator, its main thread: gRPC and
        # the service, verify threads, LevelDB's and gRPC's native threads): CPU µs per entry.
        parts = sorted({part for r in runs for part in r["server_threads_cpu"]})
        if parts:
            fig["server_threads_us_per_entry"] = {
                part: r3(
                    statistics.median(
                        1e6 * r["server_threads_cpu"].get(part, 0.0) / max(1.0, r["entries_per_s"])
                        for r in runs
                    )
                )
                for part in parts
            }
        if any(r["workers_cpu"] for r in runs):
            fig["workers_cpu_us_per_entry"] = r3(
                statistics.median(
                    1e6 * r["workers_cpu"] / max(1.0, r["entries_per_s"]) for r in runs
                )
            )
        errors = sum(r["errors"] for r in runs)
        if errors:
            codes: collections.Counter[str] = collections.Counter()
            for r in runs:
                codes.update(r["error_codes"])
            fig["errors"] = errors
            fig["error_codes"] = dict(codes)
            fig["first_error"] = next((r["first_error"] for r in runs if r["first_error"]), "")
        verdicts: collections.Counter[str] = collections.Counter()
        for r in runs:
            verdicts.update(r["verdicts"])
        if verdicts:
            fig["verdicts"] = dict(verdicts)
        if any(r["exhausted"] for r in runs):
            fig["exhausted_prebuilt"] = True  # the figure is a lower bound: raise the rate cap
        if kw.get("rate"):
            fig["offered_per_s"] = r3(kw["rate"])
        if emit_it:
            emit(fig)
        return fig

    def profile(
        self, name: str, pid: int, run: Callable[[float], Any], *, gil: bool = True
    ) -> None:
        """One extra, unreported run of a load with py-spy sampling the server's GIL holder
        (--gil: the server is one interpreter, so that is where its time goes; gil=False
        samples every thread running on a CPU instead, which shows the work done with the GIL
        released, such as signature checks); top functions and where the time goes."""
        if not self.args.profile:
            return
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None:
            emit({"profile": name, "error": "py-spy is not installed (pip install py-spy)"})
            return
        out_dir = Path(self.args.profile)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{name}.txt"
        seconds = max(3.0, self.args.duration)
        proc = subprocess.Popen(
            [
                spy, "record", "--pid", str(pid), "--duration", str(int(seconds + 1)), "--rate",
                "250", "--format", "raw", "--threads", "--nonblocking", "-o", str(out),
                *(["--gil"] if gil else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        time.sleep(0.3)
        run(seconds)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0 or not out.exists():
            emit({"profile": name, "error": err.strip()[-500:]})
            return
        emit({"profile": name, "gil_only": gil, "file": str(out), **summarize_profile(out)})


PARTS = [
    ("verification", ("statements/signing.py",)),
    ("scanning", ("statements/secrets.py", "statements/redact.py")),
    ("decoding", ("decode (statements/schema.py)", "_no_unknown_fields (statements/schema.py)")),
    ("schema", ("statements/schema.py", "statements/canonical.py", "statements/ids.py")),
    ("admission", ("statements/ingest.py", "statements/state.py", "statements/scope.py")),
    ("indexing", ("server/search.py", "server/admission.py")),
    ("hashing+proofs", ("merkle/hashing.py", "merkle/proofs.py", "merkle/tiles.py")),
    ("checkpoint signing", ("merkle/note.py", "merkle/checkpoint.py", "merkle/keys.py")),
    ("storage", ("server/storage.py", "plyvel")),
    ("postgres", ("server/storage_postgres.py", "psycopg")),
    ("s3", ("server/objects_s3.py", "boto", "urllib3", "http/client.py", "ssl.py", "socket.py")),
    ("sequencer", ("server/sequencer.py",)),
    ("service", ("server/service.py",)),
    ("grpc+asyncio", ("grpc", "asyncio", "concurrent/futures", "threading.py", "queue.py")),
]
"""Where a sample's time goes: the part of its innermost frame that names one (first match)."""


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for part, marks in PARTS:
            if any(mark in frame for mark in marks):
                return part
    return "other"


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of samples per thread, per part of the server (PARTS), per leaf function (self)
    and per function (inclusive)."""
    self_n: collections.Counter[str] = collections.Counter()
    incl_n: collections.Counter[str] = collections.Counter()
    thread_n: collections.Counter[str] = collections.Counter()
    part_n: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread (")), "?")
        code = [
            re.sub(r":\d+\)$", ")", f) for f in frames if not f.startswith(("thread (", "process "))
        ]
        total += count
        thread_n[thread] += count
        part_n[part_of(code)] += count
        if code:
            self_n[code[-1]] += count
            for f in set(code):
                incl_n[f] += count

    def shares(c: collections.Counter[str]) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in c.most_common(top)]

    return {
        "samples": total,
        "threads_pct": shares(thread_n),
        "parts_pct": shares(part_n),
        "self_pct": shares(self_n),
        "inclusive_pct": shares(incl_n),
    }


# --------------------------------------------------------------------------------------------
# In-process ceilings: LevelDB synced writes and proof generation from stored tiles.
# --------------------------------------------------------------------------------------------


def leveldb_ceilings(args: argparse.Namespace) -> dict[str, float]:
    import plyvel

    rng = random.Random(5)
    values = [rng.randbytes(ENTRY_SIZE) for _ in range(1000)]
    out = {}
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="bench-leveldb-") as d:
        db = plyvel.DB(d, create_if_missing=True)
        try:
            batch_rates, put_rates = [], []
            n = 0
            for _ in range(args.runs):
                count = 0
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < args.duration:
                    with db.write_batch(sync=True) as wb:
                        for v in values:
                            wb.put(b"e/" + n.to_bytes(8, "big"), v)
                            n += 1
                    count += len(values)
                batch_rates.append(count / (time.perf_counter() - t0))
            for _ in range(args.runs):
                count = 0
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < args.duration:
                    db.put(b"p/" + n.to_bytes(8, "big"), values[n % 1000], sync=True)
                    n += 1
                    count += 1
                put_rates.append(count / (time.perf_counter() - t0))
        finally:
            db.close()
    out["batch"] = statistics.median(batch_rates)
    out["put"] = statistics.median(put_rates)
    emit(
        {
            "bench": "leveldb_writebatch_sync",
            "entries_per_batch": 1000,
            "entry_bytes": ENTRY_SIZE,
            "entries_per_s": round(out["batch"]),
            "entries_per_s_each": [round(x) for x in batch_rates],
            "runs": args.runs,
        }
    )
    emit(
        {
            "bench": "leveldb_put_sync",
            "entry_bytes": ENTRY_SIZE,
            "puts_per_s": round(out["put"]),
            "puts_per_s_each": [round(x) for x in put_rates],
            "runs": args.runs,
        }
    )
    return out


def in_process_proofs(args: argparse.Namespace, db_path: Path) -> dict[str, float]:
    """Proofs from the stopped server's LevelDB, as the service makes them: a reader per call
    over the log's one TileCache when this tree has it (else straight over storage)."""
    from affidavit.merkle import compact, proofs, tiles
    from affidavit.server.storage import Storage

    # A leaf's node: (0, index); trees before nodes were plain tuples made them with Node.
    node_type: Any = compact.Node
    leaf_node = (lambda i: (0, i)) if node_type == tuple[int, int] else (lambda i: node_type(0, i))

    storage = Storage(db_path)
    try:
        text = storage.checkpoint()
        assert text is not None
        body = text.split("\n")
        size, root = int(body[1]), base64.b64decode(body[2])
        cache_type = getattr(tiles, "TileCache", None)
        source = storage.read_tiles if cache_type is None else cache_type(storage.read_tiles)
        rng = random.Random(11)
        # One sanity check that the proofs are the right ones (the figure means nothing otherwise).
        i = rng.randrange(size)
        reader = tiles.TileHashReader(size, source)
        leaf = reader.read_hashes([leaf_node(i)])[0]
        verified = True
        try:
            proofs.verify_inclusion(leaf, i, size, proofs.prove_inclusion(i, size, reader), root)
        except Exception:  # any failure: the figure below is flagged, not trusted
            verified = False
        out = {}
        for what in ("inclusion", "consistency"):
            rates = []
            for _ in range(args.runs):
                count = 0
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < args.duration:
                    for _ in range(100):
                        reader = tiles.TileHashReader(size, source)
                        if what == "inclusion":
                            index = rng.randrange(size)
                            reader.read_hashes([leaf_node(index)])
                            proofs.prove_inclusion(index, size, reader)
                        else:
                            proofs.prove_consistency(rng.randrange(1, size + 1), size, reader)
                    count += 100
                rates.append(count / (time.perf_counter() - t0))
            out[what] = statistics.median(rates)
            emit(
                {
                    "bench": f"proof_{what}_in_process",
                    "tree_size": size,
                    "proofs_per_s": round(out[what]),
                    "proofs_per_s_each": [round(x) for x in rates],
                    "verified": verified,
                    "tile_cache": cache_type is not None,
                    "runs": args.runs,
                }
            )
        return out
    finally:
        storage.close()


# --------------------------------------------------------------------------------------------
# Signed statements: the Ed25519 ceiling, and a statements log with agents under grants.
# --------------------------------------------------------------------------------------------


def _sample_statement() -> tuple[bytes, bytes, bytes]:
    """(statement bytes, signature, public key) of one agent action like the load's."""
    job = {"agent_key": "", "grant_id": "01900000-0000-7000-8000-000000000000", "callers": 1,
           "batch": 1, "requests": 1, "build_id": "sample"}  # fmt: skip
    from affidavit.statements.signing import IdentityKey

    key = IdentityKey.generate("sample-agent@bench.example")
    job["agent_key"] = key.text()
    _build_statements(job)
    leaf = pb.AppendBatchRequest.FromString(_BUILT.pop("sample")[0][0]).entries[0]
    signed = pb.SignedStatement.FromString(leaf)
    return signed.statement, signed.signature, key.public_key


def ed25519_ceiling(args: argparse.Namespace) -> dict[str, float]:
    """Signature checks/s of statements.signing.verify (PyNaCl, libsodium: the server's one
    verification path) on statements like the load's, on one thread and on two at once."""
    from affidavit.statements.signing import verify

    statement, signature, public_key = _sample_statement()
    assert verify(statement, signature, public_key)

    def spin(counts: list[int], at: int, until: float) -> None:
        n = 0
        while time.perf_counter() < until:
            for _ in range(50):
                verify(statement, signature, public_key)
            n += 50
        counts[at] = n

    out: dict[str, float] = {}
    for threads in (1, 2):
        rates = []
        for _ in range(args.runs):
            counts = [0] * threads
            until = time.perf_counter() + args.duration
            t0 = time.perf_counter()
            workers = [
                threading.Thread(target=spin, args=(counts, i, until)) for i in range(threads)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            rates.append(sum(counts) / (time.perf_counter() - t0))
        out[f"threads{threads}"] = statistics.median(rates)
        emit(
            {
                "bench": "ed25519_verify",
                "threads": threads,
                "statement_bytes": len(statement),
                "verifies_per_s": round(out[f"threads{threads}"]),
                "verifies_per_s_each": [round(x) for x in rates],
                "runs": args.runs,
                "via": "statements.signing.verify (PyNaCl crypto_sign_open)",
            }
        )
    return out


def setup_agents(target: str, data_dir: Path, agents: int) -> tuple[list[str], list[str]]:
    """With the genesis admin's key (data_dir/admin.key): register a human and agents, and a
    grant from the human to each agent covering the load's actions. The agents' signer key
    texts and their grant ids."""
    from affidavit.statements import build
    from affidavit.statements.ids import uuid7
    from affidavit.statements.signing import IdentityKey

    with grpc.insecure_channel(target) as channel:
        append = channel.unary_unary(
            LOG + "Append",
            request_serializer=pb.AppendRequest.SerializeToString,
            response_deserializer=pb.AppendResponse.FromString,
        )

        def put(signer: build.SessionSigner, body: Any, statement_id: str | None = None) -> None:
            leaf = signer.sign(body, statement_id=statement_id)
            append(pb.AppendRequest(entry=leaf), timeout=30)
            signer.advance(leaf)

        admin = build.SessionSigner(IdentityKey.load(data_dir / "admin.key"))
        human_key = IdentityKey.generate("owner@bench.example")
        put(admin, build.register(human_key.identity_id, pb.HUMAN, human_key.public_key))
        human = build.SessionSigner(human_key)
        keys, grants = [], []
        for i in range(agents):
            key = IdentityKey.generate(f"agent-{i}@bench.example")
            put(admin, build.register(key.identity_id, pb.AGENT, key.public_key,
                                      owner=human_key.identity_id))  # fmt: skip
            grant_id = uuid7()
            now = int(time.time() * 1000)
            put(
                human,
                pb.Grant(
                    grantee=key.identity_id, tools=["bench.*"], operations=["execute_tool"],
                    resources=["repo:bench/*"], access=[pb.READ], not_before_ms=now - 3_600_000,
                    not_after_ms=now + 3_600_000, ticket="BENCH-1",
                    justification="benchmark agents reading the bench repositories",
                ),
                statement_id=grant_id,
            )  # fmt: skip
            keys.append(key.text())
            grants.append(grant_id)
    return keys, grants


def statements_section(
    args: argparse.Namespace, b: Bench, tmp: Path, workers: int | None = None
) -> dict[str, Any]:
    """Durable signed statements/s through AppendBatch (100 per call) on a statements log with
    every ingest check on: each statement is an AgentAction INTENT of its own session chain
    under a grant, so decoding, schema, secret scan, signature, key, chain and scope checks all
    run, and the verdict is recorded and indexed. workers: the server's --ingest-workers (its
    default when None); the figure is named statements_batch_<N>_workers then."""
    data_dir = tmp / f"statements-log-{workers}"
    srv = start_log_server(data_dir, statements=True, ingest_workers=workers)
    bench = "statements_batch" if workers is None else f"statements_batch_{workers}_workers"
    b.server = srv
    procs = args.procs
    try:
        keys, grants = setup_agents(srv.target, data_dir, procs)
        # Prebuilt requests for twice the target rate; a load that runs out of them is flagged
        # (exhausted_prebuilt: its figure is a lower bound, and the target is met anyway).
        per_s = 2.0 * TARGET_STATEMENTS

        def build_for(callers: int, seconds: float) -> Callable[[], dict[str, Any]]:
            return lambda: build_statements(b, callers, procs, seconds * per_s, keys, grants)

        figs = [
            b.load(
                bench, srv.target, "statements_batch", c, "aio", procs,
                before=build_for(c, args.warmup + args.duration),
            )
            for c in (4, 16)
        ]  # fmt: skip
        best = max(figs, key=lambda f: f["entries_per_s"])
        for gil in (True, False) if args.profile else ():
            extra = build_for(best["callers"], args.warmup + max(3.0, args.duration) + 1)()

            def run(seconds: float, extra: dict[str, Any] = extra) -> Any:
                return b.load_once(
                    srv.target, "statements_batch", best["callers"], "aio", procs,
                    duration=seconds, **extra,
                )  # fmt: skip

            b.profile(bench + ("" if gil else "_all_threads"), srv.pid, run, gil=gil)
        rss, hwm = srv.rss_kb()
        emit({"bench": "server_rss", "log": bench, "entries": _tree_size(srv.target),
              "rss_kb": rss, "hwm_kb": hwm})  # fmt: skip
        return best
    finally:
        code = srv.stop()
        if code:
            emit({"bench": "server_exit", "code": code, "tail": list(srv.tail)[-10:]})


def build_statements(
    b: Bench, callers: int, procs: int, statements: float, keys: list[str], grants: list[str]
) -> dict[str, Any]:
    """Have each client process build (untimed) the requests of its share of callers, about
    `statements` in all, signing as its own agent (keys[i], under grants[i]); the job keys
    that run a statements_batch load on them. Splits callers as Bench.load_once does."""
    procs = max(1, min(procs, callers))
    split = [callers // procs + (1 if i < callers % procs else 0) for i in range(procs)]
    b.seed += 1
    build_id = f"statements-{b.seed}"
    requests = int(statements / (callers * BATCH)) + 2
    jobs = [
        {"kind": "build_statements", "build_id": build_id, "callers": c, "batch": BATCH,
         "requests": requests, "agent_key": keys[i], "grant_id": grants[i]}
        for i, c in enumerate(split)
    ]  # fmt: skip
    results = b.workers.run(jobs)
    note(
        f"built {sum(r['built'] for r in results)} statements in "
        f"{max(r['seconds'] for r in results):.1f} s"
    )
    return {"build_id": build_id, "batch": BATCH}


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def ratio(name: str, value: float, target: float, *, lower_is_better: bool = False) -> None:
    met = value <= target if lower_is_better else value >= target
    emit({"ratio": name, "value": r3(value), "target": target, "met": met})


def harness_configs(max_procs: int) -> Iterator[tuple[str, int]]:
    for procs in sorted({1, max_procs}):
        for mode in ("aio", "threads"):
            yield mode, procs


def pick_harness(
    b: Bench, bench: str, target: str, kind: str, callers: int
) -> tuple[tuple[str, int], dict[str, Any]]:
    """Measure every client harness at callers; the one that loads the server most wins."""
    if b.args.harness:
        mode, procs = b.args.harness.split(":")
        best = (mode, int(procs))
        return best, b.load(bench, target, kind, callers, best[0], best[1])
    figs = {}
    for mode, procs in harness_configs(b.args.procs):
        figs[(mode, procs)] = b.load(bench, target, kind, callers, mode, procs, emit_it=False)
        emit({**figs[(mode, procs)], "harness_trial": True})
    best = max(figs, key=lambda k: figs[k]["calls_per_s"])
    emit({"bench": "harness_choice", "for": bench, "mode": best[0], "client_procs": best[1]})
    return best, figs[best]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints JSON lines on stdout (progress on stderr). No assertions: figures only.",
    )
    p.add_argument("--quick", action="store_true", help="short run: 0.5 s loads, log of 20,000")
    p.add_argument(
        "--log-entries",
        "--entries-1m",
        dest="log_entries",
        type=int,
        default=None,
        help="grow the log to this many entries for the proof and memory figures "
        "(default 1,000,000; --quick 20,000; 0 skips that part)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds measured per run (2)")
    p.add_argument("--warmup", type=float, default=None, help="seconds before measuring (0.5)")
    p.add_argument("--runs", type=int, default=3, help="runs per load; figures are medians (3)")
    p.add_argument("--procs", type=int, default=2, help="most client processes to try (2)")
    p.add_argument(
        "--harness",
        metavar="MODE:PROCS",
        help="skip the harness trials and use e.g. aio:1 or threads:2 for every unary load",
    )
    p.add_argument("--tmp-dir", default=None, help="where the temporary logs go (system temp)")
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="also sample the server with py-spy during one extra run of each main load; "
        "raw profiles go to DIR and a summary (top functions) is printed",
    )
    p.add_argument(
        "--sections",
        default="appends,proofs,statements",
        help="which parts to run, comma-separated: appends (echo and LevelDB ceilings, unary, "
        "batch and stream appends of opaque entries), proofs (the log grown to --log-entries, "
        "proof RPCs, in-process proofs), statements (Ed25519 ceiling, signed statements "
        "through AppendBatch); default all of those. storage (not in the default): the same "
        "AppendBatch and signed-statement loads on PostgreSQL + S3 with 1, 2 and 3 frontends "
        "beside LevelDB, with PostgreSQL and S3 ceilings (see benchmarks/storage_bench.py)",
    )
    p.add_argument(
        "--ingest-workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[0, os.cpu_count() or 1],
        help="the statements section once per value of the server's --ingest-workers, "
        "comma-separated (default: 0 and the CPU count)",
    )
    p.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.sections.split(",")) - {"appends", "proofs", "statements", "storage"}
    if unknown:
        p.error(f"--sections: no section {', '.join(sorted(unknown))}")
    if args.echo_server:
        asyncio.run(_echo_serve())
        return 0
    if args.duration is None:
        args.duration = 0.5 if args.quick else 2.0
    if args.warmup is None:
        args.warmup = 0.2 if args.quick else 0.5
    if args.log_entries is None:
        args.log_entries = 20_000 if args.quick else 1_000_000

    from affidavit.merkle import hashing

    t_begin = time.monotonic()
    emit(
        {
            "bench": "environment",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpc": grpc.__version__,
            "hash_backend": hashing.backend(),
            "entry_bytes": ENTRY_SIZE,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "runs": args.runs,
            "durable": "sync=True, as shipped",
            "log_entries": args.log_entries,
            "max_client_procs": args.procs,
            "loadavg": os.getloadavg(),
        }
    )
    sections = set(args.sections.split(","))
    ldb = leveldb_ceilings(args) if "appends" in sections else {}
    b = Bench(args)
    figs: dict[str, Any] = {}
    inproc: dict[str, float] = {}
    try:
        if sections & {"appends", "proofs"}:
            inproc = opaque_sections(args, b, figs, sections)
        if "storage" in sections:
            import storage_bench  # beside this script

            storage_bench.storage_section(args, b)
        if "statements" in sections:
            figs["ed25519"] = ed25519_ceiling(args)
            with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="bench-affidavit-") as tmp:
                for workers in args.ingest_workers:
                    figs[f"statements_{workers}"] = statements_section(args, b, Path(tmp), workers)

        # Ratios against the targets.
        if "appends" in sections:
            echo_rate = figs["echo64"]["calls_per_s"]
            ratio("append_batch/target", figs["batch"]["entries_per_s"] / TARGET_BATCH, 1.0)
            ratio("append_stream/target", figs["stream"]["entries_per_s"] / TARGET_STREAM, 1.0)
            ratio(
                "append_unary_64/echo_unary_64",
                figs["append64"]["entries_per_s"] / echo_rate,
                TARGET_UNARY_VS_ECHO,
            )
            ratio(
                "append_p99_ms_at_half_peak/target",
                figs["half"]["p99_ms"] / TARGET_P99_MS,
                1.0,
                lower_is_better=True,
            )
        if "proofs" in sections and args.log_entries:
            echo_rate = figs["echo64"]["calls_per_s"]
            for what in ("inclusion", "consistency"):
                ratio(
                    f"proof_{what}_grpc_64/echo_unary_64",
                    figs[what]["calls_per_s"] / echo_rate,
                    TARGET_PROOF_VS_ECHO,
                )
            ratio(
                "proof_inclusion_in_process/target",
                inproc["inclusion"] / TARGET_PROOFS_IN_PROCESS,
                1.0,
            )
        for workers in args.ingest_workers if "statements" in sections else ():
            rate = figs[f"statements_{workers}"]["entries_per_s"]
            name = f"statements_batch_{workers}_workers"
            ratio(f"{name}/target", rate / TARGET_STATEMENTS, 1.0)
            emit({"ratio": f"{name}/ed25519_verify_2_threads",
                  "value": r3(rate / figs["ed25519"]["threads2"])})  # fmt: skip
        # Context, no targets: how close each path is to what is beneath it.
        if "appends" in sections:
            for name, value in (
                ("append_batch/echo_batch", figs["batch"]["entries_per_s"]
                 / figs["echo_batch"]["entries_per_s"]),
                ("append_stream/echo_stream", figs["stream"]["entries_per_s"]
                 / figs["echo_stream"]["entries_per_s"]),
                ("append_batch/leveldb_writebatch_sync", figs["batch"]["entries_per_s"]
                 / ldb["batch"]),
            ):  # fmt: skip
                emit({"ratio": name, "value": r3(value)})
        emit(
            {
                "bench": "total",
                "seconds": round(time.monotonic() - t_begin, 1),
                "loadavg": os.getloadavg(),
            }
        )
    finally:
        b.close()
    return 0


def opaque_sections(
    args: argparse.Namespace, b: Bench, figs: dict[str, Any], sections: set[str]
) -> dict[str, float]:
    """The echo ceilings, then a log of opaque entries: appends (unary, batch, stream), then
    grown to --log-entries for the proof RPCs and the in-process proof rates (returned)."""
    appends = "appends" in sections
    # Ceilings: gRPC in Python with nothing behind it.
    echo = start_echo_server()
    b.server = echo
    try:
        echo_h, figs["echo64"] = pick_harness(b, "echo_unary", echo.target, "echo", 64)
        if appends:
            for callers in (1, 16):
                b.load("echo_unary", echo.target, "echo", callers, *echo_h)
            figs["echo_batch"] = b.load(
                "echo_batch", echo.target, "echo_batch", 4, "aio", args.procs, batch=BATCH
            )
            figs["echo_stream"] = b.load(
                "echo_stream", echo.target, "echo_stream", 2, "aio", args.procs
            )
    finally:
        echo.stop()

    inproc: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="bench-affidavit-") as tmp:
        data_dir = Path(tmp) / "log"
        srv = start_log_server(data_dir)
        b.server = srv
        try:
            rss, hwm = srv.rss_kb()
            emit({"bench": "server_rss", "entries": 0, "rss_kb": rss, "hwm_kb": hwm})
            if appends:
                append_loads(args, b, srv, figs)
            if "proofs" in sections and args.log_entries:
                proof_loads(args, b, srv, figs, echo_h)
        finally:
            code = srv.stop()
            if code:
                emit({"bench": "server_exit", "code": code, "tail": list(srv.tail)[-10:]})
        if "proofs" in sections and args.log_entries:
            inproc = in_process_proofs(args, data_dir / "db")
    return inproc


def append_loads(args: argparse.Namespace, b: Bench, srv: Process, figs: dict[str, Any]) -> None:
    """Unary Append at 1, 16 and 64 callers and at half the peak rate, AppendBatch, AppendStream."""
    app_h, figs["append64"] = pick_harness(b, "append_unary", srv.target, "append", 64)
    unary = {64: figs["append64"]}
    for callers in (1, 16):
        unary[callers] = b.load("append_unary", srv.target, "append", callers, *app_h)
    b.profile(
        "append_unary_64",
        srv.pid,
        lambda s: b.load_once(srv.target, "append", 64, *app_h, duration=s),
    )
    peak = max(f["entries_per_s"] for f in unary.values())
    figs["half"] = b.load("append_unary_half_peak", srv.target, "append", 64, *app_h, rate=peak / 2)
    batch_figs = [
        b.load("append_batch", srv.target, "append_batch", c, "aio", args.procs, batch=BATCH)
        for c in (4, 16)
    ]
    figs["batch"] = max(batch_figs, key=lambda f: f["entries_per_s"])
    b.profile(
        "append_batch",
        srv.pid,
        lambda s: b.load_once(
            srv.target, "append_batch", figs["batch"]["callers"], "aio", args.procs,
            duration=s, batch=BATCH,
        ),
    )  # fmt: skip
    stream_figs = [
        b.load("append_stream", srv.target, "append_stream", c, "aio", args.procs) for c in (1, 4)
    ]
    figs["stream"] = max(stream_figs, key=lambda f: f["entries_per_s"])
    b.profile(
        "append_stream",
        srv.pid,
        lambda s: b.load_once(
            srv.target, "append_stream", figs["stream"]["callers"], "aio", args.procs,
            duration=s,
        ),
    )  # fmt: skip


def proof_loads(
    args: argparse.Namespace,
    b: Bench,
    srv: Process,
    figs: dict[str, Any],
    echo_h: tuple[str, int],
) -> None:
    """Grow the log to --log-entries, then the proof RPCs at 64 callers, and the server's RSS."""
    size = _tree_size(srv.target)
    if args.log_entries > size:
        need = args.log_entries - size
        callers = 4
        procs = max(1, min(args.procs, callers))
        per = [need // procs + (1 if i < need % procs else 0) for i in range(procs)]
        jobs = [
            {
                "target": srv.target, "kind": "fill", "callers": callers // procs,
                "mode": "aio", "start_at": time.time(), "warmup": 0.0,
                "duration": 0.0, "batch": BUILD_BATCH, "quota": q, "seed": 900 + i,
            }
            for i, q in enumerate(per)
        ]  # fmt: skip
        note(f"growing the log from {size} to {args.log_entries} entries")
        t0 = time.perf_counter()
        cpu0 = srv.cpu_s()
        results = b.workers.run(jobs)
        seconds = time.perf_counter() - t0
        added = sum(r["entries"] for r in results)
        emit(
            {
                "bench": "build_log",
                "from": size,
                "entries": _tree_size(srv.target),
                "added": added,
                "seconds": r3(seconds),
                "entries_per_s": round(added / seconds),
                "server_cpu": r3((srv.cpu_s() - cpu0) / seconds),
                "refused_then_resent": sum(r["errors"] for r in results),
                "projected_s_from_empty": round(args.log_entries * seconds / added),
                "method": f"AppendBatch x{BUILD_BATCH}, {callers} callers "
                f"in {procs} client processes",
            }
        )
    size = _tree_size(srv.target)
    rss, hwm = srv.rss_kb()
    emit({"bench": "server_rss", "entries": size, "rss_kb": rss, "hwm_kb": hwm})
    for what in ("inclusion", "consistency"):
        figs[what] = b.load(f"proof_{what}_grpc", srv.target, what, 64, *echo_h, tree_size=size)
        figs[what]["tree_size"] = size
    b.profile(
        "proof_inclusion_grpc",
        srv.pid,
        lambda s: b.load_once(srv.target, "inclusion", 64, *echo_h, duration=s, tree_size=size),
    )
    rss, hwm = srv.rss_kb()
    emit({"bench": "server_rss", "entries": size, "rss_kb": rss, "hwm_kb": hwm,
          "after": "proof loads"})  # fmt: skip


def _tree_size(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        get = ch.unary_unary(
            LOG + "GetCheckpoint",
            request_serializer=pb.GetCheckpointRequest.SerializeToString,
            response_deserializer=pb.Checkpoint.FromString,
        )
        return int(get(pb.GetCheckpointRequest(), timeout=10).size)


if __name__ == "__main__":
    sys.exit(main())
