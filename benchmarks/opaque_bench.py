"""bench_append.py --sections appends,proofs: a log of opaque entries (random 1 KiB entries,
which a statements log would refuse: it is created with --entry-format opaque).

First the echo server's figures, the ceiling of gRPC itself (unary at 64 callers, which also
picks the client harness; with appends unary at 1 and 16, batch and stream too); then appends:
unary Append at 1, 16 and 64 callers and at half the peak rate, AppendBatch at 16 and 32
callers (each run right after a run of the LevelDB sync-batch ceiling) and AppendStream,
and after AppendStream its shaped ceiling (echo_stream_shaped: the stream echo answering a real
receipt of this log, at AppendStream's caller counts); then proofs: the same log grown to
--log-entries, inclusion and consistency proof RPCs at 64 callers, the server's RSS, and proofs
made in process from the stopped server's tiles (ceilings_bench.in_process_proofs). The
targets the run rates them against are here too.

The two stream ceilings: echo_stream (2 callers, an answer of a few bytes per message) is the
one earlier sessions' append_stream/echo_stream figures were taken against, kept unchanged so
they stay comparable. It is not AppendStream's shape: a receipt is 0.6-0.7 KB (checkpoint note,
leaf hash, inclusion proof; 32 bytes more each time the tree doubles), and gRPC's CPU per
message falls as callers rise. echo_stream_shaped sends the same bytes at the same caller
counts as AppendStream and does nothing else, so append_stream/echo_stream_shaped is the
fair measure of what the log adds to gRPC's own cost of the stream.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affidavit.merkle.checkpoint import parse as parse_checkpoint
from affidavit.merkle.note import parse_note
from affidavit.proto import affidavit_pb2 as pb
from ceilings_bench import in_process_proofs, leveldb_batch_run
from clients_bench import BATCH, ENTRY_SIZE, take_receipt
from loads_bench import Bench, emit, note, pick_harness, r3
from processes_bench import (
    ECHO_SCRIPT,
    Integrated,
    Process,
    start_echo_server,
    start_log_server,
    tree_size,
)

# Targets (from the project's performance card).
TARGET_BATCH = 50_000
TARGET_STREAM = 10_000
TARGET_UNARY_VS_ECHO = 0.70
TARGET_P99_MS = 50.0
TARGET_PROOF_VS_ECHO = 0.70
TARGET_PROOFS_IN_PROCESS = 20_000

BUILD_BATCH = 1000
"""Entries per AppendBatch call while the log grows to --log-entries."""

BATCH_CALLERS = (16, 32)
"""AppendBatch's caller counts (100 entries a call). The integrator takes what is queued, so
the callers bound the batch: at 16 about 550 entries a batch, at 32 about 900 (the LevelDB
ceiling writes 1,000 a sync)."""

STREAM_CALLERS = (1, 4)
"""AppendStream's caller counts, and its shaped ceiling's: each figure is the best of them."""


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
    batch_figs = [batch_load(args, b, srv, c) for c in BATCH_CALLERS]
    ceilings = [x for f in batch_figs for x in f["leveldb_writebatch_sync_each"]]
    emit(
        {
            "bench": "leveldb_writebatch_sync",
            "entries_per_batch": 1000,
            "entry_bytes": ENTRY_SIZE,
            "entries_per_s": round(statistics.median(ceilings)),
            "entries_per_s_each": ceilings,
            "runs": len(ceilings),
            "measured": "right before each append_batch run",
        }
    )
    figs["batch_all"] = batch_figs
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
        b.load("append_stream", srv.target, "append_stream", c, "aio", args.procs,
               integrated=integrated(srv))
        for c in STREAM_CALLERS
    ]  # fmt: skip
    figs["stream"] = max(stream_figs, key=lambda f: f["entries_per_s"])
    b.profile(
        "append_stream",
        srv.pid,
        lambda s: b.load_once(
            srv.target, "append_stream", figs["stream"]["callers"], "aio", args.procs,
            duration=s,
        ),
    )  # fmt: skip
    figs["echo_stream_shaped"] = shaped_echo_stream(args, b, srv)


def integrated(srv: Process) -> Callable[[], Integrated] | None:
    """What gives a load srv's integrator totals (None if its serve has no metrics port)."""
    return srv.integrated if srv.metrics_url else None


def batch_load(args: argparse.Namespace, b: Bench, srv: Process, callers: int) -> dict[str, Any]:
    """AppendBatch (100 entries a call) at callers, each run right after a run of the LevelDB
    sync-batch ceiling (ceilings_bench.leveldb_batch_run, as long), so that each pair sees the
    same neighbours on a shared machine. The figure carries the ceiling's runs
    (leveldb_writebatch_sync_each, their median leveldb_writebatch_sync) and each pair's ratio
    (vs_leveldb_each)."""
    ceilings: list[float] = []

    def ceiling() -> dict[str, Any]:
        ceilings.append(leveldb_batch_run(args))
        return {}

    fig = b.load(
        "append_batch", srv.target, "append_batch", callers, "aio", args.procs,
        emit_it=False, before=ceiling, integrated=integrated(srv), batch=BATCH,
    )  # fmt: skip
    fig["leveldb_writebatch_sync"] = round(statistics.median(ceilings))
    fig["leveldb_writebatch_sync_each"] = [round(x) for x in ceilings]
    fig["vs_leveldb_each"] = [
        r3(rate / bound) for rate, bound in zip(fig["entries_per_s_each"], ceilings, strict=True)
    ]
    emit(fig)
    return fig


def shaped_echo_stream(args: argparse.Namespace, b: Bench, srv: Process) -> dict[str, Any]:
    """AppendStream's fair ceiling, run right after it: an echo server answering each message
    with one real receipt of srv's log (taken now, so its proof is as long as the load's tree
    makes it), at STREAM_CALLERS; the best of them. The log server stays up, idle, meanwhile."""
    receipt = take_receipt(srv.target)
    shown = pb.AppendResult.FromString(receipt).ok
    text, _ = parse_note(shown.checkpoint)
    emit(
        {
            "bench": "echo_stream_receipt",
            "bytes": len(receipt),
            "tree_size": parse_checkpoint(text).size,
            "inclusion_proof_hashes": len(shown.inclusion_proof),
            "checkpoint_bytes": len(shown.checkpoint.encode()),
        }
    )
    echo = Process(
        [sys.executable, str(ECHO_SCRIPT), "--echo-server", "--echo-receipt", receipt.hex()],
        r"^PORT (\d+)",
        stream="stdout",
    )
    log_server, b.server = b.server, echo
    try:
        shaped = [
            b.load("echo_stream_shaped", echo.target, "echo_stream_shaped", c, "aio", args.procs)
            for c in STREAM_CALLERS
        ]
    finally:
        echo.stop()
        b.server = log_server
    return max(shaped, key=lambda f: f["entries_per_s"])


def proof_loads(
    args: argparse.Namespace,
    b: Bench,
    srv: Process,
    figs: dict[str, Any],
    echo_h: tuple[str, int],
) -> None:
    """Grow the log to --log-entries, then the proof RPCs at 64 callers, and the server's RSS."""
    size = tree_size(srv.target)
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
                "entries": tree_size(srv.target),
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
    size = tree_size(srv.target)
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
