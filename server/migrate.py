"""Move a LevelDB log into PostgreSQL and object storage, checking everything on the way.

The source is replayed checkpoint by checkpoint, as it grew: each signed checkpoint must carry
the log's signature, and the tiles grown from its entries in the destination must give its
root; it is then committed there as that batch (entries, leaf-hash index, tiles, the same
signed note). Derived records (statement state, search index) and witness cosignatures are
copied as they are. At the end the destination is opened as a server would open it
(server.sequencer.recover: its signed checkpoint against its tiles) and its checkpoint must be
the source's latest, byte for byte. Origin, key and every proof stay valid: nothing is
re-signed, and the tree is the same tree.

The destination must be empty; a migration that stops half way leaves a database to drop and
a prefix to empty before trying again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.tiles import grow
from affidavit.server import config, state_migration
from affidavit.server.integrity import recover
from affidavit.server.logstore import DB_DIR, LogStore, StoreSpec, open_store
from affidavit.server.storage import DERIVED_PREFIXES, Batch, Storage, StorageError

RECORDS_PER_BATCH = 5000
"""Derived records carried by each replayed batch (keeps every transaction short)."""


@dataclass(frozen=True)
class Progress:
    """How far a migration is: entries replayed (size) of total, checkpoints so far."""

    size: int
    total: int
    checkpoints: int


@dataclass(frozen=True)
class Migrated:
    """A finished migration: entries, checkpoints, derived records and cosigned notes moved."""

    size: int
    checkpoints: int
    records: int
    cosigned: int
    note: str


def migrate(
    source_dir: Path, destination: StoreSpec, progress: Callable[[Progress], None]
) -> Migrated:
    """Copy the log in source_dir (keys and LevelDB) to destination; see the module doc."""
    _, verifier_key = config.load_key(source_dir)
    source = Storage(source_dir / DB_DIR)
    try:
        # Its derived records are copied as they are: in the layout the target is made in (the
        # source's own next open would rewrite them the same way).
        state_migration.migrate(source)
        _, latest = recover(source, verifier_key)
        target = open_store(destination, create=True)
        try:
            done = _copy(source, target, verifier_key, latest, progress)
        finally:
            target.close()
    finally:
        source.close()
    target = open_store(destination)
    try:
        _, text = recover(target, verifier_key)
    finally:
        target.close()
    if text != latest:
        raise StorageError("the migrated log's checkpoint is not the source's latest")
    return done


def _records(source: Storage) -> Iterator[tuple[bytes, bytes]]:
    for prefix in DERIVED_PREFIXES:
        yield from source.scan(prefix)


def _copy(
    source: Storage,
    target: LogStore,
    verifier_key: str,
    latest: str,
    progress: Callable[[Progress], None],
) -> Migrated:
    target.set_entry_format(source.entry_format())
    total = checkpoints.parse(note.parse_note(latest)[0]).size
    records = _records(source)
    copied = 0
    size, count, cosigned = 0, 0, 0
    notes = list(source.signed_checkpoints())
    for at, (new_size, text) in enumerate(notes):
        try:
            cp = checkpoints.parse(note.open(text, [verifier_key]))
        except MerkleError as e:
            raise StorageError(f"checkpoint of size {new_size} does not verify: {e}") from None
        if cp.size != new_size or new_size < size or (new_size == size and at):
            raise StorageError(f"checkpoint of size {new_size} is out of order in the source")
        entries = [e for _, e in source.entries(size, new_size)]
        if len(entries) != new_size - size:
            raise StorageError(f"entries {size}..{new_size} are not all in the source")
        hashes = hashing.leaf_hashes(entries)
        growth = grow(size, hashes, target.read_tiles)
        if growth.root() != cp.root_hash:
            raise StorageError(
                f"the source's entries up to {new_size} do not give its signed root; "
                "the source database was altered or damaged"
            )
        last = at == len(notes) - 1
        extra = dict(records if last else islice(records, RECORDS_PER_BATCH))
        copied += len(extra)
        head = target.lock_head()
        publish = target.commit(Batch(size, entries, hashes, growth.tiles, text, extra), head)
        if publish is not None:
            publish()
        cosigned_note = source.cosigned_at(new_size)
        if cosigned_note is not None:
            target.put_cosigned(new_size, cosigned_note)
            cosigned += 1
        size, count = new_size, count + 1
        progress(Progress(size, total, count))
    if notes and notes[-1][1] != latest:
        raise StorageError("the source's latest checkpoint is not the last one it signed")
    return Migrated(size, count, copied, cosigned, latest)
