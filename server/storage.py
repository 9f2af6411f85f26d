"""The log's storage: one LevelDB directory, written only in whole, synced batches.

Layout, version 1 (integers are 8-byte big-endian, so keys sort in index order):

    m/version               b"1"
    m/format                what entries are: b"statements" (signed statements, checked at
                            ingest) or b"opaque" (any bytes); fixed when the log is created
    e/<index>               entry bytes, exactly as appended
    h/<leaf hash>           index of the first entry with that leaf hash
    t/<level:1><index>      tile contents (C2SP tlog-tiles, height 8): the latest width of the
                            tile, level-0 tiles holding leaf hashes; full tiles never change
    c/latest                the latest signed checkpoint note (UTF-8)
    c/size/<size>           every checkpoint note the log has signed, by tree size
    w/<size>                the checkpoint of that size with every witness cosignature received
    w/latest                the size of the newest cosigned checkpoint
    s/...                   statement state: registry, sessions, grants, approvals, intents,
                            verdicts (layout in statements.state)
    x/...                   search indexes (layout in server.search)

A batch of appends is one WriteBatch(sync=True): entries, hash index, grown tiles and the
checkpoint that covers them land together or not at all, so the checkpoint on disk always
describes exactly the entries and tiles on disk.

One process writes a database: it holds an exclusive flock on LOCK_FILE (beside LevelDB's own
LOCK, which a deleted file silently stops guarding) from before the database opens until it
closes, and every commit first checks that the lock file is still the one it holds and that
the stored head is the checkpoint the committer extends. The database is opened with paranoid
checks and read with checksums verified; damage is a DataLossError naming what it hit.

A write that fails (a full disk) leaves LevelDB's log writer in an unknown state: writing on
would put records behind a torn one, which recovery drops with everything after it in its
block. So after a failed write the database takes no write until it has been closed and
reopened (recovery then ends the log at the torn record, which was never acknowledged), and
it is reopened only once the disk has room again. Reads go on meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, repeat, starmap
from pathlib import Path

import plyvel
from affidavit.merkle.tiles import Tile

LAYOUT_VERSION = b"1"
LOCK_FILE = "AFFIDAVIT-LOCK"
"""The writer's own lock file inside the database directory (LevelDB ignores it)."""

WRITE_BUFFER_BYTES = 64 << 20
"""LevelDB's memtable (its default is 4 MiB): written entries are flushed into a table when it
fills; the log is in the synced write-ahead log before that, so nothing waits on it."""

MIN_FREE_BYTES = 4 * WRITE_BUFFER_BYTES
"""Room a commit leaves free on the database's filesystem by default: enough for LevelDB to
flush its memtable and merge its first level (four flushed tables) into the next, so a full
disk is met before LevelDB's own writes fail."""

REOPEN_ROOM = 8 << 20
"""Free space needed before a database whose write failed is reopened."""

_VERSION = b"m/version"
_FORMAT = b"m/format"
_ENTRY = b"e/"
_HASH = b"h/"
_TILE = b"t/"
_CHECKPOINT = b"c/latest"
_CHECKPOINT_AT = b"c/size/"
_COSIGNED = b"w/"
_COSIGNED_LATEST = b"w/latest"
DERIVED_PREFIXES = (b"s/", b"x/")


class StorageError(Exception):
    """The data directory cannot be used: locked, missing, of another layout or damaged."""


class DataLossError(StorageError):
    """Stored data is unreadable or not what was written: what it is (an entry's index, a
    tile) is in the message."""


class DiskFullError(StorageError):
    """The database's filesystem has no room for a commit; nothing of it was written."""


class ConflictError(StorageError):
    """The stored head is not the checkpoint a commit extends, or this process no longer holds
    the database's lock: another writer was at work. Nothing was written."""


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _tile_key(level: int, index: int) -> bytes:
    return _TILE + level.to_bytes(1, "big") + _u64(index)


def _unreadable(db: plyvel.DB, key: bytes) -> bool:
    """Whether reading key finds damage (to name the record a failed batch of reads hit)."""
    try:
        db.get(key, verify_checksums=True)
    except plyvel.CorruptionError:
        return True
    return False


def _describe(key: bytes) -> str:
    """What a key holds, in the words of the log (for damage reports)."""
    if key.startswith(_ENTRY):
        return f"entry {int.from_bytes(key[len(_ENTRY) :], 'big')}"
    if key.startswith(_TILE):
        return f"tile {key[len(_TILE)]}/{int.from_bytes(key[len(_TILE) + 1 :], 'big')}"
    if key.startswith(_HASH):
        return f"the leaf-hash index entry of {key[len(_HASH) :].hex()}"
    if key == _CHECKPOINT:
        return "the latest checkpoint"
    if key.startswith(_CHECKPOINT_AT):
        return f"the checkpoint of size {int.from_bytes(key[len(_CHECKPOINT_AT) :], 'big')}"
    if key.startswith(_COSIGNED):
        return "a cosigned checkpoint"
    if key.startswith(DERIVED_PREFIXES):
        return f"derived record {key!r} (statement state or search index)"
    return f"record {key!r}"


@dataclass(frozen=True)
class Batch:
    """Everything one integration writes: entries new to the log from first_index on, their
    leaf hashes, the grown tiles and the signed checkpoint covering them."""

    first_index: int
    entries: Sequence[bytes]
    leaf_hashes: Sequence[bytes]
    tiles: Mapping[Tile, bytes]
    checkpoint: str
    extra: Mapping[bytes, bytes] = field(default_factory=dict)
    """Derived records (statement state, search indexes) that must never drift from entries."""


class _Lock:
    """An exclusive flock on a file of the log's own, held until release()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StorageError(
                f"{path.parent} is in use: {holder} holds its lock {path}; "
                "stop the other `affidavit serve` or use another --data-dir"
            ) from None
        self._fd = fd
        self._identity = os.fstat(fd)[1:3]
        if not self.held():  # removed between open and flock: that lock guards nothing
            self.release()
            raise StorageError(f"{path} was replaced while being locked; try again")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)

    def held(self) -> bool:
        """The file at path is still the one this process locked (not deleted or replaced)."""
        try:
            return os.stat(self.path)[1:3] == self._identity
        except FileNotFoundError:
            return False

    def release(self) -> None:
        os.close(self._fd)  # closing drops the flock


class Storage:
    """A log's LevelDB. Reads are safe from any thread; one writer (the sequencer) commits."""

    def __init__(
        self, path: Path, *, create: bool = False, min_free_bytes: int = MIN_FREE_BYTES
    ) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        if not create and not (path / "CURRENT").exists():
            raise StorageError(f"no log database at {path} (run `affidavit init` first)")
        path.mkdir(parents=True, exist_ok=True)
        # The lock comes first: two processes must never both have the database open.
        self._lock = _Lock(path / LOCK_FILE)
        # The guard's lock, taken directly on the point-read path (a Condition's own `with` is
        # a Python-level call, twice per read).
        self._mutex = threading.Lock()
        self._guard = threading.Condition(self._mutex)
        self._readers = 0  # reads in flight: the database is closed (to reopen) only at 0
        self._draining = 0  # closers waiting for reads to end: the last read then notifies
        self._must_reopen = False  # a write failed: no write before a reopen
        try:
            self._db: plyvel.DB | None = self._open(create)
        except BaseException:
            self._lock.release()
            raise
        version = self._get(_VERSION)
        if version is None and create:
            self._db.put(_VERSION, LAYOUT_VERSION, sync=True)
        elif version != LAYOUT_VERSION:
            self.close()
            raise StorageError(
                f"{path} has storage layout {version!r}; "
                f"this affidavit reads layout {LAYOUT_VERSION!r}"
            )

    def _open(self, create: bool = False) -> plyvel.DB:
        try:
            # Paranoid checks: LevelDB reports damage it finds instead of skipping it. Bloom
            # filters (10 bits a key, about 1% false positives): most point reads miss, the
            # leaf-hash lookup of every append and the state reads of new ids. A memtable of
            # WRITE_BUFFER_BYTES: every table spans the whole key space (entries, random leaf
            # hashes, tiles), so each flush is rewritten by the compactions below it, and
            # fewer, larger flushes are most of LevelDB's work saved (benchmarks/README.md).
            return plyvel.DB(
                str(self.path),
                create_if_missing=create,
                paranoid_checks=True,
                bloom_filter_bits=10,
                write_buffer_size=WRITE_BUFFER_BYTES,
            )
        except plyvel.IOError as e:
            message = _leveldb_message(e)
            if "lock" in message:
                raise StorageError(
                    f"{self.path} is in use by another process (its LevelDB lock is held); "
                    "stop the other `affidavit serve` or use another --data-dir"
                ) from None
            if "No space left" in message:
                raise DiskFullError(
                    f"the disk holding {self.path} is full ({message}); free space there"
                ) from None
            raise StorageError(f"cannot open the log database at {self.path}: {message}") from None
        except plyvel.Error as e:
            raise DataLossError(
                f"the log database at {self.path} is damaged ({_leveldb_message(e)}); "
                "restore the data directory from a backup"
            ) from None

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def shared(self) -> bool:
        return False  # its lock file: one process at a time

    def close(self) -> None:
        """Close the database once reads in flight end (or after 10 s: at exit, regardless),
        then release the lock."""
        with self._guard:
            self._drain(10.0)
            if self._db is not None:
                self._db.close()
                self._db = None
        self._lock.release()

    @contextmanager
    def _reading(self) -> Iterator[plyvel.DB]:
        """The open database, kept open while the caller reads it."""
        with self._guard:
            db = self._db
            if db is None:
                raise self._closed()
            self._readers += 1
        try:
            yield db
        except plyvel.CorruptionError as e:
            raise DataLossError(
                f"the log database at {self.path} is damaged: {_leveldb_message(e)}"
            ) from None
        finally:
            with self._mutex:
                self._readers -= 1
                if not self._readers and self._draining:
                    self._guard.notify_all()

    def _drain(self, timeout: float) -> bool:
        """Wait (holding the guard) until no read is in flight; False on timeout. Reads notify
        only while someone drains: a Condition's notify is Python-level work on every read."""
        self._draining += 1
        try:
            return self._guard.wait_for(lambda: self._readers == 0, timeout=timeout)
        finally:
            self._draining -= 1

    def _get(self, key: bytes) -> bytes | None:
        """db.get(key), checksums verified; damage reported with what the key holds. (The
        read count of _reading, inline: this is every point read's path.)"""
        mutex = self._mutex
        with mutex:
            db = self._db
            if db is None:
                raise self._closed()
            self._readers += 1
        try:
            value: bytes | None = db.get(key, verify_checksums=True)
        except plyvel.CorruptionError as e:
            raise DataLossError(
                f"{_describe(key)} is unreadable in {self.path}: {_leveldb_message(e)}"
            ) from None
        finally:
            with mutex:
                self._readers -= 1
                if not self._readers and self._draining:
                    self._guard.notify_all()
        return value

    def _closed(self) -> StorageError:
        return StorageError(
            f"the log database at {self.path} is closed after a failed write; "
            "it reopens once its disk has room"
        )

    def entry_format(self) -> str:
        raw = self._get(_FORMAT)
        if raw is None:
            raise StorageError(
                f"{self.path} records no entry format; it was not made by `affidavit init`"
            )
        return str(raw.decode())

    def set_entry_format(self, entry_format: str) -> None:
        with self._reading() as db:
            db.put(_FORMAT, entry_format.encode(), sync=True)

    def checkpoint(self) -> str | None:
        """The latest signed checkpoint note, or None for a log never written to."""
        raw = self._get(_CHECKPOINT)
        return None if raw is None else raw.decode()

    def checkpoint_at(self, size: int) -> str | None:
        """The checkpoint note the log signed for this tree size, if it signed one."""
        raw = self._get(_CHECKPOINT_AT + _u64(size))
        return None if raw is None else raw.decode()

    def public_checkpoint(self) -> None:
        """LevelDB keeps no public copy (the HTTP face serves the checkpoint from the database)."""
        return None

    def cosigned(self) -> tuple[int, str] | None:
        """The newest checkpoint witnesses cosigned: its size and note with every cosignature."""
        raw = self._get(_COSIGNED_LATEST)
        if raw is None:
            return None
        size = int.from_bytes(raw, "big")
        return size, self.cosigned_at(size) or ""

    def cosigned_at(self, size: int) -> str | None:
        raw = self._get(_COSIGNED + _u64(size))
        return None if raw is None else raw.decode()

    def put_cosigned(self, size: int, note: str) -> None:
        """Store the cosigned note of a checkpoint, durably; it becomes the newest if it is."""
        latest = self.cosigned()
        self._write(
            [(_COSIGNED + _u64(size), note.encode())]
            + ([] if latest is not None and size < latest[0] else [(_COSIGNED_LATEST, _u64(size))])
        )

    def entry(self, index: int) -> bytes | None:
        return self._get(_ENTRY + _u64(index))

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Entries [start, end) in index order."""
        at = start
        with self._reading() as db:
            try:
                for key, value in db.iterator(
                    start=_ENTRY + _u64(start), stop=_ENTRY + _u64(end), verify_checksums=True
                ):
                    at = int.from_bytes(key[len(_ENTRY) :], "big")
                    yield at, value
                    at += 1
            except plyvel.CorruptionError as e:
                raise DataLossError(
                    f"entry {at} (or one after it) is unreadable in {self.path}: "
                    f"{_leveldb_message(e)}"
                ) from None

    def last_entry_index(self) -> int | None:
        """The highest index stored, or None: recovery compares it with the checkpoint's size."""
        with (
            self._reading() as db,
            db.iterator(prefix=_ENTRY, reverse=True, include_value=False) as it,
        ):
            for key in it:
                return int.from_bytes(key[len(_ENTRY) :], "big")
        return None

    def index_of(self, leaf_hash: bytes) -> int | None:
        raw = self._get(_HASH + leaf_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def indexes_of(self, leaf_hashes: Sequence[bytes]) -> list[int | None]:
        """index_of of each leaf hash, in one read of the database (a batch's lookups)."""
        with self._reading() as db:
            get = db.get
            try:
                found = [get(_HASH + leaf_hash, verify_checksums=True) for leaf_hash in leaf_hashes]
            except plyvel.CorruptionError as e:
                bad = next((h for h in leaf_hashes if _unreadable(db, _HASH + h)), leaf_hashes[0])
                raise DataLossError(
                    f"{_describe(_HASH + bad)} is unreadable in {self.path}: {_leveldb_message(e)}"
                ) from None
        return [None if raw is None else int.from_bytes(raw, "big") for raw in found]

    def get(self, key: bytes) -> bytes | None:
        """A derived record (s/ or x/ namespace)."""
        return self._get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """Derived records among keys that exist, in one read of the database."""
        found = {}
        with self._reading() as db:
            for key in keys:
                try:
                    value = db.get(key, verify_checksums=True)
                except plyvel.CorruptionError as e:
                    raise DataLossError(
                        f"{_describe(key)} is unreadable in {self.path}: {_leveldb_message(e)}"
                    ) from None
                if value is not None:
                    found[key] = value
        return found

    def signed_checkpoints(self) -> Iterator[tuple[int, str]]:
        """Every checkpoint note the log signed, by tree size (`affidavit migrate` replays
        them)."""
        with self._reading() as db:
            for key, value in db.iterator(prefix=_CHECKPOINT_AT, verify_checksums=True):
                yield int.from_bytes(key[len(_CHECKPOINT_AT) :], "big"), value.decode()

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Derived records under prefix, in key order, from prefix + start on."""
        stop = prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes are ASCII, never end in 0xff
        with self._reading() as db:
            yield from db.iterator(start=prefix + start, stop=stop, verify_checksums=True)

    def rewrite_derived(
        self, plan: Callable[[], tuple[Mapping[bytes, bytes], Sequence[bytes]] | None]
    ) -> bool:
        """Run plan and write what it gives (records to put, keys to delete) in one synced
        WriteBatch; nothing when it gives None. This process is the only writer (its lock
        file); called at open, before the sequencer runs (server.state_migration)."""
        changes = plan()
        if changes is None:
            return False
        puts, deletes = changes
        outside = [k for k in chain(puts, deletes) if not k.startswith(DERIVED_PREFIXES)]
        if outside:
            raise ValueError(f"derived key {outside[0]!r} is outside the derived namespaces")
        with self._reading() as db, db.write_batch(sync=True, transaction=True) as wb:
            for key in deletes:
                wb.delete(key)
            for key, value in puts.items():
                wb.put(key, value)
        return True

    def read_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """Stored contents of each tile: at least its width's hashes, since tiles only grow."""
        out = []
        for tile in tiles:
            data = self._get(_tile_key(tile.level, tile.index))
            if data is None or len(data) < tile.width * 32:
                raise DataLossError(f"tile {tile.path()} is missing or short in {self.path}")
            out.append(data)
        return out

    def lock_head(self, leaf_hashes: Sequence[bytes] = ()) -> str | None:
        """The latest checkpoint note: this process is the only writer (its lock file).
        leaf_hashes are not read ahead: indexes_of reads the local database."""
        return self.checkpoint()

    def unlock_head(self) -> None:
        """Nothing to release (see lock_head)."""

    def commit(self, batch: Batch, previous: str | None) -> None:
        """Write one integration atomically and durably (WriteBatch, sync=True), only if the
        stored head is still previous, the checkpoint the batch extends (ConflictError if not;
        DiskFullError when the disk has no room; nothing is written either way)."""
        if not self._lock.held():
            raise ConflictError(
                f"the lock file {self._lock.path} was removed or replaced while this server held "
                "it: another process may be writing this database; refusing to sign anything more "
                "(stop every `affidavit serve` on it, then run `affidavit check`)"
            )
        extra = batch.extra
        size = sum(map(len, batch.entries)) + sum(map(len, batch.tiles.values()))
        size += sum(map(len, extra)) + sum(map(len, extra.values()))
        self._make_room(size)
        if self.checkpoint() != previous:
            raise ConflictError(
                f"the latest checkpoint stored in {self.path} is not the one this server signed "
                "last: another process wrote to the database; refusing to sign over it"
            )
        if not all(map(bytes.startswith, extra, repeat(DERIVED_PREFIXES))):
            key = next(k for k in extra if not k.startswith(DERIVED_PREFIXES))
            raise ValueError(f"derived key {key!r} is outside the derived namespaces")
        # Keys and values a batch at a time, in comprehensions: a batch holds thousands. They
        # are paired as they are put (zip and dict items reuse their pair): a list of the
        # thousands of pairs, alive until the write, set off young collections by the dozen a
        # batch, and its survivors more of the full ones that walk the server's whole heap.
        indexes = [
            _u64(i) for i in range(batch.first_index, batch.first_index + len(batch.entries))
        ]
        note = batch.checkpoint.encode()
        self._write(
            chain(
                zip([_ENTRY + index for index in indexes], batch.entries, strict=True),
                zip([_HASH + leaf_hash for leaf_hash in batch.leaf_hashes], indexes, strict=True),
                [(_tile_key(tile.level, tile.index), data) for tile, data in batch.tiles.items()],
                extra.items(),
                (
                    (_CHECKPOINT, note),
                    (_CHECKPOINT_AT + _u64(batch.first_index + len(batch.entries)), note),
                ),
            )
        )

    def _write(self, writes: Iterable[tuple[bytes, bytes]]) -> None:
        """One synced WriteBatch of writes (commit() has made room for it; otherwise they are
        few); after a failure, no write until the database is reopened."""
        if self._must_reopen:
            writes = list(writes)
            self._make_room(sum(len(k) + len(v) for k, v in writes))
        with self._reading() as db:
            try:
                # A transaction: a failure while putting (a pair that cannot be put) writes
                # nothing, where a plain WriteBatch would write what was put so far.
                with db.write_batch(sync=True, transaction=True) as wb:
                    # A batch holds a few dozen records a statement: put in a loop in C.
                    deque(starmap(wb.put, writes), maxlen=0)
            except plyvel.Error as e:
                self._must_reopen = True
                message = _leveldb_message(e)
                if "No space left" in message or "Disk quota" in message:
                    raise DiskFullError(self._full_message(message)) from None
                raise StorageError(f"cannot write to {self.path}: {message}") from None

    def free_bytes(self) -> int:
        """Bytes free for this process on the database's filesystem."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def _full_message(self, detail: str) -> str:
        return (
            f"the disk holding {self.path} is full ({detail}); appends resume by themselves "
            f"once {_mib(max(self.min_free_bytes, REOPEN_ROOM))} or more is free there"
        )

    def check_writable(self) -> None:
        """Raise DiskFullError (or StorageError) unless a commit could be written now."""
        self._make_room(0)

    def _make_room(self, batch_bytes: int) -> None:
        """Raise DiskFullError unless the disk has room for batch_bytes (twice: the log, then
        its table) beyond min_free_bytes (0: no such check, LevelDB's own write fails); reopen
        the database if a write failed before, once REOPEN_ROOM is free (reopening replays
        the log into a table: on a full disk it would fail and leave nothing open to read)."""
        free = self.free_bytes()
        if self.min_free_bytes and free < self.min_free_bytes + 2 * batch_bytes:
            raise DiskFullError(self._full_message(f"{_mib(free)} free"))
        if self._must_reopen:
            if free < REOPEN_ROOM:
                raise DiskFullError(self._full_message(f"{_mib(free)} free"))
            self._reopen()

    def _reopen(self) -> None:
        """Close and reopen the database, once no read is in flight (StorageError if reads do
        not drain in time; the next commit tries again)."""
        with self._guard:
            if not self._drain(10.0):
                raise StorageError(f"reads of {self.path} kept it from reopening; retrying")
            if self._db is not None:
                self._db.close()
                self._db = None
            self._db = self._open()
            self._must_reopen = False


def _leveldb_message(e: Exception) -> str:
    raw = e.args[0] if e.args else e
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
