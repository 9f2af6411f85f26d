#!/usr/bin/env python3
"""Append and proof throughput of a real `affidavit serve` over loopback, with ceilings.

Starts the real server (durable: every batch is one synced LevelDB WriteBatch, as shipped) and
drives it from separate client processes, then measures, in the same run, what the machine can
do without the log at all: a trivial gRPC echo server (generic handlers, same client harness),
LevelDB synced writes, and in-process proof generation from the stored tiles. The ceiling of a
load whose ratio a shared machine would otherwise skew is measured once per run, right before
it: LevelDB's synced WriteBatch(1000) before each AppendBatch run, Ed25519 checks on 2 threads
before each statements run; such a figure carries its ceiling's runs and each pair's ratio, and
its ratio line is the median of the load's runs over the median of its ceiling's. Prints one JSON
object per line, one per figure; ratio lines compare figures with the project's targets.
AppendStream has two ceilings (opaque_bench.py says why): echo_stream, answers of a few bytes,
kept for comparison with earlier runs; and echo_stream_shaped, the fair one: a real receipt of
the log answered per message, at AppendStream's caller counts.

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
threads' share is seen apart from LevelDB's; workers_cpu (and workers_cpu_us_per_entry) that of
the server's ingest worker processes, client_cpu (and client_cpu_us_per_entry) the client
processes', other_cpu the rest of the machine's busy time in the same window: on a shared
machine a run with a high other_cpu is a noisy one, and the CPU time per entry is the steadier
figure to compare. The log server serves its Prometheus metrics on a port of its own, from which
the AppendBatch, AppendStream and statements figures give entries_per_batch (the mean entries an
integrated batch held in the measured window, and each run's) and integration_ms_per_batch (a
batch's mean time from the start of its integration to its answer): the callers' number and
shape bound the batch, and a batch of 500 entries is not measured against a ceiling that syncs
1,000 at a time on equal terms.

The append and proof sections use random 1 KiB entries, so their log is created with
--entry-format opaque (signed statements would be refused). The statements section creates a
log of the default format and registers (with the genesis admin's key) a human and one agent
per client process, each agent under a grant from the human; each load then sends AppendBatch
requests of 100 AgentAction INTENTs, one from each of 100 sessions per caller, signed and
chained ahead of the load (untimed), so every ingest check runs on each statement: decoding,
schema, secret scan, signature, key, session chain, scope verdict, indexing. Its ceiling is
statements.signing.verify (PyNaCl) on one and on two threads, measured at the start, and on two
threads again right before each run (the ratio's); with
--profile it is sampled twice: the GIL holder (where the interpreter's time goes) and every
thread on a CPU (which adds the signature checks and LevelDB work done without the GIL). Each
statements figure also gives calls_per_batch, the LevelDB sync-batch ceiling in its own shape
(leveldb_writebatch_sync_at_batch) and statements_cpu_total (statements_bench.py says what).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The sections, one module each beside this script (their docstrings say what each holds):
# clients_bench (echo server, client processes), processes_bench (servers under test, their
# CPU), loads_bench (Bench: loads, figures, profiles), ceilings_bench (LevelDB, proofs,
# Ed25519), opaque_bench (appends, proofs), statements_bench, storage_bench.
from ceilings_bench import ed25519_ceiling, leveldb_put_ceiling  # noqa: E402
from clients_bench import ENTRY_SIZE, echo_serve  # noqa: E402
from loads_bench import Bench, emit, r3, ratio  # noqa: E402
from opaque_bench import (  # noqa: E402
    TARGET_BATCH,
    TARGET_P99_MS,
    TARGET_PROOF_VS_ECHO,
    TARGET_PROOFS_IN_PROCESS,
    TARGET_STREAM,
    TARGET_UNARY_VS_ECHO,
    opaque_sections,
)
from statements_bench import TARGET_STATEMENTS, statements_section  # noqa: E402


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
    p.add_argument("--echo-receipt", default="", help=argparse.SUPPRESS)  # hex, StreamShaped's
    args = p.parse_args(argv)
    unknown = set(args.sections.split(",")) - {"appends", "proofs", "statements", "storage"}
    if unknown:
        p.error(f"--sections: no section {', '.join(sorted(unknown))}")
    if args.echo_server:
        asyncio.run(echo_serve(bytes.fromhex(args.echo_receipt)))
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
    if "appends" in sections:
        leveldb_put_ceiling(args)
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
            ed25519_ceiling(args)  # context: 1 and 2 threads; each load pairs its own runs
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
            fig = figs[f"statements_{workers}"]
            name = f"statements_batch_{workers}_workers"
            ratio(f"{name}/target", fig["entries_per_s"] / TARGET_STATEMENTS, 1.0)
            # Over the median of the Ed25519 runs measured right before its own runs.
            emit(
                {
                    "ratio": f"{name}/ed25519_verify_2_threads",
                    "value": r3(fig["entries_per_s"] / fig["ed25519_2_threads"]),
                    "callers": fig["callers"],
                    "median_of_run_ratios": r3(statistics.median(fig["vs_ed25519_each"])),
                }
            )
        # Context, no targets: how close each path is to what is beneath it.
        if "appends" in sections:
            for name, value in (
                ("append_batch/echo_batch", figs["batch"]["entries_per_s"]
                 / figs["echo_batch"]["entries_per_s"]),
                ("append_stream/echo_stream", figs["stream"]["entries_per_s"]
                 / figs["echo_stream"]["entries_per_s"]),
                ("append_stream/echo_stream_shaped", figs["stream"]["entries_per_s"]
                 / figs["echo_stream_shaped"]["entries_per_s"]),
            ):  # fmt: skip
                emit({"ratio": name, "value": r3(value)})
            leveldb_ratio(figs["batch_all"])
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


def leveldb_ratio(batch_figs: list[dict[str, Any]]) -> None:
    """append_batch/leveldb_writebatch_sync: the median of AppendBatch's runs over the median
    of the LevelDB sync-batch ceiling's runs, each measured right before one of them
    (opaque_bench.batch_load); of the caller counts, the one with the better ratio (callers),
    and the median of the runs' own ratios beside it."""
    by_callers = {
        f["callers"]: f["entries_per_s"] / f["leveldb_writebatch_sync"] for f in batch_figs
    }
    best = max(batch_figs, key=lambda f: by_callers[f["callers"]])
    emit(
        {
            "ratio": "append_batch/leveldb_writebatch_sync",
            "value": r3(by_callers[best["callers"]]),
            "callers": best["callers"],
            "entries_per_s": best["entries_per_s"],
            "leveldb_writebatch_sync": best["leveldb_writebatch_sync"],
            "median_of_run_ratios": r3(statistics.median(best["vs_leveldb_each"])),
            "by_callers": {str(c): r3(v) for c, v in by_callers.items()},
        }
    )


if __name__ == "__main__":
    sys.exit(main())
