#!/usr/bin/env python3
"""Server memory as a log of signed statements grows: RSS at 0, 100,000 and 1,000,000 entries.

Builds N statements with bench_audit's generator (humans granting, agents acting in 64
sessions per generator process, approvals, INTENT/OUTCOME pairs, one in a thousand out of
scope), appends them to a real `affidavit serve` (LevelDB, every ingest check on) in
dependency-free batches of 1,000, and reads the server's memory from /proc after every batch.

Each mark prints RSS and VmHWM, RSS split by kind (anon: Python's heap and LevelDB's
memtables; tables: pages of LevelDB's table files mapped into the server; other files: the
interpreter and its libraries), and the mark's floors: each kind's least over the last
FLOOR_WINDOW statements, and held (RSS less the table pages). RSS at the mark itself swings
by over 100 MB with LevelDB's state at that moment (how full its memtable is, whether a
compaction is reading its inputs), so growth is read from floor to floor: the
server_rss_growth line gives it in MB and per 1,000 statements (in all, anon, tables and
held) from 100,000 and from 250,000 statements to the last mark, and says whether the held
memory is flat (at most FLAT_KB_PER_1000).

Where the plateau goes (the server probed in place at 250,000 statements, RSS 281 MB at the
mark; tracemalloc-free: object sizes, glibc's mallinfo2 and LevelDB's own memory figure):

- 34 MB the interpreter and its libraries (file-backed), and 40 MB of heap the server has
  before any append (modules, gRPC);
- 20 MB statements.state's RecordCache: 16,384 decoded records beside their bytes, about
  1.2 kB each (65,536 until the fourth speed session: 81 MB, full from about 100,000
  statements, most of the rise from 100k to 250k; at 16,384 the held floor at 300,000 fell
  from 223.7 to 160.9 MB);
  7 MB the gate's 20,000 committed records;
- 0 to 64 MB LevelDB's memtable (storage.WRITE_BUFFER_BYTES; 55 MB at that mark), and a
  second one while the full one is flushed;
- 60 to 90 MB freed memtables that malloc keeps for reuse (mallinfo2's free bytes, from
  100,000 statements on);
- 1 to 55 MB pages of LevelDB's table files: LevelDB maps each table file and reads it
  through the map, so only the pages a read touches are resident. Appending reads almost
  nothing from the tables, so an idle table keeps 4 kB resident (not its index and Bloom
  filter, some 60 kB per 2 MB table), while a compaction maps all of its inputs until it
  deletes them (up to its input size; a first-level merge reads four 25 MB flushed tables).

Nothing in that list grows with the log: the caches are bounded, the memtable and the
compaction's inputs are bounded by LevelDB's options, and LevelDB keeps at most 990 tables
open (max_open_files, its default 1,000, less 10 for its other files), all within its limit
of 1,000 mapped files. Probed at 250,000, 500,000 and 1,000,000 statements, anon memory less
LevelDB's own figure (its memtables) was 182, 185 and 195 MB: 16 kB per 1,000 statements,
within the swing of what malloc keeps. The table pages' floor does rise with the log (16 MB
at 250,000, 54 MB at 1,000,000 on a loaded machine): a deeper tree compacts more of the
time, so the floor catches a compaction's inputs more often; that is bounded by the largest
compaction, not by the log. The claim this docstring used to make (every open table's index
and filter held in memory, so RSS rising until about 1,000 tables) does not hold for
appends: at 800,000 statements (468 tables, 960 MB) the tables' index and filter blocks were
29 MB on disk, and the mapped tables held 1.9 MB in all. Reads are another matter (not
measured here): random point reads page in each table's index and filter, and a hit its data
block (in a plyvel test, 20,000 missing random keys left about 1 MB resident per 2 MB table,
the kernel mapping 64 kB around each page touched), so a read-heavy server's RSS can grow
towards the size of its open tables, up to 990 x 2 MB; those pages are the kernel's file
cache, dropped under memory pressure. Raising max_open_files past 1,000 would be worse:
tables opened beyond LevelDB's 1,000 maps read their index and filter into the heap, where
the kernel cannot drop them.

    .venv/bin/python benchmarks/bench_memory.py                      # 1,000,000 statements
    .venv/bin/python benchmarks/bench_memory.py --entries 200000     # quicker

Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from affidavit.client.client import Client  # noqa: E402
from affidavit.client.verify import TrustPolicy  # noqa: E402
from affidavit.proto import affidavit_pb2 as pb  # noqa: E402
from affidavit.statements import build  # noqa: E402
from affidavit.statements.signing import IdentityKey  # noqa: E402
from audit_log_bench import actions, setup, waves  # noqa: E402
from audit_network_bench import start_server  # noqa: E402
from processes_bench import proc_status  # noqa: E402

MARKS = (0, 10_000, 100_000, 250_000, 500_000, 1_000_000)
"""Log sizes at which RSS is read (those up to --entries, and --entries itself)."""
PART = 20_000
"""Statements built and appended at a time (appended well within the 300 s the log allows a
client's clock to differ from its own, even on a loaded machine)."""
PER_PAIR = 2.02
"""Statements per INTENT/OUTCOME pair of bench_audit's generator (one in 50 has an approval)."""
FLOOR_WINDOW = 40_000
"""Statements over which a mark's floors (least of each kind) are taken: more than two
memtable flushes (a 64 MiB memtable holds about 17,000 statements), so the anon floor is read
with the memtable near empty, whatever it held at the mark itself."""
GROWTH_FROM = (100_000, 250_000)
"""Marks from which growth to the last mark is reported: 100,000 (the issue's figure; the
record cache is still filling until about then) and 250,000 (every cache long full)."""
FLAT_KB_PER_1000 = 32
"""The memory the server holds (RSS less its mapped table pages, at its floor) may grow at most
this much per 1,000 statements to count as flat: 32 MB per million statements, an eighth of
the plateau, and above the floors' noise (the memory malloc keeps after a flush swings by
some 20 MB)."""


def memory_kb(pid: int) -> dict[str, int]:
    """The server's resident memory split by kind, in kB: anon (Python's heap, LevelDB's
    memtables and caches), tables (pages of LevelDB's table files it maps to read them:
    file-backed, so the kernel may drop them under pressure) and other files (the
    interpreter and libraries)."""
    tables = 0
    in_table = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=6)
            if "-" in head[0] and ":" not in head[0]:  # a mapping's first line
                in_table = line.rstrip().endswith(".ldb")
            elif in_table and head[0] == "Rss:":
                tables += int(head[1])
    return {
        "rss_kb": proc_status(pid, "VmRSS"),
        "anon_kb": proc_status(pid, "RssAnon"),
        "tables_kb": tables,
        "other_files_kb": proc_status(pid, "RssFile") - tables,
    }


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def growth(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Whether memory is flat from base to top: the floors' growth in MB, and per 1,000
    statements, in all and by kind. Flat is judged on the memory the server holds, RSS less
    the mapped pages of LevelDB's table files (the kernel's file cache, which it drops under
    pressure, and at most the inputs of the compaction running at the time)."""
    per_1000: float = (top["entries"] - base["entries"]) / 1000

    def kb_per_1000(kind: str) -> float:
        rise: int = top["floor"][kind] - base["floor"][kind]
        return round(rise / per_1000, 2)

    held = kb_per_1000("held_kb")
    return {
        "bench": "server_rss_growth",
        "from_entries": base["entries"],
        "to_entries": top["entries"],
        "floor_growth_mb": round((top["floor"]["rss_kb"] - base["floor"]["rss_kb"]) / 1024, 1),
        "floor_kb_per_1000": kb_per_1000("rss_kb"),
        "floor_anon_kb_per_1000": kb_per_1000("anon_kb"),
        "floor_tables_kb_per_1000": kb_per_1000("tables_kb"),
        "floor_held_kb_per_1000": held,
        "mark_growth_mb": round((top["rss_kb"] - base["rss_kb"]) / 1024, 1),
        "mark_ratio": round(top["rss_kb"] / base["rss_kb"], 3),
        "entries_ratio": round(top["entries"] / base["entries"], 1),
        "flat": held <= FLAT_KB_PER_1000,
        "flat_means_held_kb_per_1000_at_most": FLAT_KB_PER_1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="statements in the log")
    args = parser.parse_args(argv)
    marks = sorted({m for m in MARKS if m < args.entries} | {args.entries})

    token = "bench-" + hashlib.sha256(os.urandom(16)).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "log"
        server, port = start_server(data_dir, hashlib.sha256(token.encode()).hexdigest())
        try:
            samples: deque[tuple[int, dict[str, int]]] = deque()

            def mark(size: int, **extra: Any) -> dict[str, Any]:
                now = memory_kb(server.pid)
                window = [kb for _, kb in samples] or [now]
                # Each kind's least over the window, apart: the memtable's low point and a
                # compaction's are seldom the same sample.
                floor = {kind: min(kb[kind] for kb in window) for kind in now}
                floor["held_kb"] = min(kb["rss_kb"] - kb["tables_kb"] for kb in window)
                figure = {
                    "bench": "server_rss_statements",
                    "entries": size,
                    **now,
                    "hwm_kb": proc_status(server.pid, "VmHWM"),
                    "floor": floor,
                    **extra,
                }
                emit(figure)
                return figure

            at_start = mark(1)
            admin = IdentityKey.load(data_dir / "admin.key")
            policy = TrustPolicy((data_dir / "log.pub").read_text().strip())
            figures = {0: at_start}
            cast_log, cast = setup(admin, False, build.now_ms())
            size, pending, appended, spent, salt = 1, list(marks[1:]), 0, 0.0, 0
            with (
                Client(f"127.0.0.1:{port}", policy, token=token, timeout=600) as client,
                multiprocessing.get_context("spawn").Pool(2) as pool,
            ):
                for leaf in cast_log.leaves:  # identities and grants, one after another
                    client.call(client.stub.Append, pb.AppendRequest(entry=leaf))
                size += len(cast_log.leaves)
                while size < args.entries:
                    # Built a part at a time: statements carry the client's time, which the
                    # log accepts only within 300 s of its own clock.
                    pairs = max(2, round(min(PART, args.entries - size) / PER_PAIR))
                    time_ms = build.now_ms()
                    jobs = [
                        (cast, time_ms, pairs // 2 + i * (pairs % 2), salt + i, 64) for i in (0, 1)
                    ]
                    salt += 2
                    leaves = [leaf for part in pool.map(actions, jobs) for leaf in part.leaves]
                    began = time.perf_counter()
                    for batch in waves(leaves, 1000):
                        response = client.call(
                            client.stub.AppendBatch, pb.AppendBatchRequest(entries=batch)
                        )
                        refused = [r for r in response.results if r.WhichOneof("result") != "ok"]
                        if refused:
                            raise SystemExit(f"append refused: {refused[0].error.message}")
                        size += len(batch)
                        appended += len(batch)
                        samples.append((size, memory_kb(server.pid)))
                        while samples[0][0] < size - FLOOR_WINDOW:
                            samples.popleft()
                        while pending and size >= pending[0]:
                            rate = appended / (spent + time.perf_counter() - began)
                            figures[pending.pop(0)] = mark(size, appended_per_s=round(rate))
                    spent += time.perf_counter() - began
            for base in GROWTH_FROM:
                if base in figures and max(figures) >= 2 * base:
                    emit(growth(figures[base], figures[max(figures)]))
        finally:
            server.terminate()
            server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
