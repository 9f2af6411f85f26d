"""The upgrade fence on a shared PostgreSQL log (server.postgres_schema, version 4).

Frontends up to cc86bae keep the statement state in layout 1 and do not read its layout mark.
The first frontend of this version to open a version 3 log rewrites the state to layout 2 and
moves the schema to version 4 in one transaction; from then on an older frontend neither
starts nor sequences a batch. Tested with a real cc86bae `affidavit serve` (tests.older_release)
beside real frontends of this tree, and with the exact SQL cc86bae's batch runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import psycopg
import pytest
from affidavit.merkle import hashing
from affidavit.proto import affidavit_pb2 as pb
from affidavit.server import postgres_arrays
from affidavit.server.postgres_arrays import ByteaArray
from affidavit.statements.state import STATE_LAYOUT, STATE_LAYOUT_KEY

from tests import backends, serverproc
from tests.backends import Scaleout
from tests.older_release import OlderServer, older_tree
from tests.serverproc import ROOT, RPC_TIMEOUT, ServerFactory, ServerProcess
from tests.test_scaleout import append_all, frontend, head_row

scaleout = backends.scaleout
server_factory = serverproc.server_factory

OLDER = "cc86bae"
"""The newest affidavit whose frontends write the statement state in layout 1."""


@pytest.fixture(scope="module")
def older(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cc86bae's files. Only a clone without that history (shallow, or no .git) may skip: in
    a full clone a failure to lay the commit out is a failure, not a skip."""
    tree = older_tree(tmp_path_factory.mktemp("older"), OLDER)
    if tree is None:
        shallow = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if shallow.returncode == 0 and shallow.stdout.strip() == "false":
            pytest.fail(f"git archive {OLDER} failed in a full clone of this repository")
        pytest.skip(f"this checkout has no full git history to take {OLDER} from")
    return tree


def schema(where: Scaleout) -> tuple[str, bool, bytes | None]:
    """The schema version, whether affidavit_pending has the fence column, the layout mark."""
    with psycopg.connect(where.storage_url) as conn:
        version = conn.execute(
            "SELECT value FROM affidavit_meta WHERE name = 'schema_version'"
        ).fetchone()
        column = conn.execute(
            "SELECT 1 FROM information_schema.columns "
            "WHERE table_name = 'affidavit_pending' AND column_name = 'schema_version'"
        ).fetchone()
        mark = conn.execute(
            "SELECT record_value FROM affidavit_record WHERE record_key = %s", (STATE_LAYOUT_KEY,)
        ).fetchone()
    assert version is not None
    return str(version[0]), column is not None, None if mark is None else bytes(mark[0])


def as_version_3(where: Scaleout) -> None:
    """Lay a (stopped) log out as frontends up to cc86bae made it: version 3, no fence column,
    no layout mark (its state has no actions, so layout 1 and 2 hold the same records)."""
    with psycopg.connect(where.storage_url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE affidavit_pending DROP COLUMN schema_version")
        conn.execute("UPDATE affidavit_meta SET value = '3' WHERE name = 'schema_version'")
        conn.execute("DELETE FROM affidavit_record WHERE record_key = %s", (STATE_LAYOUT_KEY,))


def copy_keys(factory: ServerFactory, first: ServerProcess) -> Path:
    d = factory.new_dir()
    d.mkdir(parents=True)
    for name in ("log.key", "log.pub"):
        shutil.copy2(first.data_dir / name, d / name)
    return d


def test_a_running_older_frontend_is_fenced_and_a_starting_one_refused(
    server_factory, scaleout, older
):
    # A log made and grown by cc86bae itself: version 3, layout 1.
    old = OlderServer(older, server_factory.new_dir(), *scaleout.args(), env=scaleout.env())
    server_factory.servers.append(old)
    old.start()
    acks = append_all(old, [b"old 0", b"old 1"])
    assert schema(scaleout) == ("3", False, None)

    # While it runs, a frontend of this version opens the log: layout 2 and version 4 at once.
    new = frontend(server_factory, scaleout, copy_keys(server_factory, old))
    assert schema(scaleout) == ("4", True, STATE_LAYOUT)
    size = head_row(scaleout)[0]

    # The older frontend's next batch fails whole: nothing acknowledged, nothing stored. (It
    # answers UNAVAILABLE, its answer to a failed commit, naming the column, and stays up.)
    with pytest.raises(grpc.RpcError) as refused:
        old.stub.Append(pb.AppendRequest(entry=b"after the fence"), timeout=RPC_TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert '"schema_version"' in (refused.value.details() or "")
    assert head_row(scaleout)[0] == size
    with psycopg.connect(scaleout.storage_url) as conn:
        stored = conn.execute(
            "SELECT 1 FROM affidavit_leaf WHERE leaf_hash = %s",
            (hashing.leaf_hash(b"after the fence"),),
        ).fetchone()
    assert stored is None

    # An older frontend starting now refuses the log, naming the version.
    late = OlderServer(older, copy_keys(server_factory, old), *scaleout.args(), env=scaleout.env())
    server_factory.servers.append(late)
    late.spawn()
    assert late.wait_exit() != 0
    assert "schema version '4'" in late.stderr, late.stderr

    # The new frontend serves every acknowledged entry and goes on appending.
    assert append_all(new, [b"old 0"])[0].index == acks[0].index
    assert append_all(new, [b"new"])[0].index == size
    assert [e.data for e in new.all_entries()] == [b"old 0", b"old 1", b"new"]


def test_the_fence_and_the_layout_are_one_transaction(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    append_all(s, [b"before"])
    assert s.stop() == 0
    as_version_3(scaleout)
    # The layout mark cannot be written: the open fails, and the schema is still version 3.
    with psycopg.connect(scaleout.storage_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION no_mark() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the mark is refused'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER no_mark BEFORE INSERT ON affidavit_record FOR EACH ROW "
            "WHEN (NEW.record_key = '\\x" + STATE_LAYOUT_KEY.hex() + "'::bytea) "
            "EXECUTE FUNCTION no_mark()"
        )
    s.spawn()
    assert s.wait_exit() != 0
    assert "the mark is refused" in s.stderr, s.stderr
    assert schema(scaleout) == ("3", False, None)
    with psycopg.connect(scaleout.storage_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER no_mark ON affidavit_record")
    s.start()
    assert schema(scaleout) == ("4", True, STATE_LAYOUT)
    assert append_all(s, [b"after"])[0].index == 1


# cc86bae's batch (server/postgres_sequence.py at cc86bae: write and _finish), statement for
# statement, run in its pipelined transaction after its lock (server/storage_postgres.py).
CC86BAE_BATCH = (
    (
        "INSERT INTO affidavit_leaf (leaf_hash, leaf_index) "
        "SELECT substring(%s::bytea FROM i * 32 + 1 FOR 32), %s::bigint + i "
        "FROM generate_series(0, %s::int - 1) AS i"
    ),
    (
        "INSERT INTO affidavit_record (record_key, record_value) "
        "SELECT * FROM unnest(%s::bytea[], %s::bytea[])"
        " ON CONFLICT (record_key) DO UPDATE SET record_value = EXCLUDED.record_value"
    ),
    "SAVEPOINT affidavit_index",
    (
        "INSERT INTO affidavit_record (record_key, record_value) "
        "SELECT * FROM unnest(%s::bytea[], %s::bytea[])"
    ),
    "RELEASE SAVEPOINT affidavit_index",
    "INSERT INTO affidavit_checkpoint (tree_size, note) VALUES (%s, %s)",
    (
        "INSERT INTO affidavit_pending (size, first_index, note, entries, tiles) "
        "VALUES (%s, %s, %s, %s, %s)"
    ),
    "UPDATE affidavit_head SET size = %s, note = %s WHERE id = 1",
)


def run_cc86bae_batch(where: Scaleout, *, end: str) -> None:
    """cc86bae's batch of one entry on the log's head, ended by end (COMMIT or ROLLBACK)."""
    with psycopg.connect(where.storage_url, autocommit=True) as conn:
        postgres_arrays.register(conn.adapters)
        with conn.pipeline():
            conn.execute("BEGIN")
            head = conn.execute("SELECT size, note FROM affidavit_head WHERE id = 1 FOR UPDATE")
        (size, note) = head.fetchone() or (0, "")
        params: tuple[tuple[object, ...], ...] = (
            (hashing.leaf_hash(b"by cc86bae"), size, 1),
            (ByteaArray([b"s/x/act-1"]), ByteaArray([b"layout 1 intent"])),
            (),
            (ByteaArray([b"x/t/fenced"]), ByteaArray([b""])),
            (),
            (size + 1, note),
            (size + 1, size, note, b"\x00\x00\x00\x0aby cc86bae", None),
            (size + 1, note),
        )
        with conn.pipeline():
            for sql, p in zip(CC86BAE_BATCH, params, strict=True):
                conn.execute(sql, p)
            conn.execute(end)


def counts(where: Scaleout) -> tuple[int, ...]:
    with psycopg.connect(where.storage_url) as conn:
        row = conn.execute(
            "SELECT (SELECT size FROM affidavit_head WHERE id = 1), "
            "(SELECT count(*) FROM affidavit_leaf), (SELECT count(*) FROM affidavit_record), "
            "(SELECT count(*) FROM affidavit_checkpoint), (SELECT count(*) FROM affidavit_pending)"
        ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


def test_cc86baes_batch_sql_fails_whole_on_a_fenced_log(server_factory, scaleout):
    s = frontend(server_factory, scaleout)
    append_all(s, [b"before"])
    assert s.stop() == 0
    as_version_3(scaleout)
    before = counts(scaleout)
    run_cc86bae_batch(scaleout, end="ROLLBACK")  # on version 3 every statement goes through
    assert counts(scaleout) == before
    s.start()  # fences it
    assert schema(scaleout)[:2] == ("4", True)
    assert s.stop() == 0
    before = counts(scaleout)
    with pytest.raises(psycopg.errors.NotNullViolation) as failed:
        run_cc86bae_batch(scaleout, end="COMMIT")
    assert failed.value.diag.table_name == "affidavit_pending"
    assert failed.value.diag.column_name == "schema_version"
    assert counts(scaleout) == before
    # cc86bae's check at open (server/postgres_schema.py check) reads the version it refuses.
    with psycopg.connect(scaleout.storage_url) as conn:
        row = conn.execute(
            "SELECT value FROM affidavit_meta WHERE name = 'schema_version'"
        ).fetchone()
    assert row is not None and row[0] != "3"
