"""server.head_lock_times: the per-batch sums a scale-out frontend logs for the head lock and
for step 3 (its parts, and its object store requests by kind)."""

from __future__ import annotations

import threading
import time

from affidavit.merkle.tiles import ENTRIES, Tile
from affidavit.server.head_lock_times import HeadLockTimes, PublishTimes
from affidavit.server.objects_s3 import request_kind


def test_waits_holds_and_parts_are_summed_per_batch() -> None:
    times = HeadLockTimes()
    for entries in (100, 300):
        asked = times.asked()
        time.sleep(0.02)
        times.holding(asked, asked + 0.010)  # granted 10 ms after it was asked for
        with times.part("commit"):
            pass
        times.released(entries)
    got = times.summary()
    assert got["batches"] == 2 and got["entries_per_batch"] == 200
    assert got["commit_calls"] == 1  # per batch
    assert 9.9 <= got["waited_ms"] < 20  # the grant as the database stamped it
    assert got["held_ms"] >= got["commit_ms"] >= 0


def test_only_the_holders_thread_counts_parts_and_a_grant_stays_in_range() -> None:
    times = HeadLockTimes()
    with times.part("lookups"):  # not held: nothing counted
        pass
    asked = times.asked()
    times.holding(asked, asked - 5.0)  # a database clock behind: no negative wait
    with times.part("tiles"):
        reader = threading.Thread(target=_read_in_another_thread, args=(times,))
        reader.start()
        reader.join()
    times.released(1)
    got = times.summary()
    assert got["waited_ms"] == 0
    assert "lookups_ms" not in got and "reader_ms" not in got and "tiles_ms" in got
    times.released(5)  # not held: not a batch
    assert times.summary()["batches"] == 1


def _read_in_another_thread(times: HeadLockTimes) -> None:
    with times.part("reader"):
        pass


def test_publication_parts_and_requests_are_per_batch() -> None:
    times = PublishTimes()
    for _ in range(3):
        with times.part("objects"):
            pass
    got = times.summary(2, {"put_checkpoint": 2, "put_tile0_full": 5})
    assert got["objects_calls"] == 1.5 and got["objects_ms"] >= 0
    assert got["s3_put_checkpoint"] == 1 and got["s3_put_tile0_full"] == 2.5


def test_requests_are_told_apart_by_what_their_path_holds() -> None:
    kinds = {
        "checkpoint": "put_checkpoint",
        Tile(ENTRIES, 1).path(): "put_bundle_full",
        Tile(ENTRIES, 1, 7).path(): "put_bundle_partial",
        Tile(0, 1234).path(): "put_tile0_full",
        Tile(2, 0, 3).path(): "put_tile2_partial",
    }
    assert {p: request_kind("put", p) for p in kinds} == kinds


def test_a_part_before_the_grant_is_told_added() -> None:
    times = HeadLockTimes()
    asked = times.asked()
    times.holding(asked, asked)
    times.add("catch_up", 0.004)
    times.released(10)
    got = times.summary()
    assert got["catch_up_ms"] == 4 and got["catch_up_calls"] == 1
