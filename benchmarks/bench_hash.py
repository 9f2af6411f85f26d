"""Hashing benchmark: the C core, the pure-Python core, and raw hashlib SHA-256.

Three figures, each the median of several runs:
  leaf_1KiB   leaf hashes of 1 KiB entries (leaf_hashes over one batch of 100,000)
  node_level  node hashes over one level of 2**20 hashes (subtree_roots at height 1)
  root        the root of 1,000,000 leaf hashes (root_hash)

The raw baseline is hashlib.sha256 over the same work: for leaves the same total bytes (0x00
prefix and entry, per leaf), for nodes two 64-byte compression blocks per node hash; its time
is converted to the equivalent hashes/s. It runs twice: "raw" hashes one buffer of that size
in one call, so it reads it all from memory, and "raw_cached" feeds one 1 MiB chunk, resident
in cache, over and over, which measures SHA-256 alone. All inputs are random bytes (a buffer of
zeros would be read from the kernel's shared zero page, always in cache).

Every figure prints as one JSON line; then come the ratios of C to the others as speedups.

Run: python benchmarks/bench_hash.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import ssl
import statistics
import time
from collections.abc import Callable
from typing import Any

from affidavit.merkle import _hashcore
from affidavit.merkle.hashing import PythonCore

ENTRY_SIZE = 1024
CACHED_CHUNK = 1 << 20
NODE_BLOCK_BYTES = 2 * 64  # a node hash compresses two blocks: 0x01 ‖ left ‖ right, padded

# Targets: the C root of a big tree at least 5x the pure-Python one, and every C figure
# within 1.5x of raw SHA-256 over the same compression work (raw_time / c_time >= 0.67).
C_VS_PYTHON_ROOT_TARGET = 5.0
C_VS_RAW_TARGET = 0.67


def emit(**line: Any) -> None:
    print(json.dumps(line), flush=True)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """The median of repeat timed calls, after one untimed call to warm caches and clocks."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sig(x: float) -> float:
    return float(f"{x:.4g}")


def rates(
    name: str,
    n: int,
    unit: str,
    runs: dict[str, Callable[[], object]],
    repeat: int,
    bytes_per_item: int = 0,
) -> dict[str, float]:
    """Times each backend's run over n items and prints its rate (and MB/s of items)."""
    times = {backend: median_time(fn, repeat) for backend, fn in runs.items()}
    for backend, t in times.items():
        common = {"bench": name, "backend": backend, "n": n, "median_of": repeat}
        emit(**common, value=sig(n / t), unit=f"{unit}/s")
        if bytes_per_item:
            emit(**common, value=sig(n * bytes_per_item / t / 1e6), unit="MB/s")
    return times


def ratios(name: str, times: dict[str, float], python_target: float | None = None) -> None:
    """C speed relative to Python and to raw hashlib (above 1: C is faster)."""
    emit(
        bench=name,
        ratio="c_vs_python",
        value=sig(times["python"] / times["c"]),
        **({"target": python_target} if python_target else {}),
    )
    for raw in ("raw", "raw_cached"):
        emit(
            bench=name,
            ratio=f"c_vs_{raw}",
            value=sig(times[raw] / times["c"]),
            target=C_VS_RAW_TARGET,
        )


def raw_runs(rng: random.Random, nbytes: int) -> dict[str, Callable[[], object]]:
    """The raw baselines: hashlib.sha256 over nbytes, from memory and from cache."""
    buffer = rng.randbytes(nbytes)
    chunk = buffer[:CACHED_CHUNK]
    whole, rest = divmod(nbytes, CACHED_CHUNK)
    tail = chunk[:rest]

    def cached() -> bytes:
        sha = hashlib.sha256()
        for _ in range(whole):
            sha.update(chunk)
        sha.update(tail)
        return sha.digest()

    return {"raw": lambda: hashlib.sha256(buffer).digest(), "raw_cached": cached}


def bench_leaves(rng: random.Random, n: int, repeat: int) -> None:
    entries = [rng.randbytes(ENTRY_SIZE) for _ in range(n)]
    times = rates(
        "leaf_1KiB",
        n,
        "hashes",
        {
            "c": lambda: _hashcore.leaf_hashes(entries),
            "python": lambda: PythonCore.leaf_hashes(entries),
            **raw_runs(rng, n * (1 + ENTRY_SIZE)),
        },
        repeat,
        bytes_per_item=ENTRY_SIZE,
    )
    ratios("leaf_1KiB", times)


def bench_nodes(rng: random.Random, level: int, repeat: int) -> None:
    hashes = rng.randbytes(32 * level)
    times = rates(
        "node_level",
        level // 2,
        "nodes",
        {
            "c": lambda: _hashcore.subtree_roots(hashes, 1),
            "python": lambda: PythonCore.subtree_roots(hashes, 1),
            **raw_runs(rng, level // 2 * NODE_BLOCK_BYTES),
        },
        repeat,
    )
    ratios("node_level", times)


def bench_root(rng: random.Random, n: int, repeat: int) -> None:
    hashes = rng.randbytes(32 * n)
    runs: dict[str, Callable[[], object]] = {
        "c": lambda: _hashcore.root_hash(hashes),
        "python": lambda: PythonCore.root_hash(hashes),
        **raw_runs(rng, (n - 1) * NODE_BLOCK_BYTES),  # n leaves have n - 1 interior nodes
    }
    times = {backend: median_time(fn, repeat) for backend, fn in runs.items()}
    for backend, t in times.items():
        emit(bench="root", backend=backend, n=n, value=sig(t), unit="s", median_of=repeat)
    ratios("root", times, python_target=C_VS_PYTHON_ROOT_TARGET)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="inputs a tenth as big or so, 3 runs each (a smoke test)",
    )
    args = parser.parse_args()
    repeat = 3 if args.quick else 5
    leaves, level, tree = (10_000, 1 << 16, 100_000) if args.quick else (100_000, 1 << 20, 10**6)

    emit(
        bench="info",
        c_sha_path="sha-extensions" if _hashcore.has_sha_extensions() else "portable",
        raw="hashlib " + ssl.OPENSSL_VERSION,
        python=platform.python_version(),
        machine=platform.machine(),
    )
    rng = random.Random(6962)
    bench_leaves(rng, leaves, repeat)
    bench_nodes(rng, level, repeat)
    bench_root(rng, tree, repeat)


if __name__ == "__main__":
    main()
