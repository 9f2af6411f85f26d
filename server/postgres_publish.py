"""Step 3 of a scale-out batch (the whole order of writes is in server.storage_postgres):
writing sequenced batches' entry bundles and tiles to the object store, and moving the
published size over them, in order.

Step 2 only sequences: under the head lock, a batch's entries go into the database as a row
of affidavit_pending and the head moves on, so the next batch (of any frontend) is sequenced
at once. Step 3 runs with the head unlocked:

 3a. write: the batch's frontend writes its bundles and tiles. No lock is needed: every such
     object is create-only and its path names its width, so whoever writes it writes the same
     bytes, and no checkpoint object covers it yet. Then the row is marked written, with a
     synchronous commit: a checkpoint object never covers a row whose mark could be lost.
     A frontend writes and marks every batch of its own it has sequenced so far at once (and
     those it sequenced while writing them), so that one advance and one checkpoint object
     serve them all; the later ones' publications then find them published.
 3b. advance: under the lock of the published row (affidavit_published, not the head: the
     sequencing of later batches goes on meanwhile), the published size moves over the
     written rows that follow it, in order. Whoever moves it writes the checkpoint object of
     the new size before committing, so that object never goes back and never covers a row
     not written; the rows passed are deleted.

A frontend answers a batch's appenders once the published size covers it. A row that stays
unwritten for PUBLISH_GRACE_S was left by a frontend that died: whoever waits on it writes it,
from its entries (its tiles grown again, which must give the row's checkpoint).

Each frontend keeps the batches between the published size and the newest head it has seen
(Unpublished): the next batch grows its tiles and bundles from them, and reads of those sizes
find their objects there before they are in the object store.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note
from affidavit.merkle.errors import MerkleError, TileError
from affidavit.merkle.tiles import ENTRIES, WIDTH, Tile, grow, tile_at
from affidavit.server.head_lock_times import PublishTimes
from affidavit.server.objects_s3 import ObjectStore, bundle_entries, make_bundle
from affidavit.server.postgres_notify import CHANNEL, Listener
from affidavit.server.storage import StorageError
from psycopg_pool import ConnectionPool

PUBLISH_GRACE_S = 3.0
"""How long a row may stay unwritten before another frontend takes its frontend for dead and
writes it itself."""
POLL_S = (0.002, 0.02)
"""First and longest pause between looks at the published size, waiting on another frontend
(where the engine cannot tell of a new one: server.postgres_notify)."""
HEARD_POLL_S = 0.1
"""The pause between those looks where it can: a look only catches a notification lost."""
LOOK_S = 0.5
"""How often a frontend waiting on another's row looks at that row (under the lock) again."""


def pack(entries: Sequence[bytes]) -> bytes:
    """A batch's entries as one value (each uint32-length-prefixed)."""
    return b"".join(len(e).to_bytes(4, "big") + e for e in entries)


def unpack(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        n = int.from_bytes(data[at : at + 4], "big")
        out.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return out


def pack_tiles(tiles: Mapping[Tile, bytes]) -> bytes:
    """A batch's grown tiles as one value: each its level (1 byte), index (8) and width (2),
    big-endian, then its width * 32 bytes of hashes."""
    return b"".join(
        bytes([t.level]) + t.index.to_bytes(8, "big") + t.width.to_bytes(2, "big") + data
        for t, data in sorted(tiles.items())
    )


def unpack_tiles(data: bytes) -> dict[Tile, bytes]:
    """pack_tiles' tiles (StorageError on bytes it did not make)."""
    out, at = {}, 0
    while at < len(data):
        if at + 11 > len(data):
            raise StorageError("a pending batch's tiles are truncated; the database was altered")
        level, index = data[at], int.from_bytes(data[at + 1 : at + 9], "big")
        width = int.from_bytes(data[at + 9 : at + 11], "big")
        end = at + 11 + width * hashing.HASH_SIZE
        if not 0 < width <= WIDTH or end > len(data):
            raise StorageError("a pending batch's tiles are malformed; the database was altered")
        out[Tile(level, index, width)] = data[at + 11 : end]
        at = end
    return out


@dataclass
class Sequenced:
    """A batch sequenced in the database, entries [first, size): its checkpoint note and the
    objects it writes (entry bundles, at level ENTRIES, and tiles), each at its width at size.
    to_write: this frontend writes it without waiting for a grace period (its own batch, not
    yet written; or, at startup, any pending one). bundled: objects holds every one of its
    entry bundles; else (another frontend's batch) only the bundle the next batch extends, if
    it reaches that far, and the others are made from its entries if this frontend writes it.
    objects is replaced whole, never changed in place (readers iterate it)."""

    first: int
    size: int
    note: str
    objects: dict[Tile, bytes]
    to_write: bool
    bundled: bool = True


@dataclass
class Looked:
    """The reads Publication.look sent (cursors, fetched once the pipeline is synced)."""

    rows: psycopg.Cursor[Any]
    published: psycopg.Cursor[Any]


class Unpublished:
    """The batches this frontend knows of past the published size, in order and contiguous
    from it (thread-safe: readers look objects up while the integrator adds batches). The list
    of batches is replaced whole, never changed in place, so find() scans the list it took
    under the lock outside it: the lock is held for a lookup's two reads, not for its scan."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published = 0
        self._batches: list[Sequenced] = []

    @property
    def published(self) -> int:
        with self._lock:
            return self._published

    def end(self) -> int:
        """The tree size the known batches reach."""
        with self._lock:
            return self._batches[-1].size if self._batches else self._published

    def batches(self) -> list[Sequenced]:
        with self._lock:
            return list(self._batches)

    def add(self, batch: Sequenced) -> None:
        with self._lock:
            end = self._batches[-1].size if self._batches else self._published
            if batch.first != end:
                raise StorageError(f"batch [{batch.first}, {batch.size}) does not follow {end}")
            self._batches = [*self._batches, batch]

    def advance(self, published: int) -> None:
        """The published size is now at least published: forget the batches it covers."""
        with self._lock:
            if published > self._published:
                self._published = published
                self._batches = [b for b in self._batches if b.size > published]
                if self._batches and self._batches[0].first != published:
                    self._batches = []  # a gap: batches others sequenced meanwhile, unseen

    def find(self, tile: Tile) -> tuple[bytes | None, int]:
        """The newest known object of tile's level and index at least tile's width, or None;
        and the published size (whose objects hold every tile not found here)."""
        with self._lock:
            batches, published = self._batches, self._published
        for batch in reversed(batches):
            for t, data in batch.objects.items():
                if (t.level, t.index) == (tile.level, tile.index) and t.width >= tile.width:
                    return data, published
        return None, published


class Publication:
    """Step 3 for one frontend (see the module doc), and its reads of objects by tile."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        objects: ObjectStore,
        where: str,
        *,
        async_commit: bool,
        listener: Listener | None,
    ) -> None:
        self._pool = pool
        self._listener = listener
        self._objects = objects
        self._where = where
        self._async_commit = async_commit
        self.unpublished = Unpublished()
        self.times = PublishTimes()

    # Reads.

    def read(self, tile: Tile) -> bytes | None:
        """An object holding at least tile's width: an unpublished batch's, else the one in
        the object store as the tile stands at the published size (or None, absent)."""
        data, published = self.unpublished.find(tile)
        if data is not None:
            return data
        if tile.width == WIDTH:
            return self._objects.get(tile.path())
        try:
            stored = tile_at(tile.level, tile.index, published)
        except TileError:
            stored = tile
        if stored.width < tile.width:
            raise StorageError(f"tile {tile.path()} is beyond the published tree")
        return self._objects.get(stored.path())

    def read_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        out = []
        for tile in tiles:
            data = self.read(tile)
            if data is None or len(data) < tile.width * hashing.HASH_SIZE:
                raise StorageError(f"tile {tile.path()} is missing or short in the object store")
            out.append(data)
        return out

    # Batches.

    def sequenced(
        self, first: int, entries: Sequence[bytes], tiles: dict[Tile, bytes], note_text: str
    ) -> Sequenced:
        """This frontend's batch, sequenced at first with the tiles it grew."""
        objects = dict(tiles)
        objects.update(self._bundles(first, entries))
        return Sequenced(first, first + len(entries), note_text, objects, to_write=True)

    def _regrown(self, first: int, size: int, note_text: str, entries: list[bytes]) -> Sequenced:
        """Another frontend's batch, from its entries: its tiles grown again here, which must
        give the checkpoint it signed (a row of schema version 2, which has no tiles)."""
        self._check_count(first, size, entries)
        growth = grow(first, hashing.leaf_hashes(entries), self.read_tiles)
        if growth.root() != self._root(note_text):
            raise StorageError(
                f"{self._where}: the pending entries at {first} do not give their checkpoint's "
                "root; the database was altered"
            )
        objects = dict(growth.tiles)
        objects.update(self._bundles(first, entries))
        return Sequenced(first, size, note_text, objects, to_write=False)

    def _bundles(self, first: int, entries: Sequence[bytes]) -> dict[Tile, bytes]:
        """The entry bundles that appear or grow when entries are appended at first."""
        out: dict[Tile, bytes] = {}
        at, taken = first, 0
        while taken < len(entries):
            n, offset = divmod(at, WIDTH)
            take = min(WIDTH - offset, len(entries) - taken)
            head = b""
            if offset:
                before = Tile(ENTRIES, n, offset)
                stored = self.read(before)
                if stored is None:
                    raise StorageError(f"entry bundle {before.path()} is missing")
                kept = bundle_entries(stored)
                if len(kept) < offset:
                    raise StorageError(f"entry bundle {before.path()} is short")
                head = stored if len(kept) == offset else make_bundle(kept[:offset])
            body = head + make_bundle(entries[taken : taken + take])
            out[Tile(ENTRIES, n, offset + take)] = body
            at, taken = at + take, taken + take
        return out

    def look(self, conn: psycopg.Connection[Any]) -> Looked:
        """Send, in conn's transaction that holds the head row locked (and may be pipelined
        with the locking: these statements read the head as locked), the reads catch_up needs:
        the pending rows past what this frontend knows, then the published size (rows are
        deleted only once it covers them). Their tiles as stored, their entries only where
        they fall in the bundle the next batch extends (a row a frontend of schema version 2
        left has no tiles: its entries are read, to grow them again)."""
        rows = conn.execute(
            "SELECT p.size, p.first_index, p.note, p.tiles, "
            "CASE WHEN p.tiles IS NULL OR p.size > h.size - h.size %% %s THEN p.entries END "
            "FROM affidavit_pending p, affidavit_head h "
            "WHERE h.id = 1 AND p.size > %s AND p.size <= h.size ORDER BY p.size",
            (WIDTH, self.unpublished.end()),
            binary=True,  # the entries as they are, not in hex
        )
        published = conn.execute("SELECT size FROM affidavit_published WHERE id = 1")
        return Looked(rows, published)

    def catch_up(self, size: int, looked: Looked) -> None:
        """Know every batch up to the head of size, from what look() read: those other
        frontends sequenced since this one last looked."""
        rows = looked.rows.fetchall()
        (published,) = looked.published.fetchone() or (0,)
        known = self.unpublished.end()
        if known > size:
            raise StorageError(
                f"{self._where}: the head went back from {known} to {size}; the database was "
                "restored from an older copy or altered"
            )
        self.unpublished.advance(published)
        extended = size - size % WIDTH  # the first index of the bundle the next batch extends
        stored = None
        for end, first, note_text, tiles, packed in rows:
            if end <= self.unpublished.end():
                continue
            if first != self.unpublished.end():
                raise StorageError(
                    f"{self._where}: the pending batches leave a gap at "
                    f"{self.unpublished.end()}; the database was altered"
                )
            entries = None if packed is None else unpack(bytes(packed))
            if tiles is None:
                assert entries is not None
                self.unpublished.add(self._regrown(first, end, note_text, entries))
                continue
            batch = Sequenced(first, end, note_text, unpack_tiles(bytes(tiles)), False, False)
            if entries is not None:
                self._check_count(first, end, entries)
                at = max(first, extended)
                batch.objects.update(self._bundles(at, entries[at - first :]))
                batch.bundled = at == first
            self.unpublished.add(batch)
            stored = batch
        if self.unpublished.end() != size:
            raise StorageError(
                f"{self._where}: the head is at {size} but its batches reach "
                f"{self.unpublished.end()}; the database was altered"
            )
        if stored is not None and stored.size == size:
            self._check_root(stored)

    def _check_root(self, batch: Sequenced) -> None:
        """The tiles stored with the newest batch give the root its checkpoint signs (the next
        batch grows from them: it must never sign over altered ones)."""
        if self._root(batch.note) != grow(batch.size, [], self.read_tiles).root():
            raise StorageError(
                f"{self._where}: the tiles pending at {batch.size} do not give their "
                "checkpoint's root; the database was altered"
            )

    def _check_count(self, first: int, size: int, entries: Sequence[bytes]) -> None:
        if len(entries) != size - first:
            raise StorageError(
                f"{self._where}: the pending batch at {first} holds {len(entries)} entries, not "
                f"{size - first}; the database was altered"
            )

    def _root(self, note_text: str) -> bytes:
        try:
            return checkpoints.parse(note.parse_note(note_text)[0]).root_hash
        except MerkleError as e:
            raise StorageError(f"{self._where}: a pending checkpoint is malformed: {e}") from None

    def _bundled(self, batch: Sequenced) -> None:
        """Make every entry bundle of another frontend's batch, from its entries (to write it
        in its place); the batches before it are bundled or published."""
        if batch.bundled:
            return
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT entries FROM affidavit_pending WHERE size = %s", (batch.size,), binary=True
            ).fetchone()
        if row is None:
            return  # published meanwhile: its objects are all written
        entries = unpack(bytes(row[0]))
        self._check_count(batch.first, batch.size, entries)
        batch.objects = {**batch.objects, **self._bundles(batch.first, entries)}
        batch.bundled = True

    # Step 3.

    def publish(self, size: int) -> None:
        """Return once the published size is at least size: write this frontend's batches
        (every one it sequenced so far, so that one advance may pass them all), wait for the
        others' (write them, past the grace period), and advance."""
        with self.times.part("publish"):
            self._publish(size)

    def _publish(self, size: int) -> None:
        if self.unpublished.published >= size and not any(
            b.to_write and b.size <= size for b in self.unpublished.batches()
        ):
            return  # an earlier publication wrote this batch with its own, and passed it
        pause = POLL_S[0]
        while True:
            self._write(self._mine(), join_mine=True)
            published, blocked = self._advance()
            if published >= size:
                return
            assert blocked is not None
            row, stale = blocked
            if stale:  # its frontend died
                late = next((b for b in self.unpublished.batches() if b.size == row), None)
                if late is None:
                    raise StorageError(f"{self._where}: the pending batch up to {row} is unknown")
                self._write([late], join_mine=False)
                continue
            # Ours are marked written before that look: whoever advances over the row in the
            # way passes them too. Watch the published size (no lock), and look again under
            # the lock now and then, in case that row's frontend died.
            with self.times.part("wait"):
                look_again = time.monotonic() + LOOK_S
                while time.monotonic() < look_again:
                    if self._listener is None:
                        time.sleep(pause)
                        pause = min(pause * 2, POLL_S[1])
                    else:
                        heard = self._listener.wait(size, HEARD_POLL_S)
                        if heard >= size:
                            self.unpublished.advance(heard)
                            return
                    if self._published_size() >= size:
                        return

    def _published_size(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT size FROM affidavit_published WHERE id = 1").fetchone()
        published = int(row[0]) if row is not None else 0
        self.unpublished.advance(published)
        return published

    def publish_all(self) -> None:
        """At startup: write every pending batch at once (a frontend that was stopped between
        steps 2 and 3 left its own), then advance over them."""
        with self._pool.connection() as conn, conn.transaction():
            row = conn.execute("SELECT size FROM affidavit_head WHERE id = 1 FOR UPDATE").fetchone()
            size = int(row[0]) if row is not None else 0
            self.catch_up(size, self.look(conn))
        for batch in self.unpublished.batches():
            batch.to_write = True
        self.publish(size)

    def _mine(self) -> list[Sequenced]:
        """Every batch this frontend is to write, in order: past the size a publication waits
        for too, so that one mark and one advance (one checkpoint object) serve them all, and
        the publications of the later ones find them published."""
        return [b for b in self.unpublished.batches() if b.to_write]

    def _write(self, batches: list[Sequenced], *, join_mine: bool) -> None:
        """3a: the batches' objects (join_mine: then those of this frontend's batches
        sequenced meanwhile, once, so that a steady stream of them never holds the first
        back), then one durable mark for them all."""
        self._put(batches)
        if join_mine:
            later = [b for b in self._mine() if all(b is not d for d in batches)]
            self._put(later)
            batches = batches + later
        if not batches:
            return
        with self.times.part("mark"), self._pool.connection() as conn:
            conn.execute(
                "UPDATE affidavit_pending SET written = TRUE WHERE size = ANY(%s::bigint[])",
                ([b.size for b in batches],),
            )
        for batch in batches:
            batch.to_write = False

    def _put(self, batches: list[Sequenced]) -> None:
        """The batches' objects, all in parallel, each in the object store once this returns."""
        if not batches:
            return
        for batch in batches:
            self._bundled(batch)
        with self.times.part("objects"):
            self._objects.put_unpublished(
                [(t.path(), d) for b in batches for t, d in b.objects.items()]
            )

    def _advance_in(self, conn: psycopg.Connection[Any]) -> tuple[int, tuple[int, bool] | None]:
        """_advance's transaction on conn; its round trips pipelined (lock and look, write)."""
        with conn.pipeline():
            conn.execute("BEGIN")
            if self._async_commit:
                # Losing this commit in a crash leaves the rows written and pending: the next
                # advance passes them again, and writes the same checkpoint object or a newer.
                conn.execute("SET LOCAL synchronous_commit = off")
            locked = conn.execute("SELECT size FROM affidavit_published WHERE id = 1 FOR UPDATE")
            # size = published: only the empty first batch `affidavit init` signs.
            rows = conn.execute(
                "SELECT size, note, written, sequenced_at < now() - %s * interval '1 second' "
                "FROM affidavit_pending "
                "WHERE size >= (SELECT size FROM affidavit_published WHERE id = 1) ORDER BY size",
                (PUBLISH_GRACE_S,),
            )
        (published,) = locked.fetchone() or (0,)
        new, new_note, blocked = int(published), None, None
        for end, note_text, written, stale in rows.fetchall():
            if not written:
                blocked = (int(end), bool(stale))
                break
            new, new_note = int(end), str(note_text)
        if new_note is not None:
            with self.times.part("checkpoint"):
                self._objects.put_checkpoint(new_note)
            with conn.pipeline():
                conn.execute(
                    "UPDATE affidavit_published SET size = %s, note = %s WHERE id = 1",
                    (new, new_note),
                )
                conn.execute("DELETE FROM affidavit_pending WHERE size <= %s", (new,))
                if self._listener is not None:  # sent once this commits
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(new)))
                conn.execute("COMMIT")
        else:
            conn.execute("COMMIT")
        return new, blocked

    def _advance(self) -> tuple[int, tuple[int, bool] | None]:
        """3b: move the published size over the written rows after it; the published size, and
        the first row still unwritten (its size, and whether its grace period is over)."""
        with self.times.part("advance"), self._pool.connection() as conn:
            try:
                new, blocked = self._advance_in(conn)
            except BaseException:
                with contextlib.suppress(psycopg.Error):  # broken: the pool discards it
                    conn.execute("ROLLBACK")
                raise
        self.unpublished.advance(new)
        return new, blocked
