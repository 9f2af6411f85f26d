"""A log in PostgreSQL and object storage, served by several stateless frontends.

Real servers throughout: PostgreSQL and SeaweedFS from tests/backends.py, `affidavit serve`
processes from tests/serverproc.py. Bounded by default; AFFIDAVIT_SLOW=1 runs longer loads.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note, proofs
from affidavit.merkle.tiles import ENTRIES, Tile, TileHashReader, tile_at
from affidavit.proto import affidavit_pb2 as pb
from affidavit.proto import affidavit_pb2_grpc as pb_grpc
from affidavit.server.objects_s3 import bundle_entries

from affidavit import merkle
from tests import backends, serverproc
from tests import test_durability as durability
from tests.backends import Scaleout
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess

scaleout = backends.scaleout
server_factory = serverproc.server_factory

SLOW = os.environ.get("AFFIDAVIT_SLOW") == "1"
LOAD_S = 10.0 if SLOW else 2.0


def frontend(factory: ServerFactory, where: Scaleout, data_dir: Path | None = None, *args: str):
    """A started `affidavit serve` on the scale-out log (creating it on the first call)."""
    return factory(*where.args(), *args, data_dir=data_dir, env=where.env())


def frontends(factory: ServerFactory, where: Scaleout, n: int, *args: str) -> list[ServerProcess]:
    """n frontends on one log (serve flags args each): the first creates it, the others get
    copies of its keys."""
    first = frontend(factory, where, None, *args)
    out = [first]
    for _ in range(n - 1):
        d = factory.new_dir()
        d.mkdir(parents=True)
        for name in ("log.key", "log.pub"):
            shutil.copy2(first.data_dir / name, d / name)
        out.append(frontend(factory, where, d, *args))
    return out


def bucket_get(where: Scaleout, key: str) -> bytes | None:
    client = where.objects.client()
    try:
        return client.get_object(Bucket=where.bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def append_all(s: ServerProcess, entries: list[bytes]) -> list[pb.AppendResponse]:
    resp = s.stub.AppendBatch(pb.AppendBatchRequest(entries=entries), timeout=RPC_TIMEOUT)
    out = []
    for r in resp.results:
        assert r.WhichOneof("result") == "ok", r
        out.append(r.ok)
    return out


def test_one_frontend_appends_serves_and_restarts(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    assert not (s.data_dir / "db").exists(), "no LevelDB beside a PostgreSQL log"
    entries = [f"entry {i}".encode() for i in range(600)]
    acks = append_all(s, entries[:300]) + append_all(s, entries[300:])
    assert [a.index for a in acks] == list(range(600))
    key = s.verifier_key
    for a in acks[::97]:
        cp = checkpoints.parse(note.open(a.checkpoint, [key]))
        merkle.verify_inclusion(
            hashing.leaf_hash(entries[a.index]),
            a.index,
            cp.size,
            list(a.inclusion_proof),
            cp.root_hash,
        )
    again = append_all(s, [entries[5]])[0]
    assert again.duplicate and again.index == 5
    got = s.all_entries()
    assert [e.data for e in got] == entries
    s.restart()
    assert s.checkpoint().size == 600
    p = s.stub.GetInclusionProof(pb.GetInclusionProofRequest(index=3, tree_size=7))
    assert p.tree_size == 7
    root7 = merkle.root_hash([hashing.leaf_hash(e) for e in entries[:7]])
    merkle.verify_inclusion(hashing.leaf_hash(entries[3]), 3, 7, list(p.hashes), root7)
    assert [e.data for e in s.all_entries(250, 270)] == entries[250:270]


def test_the_bucket_is_a_tlog_tiles_api(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    entries = [f"tile {i}".encode() for i in range(700)]
    for at in range(0, 700, 233):
        append_all(s, entries[at : at + 233])
    text = bucket_get(scaleout, "log/checkpoint")
    assert text is not None
    cp = checkpoints.parse(note.open(text.decode(), [s.verifier_key]))
    assert cp.size == 700 and cp.root_hash == s.checkpoint().root_hash

    def read_tiles(tiles):
        out = []
        for t in tiles:
            data = bucket_get(scaleout, "log/" + tile_at(t.level, t.index, cp.size).path())
            assert data is not None, t.path()
            out.append(data)
        return out

    reader = TileHashReader(cp.size, read_tiles)
    for index in (0, 255, 256, 511, 699):
        mine = proofs.prove_inclusion(index, cp.size, reader)
        theirs = s.stub.GetInclusionProof(pb.GetInclusionProofRequest(index=index))
        assert list(theirs.hashes) == mine
        merkle.verify_inclusion(
            hashing.leaf_hash(entries[index]), index, cp.size, mine, cp.root_hash
        )
    consistency = s.stub.GetConsistencyProof(pb.GetConsistencyProofRequest(first=233))
    assert list(consistency.hashes) == proofs.prove_consistency(233, cp.size, reader)
    # Full tiles are there under their own names; entries are not public.
    assert bucket_get(scaleout, "log/tile/0/000") is not None
    assert bucket_get(scaleout, "log/tile/entries/000") is None
    bundle = bucket_get(scaleout, "log.private/" + Tile(ENTRIES, 2, 700 - 512).path())
    assert bundle is not None and bundle_entries(bundle) == entries[512:700]


def http_get(s: ServerProcess, path: str) -> tuple[int, bytes]:
    assert s.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=RPC_TIMEOUT)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_every_frontends_http_face_serves_the_newest_tree(server_factory, scaleout):
    a, b = frontends(server_factory, scaleout, 2, "--http-listen", "127.0.0.1:0")
    append_all(a, [f"first {i}".encode() for i in range(10)])
    assert http_get(b, "/checkpoint")[0] == 200  # b has seen the tree at some size
    entries = [f"more {i}".encode() for i in range(300)]
    append_all(a, entries)  # through a alone: b is idle, and asked for what it has not seen
    status, body = http_get(b, "/tile/0/001.p/54")
    assert status == 200, body
    assert body == bucket_get(scaleout, "log/tile/0/001.p/54")
    status, body = http_get(b, "/checkpoint")
    assert status == 200
    cp = checkpoints.parse(note.open(body.decode(), [b.verifier_key]))
    assert cp.size == 310 and cp.root_hash == a.checkpoint().root_hash
    assert http_get(b, "/tile/0/001.p/55")[0] == 404  # beyond every frontend's tree


def test_reads_kept_at_one_size_never_answer_for_a_later_one(server_factory, scaleout):
    """A frontend keeps what it served (the tiles and proofs of a size); once another
    frontend grows the log, what it serves at the new size is the new tree's, and what it
    serves again at the old size is unchanged."""
    a, b = frontends(server_factory, scaleout, 2, "--http-listen", "127.0.0.1:0")
    entries = [f"kept {i}".encode() for i in range(300)]
    append_all(a, entries[:10])
    converge([b], 10)
    status, at_10 = http_get(b, "/tile/0/000.p/10")
    assert status == 200 and len(at_10) == 10 * 32
    old = b.stub.GetInclusionProof(pb.GetInclusionProofRequest(index=3, tree_size=10))
    append_all(a, entries[10:300])  # through a alone: b holds what it served at size 10
    status, at_256 = http_get(b, "/tile/0/000")
    assert status == 200 and at_256 == bucket_get(scaleout, "log/tile/0/000")
    assert at_256[: 10 * 32] == at_10 and len(at_256) == 256 * 32
    status, at_44 = http_get(b, "/tile/0/001.p/44")
    assert status == 200 and at_44 == bucket_get(scaleout, "log/tile/0/001.p/44")
    assert http_get(b, "/tile/0/000.p/10") == (200, at_10)
    leaves = [hashing.leaf_hash(e) for e in entries]
    new = b.stub.GetInclusionProof(pb.GetInclusionProofRequest(index=3, tree_size=300))
    merkle.verify_inclusion(leaves[3], 3, 300, list(new.hashes), merkle.root_hash(leaves))
    merkle.verify_inclusion(leaves[3], 3, 10, list(old.hashes), merkle.root_hash(leaves[:10]))
    again = b.stub.GetInclusionProof(pb.GetInclusionProofRequest(index=3, tree_size=10))
    assert list(again.hashes) == list(old.hashes)


@dataclass
class Load:
    """Appenders (tests.test_durability's) on every frontend, recording into one Record."""

    record: durability.Record = field(default_factory=durability.Record)
    stop: threading.Event = field(default_factory=threading.Event)
    alive: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    channels: list[grpc.Channel] = field(default_factory=list)

    def start(self, servers: list[ServerProcess], per_server: int, seed: int) -> None:
        rng = random.Random(seed)
        earlier = list(self.record.acks)
        self.alive.set()
        for k, s in enumerate(servers):
            channel = grpc.insecure_channel(s.address)
            self.channels.append(channel)
            stub = pb_grpc.LogStub(channel)
            for i in range(per_server):
                args = (stub, f"f{k}a{i}s{seed}", random.Random(rng.random()), self.record)
                self.threads.append(
                    threading.Thread(
                        target=durability.appender,
                        args=(*args, earlier, self.stop, self.alive),
                        daemon=True,
                    )
                )
            self.threads.append(
                threading.Thread(
                    target=durability.watcher,
                    args=(stub, self.record, self.stop, self.alive),
                    daemon=True,
                )
            )
        for t in self.threads:
            t.start()

    def wait_for(self, acks: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.record.count() < acks:
            assert time.monotonic() < deadline, f"only {self.record.count()} acks"
            assert not self.record.unexpected, self.record.unexpected
            time.sleep(0.02)

    def finish(self) -> None:
        self.alive.clear()
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2 * RPC_TIMEOUT)
        for c in self.channels:
            c.close()
        assert not any(t.is_alive() for t in self.threads), "an appender hung"
        self.threads, self.channels = [], []
        self.stop = threading.Event()
        assert not self.record.unexpected, self.record.unexpected


def converge(servers: list[ServerProcess], size: int) -> None:
    """Every frontend serves the same latest checkpoint (idle ones follow within a second)."""
    deadline = time.monotonic() + 30
    for s in servers:
        while s.checkpoint().size < size:
            assert time.monotonic() < deadline, f"{s.address} stays at {s.checkpoint().size}"
            time.sleep(0.05)


@pytest.mark.parametrize("n", [2, 3])
def test_frontends_append_concurrently_into_one_log(server_factory, scaleout, n):
    servers = frontends(server_factory, scaleout, n)
    load = Load()
    # Entries acknowledged by the first frontend, re-sent to every frontend during the load:
    # deduplicated across frontends (each ends up once, at its first index).
    warm = append_all(servers[0], [f"warm {i}".encode() for i in range(20)])
    load.record.acks += [
        durability.Ack(f"warm {a.index}".encode(), a.index, a.checkpoint, list(a.inclusion_proof))
        for a in warm
    ]
    load.start(servers, per_server=3, seed=n)
    try:
        load.wait_for(100)
        time.sleep(LOAD_S)
    finally:
        load.finish()
    converge(servers, max(s.checkpoint().size for s in servers))
    # Every receipt and checkpoint any frontend gave, checked against the one log; all
    # frontends serve the same tree.
    durability.check_log(servers[-1], load.record, random.Random(0))
    assert len({s.checkpoint().root_hash for s in servers}) == 1


def test_the_same_new_entries_raced_to_every_frontend_go_in_once(server_factory, scaleout):
    # Each round sends one fresh batch to every frontend at once. Whichever locks the head
    # first sequences it; the others' dedup lookup, read with the lock, must find it: every
    # frontend answers each entry with one index, and the log holds it once.
    servers = frontends(server_factory, scaleout, 3)
    start = threading.Barrier(len(servers))
    for rnd in range(6):
        batch = [f"raced {rnd}.{i}".encode() for i in range(1 + rnd * 40)]
        answers: list[list[pb.AppendResponse]] = [[] for _ in servers]

        def send(
            k: int, batch: list[bytes] = batch, answers: list[list[pb.AppendResponse]] = answers
        ) -> None:
            start.wait(timeout=30)
            answers[k] = append_all(servers[k], batch)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(len(servers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=RPC_TIMEOUT + 30)
        assert all(len(a) == len(batch) for a in answers), "a frontend did not answer"
        for i in range(len(batch)):
            indexes = {a[i].index for a in answers}
            assert len(indexes) == 1, f"entry {i} of round {rnd} got indexes {sorted(indexes)}"
            assert sum(not a[i].duplicate for a in answers) == 1
    size = max(s.checkpoint().size for s in servers)
    converge(servers, size)
    assert size == sum(1 + rnd * 40 for rnd in range(6))  # each entry once


def head_row(where: Scaleout) -> tuple[int, int, bool]:
    """The database's head: (size, published size, whether a batch is pending)."""
    with psycopg.connect(where.storage_url) as conn:
        row = conn.execute(
            "SELECT h.size, p.size, EXISTS (SELECT 1 FROM affidavit_pending) "
            "FROM affidavit_head h, affidavit_published p WHERE h.id = 1 AND p.id = 1"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), bool(row[2])


def sequenced(scaleout: Scaleout, size: int) -> None:
    """Wait until the database's head has reached size (a batch sequenced, maybe unpublished)."""
    deadline = time.monotonic() + 30
    while head_row(scaleout)[0] < size:
        assert time.monotonic() < deadline, f"no batch reached size {size} in the database"
        time.sleep(0.05)


def bucket_size(where: Scaleout) -> int:
    """The size of the checkpoint the bucket serves (log/checkpoint, the tiles API's)."""
    text = bucket_get(where, "log/checkpoint")
    assert text is not None
    return checkpoints.parse(note.parse_note(text.decode())[0]).size


def kill_9(s: ServerProcess) -> None:
    """SIGKILL the running frontend s (a crash, not a stop) and reap it."""
    assert s.running, "the frontend had stopped before it was killed"
    s.kill()


def kill_9_unpublished(s: ServerProcess, where: Scaleout, entries: list[bytes]) -> int:
    """Append each of entries to s as a batch of its own with the object store frozen, so each
    is sequenced in PostgreSQL and none published, then kill -9 s; the head's size before.

    Checks on the way: the head row holds them all, pending; every call fails; the bucket's
    checkpoint, which never covers tiles not yet written, still has the size before."""
    weed = where.objects.proc
    assert weed is not None
    before = head_row(where)[0]
    # With the object store frozen, a batch commits in PostgreSQL (the right edge of the tree
    # is in the frontend's memory) and then hangs writing its objects; the frontend sequences
    # the next one on top of it meanwhile (from the first's tiles in its memory).
    weed.send_signal(signal.SIGSTOP)
    try:
        calls = []
        for k, entry in enumerate(entries, start=1):
            calls.append(s.stub.Append.future(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT))
            sequenced(where, before + k)
        assert head_row(where) == (before + len(entries), before, True)
        kill_9(s)  # between the commit and the object writes
        for call in calls:
            with pytest.raises(grpc.RpcError):
                call.result()
    finally:
        weed.send_signal(signal.SIGCONT)
    assert bucket_size(where) == before
    return before


def test_kill_9_mid_batch_while_another_frontend_goes_on(server_factory, scaleout):
    a, b = frontends(server_factory, scaleout, 2)
    load = Load()
    rounds = 3 if SLOW else 1
    for r in range(rounds):
        load.start([a, b], per_server=3, seed=10 + r)
        try:
            load.wait_for(load.record.count() + 50)
            time.sleep(random.uniform(0.0, LOAD_S))
            load.alive.clear()  # from here on, errors are expected
            kill_9(a)  # while batches are in flight
        finally:
            load.finish()
        a.start()
        converge([a, b], max(s.checkpoint().size for s in (a, b)))
        durability.check_log(a, load.record, random.Random(r))
    size, published, pending = head_row(scaleout)
    assert (published, pending) == (size, False)


def test_kill_9_between_the_database_commit_and_the_object_writes(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    append_all(s, [b"before"])
    before = kill_9_unpublished(s, scaleout, [b"in between"])
    s.start()  # the restarted frontend publishes the interrupted batch
    assert head_row(scaleout) == (before + 1, before + 1, False)
    assert s.checkpoint().size == before + 1
    again = append_all(s, [b"in between"])[0]
    assert again.duplicate and again.index == before
    assert [e.data for e in s.all_entries()][-2:] == [b"before", b"in between"]
    assert bucket_size(scaleout) == before + 1


def test_kill_9_with_two_batches_sequenced_and_unpublished(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    append_all(s, [b"before"])
    before = kill_9_unpublished(s, scaleout, [b"first pending", b"second pending"])
    s.start()  # publishes both, in order
    assert head_row(scaleout) == (before + 2, before + 2, False)
    assert s.checkpoint().size == before + 2
    again = append_all(s, [b"first pending", b"second pending"])
    assert [(a.duplicate, a.index) for a in again] == [(True, before), (True, before + 1)]
    entries = [e.data for e in s.all_entries()][-3:]
    assert entries == [b"before", b"first pending", b"second pending"]
    assert bucket_size(scaleout) == before + 2


def test_a_schema_version_1_log_is_upgraded_in_place(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    acks = append_all(s, [f"v1 {i}".encode() for i in range(5)])
    assert s.stop() == 0
    # The same log as version 1 laid it out: published size and note in the head row.
    with psycopg.connect(scaleout.storage_url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "ALTER TABLE affidavit_head ADD COLUMN published BIGINT NOT NULL DEFAULT 0, "
            "ADD COLUMN published_note TEXT, ADD COLUMN pending BYTEA"
        )
        conn.execute(
            "UPDATE affidavit_head h SET published = p.size, published_note = p.note "
            "FROM affidavit_published p WHERE h.id = 1 AND p.id = 1"
        )
        conn.execute("DROP TABLE affidavit_published, affidavit_pending")
        conn.execute("UPDATE affidavit_meta SET value = '1' WHERE name = 'schema_version'")
    s.start()
    assert head_row(scaleout) == (5, 5, False)
    assert [e.data for e in s.all_entries()] == [f"v1 {i}".encode() for i in range(5)]
    assert append_all(s, [b"v1 0"])[0].index == acks[0].index
    assert append_all(s, [b"after"])[0].index == 5
    assert schema_version(scaleout) == "4"  # by way of 3 (postgres_schema.fence)
    assert backends.pending_entries_storage(scaleout) == "e"  # the table it made is tuned


def schema_version(where: Scaleout) -> str:
    with psycopg.connect(where.storage_url) as conn:
        row = conn.execute(
            "SELECT value FROM affidavit_meta WHERE name = 'schema_version'"
        ).fetchone()
        assert row is not None
        return str(row[0])


def test_a_schema_version_2_log_is_upgraded_with_its_pending_batch(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    append_all(s, [b"before"])
    # A batch sequenced and not published when the frontend died: its row, as version 2 left
    # it, holds no tiles; the upgraded frontend grows them again from its entries.
    before = kill_9_unpublished(s, scaleout, [b"left by v2"])
    with psycopg.connect(scaleout.storage_url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE affidavit_pending DROP COLUMN tiles, DROP COLUMN schema_version")
        conn.execute("UPDATE affidavit_meta SET value = '2' WHERE name = 'schema_version'")
    s.start()
    assert schema_version(scaleout) == "4"
    assert head_row(scaleout) == (before + 1, before + 1, False)
    assert [e.data for e in s.all_entries()][-2:] == [b"before", b"left by v2"]
    assert append_all(s, [b"left by v2"])[0].index == before
    assert append_all(s, [b"after"])[0].index == before + 1
    assert bucket_size(scaleout) == before + 2


def test_postgres_restarted_under_load(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    load = Load()
    load.start([s], per_server=4, seed=7)
    try:
        load.wait_for(50)
        scaleout.postgres.stop()
        refused = 0
        deadline = time.monotonic() + 30
        while refused == 0:  # appends fail (UNAVAILABLE, retryable), nothing else
            try:
                s.stub.Append(pb.AppendRequest(entry=b"while down"), timeout=RPC_TIMEOUT)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                refused += 1
            assert time.monotonic() < deadline, "appends kept succeeding with the database down"
        during = load.record.count()
        scaleout.postgres.start()
        load.wait_for(during + 50)  # and resume
    finally:
        if scaleout.postgres.proc is None or scaleout.postgres.proc.poll() is not None:
            scaleout.postgres.start()
        load.finish()
    durability.check_log(s, load.record, random.Random(1))


def test_startup_refuses_tiles_that_do_not_match_the_signed_checkpoint(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    append_all(s, [f"e{i}".encode() for i in range(10)])
    assert s.stop() == 0
    client = scaleout.objects.client()
    key = "log/" + Tile(0, 0, 10).path()
    good = bucket_get(scaleout, key)
    assert good is not None
    client.put_object(Bucket=scaleout.bucket, Key=key, Body=bytes(len(good)))
    s.spawn()
    assert s.wait_exit() == 2
    assert "refusing to serve" in s.stderr, s.stderr
    client.delete_object(Bucket=scaleout.bucket, Key="log.private/" + Tile(ENTRIES, 0, 10).path())
    client.put_object(Bucket=scaleout.bucket, Key=key, Body=good)
    s.spawn()
    assert s.wait_exit() == 2
    assert "entry bundle tile/entries/000.p/10 is missing" in s.stderr, s.stderr


def test_settings_errors_are_one_line(tmp_path, scaleout):
    def fails(*args: str, env=None) -> str:
        r = serverproc.run_cli(*args, env=env)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("affidavit: error: "), r.stderr
        return lines[0]

    d = str(tmp_path / "d")
    assert "needs --objects" in fails("init", "--data-dir", d, "--storage", scaleout.storage_url)
    assert "PostgreSQL URL" in fails("init", "--data-dir", d, "--storage", "mysql://x/y")
    assert "--objects goes with --storage" in fails("init", "--data-dir", d, "--objects", "s3://b")
    assert "not an object store URL" in fails(
        "init", "--data-dir", d, "--storage", scaleout.storage_url, "--objects", "gs://b/p"
    )
    closed = scaleout.postgres.url().replace(str(scaleout.postgres.port), "1")
    assert "cannot connect" in fails(
        "init",
        "--data-dir",
        d,
        "--storage",
        closed,
        "--objects",
        scaleout.objects_url,
        env=scaleout.env(),
    )
    assert "inside the public one" in fails(
        "init",
        "--data-dir",
        d,
        *scaleout.args(),
        "--private-objects",
        f"s3://{scaleout.bucket}/log/private",
        env=scaleout.env(),
    )
    # A second log in the same database is refused; so is a frontend without the log's key.
    assert (
        serverproc.run_cli("init", "--data-dir", d, *scaleout.args(), env=scaleout.env()).returncode
        == 0
    )
    other = str(tmp_path / "other")
    assert "already holds a log" in fails(
        "init", "--data-dir", other, *scaleout.args(), env=scaleout.env()
    )
    fresh = scaleout.postgres.new_database()
    assert "already holds a log's checkpoint" in fails(
        "init",
        "--data-dir",
        other,
        "--storage",
        fresh,
        "--objects",
        scaleout.objects_url,
        env=scaleout.env(),
    )
