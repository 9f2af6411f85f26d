#!/usr/bin/env python3
"""The server CPU a read costs: GetInclusionProof, GetConsistencyProof and HTTP tile GETs
against a real `affidavit serve`, this checkout's and (with --against) another's, alternated.

    .venv/bin/python benchmarks/bench_reads.py [--storage leveldb|scaleout] [--entries 50000]
        [--against /path/to/other/checkout/.venv/bin/affidavit] [--profile DIR]

Each server serves a log of --entries opaque 1 KiB entries (scaleout: PostgreSQL + S3 through
tests/backends.py, one frontend; every server gets a database and bucket of its own). Loads:
inclusion and consistency proofs at the log's size from 64 callers (aio, --procs client
processes, bench_append.py's harness), and GETs of random level-0 tiles (every full one and
the partial one) over 64 keep-alive HTTP connections from this process. Every load runs --runs
times, the servers alternated within each run (base, change, base, change ...), so load on
the machine falls on all alike. Figures: reads/s and server CPU µs per read (its CPU time over
the measured window, all threads; steadier than the rate on a shared machine), medians, and
each server's CPU per read over this checkout's. With --profile, py-spy samples this
checkout's server (its GIL holder) during one extra run of each load. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_http import load as tile_gets  # noqa: E402
from loads_bench import Bench, emit, r3  # noqa: E402
from processes_bench import Process, tree_size  # noqa: E402

from tests.backends import ObjectServer, Postgres  # noqa: E402

CALLERS = 64
BUILD_BATCH = 1000


class Server(Process):
    """A log server under test: its gRPC target (Process) and its HTTP face's URL."""

    http_url = ""


def start_server(exe: str, data_dir: Path, storage: list[str], env: dict[str, str]) -> Server:
    """exe's `affidavit serve` of a new opaque log, with the HTTP face. The server's parts
    (affidavit.server, .merkle, ...) are those exe's environment installs, even with this
    checkout on its path (Process puts it there): this checkout holds only the top package."""
    argv = [exe, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0", "--entry-format", "opaque", *storage]  # fmt: skip
    srv = Server(argv, r" at 127\.0\.0\.1:(\d+),", stream="stderr", env=env)
    srv.wait_serving()
    for line in list(srv.tail):  # logged before the gRPC port's line
        if m := re.search(r"HTTP at 127\.0\.0\.1:(\d+)", line):
            srv.http_url = f"http://127.0.0.1:{m.group(1)}"
    if not srv.http_url:
        srv.stop()
        raise RuntimeError("the server did not report its HTTP port:\n" + "\n".join(srv.tail))
    return srv


def fill(b: Bench, srv: Server, entries: int) -> None:
    """Grow the log to entries, AppendBatch of BUILD_BATCH from the client processes."""
    need = entries - tree_size(srv.target)
    procs = b.args.procs
    per = [need // procs + (1 if i < need % procs else 0) for i in range(procs)]
    b.workers.run([
        {"target": srv.target, "kind": "fill", "callers": 2, "mode": "aio",
         "start_at": time.time(), "warmup": 0.0, "duration": 0.0, "batch": BUILD_BATCH,
         "quota": q, "seed": 900 + i}
        for i, q in enumerate(per) if q
    ])  # fmt: skip


async def get_by_hash(target: str, leaves: list[bytes], size: int, seconds: float) -> int:
    """GetInclusionProof by leaf hash (random leaves of the tree) for seconds from CALLERS
    callers on one channel; the proofs answered."""
    import grpc
    from affidavit.proto import affidavit_pb2 as pb
    from affidavit.proto import affidavit_pb2_grpc as pb_grpc

    done = 0
    stop_at = time.monotonic() + seconds
    rng = random.Random(11)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.LogStub(channel)

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                ask = pb.GetInclusionProofRequest(leaf_hash=rng.choice(leaves), tree_size=size)
                await stub.GetInclusionProof(ask, timeout=30)
                done += 1

        await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return done


def by_hash_once(
    args: argparse.Namespace, srv: Server, leaves: list[bytes], size: int
) -> dict[str, float]:
    asyncio.run(get_by_hash(srv.target, leaves, size, args.warmup))
    cpu0, t0 = srv.cpu_s(), time.perf_counter()
    done = asyncio.run(get_by_hash(srv.target, leaves, size, args.duration))
    wall = time.perf_counter() - t0
    return {"calls_per_s": done / wall, "server_cpu": (srv.cpu_s() - cpu0) / wall}


def leaf_hashes(srv: Server, size: int) -> list[bytes]:
    """The leaf hashes of the tree's full level-0 tiles, read from srv's HTTP face."""
    from affidavit.merkle.tiles import Tile

    out = []
    for n in range(size // 256):
        with urllib.request.urlopen(srv.http_url + "/" + Tile(0, n).path(), timeout=10) as r:
            data = r.read()
        out += [data[i : i + 32] for i in range(0, len(data), 32)]
    return out


def tiles_once(args: argparse.Namespace, srv: Server, paths: list[str]) -> dict[str, float]:
    asyncio.run(tile_gets(srv.http_url, paths, CALLERS, args.warmup))
    cpu0, t0 = srv.cpu_s(), time.perf_counter()
    per_s = asyncio.run(tile_gets(srv.http_url, paths, CALLERS, args.duration))
    wall = time.perf_counter() - t0
    return {"calls_per_s": per_s, "server_cpu": (srv.cpu_s() - cpu0) / wall}


def level0_paths(size: int) -> list[str]:
    from affidavit.merkle.tiles import tiles_for_size

    return ["/" + t.path() for t in tiles_for_size(size, 0)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", choices=("leveldb", "scaleout"), default="leveldb")
    p.add_argument("--entries", type=int, default=50_000)
    p.add_argument("--against", default=None, help="another checkout's affidavit executable")
    p.add_argument("--loads", default="inclusion,consistency,tiles")
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--profile", default=None, help="py-spy profiles of this checkout's server")
    args = p.parse_args()
    here = shutil.which("affidavit", path=str(Path(sys.executable).parent))
    assert here is not None, "the affidavit command is not installed in this environment"
    exes = {"this": here, **({"against": args.against} if args.against else {})}
    loads = args.loads.split(",")
    root = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    pg = s3 = None
    b = Bench(args)
    servers: dict[str, Server] = {}
    try:
        env: dict[str, str] = {}
        if args.storage == "scaleout":
            (root / "postgres").mkdir()
            pg, s3 = Postgres(root / "postgres"), ObjectServer(root)
            pg.start()
            s3.start()
            env = s3.env()
        for name, exe in exes.items():
            storage = []
            if pg is not None and s3 is not None:
                storage = ["--storage", pg.new_database(), "--objects",
                           f"s3://{s3.new_bucket()}/log"]  # fmt: skip
            servers[name] = start_server(exe, root / name, storage, env)
            fill(b, servers[name], args.entries)
        size = min(tree_size(s.target) for s in servers.values())
        paths = level0_paths(size)
        wanted = "by_hash" in loads
        leaves = {name: leaf_hashes(srv, size) if wanted else [] for name, srv in servers.items()}
        emit({"bench": "reads_setup", "storage": args.storage, "tree_size": size,
              "servers": exes, "loadavg": os.getloadavg()})  # fmt: skip
        figures: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.runs):
            for load in loads:
                for name, srv in servers.items():
                    b.server = srv
                    if load == "tiles":
                        fig = tiles_once(args, srv, paths)
                    elif load == "by_hash":
                        fig = by_hash_once(args, srv, leaves[name], size)
                    else:
                        fig = b.load_once(srv.target, load, CALLERS, "aio", args.procs,
                                          tree_size=size)  # fmt: skip
                    figures.setdefault((load, name), []).append(fig)
        for load in loads:
            ours = None
            for name in servers:
                runs = figures[(load, name)]
                us = [1e6 * r["server_cpu"] / max(1.0, r["calls_per_s"]) for r in runs]
                out = {"bench": f"read_{load}", "storage": args.storage, "server": name,
                       "reads_per_s": round(statistics.median(r["calls_per_s"] for r in runs)),
                       "server_cpu": r3(statistics.median(r["server_cpu"] for r in runs)),
                       "server_cpu_us_per_read": r3(statistics.median(us)),
                       "server_cpu_us_per_read_each": [round(u, 1) for u in us]}  # fmt: skip
                emit(out)
                ours = ours or out["server_cpu_us_per_read"]
                if name != "this":
                    emit({"ratio": f"read_{load}_cpu_per_read_{name}/this",
                          "value": r3(out["server_cpu_us_per_read"] / ours)})  # fmt: skip
        if args.profile:
            srv = servers["this"]
            for load in loads:

                def run(seconds: float, load: str = load) -> object:
                    if load == "tiles":
                        return asyncio.run(tile_gets(srv.http_url, paths, CALLERS, seconds))
                    return b.load_once(srv.target, load, CALLERS, "aio", args.procs,
                                       duration=seconds, tree_size=size)  # fmt: skip

                b.profile(f"read_{load}_{args.storage}", srv.pid, run)
        emit({"bench": "machine", "loadavg": os.getloadavg()})
    finally:
        b.server = None
        for srv in servers.values():
            srv.stop()
        b.close()
        if pg is not None:
            pg.stop()
        if s3 is not None:
            s3.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
