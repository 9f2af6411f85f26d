"""The PostgreSQL schema of a scale-out log (server.storage_postgres says what each table
holds): created by `affidavit init --storage`, checked by every frontend that opens the log.

Version 1. A frontend refuses a database of another version rather than guess at its layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from affidavit.server.storage import StorageError

SCHEMA_VERSION = "1"

TABLES = (
    "CREATE TABLE affidavit_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE affidavit_head (id INT PRIMARY KEY, size BIGINT NOT NULL, note TEXT,"
    " published BIGINT NOT NULL, published_note TEXT, pending BYTEA)",
    "CREATE TABLE affidavit_leaf (leaf_hash BYTEA PRIMARY KEY, leaf_index BIGINT NOT NULL)",
    "CREATE TABLE affidavit_checkpoint (tree_size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "CREATE TABLE affidavit_cosigned (tree_size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "CREATE TABLE affidavit_record (record_key BYTEA PRIMARY KEY, record_value BYTEA NOT NULL)",
)

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
    """Create the tables and the one head row (in the caller's transaction, on an empty
    database)."""
    for statement in TABLES:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO affidavit_meta (name, value) VALUES ('schema_version', %s)",
        (SCHEMA_VERSION,),
    )
    conn.execute("INSERT INTO affidavit_head (id, size, published) VALUES (1, 0, 0)")


def check(read: Read, where: str) -> None:
    """StorageError unless the database holds a log of this schema version."""
    if "affidavit_meta" not in tables(read):
        raise StorageError(f"no log in {where} (run `affidavit init --storage …` first)")
    rows = read("SELECT value FROM affidavit_meta WHERE name = 'schema_version'", ())
    version = rows[0][0] if rows else None
    if version != SCHEMA_VERSION:
        raise StorageError(
            f"{where} has schema version {version!r}; "
            f"this affidavit reads version {SCHEMA_VERSION!r}"
        )
