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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import plyvel
from affidavit.merkle.tiles import Tile

LAYOUT_VERSION = b"1"

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


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _tile_key(level: int, index: int) -> bytes:
    return _TILE + level.to_bytes(1, "big") + _u64(index)


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


class Storage:
    """A log's LevelDB. Reads are safe from any thread; one writer (the sequencer) commits."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if not create and not (path / "CURRENT").exists():
            raise StorageError(f"no log database at {path} (run `affidavit init` first)")
        try:
            # Bloom filters (10 bits a key, about 1% false positives): most point reads miss,
            # the leaf-hash lookup of every append and the state reads of new ids.
            self._db = plyvel.DB(str(path), create_if_missing=create, bloom_filter_bits=10)
        except plyvel.IOError as e:
            if "lock" in str(e):
                raise StorageError(
                    f"{path} is in use by another process (its LevelDB lock is held); "
                    "stop the other `affidavit serve` or use another --data-dir"
                ) from None
            raise StorageError(f"cannot open the log database at {path}: {e}") from None
        except plyvel.Error as e:
            raise StorageError(f"the log database at {path} is damaged: {e}") from None
        version = self._db.get(_VERSION)
        if version is None and create:
            self._db.put(_VERSION, LAYOUT_VERSION, sync=True)
        elif version != LAYOUT_VERSION:
            self._db.close()
            raise StorageError(
                f"{path} has storage layout {version!r}; "
                f"this affidavit reads layout {LAYOUT_VERSION!r}"
            )

    def close(self) -> None:
        self._db.close()

    def entry_format(self) -> str:
        raw = self._db.get(_FORMAT)
        if raw is None:
            raise StorageError(
                f"{self.path} records no entry format; it was not made by `affidavit init`"
            )
        return str(raw.decode())

    def set_entry_format(self, entry_format: str) -> None:
        self._db.put(_FORMAT, entry_format.encode(), sync=True)

    def checkpoint(self) -> str | None:
        """The latest signed checkpoint note, or None for a log never written to."""
        raw = self._db.get(_CHECKPOINT)
        return None if raw is None else raw.decode()

    def checkpoint_at(self, size: int) -> str | None:
        """The checkpoint note the log signed for this tree size, if it signed one."""
        raw = self._db.get(_CHECKPOINT_AT + _u64(size))
        return None if raw is None else raw.decode()

    def cosigned(self) -> tuple[int, str] | None:
        """The newest checkpoint witnesses cosigned: its size and note with every cosignature."""
        raw = self._db.get(_COSIGNED_LATEST)
        if raw is None:
            return None
        size = int.from_bytes(raw, "big")
        return size, self.cosigned_at(size) or ""

    def cosigned_at(self, size: int) -> str | None:
        raw = self._db.get(_COSIGNED + _u64(size))
        return None if raw is None else raw.decode()

    def put_cosigned(self, size: int, note: str) -> None:
        """Store the cosigned note of a checkpoint, durably; it becomes the newest if it is."""
        latest = self.cosigned()
        with self._db.write_batch(sync=True) as wb:
            wb.put(_COSIGNED + _u64(size), note.encode())
            if latest is None or size >= latest[0]:
                wb.put(_COSIGNED_LATEST, _u64(size))

    def entry(self, index: int) -> bytes | None:
        entry: bytes | None = self._db.get(_ENTRY + _u64(index))
        return entry

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Entries [start, end) in index order."""
        for key, value in self._db.iterator(start=_ENTRY + _u64(start), stop=_ENTRY + _u64(end)):
            yield int.from_bytes(key[len(_ENTRY) :], "big"), value

    def last_entry_index(self) -> int | None:
        """The highest index stored, or None: recovery compares it with the checkpoint's size."""
        with self._db.iterator(prefix=_ENTRY, reverse=True, include_value=False) as it:
            for key in it:
                return int.from_bytes(key[len(_ENTRY) :], "big")
        return None

    def index_of(self, leaf_hash: bytes) -> int | None:
        raw = self._db.get(_HASH + leaf_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def get(self, key: bytes) -> bytes | None:
        """A derived record (s/ or x/ namespace)."""
        value: bytes | None = self._db.get(key)
        return value

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Derived records under prefix, in key order, from prefix + start on."""
        stop = prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes are ASCII, never end in 0xff
        yield from self._db.iterator(start=prefix + start, stop=stop)

    def read_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """Stored contents of each tile: at least its width's hashes, since tiles only grow."""
        out = []
        for tile in tiles:
            data = self._db.get(_tile_key(tile.level, tile.index))
            if data is None or len(data) < tile.width * 32:
                raise StorageError(f"tile {tile.path()} is missing or short in {self.path}")
            out.append(data)
        return out

    def commit(self, batch: Batch) -> None:
        """Write one integration atomically and durably (WriteBatch, sync=True)."""
        with self._db.write_batch(sync=True) as wb:
            for i, entry in enumerate(batch.entries):
                wb.put(_ENTRY + _u64(batch.first_index + i), entry)
            for i, leaf_hash in enumerate(batch.leaf_hashes):
                wb.put(_HASH + leaf_hash, _u64(batch.first_index + i))
            for tile, data in batch.tiles.items():
                wb.put(_tile_key(tile.level, tile.index), data)
            for key, value in batch.extra.items():
                if not key.startswith(DERIVED_PREFIXES):
                    raise ValueError(f"derived key {key!r} is outside the derived namespaces")
                wb.put(key, value)
            wb.put(_CHECKPOINT, batch.checkpoint.encode())
            wb.put(
                _CHECKPOINT_AT + _u64(batch.first_index + len(batch.entries)),
                batch.checkpoint.encode(),
            )
