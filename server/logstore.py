"""The storage boundary: what the sequencer, statement gate, search and proofs need of a log's
storage, and the two deployments that provide it.

    embedded (default)   one LevelDB directory, DATA_DIR/db (server.storage)
    scale-out            PostgreSQL for what is transactional with sequencing, S3-compatible
                         object storage for tiles, entry bundles and checkpoints
                         (server.storage_postgres over server.objects_s3)

Extending the log is a critical section that the storage itself guards: lock_head() takes the
right to extend (LevelDB: the one process holding its lock file; PostgreSQL: the head row,
locked FOR UPDATE) and gives the latest checkpoint note, which the caller must extend;
commit() writes the batch and releases it, unlock_head() releases it without writing. A store
that other processes may extend says so (shared): its head can move between batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

from affidavit.merkle.tiles import Tile
from affidavit.server.storage import MIN_FREE_BYTES, Batch, Storage, StorageError

DerivedRewrite = tuple[Mapping[bytes, bytes], Sequence[bytes]]
"""Derived records to put, and derived keys to delete (LogStore.rewrite_derived)."""

DB_DIR = "db"
"""The LevelDB's directory inside a log's data directory."""

MAX_BUNDLE_ENTRY = 0xFFFF
"""The largest entry object storage keeps: tlog-tiles entry bundles prefix each entry with a
uint16 length (serve caps --max-entry-bytes to it there)."""


class StorageUnavailableError(StorageError):
    """The storage cannot be reached now (database or object store down, connection lost).

    Nothing was acknowledged that is not durable; the request may be retried once it is back.
    """


class LogStore(Protocol):
    """A log's storage. Reads are safe from any thread; one thread at a time extends the log."""

    @property
    def location(self) -> str:
        """Where the log is, for messages (a path or URLs; never a password)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other processes may extend this log (several frontends)."""
        ...

    def close(self) -> None: ...

    def entry_format(self) -> str: ...

    def set_entry_format(self, entry_format: str) -> None: ...

    def checkpoint(self) -> str | None:
        """The latest checkpoint note whose tiles and entries are all readable."""
        ...

    def checkpoint_at(self, size: int) -> str | None:
        """The checkpoint note the log signed for this tree size, if it signed one."""
        ...

    def public_checkpoint(self) -> str | None:
        """The copy of the checkpoint that readers outside the log trust, kept apart from the
        database (the object store's PREFIX/checkpoint); None where there is none (LevelDB)."""
        ...

    def cosigned(self) -> tuple[int, str] | None: ...

    def cosigned_at(self, size: int) -> str | None: ...

    def put_cosigned(self, size: int, note: str) -> None: ...

    def entry(self, index: int) -> bytes | None: ...

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Entries [start, end) in index order (end at most the latest checkpoint's size)."""
        ...

    def last_entry_index(self) -> int | None: ...

    def index_of(self, leaf_hash: bytes) -> int | None: ...

    def indexes_of(self, leaf_hashes: Sequence[bytes]) -> list[int | None]:
        """index_of of each leaf hash, in one read (a batch's lookups)."""
        ...

    def get(self, key: bytes) -> bytes | None:
        """A derived record (statement state s/..., search index x/...)."""
        ...

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The derived records among keys that exist (one query on a remote store)."""
        ...

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]: ...

    def rewrite_derived(self, plan: Callable[[], DerivedRewrite | None]) -> bool:
        """Change a layout of derived records (server.state_migration): with the right to
        extend the log held, run plan (it reads this store) and write what it gives — records
        to put, keys to delete — in one atomic, durable write; nothing when it gives None.
        Whether it wrote. Called at open, before the log takes appends."""
        ...

    def read_tiles(self, tiles: Sequence[Tile]) -> list[bytes]: ...

    def check_writable(self) -> None:
        """Raise a StorageError unless a commit could be made now (a full disk, a database
        down): the sequencer probes with it while appends fail."""
        ...

    def lock_head(self, leaf_hashes: Sequence[bytes] = ()) -> str | None:
        """Take the right to extend the log; the latest checkpoint note (None: none yet).

        leaf_hashes: those of the batch about to extend it, as far as known. A store whose
        reads are round trips looks them up with the lock, and indexes_of answers them from
        that until the head is released: no other process adds a leaf while it is held."""
        ...

    def commit(self, batch: Batch, previous: str | None) -> Callable[[], None] | None:
        """Write one integration durably and atomically, extending previous (the head note
        lock_head gave; ConflictError if the stored head is another); the head is released
        either way. Returns what remains before the batch is readable from every frontend (a
        shared store's publication to object storage; None: nothing): the caller runs it, in
        commit order, before answering for the batch, and may commit the next one meanwhile."""
        ...

    def unlock_head(self) -> None:
        """Release the head without writing (nothing to do if it is not held); a shared store
        returns once the head lock_head gave is readable from every frontend."""
        ...


P = ParamSpec("P")
T = TypeVar("T")


async def read_off_loop(
    store: LogStore, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """read(*args, **kwargs) of store, for a coroutine on the server's event loop. A shared
    store's read is a round trip (a query, an object GET): it runs in a thread, so the loop goes
    on answering every other call meanwhile. The embedded LevelDB is read in place: its reads
    are local, and a thread's hand-off would cost more (a proof read through one took 1.11x
    the CPU)."""
    if store.shared:
        return await asyncio.to_thread(read, *args, **kwargs)
    return read(*args, **kwargs)


@dataclass(frozen=True)
class StoreSpec:
    """Where a log is stored: LevelDB in data_dir, or PostgreSQL plus an object store."""

    data_dir: Path
    storage_url: str | None = None
    objects_url: str | None = None
    private_objects_url: str | None = None

    @property
    def scaleout(self) -> bool:
        return self.storage_url is not None

    def check(self) -> None:
        """StorageError unless the settings name one complete deployment."""
        if self.storage_url is None:
            if self.objects_url or self.private_objects_url:
                raise StorageError("--objects goes with --storage postgresql://…")
            return
        if not self.storage_url.startswith(("postgresql://", "postgres://")):
            raise StorageError(
                "--storage takes a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE); "
                "leave it out for the embedded LevelDB in --data-dir"
            )
        if self.objects_url is None:
            raise StorageError(
                "--storage postgresql://… needs --objects s3://BUCKET/PREFIX: tiles, entry "
                "bundles and checkpoints live in object storage"
            )


def open_store(
    spec: StoreSpec, *, create: bool = False, min_free_bytes: int = MIN_FREE_BYTES
) -> LogStore:
    """Open (or, with create, make) the log's storage; StorageError if it cannot be used.
    min_free_bytes: the room LevelDB's disk keeps (see server.storage)."""
    spec.check()
    if spec.storage_url is None:
        return _in_layout(
            Storage(spec.data_dir / DB_DIR, create=create, min_free_bytes=min_free_bytes)
        )
    # Imported here: the scale-out drivers' libraries are an optional extra.
    try:
        from affidavit.server.objects_s3 import Location, ObjectStore
        from affidavit.server.storage_postgres import PostgresStorage
    except ImportError as e:
        raise StorageError(
            f"the PostgreSQL and S3 drivers need their libraries ({e.name} is missing): "
            "pip install 'affidavit[postgres,s3]'"
        ) from None
    assert spec.objects_url is not None
    private = (
        Location.parse(spec.private_objects_url) if spec.private_objects_url is not None else None
    )
    objects = ObjectStore(Location.parse(spec.objects_url), private)
    return _in_layout(PostgresStorage(spec.storage_url, objects, create=create))


def _in_layout(store: LogStore) -> LogStore:
    """store, its statement state in the layout this server reads (rewritten once if older:
    server.state_migration); closed if that fails."""
    from affidavit.server import state_migration  # it imports this module

    try:
        state_migration.migrate(store)
    except BaseException:
        store.close()
        raise
    return store
