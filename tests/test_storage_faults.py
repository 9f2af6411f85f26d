"""Storage faults on the real process: two writers, a damaged or truncated write-ahead log,
corrupt table files. The log never signs two checkpoints of one size, never serves (or
extends) a database that lost acknowledged entries, and says what broke."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import grpc
import plyvel
import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.server.storage import Batch, Storage
from grpc_health.v1 import health_pb2

from tests import serverproc
from tests.serverproc import (
    RPC_TIMEOUT,
    ServerFactory,
    ServerProcess,
    health_status,
    run_cli,
    status_of,
)

server = serverproc.server
server_factory = serverproc.server_factory

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def append_batch(s: ServerProcess, entries: list[bytes]) -> list[pb.AppendResponse]:
    resp = s.stub.AppendBatch(pb.AppendBatchRequest(entries=entries), timeout=RPC_TIMEOUT)
    assert all(r.WhichOneof("result") == "ok" for r in resp.results), resp
    return [r.ok for r in resp.results]


def signed_by_size(data_dir: Path) -> dict[int, str]:
    """Every checkpoint the database holds as signed (c/size/<size>), read with the server
    stopped."""
    db = plyvel.DB(str(data_dir / "db"))
    try:
        return {
            int.from_bytes(k[len(b"c/size/") :], "big"): v.decode()
            for k, v in db.iterator(prefix=b"c/size/")
        }
    finally:
        db.close()


def refused_start(s: ServerProcess) -> str:
    """Start s expecting it to refuse: its one-line error."""
    s.spawn()
    rc = s.wait_exit()
    assert rc != 0, s.stderr
    assert "Traceback" not in s.stderr, s.stderr
    assert "affidavit serving" not in s.stderr
    lines = [line for line in s.stderr.splitlines() if "affidavit: error:" in line]
    assert len(lines) == 1, s.stderr
    return lines[0]


def wal(data_dir: Path) -> Path:
    (log,) = sorted((data_dir / "db").glob("*.log"))
    return log


def filled(s: ServerProcess, batches: int, per_batch: int = 5) -> dict[int, str]:
    """Append batches of random entries, one AppendBatch each; the checkpoints signed, by
    size."""
    signed = {}
    for _ in range(batches):
        acks = append_batch(s, [os.urandom(200) for _ in range(per_batch)])
        cp = checkpoints.parse(note.open(acks[0].checkpoint, [s.verifier_key]))
        signed[cp.size] = acks[0].checkpoint
    return signed


# Two writers.


def test_a_second_server_is_refused_even_without_leveldb_lock(
    server: ServerProcess, server_factory: ServerFactory
) -> None:
    signed = filled(server, 3)
    (server.data_dir / "db" / "LOCK").unlink()
    second = server_factory.create(data_dir=server.data_dir)
    line = refused_start(second)
    assert "in use" in line and "pid" in line, line
    # The first goes on; no size was ever signed twice.
    signed |= filled(server, 2)
    assert server.stop() == 0
    assert signed_by_size(server.data_dir) == {0: signed_by_size(server.data_dir)[0]} | signed


def test_a_writer_whose_lock_file_is_removed_signs_nothing_more(
    server: ServerProcess, server_factory: ServerFactory
) -> None:
    """Both lock files deleted: a second server can start, and the first, finding its lock gone,
    refuses to sign; only one checkpoint of each size is ever signed."""
    signed = filled(server, 3)
    (server.data_dir / "db" / "LOCK").unlink()
    (server.data_dir / "db" / "AFFIDAVIT-LOCK").unlink()
    second = server_factory(data_dir=server.data_dir)
    e = status_of(server.stub.Append, pb.AppendRequest(entry=b"from the first"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
    assert "lock" in (e.details() or ""), e.details()
    later = filled(second, 2)
    e = status_of(server.stub.Append, pb.AppendRequest(entry=b"again from the first"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    second.kill()
    server.kill()
    stored = signed_by_size(server.data_dir)
    assert set(signed) | set(later) <= set(stored)
    for size, text in (signed | later).items():
        assert stored[size] == text, f"two checkpoints of size {size}"


def test_a_checkpoint_that_cannot_be_kept_acknowledges_nothing(server: ServerProcess) -> None:
    """The checkpoint kept outside the database is written after the commit, beside the next
    batch's integration: until it is written, nothing its batch holds is acknowledged, not even
    as a duplicate; once it can be written, a retry finds the entries where the commit put them
    and is answered with a checkpoint that is kept."""
    kept = server.data_dir / "checkpoint"
    filled(server, 1)
    before = kept.read_text()
    kept.unlink()
    kept.mkdir()  # a directory in its place, not empty: nothing can be renamed over it
    (kept / "in the way").touch()
    entries = [f"not yet kept {i}".encode() for i in range(5)]
    for _ in range(2):  # the first copy, then a retry finding it committed
        resp = server.stub.AppendBatch(pb.AppendBatchRequest(entries=entries), timeout=RPC_TIMEOUT)
        for r in resp.results:
            assert r.WhichOneof("result") == "error", r
            assert r.error.code == grpc.StatusCode.UNAVAILABLE.value[0], r
            assert "cannot keep the new checkpoint" in r.error.message, r
    assert not list(server.data_dir.glob("checkpoint.*.tmp"))  # no temporary file left
    (kept / "in the way").unlink()
    kept.rmdir()
    kept.write_text(before)
    acks = append_batch(server, entries)
    assert [a.index for a in acks] == list(range(5, 10))
    assert all(a.duplicate for a in acks)
    assert kept.read_text() == acks[0].checkpoint == server.checkpoint().note


def test_a_commit_that_fails_while_putting_writes_nothing(tmp_path: Path) -> None:
    """A commit's records are put into its WriteBatch as they are paired: one that cannot be
    put (here a derived value that is not bytes) fails the whole commit, and nothing of it is
    written (a plain WriteBatch would write what was put before it)."""
    storage = Storage(tmp_path / "db", create=True, min_free_bytes=0)
    try:
        storage.commit(Batch(0, (), (), {}, "first"), previous=None)
        leaf = b"\x01" * 32
        bad = Batch(0, [b"entry"], [leaf], {}, "second", {b"s/x": "not bytes"})  # type: ignore[dict-item]
        with pytest.raises(TypeError):
            storage.commit(bad, previous="first")
        assert storage.checkpoint() == "first"
        assert storage.entry(0) is None
        assert storage.index_of(leaf) is None
    finally:
        storage.close()


# A damaged or truncated write-ahead log.


def _flip(path: Path, offset: int, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, min(len(data), offset + count)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.25, 0.5, 0.9])
def test_flipped_wal_bytes_refuse_to_serve(server_factory: ServerFactory, where: float) -> None:
    s = server_factory()
    signed = filled(s, 20)
    s.kill()  # the recent batches are only in the write-ahead log (opening the database
    # would move them into a table file: it is not opened until the damage is done)
    log = wal(s.data_dir)
    _flip(log, int(log.stat().st_size * where))
    line = refused_start(s)
    assert "damaged" in line or "behind the log" in line, line
    assert "restore" in line
    # Refused again (the damage is not forgotten once LevelDB has recovered past it), and
    # nothing was signed over it.
    again = refused_start(s)
    assert "damaged" in again or "behind the log" in again, again
    after = signed_by_size(s.data_dir)
    assert all(signed[size] == text for size, text in after.items() if size in signed)
    assert max(after) <= max(signed)


def test_truncated_wal_refuses_to_serve(server_factory: ServerFactory) -> None:
    s = server_factory()
    signed = filled(s, 20)
    s.kill()
    log = wal(s.data_dir)
    os.truncate(log, log.stat().st_size - 3000)
    line = refused_start(s)
    last = max(signed)
    assert "behind the log" in line and f"size {last}" in line, line
    assert "lost" in line and "restore" in line
    assert "behind the log" in refused_start(s)
    after = signed_by_size(s.data_dir)
    assert max(after) < last  # the database lost them: and nothing was signed in their place
    assert all(signed[size] == text for size, text in after.items() if size in signed)


# Corrupt table files.


def _to_tables(s: ServerProcess) -> None:
    """Restart and stop: LevelDB's recovery moves the write-ahead log into a table file."""
    assert s.stop() == 0
    s.start()
    assert s.stop() == 0


def test_corrupt_table_file_at_the_edge_refuses_startup(server_factory: ServerFactory) -> None:
    s = server_factory()
    entries = [os.urandom(300) for _ in range(40)]
    append_batch(s, entries)
    _to_tables(s)
    _corrupt_entry(s, entries[30])
    line = refused_start(s)
    # The first unreadable entry of the damaged block (4 KiB: the 13 or so before entry 30).
    m = re.search(r"entry (\d+) is unreadable", line)
    assert m is not None and 30 - 4096 // 300 <= int(m[1]) <= 30, line
    assert "Corruption" in line and "refusing to serve" in line


def _corrupt_entry(s: ServerProcess, entry: bytes) -> None:
    for table in (s.data_dir / "db").glob("*.ldb"):
        data = table.read_bytes()
        if (at := data.find(entry[100:164])) >= 0:
            _flip(table, at, 1)
            return
    raise AssertionError("the entry is in no table file")


def damaged_below_the_edge(factory: ServerFactory, *args: str) -> tuple[ServerProcess, list[bytes]]:
    """A stopped log of 2500 entries whose table file is damaged at entry 500, below the
    entries startup reads back."""
    s = factory(*args)
    entries = [os.urandom(300) for _ in range(2500)]
    for at in range(0, len(entries), 500):
        append_batch(s, entries[at : at + 500])
    _to_tables(s)
    _corrupt_entry(s, entries[500])
    return s, entries


def test_corrupt_table_file_below_the_edge_is_data_loss_naming_the_entry(
    server_factory: ServerFactory,
) -> None:
    """Damage older than the entries startup reads back: the server starts, and serving the
    damaged entries is DATA_LOSS naming the first of them (never UNKNOWN)."""
    s, entries = damaged_below_the_edge(server_factory)
    s.start()
    e = status_of(s.stub.GetEntries, pb.GetEntriesRequest(start=490, end=510))
    assert e.code() == grpc.StatusCode.DATA_LOSS, e
    m = re.search(r"entry (\d+)", e.details() or "")
    assert m is not None and 490 <= int(m[1]) <= 500, e.details()
    # Entries beyond the damaged block are served.
    assert [x.data for x in s.all_entries(2400, 2500)] == entries[2400:]


# The whole-log check: offline (`affidavit check`) and scheduled in the server.


def check(s: ServerProcess) -> subprocess.CompletedProcess[str]:
    return run_cli("check", "--data-dir", str(s.data_dir))


def test_check_finds_a_sound_log_sound(server: ServerProcess) -> None:
    append_batch(server, [os.urandom(100) for _ in range(300)])
    busy = check(server)
    assert busy.returncode == 2 and "in use" in busy.stderr, busy  # the server holds it
    assert server.stop() == 0
    done = check(server)
    assert done.returncode == 0, done
    assert "sound: 300 entries" in done.stdout
    assert "checked 300/300 entries" in done.stderr


def test_check_names_damage_and_the_server_refuses_it_until_it_checks_out(
    server_factory: ServerFactory,
) -> None:
    s, _ = damaged_below_the_edge(server_factory)
    done = check(s)
    assert done.returncode == 1, done
    assert re.search(r"damaged: entry (4[8-9]\d|500) is unreadable", done.stdout), done.stdout
    assert "restore it from a backup" in done.stdout
    # Noted: startup now checks the whole log, and refuses it.
    line = refused_start(s)
    assert "entry" in line and "refusing to serve a damaged log" in line, line
    assert (s.data_dir / "damage").exists()


def test_check_finds_a_truncated_wal(server_factory: ServerFactory) -> None:
    s = server_factory()
    filled(s, 20)
    s.kill()
    log = wal(s.data_dir)
    os.truncate(log, log.stat().st_size - 3000)
    done = check(s)
    assert done.returncode == 1, done
    assert "behind the log" in done.stdout


def test_scheduled_check_halts_appends_on_damage(server_factory: ServerFactory) -> None:
    s, _ = damaged_below_the_edge(server_factory, "--check-hours", "0.0003")  # about 1 s
    s.start()  # the damage is below the edge: startup does not see it
    assert s.channel is not None
    deadline = time.monotonic() + 60
    while health_status(s.channel, "affidavit.v1.Log") != NOT_SERVING:
        assert time.monotonic() < deadline, s.stderr
        time.sleep(0.1)
    e = status_of(s.stub.Append, pb.AppendRequest(entry=b"over the damage"))
    assert e.code() == grpc.StatusCode.DATA_LOSS, e
    assert "entry" in (e.details() or "") and "affidavit check" in (e.details() or "")
    assert "scheduled check: entry" in s.stderr
    assert s.stop() == 0
    line = refused_start(s)
    assert "refusing to serve a damaged log" in line


def _alter(data_dir: Path, key: bytes, value: bytes | None) -> None:
    db = plyvel.DB(str(data_dir / "db"))
    try:
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
    finally:
        db.close()


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        pytest.param(b"e/" + (7).to_bytes(8, "big"), b"altered", "entry 7 ", id="entry-altered"),
        pytest.param(b"e/" + (9).to_bytes(8, "big"), None, "entry 9 is missing", id="entry-gone"),
        pytest.param(
            b"t/\x01" + (0).to_bytes(8, "big"), b"\x00" * 32, "tile/1/000", id="level-1-tile"
        ),
    ],
)
def test_check_names_altered_records(
    server: ServerProcess, key: bytes, value: bytes | None, says: str
) -> None:
    append_batch(server, [os.urandom(100) for _ in range(300)])
    assert server.stop() == 0
    _alter(server.data_dir, key, value)
    done = check(server)
    assert done.returncode == 1, done
    assert says in done.stdout, done.stdout


# Startup failures: one clear line each.


def test_startup_failures_are_one_line(
    server: ServerProcess, server_factory: ServerFactory
) -> None:
    assert server.stop() == 0
    junk = server.data_dir.parent / "junk.pem"
    junk.write_text("not a certificate\n")
    tls = server_factory.create(
        "--tls-cert", str(junk), "--tls-key", str(junk), data_dir=server.data_dir
    )
    assert "--tls-cert" in refused_start(tls) and "PEM" in refused_start(tls)
    key = server.data_dir / "log.key"
    key.chmod(0o644)
    assert "chmod 600" in refused_start(server)
    key.chmod(0o600)
    (server.data_dir / "db" / "CURRENT").unlink()
    assert "no log database" in refused_start(server)
