#!/usr/bin/env python3
"""Audit throughput: a full replay of a log of signed statements, with its ceilings.

Builds a log of N signed statements in process with statements.build (an admin registering
humans and agents, humans granting, agents delegating to sub-agents, approvals, INTENT/OUTCOME
pairs, one action in a thousand out of scope), caches it on disk, and measures in the same run:

- the Ed25519 verify ceiling: PyNaCl verifications/s on 1 and on 2 processes;
- what each stage of a replay costs on one core (decode, schema + secret guard, signature,
  admit + apply, leaf hash + compact range) on a sample: where the time goes (admit + apply
  over the auditor's DictKV, which keeps records as objects; beside it, not in the total,
  admit_and_apply_bytes_store: the same over a store of bytes, encoding each record written,
  as the server does);
- what the server's serial path costs per entry on the same sample (the statement gate's
  admit + apply + search indexing over a real LevelDB, and the batch commit; then the whole of
  Sequencer._integrate, which adds hashing, dedup lookups, tiles, signing and proofs, and
  integrator_split, the same split by stage: admit, apply, indexing, commit, durable, proofs,
  signing, other, gc, and mean_batch): the part no number of ingest workers spreads, so
  1e6 / its sum caps a server's statements/s;
- client.audit.audit_entries over the in-memory log (no network): entries/s, median of runs,
  with 2 worker processes and in one process; with workers, the CPU per entry of the serial
  process (decode again, admit + apply in log order, compact range, verdict comparison) and of
  the workers (decode, schema + guard, signature, leaf hash), the workers' start-up, and the
  model they give: the serial process alone caps the rate at 1 / main, N workers at
  N / workers, C cores at C / (main + workers); N workers on C cores reach the least of the
  three. On 2 cores the CPU budget is the
  wall (2026-12-05, load 10-16: main 46 µs, workers 85 µs + 0.34 s of start-up, 2 / 131 µs ≈
  15,300/s, i.e. s / total = 0.36 of verify on 2 processes); from 3 cores the serial process
  is, at about 21,500/s (benchmarks/README.md, "Audit replay");
- writing and reading the audit's position file for the whole log;
- the network path on a real `affidavit serve` (a smaller log appended with AppendBatch):
  GetEntries read rate alone, and client.audit.audit through a Client.

The parts, one module each beside this script (their docstrings say what each holds):
audit_log_bench (building, caching and shaping the log), audit_stages_bench (the verify
ceiling, the replay's stage costs), audit_integrator_bench (the server's serial path),
audit_replay_bench (the in-memory audit, the position file), audit_network_bench (a real
server). This script is the command: its flags, and the JSON lines in their order.

Prints one JSON object per line.

    .venv/bin/python benchmarks/bench_audit.py                      # 200,000 entries
    .venv/bin/python benchmarks/bench_audit.py --entries 1000000    # the target's log size
    .venv/bin/python benchmarks/bench_audit.py --quick              # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from affidavit.merkle import hashing  # noqa: E402
from audit_integrator_bench import (  # noqa: E402
    integration_split,
    integrator_costs,
    whole_integration_cost,
)
from audit_log_bench import Log, cached_log, signed_checkpoint  # noqa: E402
from audit_network_bench import network  # noqa: E402
from audit_replay_bench import in_memory_figure, position_file_cost  # noqa: E402
from audit_stages_bench import admit_apply_over_bytes, stage_costs, verify_ceiling  # noqa: E402
from loads_bench import emit, note  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--entries", type=int, default=200_000, help="log size (200,000)")
    p.add_argument("--runs", type=int, default=3, help="audit runs; figures are medians (3)")
    p.add_argument("--workers", type=int, default=2, help="audit worker processes (2)")
    p.add_argument("--inline-runs", type=int, default=None, help="runs in one process (--runs)")
    p.add_argument("--sample", type=int, default=20_000, help="entries for stage costs (20,000)")
    p.add_argument("--network-entries", type=int, default=20_000, help="0 skips (20,000)")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument(
        "--only",
        choices=["in-memory", "position", "network"],
        help="only the in-memory audit (e.g. under py-spy), the position file, or the network",
    )
    p.add_argument("--quick", action="store_true", help="20,000 entries, 1 run, 5,000 network")
    args = p.parse_args(argv)
    if args.quick:
        args.entries, args.runs, args.network_entries = 20_000, 1, 5_000
        args.sample = min(args.sample, 5_000)
    emit(
        {
            "figure": "machine",
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0],
            "hash_backend": hashing.backend(),
        }
    )
    if args.only == "network":
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
            emit({"figure": "network", **network(args.network_entries, Path(tmp))})
        return 0
    note(f"building (or loading) a log of {args.entries} entries")
    log, build_seconds = cached_log(args.entries, args.cache_dir)
    emit(
        {
            "figure": "log",
            "entries": len(log.leaves),
            "mean_entry_bytes": round(sum(map(len, log.leaves)) / len(log.leaves)),
            "build_s": None if build_seconds is None else round(build_seconds, 1),
            "cached": build_seconds is None,
        }
    )
    cp = signed_checkpoint(log.leaves)
    if args.only == "position":
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
            emit({"figure": "position_file", **position_file_cost(log, cp, Path(tmp))})
        return 0
    ceiling = None
    if args.only is None:
        ceiling = ceilings(log, args.sample)
    inline_runs = args.runs if args.inline_runs is None else args.inline_runs
    for workers, runs in ((args.workers, args.runs), (0, inline_runs)):
        if runs:
            emit(in_memory_figure(log, cp, workers, runs, ceiling))
    if args.only == "in-memory":
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        note("position file: audit with a final save, then load and save again")
        emit({"figure": "position_file", **position_file_cost(log, cp, Path(tmp))})
        if args.network_entries:
            note(f"network: append {args.network_entries} entries to a real server, then audit")
            emit({"figure": "network", **network(args.network_entries, Path(tmp))})
    return 0


def ceilings(log: Log, sample: int) -> float:
    """Emit the verify ceiling and the stage costs; the 2-process verify rate."""
    ceiling = verify_ceiling(log, 2.0)
    emit(
        {
            "figure": "verify_ceiling",
            "per_s_1_process": round(ceiling[1]),
            "per_s_2_processes": round(ceiling[2]),
        }
    )
    costs = stage_costs(log, sample)
    total = sum(costs.values())
    emit(
        {
            "figure": "stage_cost_us_per_entry",
            "sample": min(sample, len(log.leaves)),
            **{k: round(v, 1) for k, v in costs.items()},
            "total": round(total, 1),
            "single_core_ceiling_per_s": round(1e6 / total),
            "two_core_ceiling_per_s": round(2e6 / total),
            "serial_admit_apply_ceiling_per_s": round(1e6 / costs["admit_and_apply"]),
            # Not in the total: the same stage with records encoded as the server writes them.
            "admit_and_apply_bytes_store": round(admit_apply_over_bytes(log, sample), 1),
        }
    )
    gate = integrator_costs(log, sample)
    whole = whole_integration_cost(log, sample)
    split = integration_split(log, sample)
    emit(
        {
            "figure": "integrator_cost_us_per_entry",
            "sample": min(sample, len(log.leaves)),
            **{k: round(v, 1) for k, v in gate.items()},
            "serial_ceiling_per_s": round(1e6 / (gate["admit_apply_index"] + gate["commit"])),
            "whole_integration": round(whole, 1),
            "whole_serial_ceiling_per_s": round(1e6 / whole),
            "integrator_split": {k: round(v, 1) for k, v in split.items()},
        }
    )
    return ceiling[2]


if __name__ == "__main__":
    sys.exit(main())
