"""The PostgreSQL schema of a scale-out log (server.storage_postgres says what each table
holds): created by `affidavit init --storage`, checked by every frontend that opens the log.

Version 3. Older versions are migrated in place by the first frontend of this version that
opens the log, in one transaction: version 1 (one pending batch at most, in the head row) and
version 2 (pending batches without their tiles: rows it left are grown again from their
entries). A frontend refuses a database of any other version rather than guess at its layout.
Upgrade every frontend of a log together: an older one refuses a migrated database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from affidavit.server.storage import StorageError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "3"

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
    """StorageError unless the database holds a log of this schema version."""
    if "affidavit_meta" not in tables(read):
        raise StorageError(f"no log in {where} (run `affidavit init --storage …` first)")
    version = _version(read)
    if version != SCHEMA_VERSION:
        raise StorageError(
            f"{where} has schema version {version!r}; "
            f"this affidavit reads version {SCHEMA_VERSION!r}"
        )


def upgrade(conn: psycopg.Connection[Any], read: Read) -> bool:
    """Migrate a version 1 or 2 log to this version, in one transaction on conn (autocommit);
    whether it did. Frontends opening it at once: the first migrates, the others find it done.
    A log of this version is tuned (tune) instead."""
    if "affidavit_meta" not in tables(read):
        return False
    found = _version(read)
    if found == SCHEMA_VERSION:
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
            (SCHEMA_VERSION,),
        )
        tune(conn)
    return True


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
