"""Step 2 of a scale-out batch (the whole order of writes is in server.storage_postgres): the
batch's rows, written and committed in the transaction that holds the head row locked, in one
round trip (a pipeline: no statement's result is needed before the commit).

Rows: one affidavit_leaf row per entry (the leaf hashes travel as one BYTEA, split by the
server), the derived records (two bytea[] parameters already in wire form:
server.postgres_arrays), the signed checkpoint, the batch's pending row, and the head.

Derived records are puts: a key already present takes the batch's value. INSERT ... ON
CONFLICT DO UPDATE does that, but its speculative insertion (look, insert, confirm) costs the
server about twice a plain insert per row, and a batch of signed statements carries some 20
records per statement. The search index's keys (x/, server.search) name the index of the
statement they describe, which no earlier batch had, so they go in by a plain INSERT inside a
savepoint; should one be present after all (written out of band), the savepoint is rolled back
and they go in as puts, as the statement state's records (s/, often rewritten) always do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from affidavit.server.postgres_arrays import ByteaArray
from affidavit.server.postgres_publish import pack, pack_tiles
from affidavit.server.postgres_schema import SCHEMA_VERSION
from affidavit.server.storage import Batch

HASHES_AT = (
    "SELECT substring(%s::bytea FROM i * 32 + 1 FOR 32), %s::bigint + i "
    "FROM generate_series(0, %s::int - 1) AS i"
)
"""32-byte hashes packed in one BYTEA parameter, as rows with consecutive indexes from a first
one (parameters: packed, first, count)."""

INDEX_PREFIX = b"x/"
"""The search index's keys: each names its statement's index, so only ever added."""
_RECORDS = (
    "INSERT INTO affidavit_record (record_key, record_value) "
    "SELECT * FROM unnest(%s::bytea[], %s::bytea[])"
)
_PUT = " ON CONFLICT (record_key) DO UPDATE SET record_value = EXCLUDED.record_value"
_SAVEPOINT = "affidavit_index"


def _arrays(records: Mapping[bytes, bytes]) -> tuple[ByteaArray, ByteaArray]:
    return ByteaArray(records.keys()), ByteaArray(records.values())


def write(conn: psycopg.Connection[Any], batch: Batch, new_size: int) -> None:
    """Write batch's rows and COMMIT, on conn (in the transaction that locked the head)."""
    state = {k: v for k, v in batch.extra.items() if not k.startswith(INDEX_PREFIX)}
    index = {k: v for k, v in batch.extra.items() if k.startswith(INDEX_PREFIX)}
    try:
        with conn.pipeline():
            if batch.leaf_hashes:
                conn.execute(
                    f"INSERT INTO affidavit_leaf (leaf_hash, leaf_index) {HASHES_AT}",
                    (b"".join(batch.leaf_hashes), batch.first_index, len(batch.leaf_hashes)),
                )
            if state:
                conn.execute(_RECORDS + _PUT, _arrays(state))
            if index:
                conn.execute(f"SAVEPOINT {_SAVEPOINT}")
                conn.execute(_RECORDS, _arrays(index))
                conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            _finish(conn, batch, new_size)
    except psycopg.errors.UniqueViolation as e:
        if not index or e.diag.table_name != "affidavit_record":
            raise
        with conn.pipeline():  # an index key was present: put them all instead
            conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            conn.execute(_RECORDS + _PUT, _arrays(index))
            _finish(conn, batch, new_size)


def _finish(conn: psycopg.Connection[Any], batch: Batch, new_size: int) -> None:
    """The checkpoint, the pending row and the head; COMMIT."""
    conn.execute(
        "INSERT INTO affidavit_checkpoint (tree_size, note) VALUES (%s, %s)",
        (new_size, batch.checkpoint),
    )
    conn.execute(
        "INSERT INTO affidavit_pending (size, first_index, note, entries, tiles, schema_version) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (
            new_size,
            batch.first_index,
            batch.checkpoint,
            pack(batch.entries),
            pack_tiles(batch.tiles),
            SCHEMA_VERSION,  # the fence: a frontend of an older schema names no such column
        ),
    )
    conn.execute(
        "UPDATE affidavit_head SET size = %s, note = %s WHERE id = 1",
        (new_size, batch.checkpoint),
    )
    conn.execute("COMMIT")
