#!/usr/bin/env python3
"""The HTTP faces of a real `affidavit serve`: tile GETs per second against a static-file
ceiling, and time from a new checkpoint to a quorum of witness cosignatures.

    .venv/bin/python benchmarks/bench_http.py            # full run
    .venv/bin/python benchmarks/bench_http.py --quick    # a short smoke run

Tiles: a log of --entries opaque entries serves GET /tile/0/<N> (random full level-0 tiles,
from LevelDB) over --http-listen; the ceiling is the very same tile files, exported with
`affidavit tiles export`, served by aiohttp's static file handler in a process of its own.
One load generator (aiohttp client, --connections keep-alive connections) drives each for
--duration seconds after --warmup, --runs times, alternating; figures are medians.
ratio = log / static (the goal is at least 0.7).

Witnesses: two `affidavit witness serve` processes and a log serving with --witness for both
and --witness-quorum 2. Each sample appends one entry (gRPC; its reply means the checkpoint is
committed) and polls GetCheckpoint every millisecond until the published cosigned size covers
it: the time from commit to quorum, --samples times, spaced beyond the push rate limit.
Figures are p50 and p90 in ms (the goal is p50 under 100 ms on loopback).

Prints one JSON object per line. On a shared machine every figure is noisy: compare ratios
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from affidavit.proto import affidavit_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serverproc import ServerProcess, clean_env, run_cli  # noqa: E402
from tests.witnessproc import WitnessProcess  # noqa: E402


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


STATIC = """
import asyncio, sys
from aiohttp import web

async def main():
    app = web.Application()
    app.router.add_static("/", sys.argv[1])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, paths: list[str], connections: int, seconds: float) -> float:
    """GETs per second of random paths over keep-alive connections (every answer must be 200)."""
    done = 0
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                async with session.get(url + random.choice(paths)) as r:
                    await r.read()
                    if r.status != 200:
                        raise AssertionError(f"{r.url}: HTTP {r.status}")
                done += 1

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - start
    return done / elapsed


def bench_tiles(args: argparse.Namespace, tmp: Path) -> None:
    s = ServerProcess(tmp / "log", "--http-listen", "127.0.0.1:0")
    s.start()
    static = None
    try:
        for at in range(0, args.entries, 1000):
            n = min(1000, args.entries - at)
            s.stub.AppendBatch(
                pb.AppendBatchRequest(entries=[f"bench {at + i}".encode() for i in range(n)])
            )
        out = tmp / "static"
        r = run_cli(
            "tiles",
            "export",
            str(out),
            "--tiles",
            s.http_url,
            "--log-key",
            s.verifier_key,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr
        static = subprocess.Popen(
            [sys.executable, "-c", STATIC, str(out)],
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        assert static.stdout is not None
        static_url = f"http://127.0.0.1:{static.stdout.readline().strip()}"
        # Every full level-0 tile: the same files in both servers.
        paths = [
            "/" + p.relative_to(out).as_posix()
            for p in (out / "tile" / "0").rglob("*")
            if p.is_file() and ".p" not in p.parts
        ]
        assert s.proc is not None
        targets = {"log": (s.http_url, s.proc.pid), "static": (static_url, static.pid)}
        rates: dict[str, list[float]] = {"log": [], "static": []}
        cpu_ms: dict[str, list[float]] = {"log": [], "static": []}
        for _ in range(args.runs):
            for name, (url, pid) in targets.items():
                asyncio.run(load(url, paths, args.connections, args.warmup))
                before = cpu_seconds(pid)
                rate = asyncio.run(load(url, paths, args.connections, args.duration))
                used = cpu_seconds(pid) - before
                rates[name].append(round(rate))
                # Server CPU per request: what the server costs, even when the client limits.
                cpu_ms[name].append(round(used * 1000 / (rate * args.duration), 4))
        log_rate, static_rate = (statistics.median(rates[n]) for n in ("log", "static"))
        log_cpu, static_cpu = (statistics.median(cpu_ms[n]) for n in ("log", "static"))
        emit(
            figure="tiles.get_per_s",
            log=round(log_rate),
            static_ceiling=round(static_rate),
            runs=rates,
            server_cpu_ms_per_get=cpu_ms,
            tiles=len(paths),
            connections=args.connections,
        )
        emit(
            figure="tiles.ratio",
            ratio=round(log_rate / static_rate, 3),
            cpu_ratio=round(static_cpu / log_cpu, 3),
            goal=0.7,
        )
    finally:
        if static is not None:
            static.kill()
            static.wait()
        s.kill()


def bench_witnesses(args: argparse.Namespace, tmp: Path) -> None:
    log_dir = tmp / "wlog"
    init = run_cli(
        "init",
        "--data-dir",
        str(log_dir),
        "--origin",
        "example.com/bench",
        "--entry-format",
        "opaque",
    )
    assert init.returncode == 0, init.stderr
    key = (log_dir / "log.pub").read_text().strip()
    witnesses = [WitnessProcess(tmp / f"w{i}", [key]).start() for i in (1, 2)]
    flags = []
    for w in witnesses:
        flags += ["--witness", f"{w.name}={w.url}@{w.verifier_key}"]
    s = ServerProcess(log_dir, *flags, "--witness-quorum", "2", origin=None, entry_format=None)
    try:
        s.start()
        samples = []
        for i in range(args.samples + 3):
            r = s.stub.Append(pb.AppendRequest(entry=f"w {i}".encode()))
            committed = time.monotonic()
            size = r.index + 1
            while s.checkpoint().cosigned_size < size:
                time.sleep(0.001)
            if i >= 3:  # the first ones include trust on first use and connection set-up
                samples.append((time.monotonic() - committed) * 1000)
            time.sleep(0.15)
        samples.sort()
        emit(
            figure="witness.commit_to_quorum_ms",
            p50=round(statistics.median(samples), 2),
            p90=round(samples[int(len(samples) * 0.9) - 1], 2),
            samples=len(samples),
            quorum=2,
            goal_p50_ms=100,
        )
    finally:
        s.kill()
        for w in witnesses:
            w.kill()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--entries", type=int, default=65536)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--samples", type=int, default=50)
    args = p.parse_args()
    if args.quick:
        args.entries, args.duration, args.warmup, args.runs, args.samples = 4096, 1.0, 0.3, 1, 10
    emit(
        figure="machine",
        cpus=os.cpu_count(),
        load_average=os.getloadavg(),
        note="shared machine: figures are noisy",
    )
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        bench_tiles(args, Path(tmp))
        bench_witnesses(args, Path(tmp))


if __name__ == "__main__":
    main()
