"""A log in PostgreSQL and object storage: any number of frontends, one log.

PostgreSQL holds what is transactional with sequencing; the object store (server.objects_s3)
holds what is immutable or public. Tables (server.postgres_schema: created and checked by the
log, versioned):

    affidavit_meta        name -> value: schema_version, entry_format
    affidavit_head        the one row (id 1) every batch locks to sequence: size and note of
                          the latest signed checkpoint
    affidavit_published   the one row (id 1) locked to publish: size and note of the latest
                          checkpoint whose tiles, bundles and checkpoint object are all in the
                          object store
    affidavit_pending     tree size -> the batch sequenced up to it and not yet published: its
                          first index, checkpoint note, entries (uint32-length-prefixed),
                          grown tiles (server.postgres_publish.pack_tiles), whether its
                          objects are written, and when it was sequenced
    affidavit_leaf        leaf hash -> index of its first entry (dedup, proofs by leaf hash)
    affidavit_checkpoint  tree size -> every checkpoint note the log signed
    affidavit_cosigned    tree size -> the note with every witness cosignature received
    affidavit_record      derived records: statement state (s/...) and search index (x/...)

Order of writes, one batch (crash-safe; every step idempotent):

 1. lock: BEGIN; SELECT the head row FOR UPDATE (other frontends' batches wait here). Batches
    sequenced by other frontends and not yet published are read from their pending rows in the
    same round trip: their tiles as stored (the newest checked against its checkpoint's root),
    their entries only where they fall in the bundle the next batch extends; and which of
    the batch's leaf hashes (those known when the lock is asked for) are stored already. The
    caller extends exactly the head it got, whose tiles are in the object store or in this
    frontend's memory.
 2. sequence (server.postgres_sequence): in the same transaction insert the leaf-hash rows,
    derived records, the signed checkpoint and the batch's pending row, and set the head to
    the new size; COMMIT; one round trip. The
    batch is now durable: a crash from here on loses nothing. The next batch (of any
    frontend) can be sequenced at once.
 3. publish, with the head unlocked (server.postgres_publish): write the batch's entry bundles
    and tiles (create-only; a redo finds identical bytes), mark its row written (a synchronous
    commit; with those of the frontend's later batches already sequenced, in one statement);
    then, under the published row's lock, move the published size over the written
    rows that follow it in order, writing the checkpoint object of the new size first (so it
    never goes back), and delete the rows passed. Appenders are answered once the published
    size covers their batch (whoever moves it notifies the others: server.postgres_notify);
    a row left unwritten past a grace period (its frontend died) is written, its bundles made
    from its entries, by whoever waits on it.

The head row is locked from step 1's grant to step 2's commit: with several frontends, total
append throughput is at most entries per batch over that time. Each frontend sums it
(server.head_lock_times) and logs it when it stops.

The checkpoint object is written only after every tile and bundle it covers, and only under
the published row's lock, for a size above the last one; a reader of the bucket never sees a
checkpoint whose tiles are missing. checkpoint() answers the published checkpoint, so a
frontend never serves a tree whose tiles are not readable.

SQL relied on: BIGINT, BYTEA, TEXT, BOOLEAN, TIMESTAMPTZ, now() and clock_timestamp(); primary keys;
SELECT ... FOR UPDATE; INSERT ... SELECT FROM unnest(array, array) and = ANY(array), the arrays
bytea[] parameters sent in the binary wire format (server.postgres_arrays); INSERT ... ON
CONFLICT (key) DO UPDATE; SAVEPOINT, RELEASE and ROLLBACK TO SAVEPOINT
(server.postgres_sequence); ORDER BY/LIMIT on a BYTEA key (bytewise order); generate_series
and substring(bytea FROM .. FOR ..) (step 2's leaf hashes travel as one BYTEA, not an array);
information_schema.tables; ALTER TABLE ... DROP COLUMN, ADD COLUMN and ALTER COLUMN ... DROP
DEFAULT (the schema upgrades).
No COPY. Used where the engine has them, polled for where not:
LISTEN and pg_notify (server.postgres_notify). Known to work: PostgreSQL 12 and later
(tested on 16); the same subset is what CockroachDB, YugabyteDB, AlloyDB and Aurora
PostgreSQL document as supported (not tested here). The session setting
idle_in_transaction_session_timeout is set where the engine has it, so a frontend that hangs
holding the head lock loses it.

Sizing (per entry, PostgreSQL): one affidavit_leaf row, 32 + 8 bytes of data and about 28 of
row header (~70 B heap) plus its primary-key B-tree entry (~50 B): ~120 B per entry, growing
with the log; its index is the only per-entry index and costs one B-tree insert per append. A
signed statement adds its derived records in affidavit_record, one B-tree entry each: an
AgentAction INTENT about 17 rows, 4 of statement state (50-450 B values) and 13 of search index
(one hit record of ~700 B, and 12 keys of 20-80 B with empty values), ~2.0 KB of keys and
values in all (measured on the storage benchmark's statements). Per batch: one
affidavit_checkpoint row (~250 B) and one affidavit_pending row carrying the batch's entries
once and its grown tiles (32 B per entry, plus the partial tiles it extends: up to 8 KiB per
tile level; inserted, then deleted once published: WAL and TOAST churn about the size of the
batch). Object storage per entry: its bytes + 2 in a bundle, 32 B in its level-0 tile, ~1/8 B
in higher tiles; per batch one partial tile object per tile level and one partial bundle (kept,
as each names its width; they can be deleted once the full tile exists).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from affidavit.merkle import hashing
from affidavit.merkle.tiles import ENTRIES, WIDTH, Tile, tile_at
from affidavit.server import postgres_arrays, postgres_notify, postgres_schema, postgres_sequence
from affidavit.server.head_lock_times import HeadLockTimes
from affidavit.server.logstore import MAX_BUNDLE_ENTRY, StorageUnavailableError
from affidavit.server.objects_s3 import CHECKPOINT, ObjectStore, bundle_entries
from affidavit.server.postgres_arrays import ByteaArray
from affidavit.server.postgres_publish import Publication, Sequenced
from affidavit.server.storage import DERIVED_PREFIXES, Batch, ConflictError, StorageError
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger("affidavit.server")

SCAN_PAGE = 500
POOL_SIZE = 8
CONNECT_TIMEOUT_S = 3
"""How long a request waits for a database connection before it is answered UNAVAILABLE."""


def leaf_lookup(leaf_hashes: Sequence[bytes]) -> tuple[str, tuple[object, ...]]:
    """The query (and its parameters) giving the stored (leaf_hash, leaf_index) among
    leaf_hashes.

    As = ANY(bytea[]), as get_many, for its plan: psycopg prepares a query a connection has
    run 5 times, and PostgreSQL then keeps one generic plan for it until the table is next
    analysed (autovacuum's first look at a new table comes a minute or more into its life).
    The generic plan of = ANY is an index scan whatever the table held when it was made. That
    of the form before (IN over the hashes packed in one BYTEA, split by generate_series),
    made while the table was small, was a hash join over a sequential scan of the whole
    table, kept as the table grew: 25-39 ms a lookup of 700 at 200,000 rows, against 1.4."""
    if any(len(h) != hashing.HASH_SIZE for h in leaf_hashes):
        raise ValueError("leaf hashes are 32 bytes")
    return (
        "SELECT leaf_hash, leaf_index FROM affidavit_leaf WHERE leaf_hash = ANY(%s::bytea[])",
        (ByteaArray(leaf_hashes),),
    )


def _leaf_indexes(rows: Sequence[tuple[Any, ...]]) -> dict[bytes, int]:
    return {bytes(h): int(i) for h, i in rows}


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the --storage URL"
    return f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', '')}/" + (
        f"{info.get('dbname', '')}"
    )


def _first_line(e: Exception) -> str:
    """libpq's messages run over several lines; the first says what failed."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _configure(conn: psycopg.Connection[Any]) -> None:
    postgres_arrays.register(conn.adapters)
    # An engine without the setting holds the lock until the session ends.
    with contextlib.suppress(psycopg.Error):
        conn.execute("SET idle_in_transaction_session_timeout = '60s'")


class PostgresStorage:
    """Implements server.logstore.LogStore over PostgreSQL and an ObjectStore."""

    def __init__(self, url: str, objects: ObjectStore, *, create: bool = False) -> None:
        self._url = _redacted(url)
        self._objects = objects
        self._held: psycopg.Connection[Any] | None = None
        self._held_head: tuple[int, str | None] = (0, None)  # what lock_head gave: size, note
        self._known: dict[bytes, int | None] = {}  # leaf hashes lock_head looked up (held)
        self._cosigned: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._listener: postgres_notify.Listener | None = None
        self.head_lock_times = HeadLockTimes()
        try:  # one plain connection first: a wrong URL fails now, in one line
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
        except psycopg.Error as e:
            raise StorageError(f"cannot connect to {self._url}: {_first_line(e)}") from None
        try:
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                min_size=1,
                max_size=POOL_SIZE,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
                configure=_configure,
                open=False,
                timeout=CONNECT_TIMEOUT_S,
            )
            self._pool.open(wait=True, timeout=15)
        except (psycopg.Error, Exception) as e:
            raise StorageError(f"cannot connect to {self._url}: {_first_line(e)}") from None
        try:
            objects.check_reachable()
            if create:
                self._create()
            self._upgrade()
            postgres_schema.check(self._read, self._url)
            self._listener = postgres_notify.listen(url)
            self._publication = Publication(
                self._pool,
                objects,
                self._url,
                async_commit=self._has_setting("synchronous_commit"),
                listener=self._listener,
            )
        except BaseException:
            self.close()
            raise
        if not create:
            self._publish_all()
            self._refresh_cosigned()

    # Schema.

    def _has_setting(self, name: str) -> bool:
        """Whether the engine has this PostgreSQL setting (compatible engines may not)."""
        try:
            self._read(f"SHOW {name}")
        except StorageUnavailableError:
            raise
        except StorageError:
            return False
        return True

    def _upgrade(self) -> None:
        try:
            with self._pool.connection() as conn:
                postgres_schema.upgrade(conn, self._read)
        except psycopg.Error as e:
            raise StorageError(
                f"cannot upgrade the log's schema in {self._url}: {_first_line(e)}"
            ) from None

    def _create(self) -> None:
        if postgres_schema.tables(self._read):
            raise StorageError(f"{self._url} already holds a log; use another database")
        if self._objects.get(CHECKPOINT) is not None:
            raise StorageError(
                f"{self._objects.public.url()} already holds a log's checkpoint; give each log "
                "its own --objects location"
            )
        with self._pool.connection() as conn, conn.transaction():
            postgres_schema.create(conn)

    # The boundary.

    @property
    def location(self) -> str:
        return f"{self._url} with objects in {self._objects.public.url()}"

    @property
    def shared(self) -> bool:
        return True

    def close(self) -> None:
        if self._held is not None:
            self.unlock_head()
        times = self.head_lock_times.summary()
        if times["batches"]:
            # Beside them, per batch: requests (of any thread) that found every pooled
            # connection taken, and their wait; one under the head lock counts in its parts.
            stats, n = self._pool.get_stats(), times["batches"]
            times["pool_queued"] = round(stats.get("requests_queued", 0) / n, 2)
            times["pool_wait_ms"] = round(stats.get("requests_wait_ms", 0) / n, 2)
            log.info(
                "head lock per batch: %s",
                ", ".join(f"{k} {v:g}" for k, v in times.items()),
                extra={"event": "head-lock-times", **times},
            )
            published = self._publication.times.summary(
                int(times["batches"]), self._objects.requests()
            )
            log.info(
                "publication per batch: %s",
                ", ".join(f"{k} {v:g}" for k, v in published.items()),
                extra={"event": "publication-times", **published},
            )
        if self._listener is not None:
            self._listener.close()
        self._pool.close()
        self._objects.close()

    @contextlib.contextmanager
    def _mapped(self, cannot: str, failed: str | None = None) -> Iterator[None]:
        """psycopg's errors as this boundary's: a lost server or connection (OperationalError)
        as StorageUnavailableError, "cannot <cannot> <url>: why"; any other as StorageError,
        "<failed> <url> failed: why" (or, failed None, as unavailable too)."""
        try:
            yield
        except psycopg.Error as e:
            if failed is None or isinstance(e, psycopg.OperationalError):
                raise StorageUnavailableError(
                    f"cannot {cannot} {self._url}: {_first_line(e)}"
                ) from None
            raise StorageError(f"{failed} {self._url} failed: {_first_line(e)}") from None

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """One read, in autocommit; retried once on a broken connection (a restarted server)."""
        for attempt in (0, 1):
            try:
                with self._pool.connection() as conn:
                    return conn.execute(sql, params).fetchall()
            except PoolTimeout as e:  # no connection to be had: the server is down
                raise StorageUnavailableError(
                    f"cannot reach {self._url}: {_first_line(e)}"
                ) from None
            except psycopg.OperationalError as e:
                if attempt:
                    raise StorageUnavailableError(
                        f"cannot read from {self._url}: {_first_line(e)}"
                    ) from None
            except psycopg.Error as e:
                raise StorageError(f"reading from {self._url} failed: {_first_line(e)}") from None
        raise AssertionError("unreachable")

    def entry_format(self) -> str:
        rows = self._read("SELECT value FROM affidavit_meta WHERE name = 'entry_format'")
        if not rows:
            raise StorageError(f"{self._url} records no entry format; run `affidavit init`")
        return str(rows[0][0])

    def set_entry_format(self, entry_format: str) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO affidavit_meta (name, value) VALUES ('entry_format', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                (entry_format,),
            )

    def checkpoint(self) -> str | None:
        """The published checkpoint; also refreshes the cosigned one that cosigned() gives
        (the sequencer calls this often on a shared log, off the event loop)."""
        rows = self._read("SELECT size, note FROM affidavit_published WHERE id = 1")
        self._refresh_cosigned()
        if not rows or rows[0][1] is None:
            return None
        self._publication.unpublished.advance(int(rows[0][0]))
        return str(rows[0][1])

    def _refresh_cosigned(self) -> None:
        rows = self._read(
            "SELECT tree_size, note FROM affidavit_cosigned ORDER BY tree_size DESC LIMIT 1"
        )
        with self._lock:
            self._cosigned = (int(rows[0][0]), str(rows[0][1])) if rows else None

    def checkpoint_at(self, size: int) -> str | None:
        rows = self._read("SELECT note FROM affidavit_checkpoint WHERE tree_size = %s", (size,))
        return str(rows[0][0]) if rows else None

    def public_checkpoint(self) -> str | None:
        data = self._objects.get(CHECKPOINT)
        return None if data is None else data.decode(errors="replace")

    def cosigned(self) -> tuple[int, str] | None:
        """The newest cosigned checkpoint, as last read: served with every checkpoint, so it
        never waits for the database (other frontends' cosignatures show within a refresh)."""
        with self._lock:
            return self._cosigned

    def cosigned_at(self, size: int) -> str | None:
        rows = self._read("SELECT note FROM affidavit_cosigned WHERE tree_size = %s", (size,))
        return str(rows[0][0]) if rows else None

    def put_cosigned(self, size: int, note_text: str) -> None:
        with self._mapped("write to", "writing to"), self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO affidavit_cosigned (tree_size, note) VALUES (%s, %s) "
                "ON CONFLICT (tree_size) DO UPDATE SET note = EXCLUDED.note",
                (size, note_text),
            )
        with self._lock:
            if self._cosigned is None or size >= self._cosigned[0]:
                self._cosigned = (size, note_text)

    def index_of(self, leaf_hash: bytes) -> int | None:
        with self.head_lock_times.part("lookups"):
            rows = self._read(
                "SELECT leaf_index FROM affidavit_leaf WHERE leaf_hash = %s", (leaf_hash,)
            )
        return int(rows[0][0]) if rows else None

    def indexes_of(self, leaf_hashes: Sequence[bytes]) -> list[int | None]:
        """index_of of each; while the head is held, those lock_head looked up are answered
        from that (no other frontend adds a leaf meanwhile) and only the rest are read."""
        known = self._known
        missing = [h for h in leaf_hashes if h not in known]
        found: dict[bytes, int] = {}
        if missing:
            with self.head_lock_times.part("lookups"):
                found = _leaf_indexes(self._read(*leaf_lookup(missing)))
        return [known[h] if h in known else found.get(h) for h in leaf_hashes]

    def get(self, key: bytes) -> bytes | None:
        with self.head_lock_times.part("gets"):
            rows = self._read(
                "SELECT record_value FROM affidavit_record WHERE record_key = %s", (key,)
            )
        return bytes(rows[0][0]) if rows else None

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        if not keys:
            return {}
        with self.head_lock_times.part("lookups"):
            rows = self._read(
                "SELECT record_key, record_value FROM affidavit_record "
                "WHERE record_key = ANY(%s::bytea[])",
                (ByteaArray(keys),),
            )
        return {bytes(k): bytes(v) for k, v in rows}

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        stop = prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes are ASCII, never end in 0xff
        at, inclusive = prefix + start, True
        while True:
            rows = self._read(
                "SELECT record_key, record_value FROM affidavit_record WHERE record_key "
                + (">=" if inclusive else ">")
                + " %s AND record_key < %s ORDER BY record_key LIMIT %s",
                (at, stop, SCAN_PAGE),
            )
            for key, value in rows:
                yield bytes(key), bytes(value)
            if len(rows) < SCAN_PAGE:
                return
            at, inclusive = bytes(rows[-1][0]), False

    def rewrite_derived(
        self, plan: Callable[[], tuple[Mapping[bytes, bytes], Sequence[bytes]] | None]
    ) -> bool:
        """Run plan and write what it gives (records to put, keys to delete) in one
        transaction that holds the head row's lock: no frontend sequences a batch meanwhile
        (plan's reads, on other connections, see every record committed), and of frontends
        opening together the later ones find it done (server.state_migration). A version 3
        schema moves to 4 in the same transaction (postgres_schema.fence)."""
        with (
            self._mapped("rewrite derived records in", "rewriting derived records in"),
            self._pool.connection() as conn,
            conn.transaction(),
        ):
            conn.execute("SELECT size FROM affidavit_head WHERE id = 1 FOR UPDATE")
            changes = plan()
            fenced = postgres_schema.fence(conn)
            if changes is None:
                return fenced
            puts, deletes = changes
            outside = [k for k in (*puts, *deletes) if not k.startswith(DERIVED_PREFIXES)]
            if outside:
                raise ValueError(f"derived key {outside[0]!r} is outside the derived namespaces")
            if deletes:
                conn.execute(
                    "DELETE FROM affidavit_record WHERE record_key = ANY(%s::bytea[])",
                    (ByteaArray(deletes),),
                )
            if puts:
                conn.execute(
                    "INSERT INTO affidavit_record (record_key, record_value) "
                    "SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
                    "ON CONFLICT (record_key) DO UPDATE SET record_value = EXCLUDED.record_value",
                    (ByteaArray(puts.keys()), ByteaArray(puts.values())),
                )
        return True

    def read_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        with self.head_lock_times.part("tiles"):
            return self._publication.read_tiles(tiles)

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Entries from the bundles; stops early (the caller reports it) at a missing one."""
        index = start
        while index < end:
            base = index // WIDTH * WIDTH
            want = min(end - base, WIDTH)
            data = self._publication.read(Tile(ENTRIES, base // WIDTH, want))
            if data is None:
                return
            bundle = bundle_entries(data)
            for offset in range(index - base, min(len(bundle), want)):
                yield base + offset, bundle[offset]
            index = base + WIDTH

    def entry(self, index: int) -> bytes | None:
        return next((e for _, e in self.entries(index, index + 1)), None)

    def check_writable(self) -> None:
        self._read("SELECT 1")

    def last_entry_index(self) -> int | None:
        size = self._publication.unpublished.published
        if size == 0:
            return None
        path = tile_at(ENTRIES, (size - 1) // WIDTH, size).path()
        data = self._objects.get(path)
        if data is None:
            raise StorageError(f"entry bundle {path} is missing from the object store")
        return (size - 1) // WIDTH * WIDTH + len(bundle_entries(data)) - 1

    # Extending the log.

    def lock_head(self, leaf_hashes: Sequence[bytes] = ()) -> str | None:
        """Step 1; the lookup of leaf_hashes travels in the same round trip, after the lock is
        granted (so it sees every batch sequenced before), and indexes_of answers from it
        until the head is released."""
        if self._held is not None:
            raise RuntimeError("the head is already locked by this process")
        lookup = leaf_lookup(leaf_hashes) if leaf_hashes else None
        asked = self.head_lock_times.asked()
        try:
            conn = self._pool.getconn()
        except Exception as e:
            raise StorageUnavailableError(f"cannot reach {self._url}: {_first_line(e)}") from None
        try:
            with self._mapped("lock the log head in"):
                with conn.pipeline():  # one round trip: lock, and read what others sequenced
                    conn.execute("BEGIN")
                    locked = conn.execute(
                        "SELECT size, note FROM affidavit_head WHERE id = 1 FOR UPDATE"
                    )
                    granted = conn.execute("SELECT extract(epoch FROM clock_timestamp())")
                    looked = self._publication.look(conn)
                    stored = conn.execute(*lookup) if lookup is not None else None
                row = locked.fetchone()
                if row is None:
                    raise StorageError(f"{self._url} has no head row; the database was altered")
                size, head = int(row[0]), row[1]
                (granted_at,) = granted.fetchone() or (asked,)
                caught = time.perf_counter()
                self._publication.catch_up(size, looked)
                caught = time.perf_counter() - caught
                found = _leaf_indexes(stored.fetchall()) if stored is not None else {}
        except BaseException:
            self._release(conn, rollback=True)
            raise
        self._held, self._held_head = conn, (size, head)
        self._known = {h: found.get(h) for h in leaf_hashes}
        self.head_lock_times.holding(asked, float(granted_at))
        self.head_lock_times.add("catch_up", caught)
        return None if head is None else str(head)

    def _let_go(self) -> psycopg.Connection[Any] | None:
        """The held connection, if any; the head is no longer this frontend's to extend (so
        what lock_head looked up is forgotten: this frontend's commit or another's may add
        those leaves)."""
        conn, self._held, self._known = self._held, None, {}
        return conn

    def _release(self, conn: psycopg.Connection[Any], *, rollback: bool) -> None:
        if rollback:
            with contextlib.suppress(psycopg.Error):  # broken: the pool discards it
                conn.execute("ROLLBACK")
        self._pool.putconn(conn)

    def unlock_head(self) -> None:
        """Release the head; then, as after a commit, return once the head lock_head gave
        is published (another frontend's batch may not be yet)."""
        conn = self._let_go()
        if conn is not None:
            self._release(conn, rollback=True)
            self.head_lock_times.released(0)
            self._publish(self._held_head[0])

    def commit(self, batch: Batch, previous: str | None) -> Callable[[], None]:
        """Steps 1 (done by lock_head) and 2; returns step 3, to run before answering."""
        conn = self._let_go()
        if conn is None:
            raise RuntimeError("commit without lock_head")
        new_size = batch.first_index + len(batch.entries)
        try:
            with self.head_lock_times.part("commit"):
                sequenced = self._commit(conn, batch, previous, new_size)
        except BaseException:
            self._release(conn, rollback=True)
            self.head_lock_times.released(0)
            raise
        self._release(conn, rollback=False)
        self.head_lock_times.released(len(batch.entries))
        self._publication.unpublished.add(sequenced)
        return functools.partial(self._publish, new_size)

    def _commit(
        self, conn: psycopg.Connection[Any], batch: Batch, previous: str | None, new_size: int
    ) -> Sequenced:
        """commit's work under the lock: the batch's objects made, and step 2."""
        if self._held_head[1] != previous:
            raise ConflictError(
                f"the head in {self._url} is not the checkpoint this batch extends; "
                "refusing to sign over it"
            )
        # Before the commit: it may read the bundle this batch's first one grows from.
        with self.head_lock_times.part("bundles"):
            sequenced = self._publication.sequenced(
                batch.first_index, batch.entries, dict(batch.tiles), batch.checkpoint
            )
        with self._mapped("commit to", "commit to"), self.head_lock_times.part("sequence"):
            self._sequence(conn, batch, new_size)
        return sequenced

    def _sequence(self, conn: psycopg.Connection[Any], batch: Batch, new_size: int) -> None:
        """Step 2: the batch, durable in the database (the head row is locked by conn)."""
        if any(len(e) > MAX_BUNDLE_ENTRY for e in batch.entries):
            raise StorageError(f"entries of this log are at most {MAX_BUNDLE_ENTRY} bytes")
        for key in batch.extra:
            if not key.startswith(DERIVED_PREFIXES):
                raise ValueError(f"derived key {key!r} is outside the derived namespaces")
        postgres_sequence.write(conn, batch, new_size)

    def _publish_all(self) -> None:
        """At startup: publish what is pending (this frontend's own, if it stopped between
        steps 2 and 3; or a dead frontend's)."""
        self._publish(None)

    def _publish(self, size: int | None) -> None:
        """Step 3 up to size (server.postgres_publish); everything pending, if None."""
        with self._mapped("publish to", "publishing to"):
            if size is None:
                self._publication.publish_all()
            else:
                self._publication.publish(size)
