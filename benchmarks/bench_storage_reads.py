#!/usr/bin/env python3
"""What the storage's fault handling costs a read, beside the bare LevelDB read it wraps.

Storage reads verify block checksums and count the reads in flight (so a database whose write
failed can be closed and reopened safely). Figures: Storage.index_of (one lookup a call, as a
GetInclusionProof by leaf hash makes) and Storage.indexes_of (a batch's lookups in one call, as
the integrator makes them); their ceiling is plyvel's own get without checksums, on the same
database in the same run. Prints JSON lines.

    .venv/bin/python benchmarks/bench_storage_reads.py [--keys 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from affidavit.server.storage import Batch, Storage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(Path(tmp) / "db", create=True, min_free_bytes=0)
        hashes = [os.urandom(32) for _ in range(args.keys)]
        for at in range(0, len(hashes), 10_000):
            chunk = hashes[at : at + 10_000]
            storage.commit(
                Batch(at, [b"x"] * len(chunk), chunk, {}, f"cp {at}"),
                previous=storage.checkpoint(),
            )
        probes = hashes[::2] + [os.urandom(32) for _ in range(len(hashes) // 2)]  # half miss
        raw = storage._db  # the bare LevelDB handle: the ceiling
        assert raw is not None

        def bare() -> None:
            for h in probes:
                raw.get(b"h/" + h)

        def wrapped() -> None:
            for h in probes:
                storage.index_of(h)

        def batched() -> None:
            for at in range(0, len(probes), 1000):
                storage.indexes_of(probes[at : at + 1000])

        bare()  # warm LevelDB's block cache first: both then read from memory
        loads = (("plyvel_get", bare), ("index_of", wrapped), ("indexes_of", batched))
        rates: dict[str, list[float]] = {name: [] for name, _ in loads}
        for _ in range(args.runs):  # alternated, so load on the machine hits all alike
            for name, run in loads:
                start = time.perf_counter()
                run()
                rates[name].append(len(probes) / (time.perf_counter() - start))
        figures = {name: statistics.median(r) for name, r in rates.items()}
        for name, rate in figures.items():
            print(json.dumps({"bench": name, "reads_per_s": round(rate), "runs": args.runs}))
        storage.close()
    for name in ("index_of", "indexes_of"):
        ratio = round(figures[name] / figures["plyvel_get"], 3)
        print(json.dumps({"ratio": f"{name}/plyvel_get", "value": ratio}))
    print(json.dumps({"bench": "machine", "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
