"""bench_audit.py's replay: client.audit.audit_entries over the in-memory log (no network).

The audit's rate (median of runs) and its CPU time per entry, split with workers between the
serial process and the workers, with the model they give (in_memory_figure says how); and the
audit's position file, saved as by default and loaded once (position_file_cost). Every run
must find exactly the log's planted out-of-scope actions (check_report).

Not a script: one of bench_audit.py's parts (its docstring lists them).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

from affidavit.client import audit as auditor
from affidavit.client.audit.pool import Pool
from affidavit.client.verify import Verified
from affidavit.proto import affidavit_pb2 as pb
from audit_log_bench import Log, recorded_entries
from loads_bench import note

TARGET = 50_000
"""Entries/s verified, for a 1M-entry log on this 2-core machine (the project's target)."""


def check_report(report: auditor.Report, log: Log) -> None:
    """The benchmark's log is honest: only its planted out-of-scope actions may be found."""
    bad = sum(1 for v, _ in log.verdicts if v == pb.OUT_OF_SCOPE) // 2
    expected = {"out-of-scope-action": bad} if bad else {}
    if not report.root_ok or report.finding_counts != expected:
        raise SystemExit(f"unexpected audit result: {json.dumps(report.to_json())[:2000]}")


def position_file_cost(log: Log, cp: Verified, tmp: Path) -> dict[str, float]:
    """An audit saving its position as by default (every 30 s and at the end), timing each
    save; then loading the final position once."""
    path = tmp / "audit.pos"
    saves: list[float] = []
    save = auditor.save_position

    def timed_save(path: Path, replay: Any) -> None:
        began = time.perf_counter()
        save(path, replay)
        saves.append(time.perf_counter() - began)

    entries = recorded_entries(log)
    auditor.save_position = timed_save
    try:
        report = auditor.audit_entries(lambda s, e: entries[s:e], cp, resume=path)
    finally:
        auditor.save_position = save
    check_report(report, log)
    began = time.perf_counter()
    replay = auditor.load_position(path)
    load = time.perf_counter() - began
    return {
        "bytes": path.stat().st_size,
        "records": len(replay.kv.data),
        "audit_per_s": round(report.rate),
        "audit_s": round(report.elapsed, 1),
        "saves": len(saves),
        "saving_s": round(sum(saves), 2),
        "last_save_s": round(saves[-1], 2),
        "load_s": round(load, 2),
    }


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process, and of its children that have ended (the audit's workers are
    joined when it returns)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def worker_start_cpu(workers: int) -> float:
    """CPU seconds for the audit's worker processes to start (interpreter, imports), answer one
    empty job and stop: what an audit pays once, whatever the log's size."""
    began = cpu_seconds()[1]
    pool = Pool(workers)
    try:
        for ticket in [pool.submit([], []) for _ in range(workers)]:
            pool.collect(ticket)
    finally:
        pool.close()
    return cpu_seconds()[1] - began


def in_memory_figure(
    log: Log, cp: Verified, workers: int, runs: int, verify_2p: float | None
) -> dict[str, Any]:
    """The audit's rate (median of runs), and its CPU time per entry, workers included: on a
    machine shared with other work, the figure that says what the audit costs (C free cores
    reach at most C / cpu_us_per_entry). With workers, the CPU is split between this process
    (the serial replay: decoding, admission in log order, bookkeeping) and the workers
    (prepare: decode, schema, guard, signature; the leaf hash), and the model is printed: this
    process alone caps the rate at 1 / main_cpu (Amdahl's serial part), N workers at
    N / workers_cpu, and C cores at C / (main_cpu + workers_cpu); N workers on C cores reach
    the least of the three. The workers' start-up is paid once per audit, and is left out of
    the per-entry figures of the model (it is in cpu_us_per_entry)."""
    entries = recorded_entries(log)
    rates, cpu, main, side = [], [], [], []
    for run in range(runs):
        note(f"audit in memory, {workers} worker(s), run {run + 1}/{runs}")
        own, children = cpu_seconds()
        report = auditor.audit_entries(lambda s, e: entries[s:e], cp, workers=workers)
        own_after, children_after = cpu_seconds()
        n = report.entries
        main.append((own_after - own) / n * 1e6)
        side.append((children_after - children) / n * 1e6)
        cpu.append(main[-1] + side[-1])
        check_report(report, log)
        rates.append(report.rate)
    median = statistics.median(rates)
    row: dict[str, Any] = {
        "figure": "audit_in_memory",
        "entries": report.entries,
        "workers": workers,
        "per_s": round(median),
        "runs_per_s": [round(r) for r in rates],
        "cpu_us_per_entry": round(statistics.median(cpu), 1),
        "ratio_to_target": round(median / TARGET, 3),
        "findings": report.finding_counts,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if workers:
        start = worker_start_cpu(workers)
        main_us = statistics.median(main)
        workers_us = statistics.median(side) - start / report.entries * 1e6
        row["main_cpu_us_per_entry"] = round(main_us, 1)
        row["workers_cpu_us_per_entry"] = round(statistics.median(side), 1)
        row["workers_start_cpu_s"] = round(start, 3)
        row["model_per_s"] = {
            "serial_cap": round(1e6 / main_us),
            "workers_cap": round(workers * 1e6 / workers_us),
            **{
                f"{c}_cores": round(
                    min(1e6 / main_us, workers * 1e6 / workers_us, c * 1e6 / (main_us + workers_us))
                )
                for c in (2, 4, 8)
            },
        }
    if verify_2p is not None:
        row["ratio_to_verify_2_processes"] = round(median / verify_2p, 3)
    return row
