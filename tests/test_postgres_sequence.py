"""server.postgres_sequence through the driver, on real PostgreSQL and S3: a batch's derived
records are puts whichever way they go in (the search index's by a plain insert, falling back
to puts when a key is present), and a batch that fails in step 2 writes nothing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import psycopg
import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.tiles import grow
from affidavit.server import postgres_arrays
from affidavit.server.objects_s3 import Location, ObjectStore
from affidavit.server.storage import Batch, StorageError
from affidavit.server.storage_postgres import PostgresStorage, leaf_lookup

from tests import backends
from tests.backends import Scaleout

ORIGIN = "example.com/sequence-test"
SIGNER, VERIFIER = note.generate_key(ORIGIN)

scaleout = backends.scaleout


@pytest.fixture
def storage(scaleout: Scaleout, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresStorage]:
    for name, value in scaleout.env().items():
        monkeypatch.setenv(name, value)
    objects = ObjectStore(Location.parse(scaleout.objects_url))
    s = PostgresStorage(scaleout.storage_url, objects, create=True)
    try:
        yield s
    finally:
        s.close()


def append(storage: PostgresStorage, entries: list[bytes], extra: Mapping[bytes, bytes]) -> int:
    """One batch, as the sequencer makes it (tiles grown, checkpoint signed); its first index."""
    head = storage.lock_head()
    size = 0 if head is None else checkpoints.parse(note.open(head, [VERIFIER])).size
    hashes = hashing.leaf_hashes(entries)
    growth = grow(size, hashes, storage.read_tiles)
    body = Checkpoint(ORIGIN, size + len(entries), growth.root()).format()
    batch = Batch(size, entries, hashes, growth.tiles, note.sign(body, SIGNER), dict(extra))
    storage.commit(batch, head)()
    return size


def index_key(index: int, field: bytes = b"tool\x00read") -> bytes:
    return b"x/f/" + field + b"\x00" + index.to_bytes(8, "big")


def test_state_and_index_records_read_back_and_state_is_rewritten(storage):
    append(storage, [b"one", b"two"], {b"s/q/s1": b"v1", index_key(0): b"", index_key(1): b""})
    at = append(storage, [b"three"], {b"s/q/s1": b"v2", index_key(2): b"", b"x/h/2": b"hit"})
    assert at == 2
    assert storage.get(b"s/q/s1") == b"v2"
    assert storage.get(b"x/h/2") == b"hit"
    keys = [k for k, _ in storage.scan(b"x/f/tool\x00read\x00")]
    assert keys == [index_key(0), index_key(1), index_key(2)]


def test_an_index_key_already_present_takes_the_batchs_value(storage, scaleout):
    append(storage, [b"one"], {index_key(0): b""})
    with psycopg.connect(scaleout.storage_url, autocommit=True) as conn:  # out of band
        conn.execute(
            "INSERT INTO affidavit_record VALUES (%s, 'stale'), (%s, 'stale')",
            (b"x/h/1", index_key(1)),
        )
    append(storage, [b"two"], {b"s/q/s": b"state", b"x/h/1": b"fresh", index_key(1): b""})
    assert storage.get(b"x/h/1") == b"fresh"
    assert storage.get(index_key(1)) == b""
    assert storage.get(b"s/q/s") == b"state"
    assert storage.indexes_of(hashing.leaf_hashes([b"two"])) == [1]
    append(storage, [b"three"], {index_key(2): b""})  # and the next batch goes on as before
    assert [k for k, _ in storage.scan(b"x/f/")] == [index_key(i) for i in range(3)]


def test_a_batch_that_fails_in_step_2_writes_none_of_its_records(storage, scaleout):
    append(storage, [b"one"], {})
    with psycopg.connect(scaleout.storage_url, autocommit=True) as conn:
        conn.execute("INSERT INTO affidavit_checkpoint VALUES (2, 'in the way')")
    with pytest.raises(StorageError, match="commit to"):
        append(storage, [b"two"], {b"s/q/s": b"state", index_key(1): b""})
    assert storage.get(b"s/q/s") is None
    assert storage.get(index_key(1)) is None
    assert storage.indexes_of(hashing.leaf_hashes([b"two"])) == [None]


def test_lock_head_looks_up_the_batchs_leaf_hashes_as_of_the_lock(storage, scaleout):
    append(storage, [b"one", b"two"], {})
    other = PostgresStorage(scaleout.storage_url, ObjectStore(Location.parse(scaleout.objects_url)))
    try:
        append(other, [b"three"], {})  # another frontend's batch, before the lock
        storage.lock_head(hashing.leaf_hashes([b"one", b"three", b"four"]))
        times = storage.head_lock_times
        read_before = times.parts_s.get("lookups", 0.0)
        assert storage.indexes_of(hashing.leaf_hashes([b"three", b"four", b"one"])) == [2, None, 0]
        assert times.parts_s.get("lookups", 0.0) == read_before  # answered from the lock's trip
        assert storage.indexes_of(hashing.leaf_hashes([b"two", b"four"])) == [1, None]
        assert times.parts_s["lookups"] > read_before  # "two" was not looked up: read now
        storage.unlock_head()
        append(other, [b"four"], {})  # released: what the lock looked up is forgotten
        assert storage.indexes_of(hashing.leaf_hashes([b"four"])) == [3]
    finally:
        other.close()


def test_lock_head_refuses_a_leaf_hash_of_another_length(storage):
    with pytest.raises(ValueError, match="32 bytes"):
        storage.lock_head([b"short"])
    storage.lock_head(hashing.leaf_hashes([b"one"]))  # and nothing was held
    storage.unlock_head()


def test_pending_entries_are_stored_uncompressed_and_an_older_log_is_tuned(storage, scaleout):
    assert backends.pending_entries_storage(scaleout) == "e"  # as created
    append(storage, [b"one"], {})
    with psycopg.connect(scaleout.storage_url, autocommit=True) as conn:  # as made before
        conn.execute("ALTER TABLE affidavit_pending ALTER COLUMN entries SET STORAGE EXTENDED")
    assert backends.pending_entries_storage(scaleout) == "x"
    again = PostgresStorage(scaleout.storage_url, ObjectStore(Location.parse(scaleout.objects_url)))
    try:
        assert backends.pending_entries_storage(scaleout) == "e"
        assert again.indexes_of(hashing.leaf_hashes([b"one"])) == [0]
    finally:
        again.close()


def test_theleaf_lookups_kept_plan_is_an_index_scan_as_the_table_grows(storage, scaleout):
    # psycopg prepares a query a connection ran 5 times; PostgreSQL then keeps a generic plan,
    # made here while the table was small, until the table is analysed. (The packed IN
    # (generate_series) form kept a hash join over a sequential scan of the table.)
    probes = hashing.leaf_hashes([f"probe {i}".encode() for i in range(700)])
    sql, params = leaf_lookup(probes)
    rows = (
        "INSERT INTO affidavit_leaf SELECT sha256(int8send(i)), i "
        "FROM generate_series(%s::bigint, %s::bigint) AS i"
    )
    with psycopg.connect(scaleout.storage_url, autocommit=True) as conn:
        postgres_arrays.register(conn.adapters)
        conn.execute(rows, (1, 50), prepare=False)  # the first batches'
        for _ in range(12):
            assert conn.execute(sql, params, prepare=True).fetchall() == []
        conn.execute(rows, (51, 50_000), prepare=False)
        (name, generic), *_ = conn.execute(
            "SELECT name, generic_plans FROM pg_prepared_statements WHERE statement = %s",
            (sql.replace("%s", "$1"),),
        ).fetchall()
        assert generic > 0
        array = "{" + ",".join(f'"\\\\x{h.hex()}"' for h in probes) + "}"
        plan = conn.execute(f"EXPLAIN EXECUTE {name}('{array}')").fetchall()
    text = "\n".join(str(row[0]) for row in plan)
    assert "Index" in text and "Seq Scan" not in text, text
