"""`affidavit check --storage … --objects …`: the whole-log check on PostgreSQL + S3.

Real servers throughout (PostgreSQL and SeaweedFS from tests/backends.py, `affidavit serve`
from tests/serverproc.py). Damage is made the way it happens to a bucket: objects replaced,
deleted, or an older copy restored, written straight to the object store.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.proto import affidavit_pb2 as pb
from affidavit.server import config
from affidavit.server.integrity import check_log
from affidavit.server.logstore import StorageUnavailableError, StoreSpec, open_store
from affidavit.server.objects_s3 import bundle_entries

from tests import backends, serverproc
from tests.backends import Scaleout
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess, run_cli

scaleout = backends.scaleout
server_factory = serverproc.server_factory

Alteration = Callable[[Scaleout, ServerProcess], None]

BATCHES = (1, 255, 344)
"""600 entries: two full level-0 tiles and bundles, a partial third, a partial level-1 tile."""


def filled(factory: ServerFactory, where: Scaleout) -> tuple[ServerProcess, list[bytes]]:
    s = factory(*where.args(), env=where.env())
    entries: list[bytes] = []
    for n in BATCHES:
        batch = [f"entry {len(entries) + i}".encode() for i in range(n)]
        r = s.stub.AppendBatch(pb.AppendBatchRequest(entries=batch), timeout=RPC_TIMEOUT)
        assert all(x.HasField("ok") for x in r.results), r
        entries += batch
    return s, entries


def check(s: ServerProcess, where: Scaleout, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("check", "--data-dir", str(s.data_dir), *(args or where.args()), env=where.env())


def put(where: Scaleout, key: str, body: bytes) -> None:
    where.objects.client().put_object(Bucket=where.bucket, Key=key, Body=body)


def get(where: Scaleout, key: str) -> bytes:
    return where.objects.client().get_object(Bucket=where.bucket, Key=key)["Body"].read()


def signed_at(where: Scaleout, size: int) -> str:
    with psycopg.connect(where.storage_url) as conn:
        row = conn.execute(
            "SELECT note FROM affidavit_checkpoint WHERE tree_size = %s", (size,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_sound_log_checks_out_while_its_frontend_serves(server_factory, scaleout):
    s, entries = filled(server_factory, scaleout)
    done = check(s, scaleout)
    assert done.returncode == 0, done
    assert f"sound: {len(entries)} entries" in done.stdout
    assert f"checked {len(entries)}/{len(entries)} entries" in done.stderr
    assert not (s.data_dir / config.DAMAGE_FILE).exists()
    # The frontend went on serving throughout; the check changed nothing it serves.
    more = s.stub.Append(pb.AppendRequest(entry=b"after the check"), timeout=RPC_TIMEOUT)
    assert more.index == len(entries)


def _alter_entry_7(where: Scaleout, s: ServerProcess) -> None:
    key = "log.private/tile/entries/000"
    bundle = bundle_entries(get(where, key))
    bundle[7] = b"altered"
    put(where, key, b"".join(len(e).to_bytes(2, "big") + e for e in bundle))


def _older_checkpoint(where: Scaleout, s: ServerProcess) -> None:
    put(where, "log/checkpoint", signed_at(where, 256).encode())


def _forged_checkpoint(where: Scaleout, s: ServerProcess) -> None:
    """A checkpoint of the current size over another tree, signed with the log's own key (a
    stolen key, or a frontend that signed over a head it did not lock)."""
    signer = (s.data_dir / config.KEY_FILE).read_text().strip()
    body = Checkpoint(serverproc.ORIGIN, 600, hashing.leaf_hash(b"another tree")).format()
    put(where, "log/checkpoint", note.sign(body, signer).encode())


def _delete(key: str) -> Alteration:
    def action(where: Scaleout, s: ServerProcess) -> None:
        where.objects.client().delete_object(Bucket=where.bucket, Key=key)

    return action


def _zero(key: str) -> Alteration:
    def action(where: Scaleout, s: ServerProcess) -> None:
        put(where, key, bytes(len(get(where, key))))

    return action


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory, postgres, objects) -> Iterator[Stopped]:
    """One filled log, its frontend stopped; each test below alters it and puts it back."""
    where = backends.new_scaleout(postgres, objects)
    factory = ServerFactory(tmp_path_factory.mktemp("check"))
    try:
        s, _ = filled(factory, where)
        assert s.stop() == 0
        yield Stopped(where, s)
    finally:
        factory.cleanup()


@dataclass
class Stopped:
    where: Scaleout
    server: ServerProcess


@pytest.mark.parametrize(
    ("touched", "alter", "says"),
    [
        pytest.param(
            "log.private/tile/entries/000", _alter_entry_7, "entry 7 ", id="entry-altered"
        ),
        pytest.param(
            "log.private/tile/entries/001",
            _delete("log.private/tile/entries/001"),
            "entry 256 is missing",
            id="bundle-gone",
        ),
        pytest.param(
            "log/tile/0/001",
            _delete("log/tile/0/001"),
            "tile/0/001 is missing",
            id="level-0-tile-gone",
        ),
        pytest.param(
            "log/tile/1/000.p/2", _zero("log/tile/1/000.p/2"), "tile/1/000.p/2 ", id="level-1-tile"
        ),
        pytest.param(
            "log/checkpoint",
            _older_checkpoint,
            "behind the log's published tree",
            id="checkpoint-old",
        ),
        pytest.param("log/checkpoint", _forged_checkpoint, "a fork", id="checkpoint-forked"),
        pytest.param(
            "log/checkpoint",
            _delete("log/checkpoint"),
            "public checkpoint is missing",
            id="no-checkpoint",
        ),
    ],
)
def test_check_names_damage_in_the_object_store(
    stopped: Stopped, touched: str, alter: Alteration, says: str
) -> None:
    where, s = stopped.where, stopped.server
    kept = get(where, touched)
    alter(where, s)
    try:
        done = check(s, where)
        assert done.returncode == 1, done
        assert says in done.stdout, done.stdout
        assert "restore it from a backup" in done.stdout
        assert (s.data_dir / config.DAMAGE_FILE).exists()
    finally:
        put(where, touched, kept)
    again = check(s, where)  # put back, it checks out, and the damage note goes
    assert again.returncode == 0, again
    assert not (s.data_dir / config.DAMAGE_FILE).exists()


def test_a_log_that_cannot_be_reached_is_not_called_damaged(
    stopped: Stopped, tmp_path: Path
) -> None:
    scaleout, s = stopped.where, stopped.server
    closed = scaleout.postgres.url().replace(str(scaleout.postgres.port), "1")
    done = check(s, scaleout, "--storage", closed, "--objects", scaleout.objects_url)
    assert done.returncode == 2, done
    assert done.stderr.startswith("affidavit: error: cannot connect"), done.stderr
    nowhere = check(s, scaleout, "--storage", scaleout.storage_url, "--objects", "s3://no-such/x")
    assert nowhere.returncode == 2 and "cannot use bucket 'no-such'" in nowhere.stderr, nowhere
    no_key = run_cli("check", "--data-dir", str(tmp_path), *scaleout.args(), env=scaleout.env())
    assert no_key.returncode == 2, no_key
    assert not (s.data_dir / config.DAMAGE_FILE).exists()


def test_the_database_going_down_mid_check_stops_it_without_a_verdict(
    stopped: Stopped, monkeypatch: pytest.MonkeyPatch
) -> None:
    scaleout, s = stopped.where, stopped.server
    for name, value in scaleout.env().items():
        monkeypatch.setenv(name, value)
    _, key = config.load_key(s.data_dir)
    spec = StoreSpec(Path(s.data_dir), scaleout.storage_url, scaleout.objects_url)
    storage = open_store(spec)
    try:
        scaleout.postgres.stop()
        with pytest.raises(StorageUnavailableError):
            check_log(storage, key)
    finally:
        scaleout.postgres.start()
        storage.close()
    assert checkpoints.parse(note.open(signed_at(scaleout, 600), [key])).size == 600
