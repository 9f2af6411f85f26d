"""Group commit on a shared log (server.sequencer): a frontend takes the head lock first and
only then forms its batch, so everything that queued while another holder kept the lock goes
in one batch, under one lock.

Real servers throughout (tests/backends.py, tests/serverproc.py). The other holder of the
head row is this test's own PostgreSQL session, locking the row as a frontend does for a
batch: it holds the lock for as long as the test needs, so nothing here depends on timing.
Batches are counted from the server's metrics and from its head-lock-times log line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import psycopg
import pytest
from affidavit.proto import affidavit_pb2 as pb

from tests import backends, serverproc
from tests.backends import Scaleout
from tests.processes import wait_for
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess
from tests.test_operable import scrape
from tests.test_scaleout import append_all, frontend

scaleout = backends.scaleout
server_factory = serverproc.server_factory

CALLS = 5
"""Calls queued behind the first while the head is held elsewhere."""

PER_CALL = 2


def waiting_for_the_head(where: Scaleout) -> int:
    """Sessions of the log's database waiting for a lock (a frontend asking for the head)."""
    with psycopg.connect(where.storage_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


class HeldHead:
    """The log's head row, locked FOR UPDATE by this test as a frontend locks it for a batch."""

    def __init__(self, where: Scaleout) -> None:
        self._conn = psycopg.connect(where.storage_url)
        self._conn.execute("SELECT size FROM affidavit_head WHERE id = 1 FOR UPDATE")

    def release(self) -> None:
        if not self._conn.closed:
            self._conn.rollback()
            self._conn.close()


@pytest.fixture
def held(scaleout: Scaleout) -> Iterator[Callable[[], HeldHead]]:
    taken: list[HeldHead] = []

    def take() -> HeldHead:
        taken.append(HeldHead(scaleout))
        return taken[-1]

    yield take
    for h in taken:
        h.release()


def batches(s: ServerProcess) -> tuple[float, float]:
    """(batches integrated, entries in them) so far, from the server's metrics."""
    samples = scrape(s)
    return samples[("affidavit_batch_entries_count", ())], samples[
        ("affidavit_batch_entries_sum", ())
    ]


def tree_size(receipt: pb.AppendResponse) -> int:
    """The size of the checkpoint an entry was answered with (its note's second line)."""
    return int(receipt.checkpoint.split("\n")[1])


def queued(s: ServerProcess) -> float:
    return scrape(s)[("affidavit_queue_entries", ())]


def queue_behind_held_head(
    s: ServerProcess, where: Scaleout, pool: ThreadPoolExecutor, tag: str
) -> list[Future[pb.AppendBatchResponse]]:
    """One call that the frontend takes and then waits for the head with (the head is held),
    then CALLS more that queue behind it; their futures, in order."""
    before = waiting_for_the_head(where)

    def call(entries: list[bytes]) -> Future[pb.AppendBatchResponse]:
        request = pb.AppendBatchRequest(entries=entries)
        return pool.submit(s.stub.AppendBatch, request, timeout=RPC_TIMEOUT)

    calls = [call([f"{tag}-first".encode()])]
    wait_for("the frontend to ask for the head", lambda: waiting_for_the_head(where) > before)
    for c in range(CALLS):  # one at a time: their queue order is known
        calls.append(call([f"{tag}-{c}-{i}".encode() for i in range(PER_CALL)]))
        want = (c + 1) * PER_CALL
        wait_for("the call to queue behind the first", lambda: queued(s) == want)  # noqa: B023
    return calls


def appended_behind_held_head(
    s: ServerProcess, where: Scaleout, head: HeldHead, tag: str
) -> list[pb.AppendResponse]:
    """queue_behind_held_head, then release the head; every entry's receipt, in call order
    (each must be one)."""
    with ThreadPoolExecutor(CALLS + 1) as pool:
        calls = queue_behind_held_head(s, where, pool, tag)
        head.release()
        answers = [c.result() for c in calls]
    assert all(r.WhichOneof("result") == "ok" for a in answers for r in a.results)
    return [r.ok for a in answers for r in a.results]


def test_entries_queued_while_the_head_is_held_elsewhere_go_in_one_batch(
    server_factory: ServerFactory, scaleout: Scaleout, held: Callable[[], HeldHead]
) -> None:
    s = frontend(server_factory, scaleout, None, "--metrics-listen", "127.0.0.1:0")
    size = len(append_all(s, [b"before"]))
    count, entries = batches(s)
    receipts = appended_behind_held_head(s, scaleout, held(), "grouped")
    new = 1 + CALLS * PER_CALL
    # In queue order, at consecutive indexes, all answered with the one batch's checkpoint.
    assert [r.index for r in receipts] == list(range(size, size + new))
    assert {tree_size(r) for r in receipts} == {size + new}
    after_count, after_entries = batches(s)
    assert (after_count - count, after_entries - entries) == (1, new)


def test_a_full_batch_carries_the_rest_to_the_next_lock(
    server_factory: ServerFactory, scaleout: Scaleout, held: Callable[[], HeldHead]
) -> None:
    # --batch-size 5 (entries): the first call and two of two entries fit; the rest follow,
    # in order, in the batches after.
    s = frontend(
        server_factory, scaleout, None, "--metrics-listen", "127.0.0.1:0", "--batch-size", "5"
    )
    size = len(append_all(s, [b"before"]))
    count, _ = batches(s)
    receipts = appended_behind_held_head(s, scaleout, held(), "carried")
    new = 1 + CALLS * PER_CALL
    assert [r.index for r in receipts] == list(range(size, size + new))
    sizes = [tree_size(r) for r in receipts]
    assert sizes[:5] == [size + 5] * 5, "the first batch: the first call and two more, full"
    assert sorted(set(sizes)) == [size + 5, size + 9, size + 11]
    assert batches(s)[0] - count == 3


def test_stopping_while_waiting_for_the_head_integrates_everything_queued(
    server_factory: ServerFactory, scaleout: Scaleout, held: Callable[[], HeldHead]
) -> None:
    s = frontend(server_factory, scaleout, None, "--metrics-listen", "127.0.0.1:0")
    size = len(append_all(s, [b"before"]))
    head = held()
    with ThreadPoolExecutor(CALLS + 1) as pool:
        calls = queue_behind_held_head(s, scaleout, pool, "stopping")
        assert s.proc is not None
        s.proc.terminate()
        wait_for("the stop to begin", lambda: "stopping: finishing requests in flight" in s.stderr)
        head.release()
        answers = [c.result() for c in calls]
    assert s.wait_exit() == 0
    new = 1 + CALLS * PER_CALL
    receipts = [r.ok for a in answers for r in a.results]
    assert [r.index for r in receipts] == list(range(size, size + new))
    # The head-lock-times line the frontend logs as it stops: two batches (the one before,
    # the grouped one), whatever the lock's timing.
    # (`init`, which made the log, logged one such line before it.)
    *_, (count, per_batch) = re.findall(
        r"head lock per batch: batches (\d+), entries_per_batch ([\d.]+)", s.stderr
    )
    assert (int(count), float(per_batch)) == (2, (size + new) / 2), s.stderr
    s.start()
    assert s.checkpoint().size == size + new


def test_a_lost_connection_while_waiting_for_the_head_fails_that_batch_only(
    server_factory: ServerFactory, scaleout: Scaleout, held: Callable[[], HeldHead]
) -> None:
    s = frontend(server_factory, scaleout, None, "--metrics-listen", "127.0.0.1:0")
    size = len(append_all(s, [b"before"]))
    head = held()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(s.stub.Append, pb.AppendRequest(entry=b"lost"), timeout=RPC_TIMEOUT)
        wait_for("the frontend to ask for the head", lambda: waiting_for_the_head(scaleout) > 0)
        with psycopg.connect(scaleout.storage_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        with pytest.raises(grpc.RpcError) as failed:
            first.result()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    head.release()
    # Nothing stays held: the next appends go in, after the entry before.
    wait_for("appends to work again", lambda: _appends(s))
    assert s.checkpoint().size == size + 1
    assert [e.data for e in s.all_entries()] == [b"before", b"after"]


def _appends(s: ServerProcess) -> bool:
    try:
        append_all(s, [b"after"])
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        return False
    return True
