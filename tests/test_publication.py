"""Step 3 of a scale-out batch (server.postgres_publish): its objects are created while step 2
commits it (write_ahead), and a batch whose commit fails leaves nothing a checkpoint covers;
batches a frontend sequenced while it wrote the first are published with it.

Real servers throughout (tests/backends.py, tests/serverproc.py). What the tests wait for is
held by the test itself, so nothing here depends on timing: step 2's commit by a PostgreSQL
session locking affidavit_pending in SHARE mode (the batch's INSERT of its pending row waits
for it); the object writes by stopping the object store (SIGSTOP).
"""

from __future__ import annotations

import re
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note, proofs
from affidavit.merkle.tiles import ENTRIES, Tile, TileHashReader, tile_at
from affidavit.proto import affidavit_pb2 as pb
from affidavit.server.objects_s3 import bundle_entries

from affidavit import merkle
from tests import backends, serverproc
from tests.backends import Scaleout
from tests.processes import wait_for
from tests.serverproc import RPC_TIMEOUT, ServerFactory
from tests.test_group_commit import waiting_for_the_head
from tests.test_scaleout import append_all, bucket_get, frontend, sequenced

scaleout = backends.scaleout
server_factory = serverproc.server_factory

BUNDLE = "log.private/" + Tile(ENTRIES, 0, 2).path()
"""The entry bundle of a log of two entries."""


def bundle(where: Scaleout) -> list[bytes] | None:
    data = bucket_get(where, BUNDLE)
    return None if data is None else bundle_entries(data)


def test_objects_are_written_during_the_commit_and_a_failed_commits_objects_replaced(
    server_factory: ServerFactory, scaleout: Scaleout
) -> None:
    s = frontend(server_factory, scaleout)
    append_all(s, [b"before"])
    with (
        psycopg.connect(scaleout.storage_url) as holder,
        ThreadPoolExecutor(1) as pool,
    ):
        holder.execute("LOCK TABLE affidavit_pending IN SHARE MODE")  # step 2 waits on this
        call = pool.submit(s.stub.Append, pb.AppendRequest(entry=b"never"), timeout=RPC_TIMEOUT)
        wait_for("the commit to wait", lambda: waiting_for_the_head(scaleout) > 0)
        # The batch's objects are created while its commit waits (not after it).
        wait_for("the bundle written ahead", lambda: bundle(scaleout) == [b"before", b"never"])
        with psycopg.connect(scaleout.storage_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        with pytest.raises(grpc.RpcError) as failed:
            call.result()
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        holder.rollback()
    # That batch was never committed: the next one, at the same index, replaces its objects
    # (create-only first finds them there), and the bucket is the tlog-tiles API of the log
    # the frontend signed; the frontend's own reads never saw the failed batch's bytes.
    wait_for("appends to work again", lambda: _appends(s, b"other"))
    assert [e.data for e in s.all_entries()] == [b"before", b"other"]
    assert bundle(scaleout) == [b"before", b"other"]
    text = bucket_get(scaleout, "log/checkpoint")
    assert text is not None
    cp = checkpoints.parse(note.open(text.decode(), [s.verifier_key]))
    assert cp.size == 2 and cp.root_hash == s.checkpoint().root_hash

    def read_tiles(tiles: list[Tile]) -> list[bytes]:
        out = []
        for t in tiles:
            data = bucket_get(scaleout, "log/" + tile_at(t.level, t.index, cp.size).path())
            assert data is not None, t.path()
            out.append(data)
        return out

    reader = TileHashReader(cp.size, read_tiles)
    for index, entry in enumerate([b"before", b"other"]):
        proof = proofs.prove_inclusion(index, cp.size, reader)
        merkle.verify_inclusion(hashing.leaf_hash(entry), index, cp.size, proof, cp.root_hash)


def _appends(s: serverproc.ServerProcess, entry: bytes) -> bool:
    try:
        append_all(s, [entry])
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        return False
    return True


def test_batches_sequenced_while_one_is_written_are_published_with_it(
    server_factory: ServerFactory, scaleout: Scaleout
) -> None:
    s = frontend(server_factory, scaleout)
    append_all(s, [b"before"])
    weed = scaleout.objects.proc
    assert weed is not None
    # With the object store stopped, the first batch's publication waits for its objects
    # while the second batch is sequenced on top of it.
    weed.send_signal(signal.SIGSTOP)
    try:
        calls = []
        for size, entry in enumerate([b"first", b"second"], start=2):
            calls.append(s.stub.Append.future(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT))
            sequenced(scaleout, size)
    finally:
        weed.send_signal(signal.SIGCONT)
    assert [c.result().index for c in calls] == [1, 2]
    assert s.stop() == 0
    # One mark, one advance and one checkpoint object for both: two checkpoint PUTs in all
    # (the first batch's, then theirs), not three.
    # (`init`, which made the log, logged such lines before.)
    *_, batches = re.findall(r"head lock per batch: batches (\d+)", s.stderr)
    *_, per_batch = re.findall(r"publication per batch: .*s3_put_checkpoint ([\d.]+)", s.stderr)
    assert int(batches) == 3 and round(int(batches) * float(per_batch)) == 2, s.stderr
    s.start()
    assert [e.data for e in s.all_entries()] == [b"before", b"first", b"second"]
