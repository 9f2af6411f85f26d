"""The PostgreSQL schema of a scale-out log (server.storage_postgres says what each table
holds): created by `affidavit init --storage`, checked by every frontend that opens the log.

Version 4. Older versions are migrated in place by the first frontend of this version that
opens the log. Versions 1 (one pending batch at most, in the head row) and 2 (pending batches
without their tiles: rows it left are grown again from their entries) become version 3 in one
transaction (upgrade). Version 3 becomes version 4 with the statement state's layout 2
(server.state_migration): fence() runs in the transaction that rewrites the state, under the
head row's lock, so the layout and the version move together or not at all. A frontend
refuses a database of any other version rather than guess at its layout.

Version 4 is the upgrade fence. Frontends of version 3 (affidavit up to cc86bae) keep the
statement state in layout 1 and do not read its layout mark: on a shared log one of them
would go on writing layout 1 keys beside the rewritten state and split it. So version 4
stops them both ways:

- one starting refuses the log, as every frontend refuses a schema version not its own;
- one already running cannot sequence another batch: affidavit_pending gains a column,
  schema_version (the version of the frontend that sequenced the row), NOT NULL and without
  default, which a version 3 frontend's batch does not name (its INSERT INTO
  affidavit_pending lists size, first_index, note, entries, tiles). Its batch transaction
  fails with a not-null violation and rolls back whole (leaf rows, state records, checkpoint,
  head), so nothing it signed after the fence is stored and nothing is acknowledged. Rows
  sequenced before the fence read '3'.

A later change that must stop frontends of version 4 the same way can constrain that column's
value. Upgrade every frontend of a log together: an older one refuses a migrated database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from affidavit.server.storage import StorageError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "4"
FENCED_VERSION = "3"
"""The version fence() moves to SCHEMA_VERSION, with the statement state; upgrade() brings
versions 1 and 2 to it. A frontend opens a log of this version only to fence it at once
(server.logstore.open_store's layout step)."""

TABLES = (
    "CREATE TABLE affidavit_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE affidavit_head (id INT PRIMARY KEY, size BIGINT NOT NULL, note TEXT)",
    "CREATE TABLE affidavit_leaf (leaf_hash BYTEA PRIMARY KEY, leaf_index BIGINT NOT NULL)",
    "CREATE TABLE affidavit_checkpoint (tree_size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "CREATE TABLE affidavit_cosigned (tree_size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "CREATE TABLE affidavit_record (record_key BYTEA PRIMARY KEY, record_value BYTEA NOT NULL)",
)
PUBLICATION_TABLES = (
    "CREATE TABLE affidavit_published (id INT PRIMARY KEY, size BIGINT NOT NULL, note TEXT)",
    "CREATE TABLE affidavit_pending (size BIGINT PRIMARY KEY, first_index BIGINT NOT NULL,"
    " note TEXT NOT NULL, entries BYTEA NOT NULL, written BOOLEAN NOT NULL DEFAULT FALSE,"
    " sequenced_at TIMESTAMPTZ NOT NULL DEFAULT now(), tiles BYTEA)",
)
"""The tables version 2 added: step 3's own lock and the queue of sequenced batches (with
their tiles since version 3; NULL in a row a version 2 frontend left)."""

UNCOMPRESSED = (("affidavit_pending", "entries"),)
"""Columns stored out of line uncompressed (SET STORAGE EXTERNAL): a batch's entries are
written under the head lock, and PostgreSQL's default compression of them (pglz, in the
committing backend) costs more than the bytes it saves: 400 signed statements of the storage
benchmark's load (259 KB, 109 KB compressed) inserted and committed in 14.5 ms against 11.0
uncompressed; 140 KB of JSON, 28 ms against 6.6. The rows are deleted once published, so the
room saved was short-lived. A storage setting, not a layout: any version 3 frontend reads the
rows either way, so it is not a schema version; tune() sets it."""

Read = Callable[[str, Sequence[object]], list[tuple[Any, ...]]]
"""One read query (the driver's, with its error handling)."""


def tables(read: Read) -> set[str]:
    """The log's tables present in the database."""
    rows = read(
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE %s",
        ("affidavit_%",),
    )
    return {r[0] for r in rows}


def create(conn: psycopg.Connection[Any]) -> None:
    """Create the tables and the head and published rows (in the caller's transaction, on an
    empty database)."""
    for statement in TABLES + PUBLICATION_TABLES:
        conn.execute(statement)
    _add_fence(conn)
    conn.execute(
        "INSERT INTO affidavit_meta (name, value) VALUES ('schema_version', %s)",
        (SCHEMA_VERSION,),
    )
    conn.execute("INSERT INTO affidavit_head (id, size) VALUES (1, 0)")
    conn.execute("INSERT INTO affidavit_published (id, size) VALUES (1, 0)")
    tune(conn)


def tune(conn: psycopg.Connection[Any]) -> None:
    """Set UNCOMPRESSED's columns' storage where it is not yet set (a log made before it was
    set, or by an older version, is tuned by the first frontend that opens it). Where the
    engine has no such setting or catalog (PostgreSQL-compatible engines), or the role may not
    alter the table, nothing changes but a warning: the log works as well, a little slower.
    """
    for table, column in UNCOMPRESSED:
        try:
            with conn.transaction():
                row = conn.execute(
                    "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attname = %s",
                    (table, column),
                ).fetchone()
                if row is not None and row[0] != "e":
                    conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL")
        except psycopg.Error as e:
            log.warning(
                "%s.%s left compressed (%s): its batches are stored a little slower",
                table,
                column,
                str(e).splitlines()[0] if str(e) else type(e).__name__,
            )


def _version(read: Read) -> str | None:
    rows = read("SELECT value FROM affidavit_meta WHERE name = 'schema_version'", ())
    return str(rows[0][0]) if rows else None


def check(read: Read, where: str) -> None:
    """StorageError unless the database holds a log of this schema version (or of
    FENCED_VERSION, which the layout step at open moves to this one)."""
    if "affidavit_meta" not in tables(read):
        raise StorageError(f"no log in {where} (run `affidavit init --storage …` first)")
    version = _version(read)
    if version not in (SCHEMA_VERSION, FENCED_VERSION):
        raise StorageError(
            f"{where} has schema version {version!r}; "
            f"this affidavit reads version {SCHEMA_VERSION!r}"
        )


def upgrade(conn: psycopg.Connection[Any], read: Read) -> bool:
    """Migrate a version 1 or 2 log to FENCED_VERSION, in one transaction on conn (autocommit);
    whether it did. Frontends opening it at once: the first migrates, the others find it done.
    A log of version 3 or 4 is tuned (tune) instead."""
    if "affidavit_meta" not in tables(read):
        return False
    found = _version(read)
    if found in (SCHEMA_VERSION, FENCED_VERSION):
        tune(conn)
    if found not in ("1", "2"):
        return False
    with conn.transaction():
        (version,) = conn.execute(
            "SELECT value FROM affidavit_meta WHERE name = 'schema_version' FOR UPDATE"
        ).fetchone() or (None,)
        if version == "1":
            _from_version_1(conn)
        elif version == "2":
            conn.execute("ALTER TABLE affidavit_pending ADD COLUMN tiles BYTEA")
        else:
            return False
        conn.execute(
            "UPDATE affidavit_meta SET value = %s WHERE name = 'schema_version'",
            (FENCED_VERSION,),
        )
        tune(conn)
    return True


def fence(conn: psycopg.Connection[Any]) -> bool:
    """Move a version 3 log to this version, in conn's transaction: the one that brings the
    statement state to layout 2 and holds the head row (PostgresStorage.rewrite_derived);
    whether it did. Frontends of version 3 then neither start nor sequence (module doc)."""
    (version,) = conn.execute(
        "SELECT value FROM affidavit_meta WHERE name = 'schema_version' FOR UPDATE"
    ).fetchone() or (None,)
    if version != FENCED_VERSION:
        return False
    _add_fence(conn)
    conn.execute(
        "UPDATE affidavit_meta SET value = %s WHERE name = 'schema_version'", (SCHEMA_VERSION,)
    )
    return True


def _add_fence(conn: psycopg.Connection[Any]) -> None:
    """affidavit_pending.schema_version, NOT NULL without default (the rows there read '3':
    their frontends were of that version)."""
    conn.execute(
        "ALTER TABLE affidavit_pending ADD COLUMN schema_version TEXT NOT NULL DEFAULT "
        f"'{FENCED_VERSION}'"
    )
    conn.execute("ALTER TABLE affidavit_pending ALTER COLUMN schema_version DROP DEFAULT")


def _from_version_1(conn: psycopg.Connection[Any]) -> None:
    """Version 1 kept the published size and note, and the one pending batch, in the head row."""
    row = conn.execute(
        "SELECT size, note, published, published_note, pending FROM affidavit_head "
        "WHERE id = 1 FOR UPDATE"
    ).fetchone()
    if row is None:
        raise StorageError("the version 1 log has no head row; the database was altered")
    size, head, published, published_note, pending = row
    for statement in PUBLICATION_TABLES:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO affidavit_published (id, size, note) VALUES (1, %s, %s)",
        (published, published_note),
    )
    if pending is not None:  # its frontend was of version 1: publish it at once
        conn.execute(
            "INSERT INTO affidavit_pending (size, first_index, note, entries, sequenced_at) "
            "VALUES (%s, %s, %s, %s, now() - interval '1 day')",
            (size, published, head, pending),
        )
    conn.execute(
        "ALTER TABLE affidavit_head DROP COLUMN published, DROP COLUMN published_note, "
        "DROP COLUMN pending"
    )
