"""Loads and their figures in bench_append.py: Bench runs a load --runs times over the client
processes and prints the medians as one JSON line (rates, latency percentiles, the CPU of the
server, its threads, its ingest workers, the clients and the rest of the machine; given the
server's integrator totals, the mean entries a batch and its mean integration time); with
--profile it samples the server with py-spy during one extra run and prints where the time
goes. Also the JSON lines' printer, ratio lines against targets, and the client harness choice.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from clients_bench import Workers
from processes_bench import (
    Integrated,
    children,
    machine_busy_s,
    proc_cpu_s,
    procs_cpu_s,
    thread_parts,
    threads_cpu_s,
)


def emit(obj: dict[str, Any]) -> None:
    """Print one figure: a JSON line on stdout."""
    print(json.dumps(obj), flush=True)


def note(msg: str) -> None:
    """Progress, on stderr."""
    print(f"# {msg}", file=sys.stderr, flush=True)


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def r3(x: float) -> float:
    return round(x, 3)


def ratio(name: str, value: float, target: float, *, lower_is_better: bool = False) -> None:
    met = value <= target if lower_is_better else value >= target
    emit({"ratio": name, "value": r3(value), "target": target, "met": met})


class MeasuredServer(Protocol):
    """What a load reads from the server it measures (Bench.server): its pid (its threads, its
    ingest worker processes, py-spy's target) and its CPU seconds so far. A processes_bench
    Process, or storage_bench's CpuParts (every frontend of a scale-out log together)."""

    @property
    def pid(self) -> int: ...

    def cpu_s(self) -> float: ...


class Bench:
    """The client processes (--procs) and the loads they run against a server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workers = Workers(args.procs)
        self.seed = 1
        self.server: MeasuredServer | None = None  # the server whose CPU a load reports

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
        integrated: Callable[[], Integrated] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """One run: callers split over procs client processes; totals and latency percentiles.
        integrated: the server's integrator totals (Process.integrated), read around the
        window: then the run also gives entries_per_batch and integration_ms_per_batch."""
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
        batches: dict[str, float] = {}
        server, clients = self.server, self.workers.pids

        def sample() -> None:
            # CPU over exactly the measured window: the server's and all client processes'.
            time.sleep(max(0.0, start_at + self.args.warmup - time.time()))
            i0 = integrated() if integrated else None
            s0 = server.cpu_s() if server else 0.0
            t0s = threads_cpu_s(server.pid) if server else {}
            helpers = children(server.pid) if server else set()  # its ingest workers
            w0 = procs_cpu_s(helpers)
            c0 = sum(proc_cpu_s(pid) for pid in clients)
            m0 = machine_busy_s()
            t0 = time.perf_counter()
            time.sleep(duration)
            wall = time.perf_counter() - t0
            cpu["server"] = ((server.cpu_s() if server else 0.0) - s0) / wall
            for tid, spent in (threads_cpu_s(server.pid) if server else {}).items():
                threads[tid] = (spent - t0s.get(tid, 0.0)) / wall
            cpu["workers"] = (procs_cpu_s(helpers) - w0) / wall
            cpu["client"] = (sum(proc_cpu_s(pid) for pid in clients) - c0) / wall
            # Whatever else kept the cores busy meanwhile (other work on a shared machine):
            # a run with a high figure here is a noisy one.
            cpu["other"] = (
                (machine_busy_s() - m0) / wall - cpu["server"] - cpu["workers"] - cpu["client"]
            )
            if i0 is not None and integrated is not None:  # read last: its CPU is not counted
                i1 = integrated()
                if i1.batches > i0.batches:  # else no batch in the window: no figure
                    batches["entries"] = (i1.entries - i0.entries) / (i1.batches - i0.batches)
                    batches["ms"] = 1e3 * (i1.seconds - i0.seconds) / (i1.batches - i0.batches)

        results = self.workers.run(jobs, during=sample)
        parts: dict[str, float] = {}
        if server is not None and threads:
            named = thread_parts(server.pid)
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
            **(
                {"entries_per_batch": batches["entries"], "integration_ms_per_batch": batches["ms"]}
                if batches
                else {}
            ),
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
        each run, untimed, and gives more job keys. With integrated (see load_once), also the
        mean entries a batch (entries_per_batch, and each run's) and integration_ms_per_batch:
        a batch's mean wall time from the start of its integration to its answer (hash, tiles,
        sync, checkpoint; batches overlap, one settling while the next integrates)."""
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
        if all("entries_per_batch" in r for r in runs):
            fig["entries_per_batch"] = round(
                statistics.median(r["entries_per_batch"] for r in runs)
            )
            fig["entries_per_batch_each"] = [round(r["entries_per_batch"]) for r in runs]
            fig["integration_ms_per_batch"] = r3(
                statistics.median(r["integration_ms_per_batch"] for r in runs)
            )
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
        fig["client_cpu_us_per_entry"] = r3(
            statistics.median(1e6 * r["client_cpu"] / max(1.0, r["entries_per_s"]) for r in runs)
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
    ("s3", ("server/objects_s3.py", "obstore")),  # the driver and its client (obstore, Rust)
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
