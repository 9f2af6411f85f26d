"""The log's checks of its own storage, the same whatever holds it.

A server must never serve, or sign growth over, a log it cannot vouch for:

- recover() at startup: the stored checkpoint carries the log's signature, the entries stored
  are exactly those it covers, the stored tiles give its root, the entries at the right edge
  (where a damaged write lands) hash to their leaves, and the database is not behind the
  checkpoint the log signed last, kept outside it (KeptCheckpoint) — a truncated or damaged
  write-ahead log, or a restored old copy, loses acknowledged entries without any of the
  other checks noticing.
- check_log(), for `affidavit check` and the server's scheduled check: every entry and every
  tile, against the checkpoint; and the copy of the checkpoint that readers outside the log
  trust (the object store's, on PostgreSQL + S3) against the checkpoints the log signed.

Each failure is a StorageError (DataLossError for damage) whose message names what broke. A
storage that cannot be reached (StorageUnavailableError) is never reported as damage: the
check stops with it, and may be run again once the storage is back.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.compact import CompactRange
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.tiles import WIDTH, Tile, TileHashReader, grow, tile_hashes
from affidavit.server.logstore import LogStore, StorageUnavailableError
from affidavit.server.storage import DataLossError, DiskFullError, StorageError

EDGE_ENTRIES = 1024
"""Entries at the right edge that startup reads back and hashes: more than one batch's worth
at the default --batch-size, so the last write is always among them."""

CHECK_CHUNK = 16 * WIDTH
"""Entries check_log reads at a time (whole level-0 tiles)."""


class KeptCheckpoint:
    """The latest checkpoint the log signed, in a small file outside the database, replaced
    atomically (a synced temporary file renamed over it, the directory synced) after each
    commit. It is never ahead of the database unless the database lost writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def replace(self, note_text: str) -> None:
        _replace_file(self.path, note_text)

    def keep(self, note_text: str) -> None:
        """replace, for a checkpoint just committed: a failure is a StorageError (DiskFullError
        when out of room). Its entries are durable in the database but not acknowledged (a
        retry finds them, as after a crash here); a later checkpoint, once kept, covers them."""
        try:
            self.replace(note_text)
        except OSError as e:
            message = f"cannot keep the new checkpoint in {self.path}: {e.strerror}"
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"{message}; free space there") from None
            raise StorageError(message) from None


class DamageNote:
    """What a whole-log check found, in a file outside the database. A server that finds it
    at startup checks the whole log before serving (the damage may lie below the entries
    startup reads back); it goes once a whole check finds the log sound."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def write(self, problems: list[str]) -> None:
        _replace_file(self.path, "".join(f"{p}\n" for p in problems))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _replace_file(path: Path, text: str) -> None:
    """Replace path's contents atomically and durably: a synced temporary file renamed over
    it, then the directory synced. The temporary file is this process's own: the frontends of
    a shared log may keep their checkpoints in one data directory, each replacing the file
    while another does."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_checkpoint(text: str, verifier_key: str, where: str) -> Checkpoint:
    """The checkpoint of a note that must carry the log's signature (StorageError if not)."""
    try:
        return checkpoints.parse(note.open(text, [verifier_key]))
    except MerkleError as e:
        raise StorageError(
            f"the checkpoint {where} does not verify with the log's key: {e}"
        ) from None


def recover(
    storage: LogStore, verifier_key: str, kept: KeptCheckpoint | None = None
) -> tuple[Checkpoint, str]:
    """The latest checkpoint and its note, once the stored log is shown to match it (see the
    module doc); brings the kept copy up to it. StorageError otherwise."""
    text = storage.checkpoint()
    if text is None:
        raise StorageError(
            f"{storage.location} holds no checkpoint; it was not made by `affidavit init`"
        )
    cp = open_checkpoint(text, verifier_key, f"stored in {storage.location}")
    last = storage.last_entry_index()
    stored = 0 if last is None else last + 1
    if stored != cp.size:
        raise StorageError(
            f"the signed checkpoint covers {cp.size} entries but {stored} are stored; "
            "the database was altered or damaged"
        )
    reader = TileHashReader(cp.size, storage.read_tiles)
    try:
        root = CompactRange.from_reader(cp.size, reader).root()
        if root != cp.root_hash:
            raise StorageError(
                f"the stored tiles give root {root.hex()} but the signed checkpoint of size "
                f"{cp.size} says {cp.root_hash.hex()}; the database was altered or damaged, "
                "refusing to serve"
            )
        check_entries(storage, max(0, cp.size - EDGE_ENTRIES), cp.size, reader)
    except DataLossError as e:
        raise DataLossError(
            f"{e}; refusing to serve a log it cannot vouch for: restore the data directory "
            "from a backup (`affidavit check` lists all the damage)"
        ) from None
    if kept is not None:
        _check_not_behind(kept, cp, reader, verifier_key)
        if kept.read() != text:
            kept.replace(text)
    return cp, text


def _check_not_behind(
    kept: KeptCheckpoint, cp: Checkpoint, reader: TileHashReader, verifier_key: str
) -> None:
    """The database's tree extends the kept checkpoint (equal to it, or grown from it)."""
    text = kept.read()
    if text is None:
        return  # a log from before the kept copy existed, or its first start
    last = open_checkpoint(text, verifier_key, f"kept in {kept.path}")
    advice = (
        "refusing to serve: restore the data directory from a backup taken after that "
        f"checkpoint. Do not delete {kept.path} to get past this: the log would sign other "
        "entries at indexes it has already signed, a fork its witnesses and clients detect"
    )
    if last.origin != cp.origin:
        raise StorageError(
            f"{kept.path} holds a checkpoint of log {last.origin!r}, the database one of "
            f"{cp.origin!r}: they are not the same log; {advice}"
        )
    if last.size > cp.size:
        raise DataLossError(
            f"the database is behind the log: it ends at size {cp.size}, but the log signed a "
            f"checkpoint of size {last.size} (kept in {kept.path}); entries {cp.size} to "
            f"{last.size - 1} were acknowledged and are lost (a damaged or truncated "
            f"write-ahead log, or an old copy of the database); {advice}"
        )
    if last.size == cp.size:
        root = cp.root_hash
    else:
        root = CompactRange.from_reader(last.size, reader).root() if last.size else last.root_hash
    if root != last.root_hash:
        raise DataLossError(
            f"the database's tree at size {last.size} is not the one the log signed (kept in "
            f"{kept.path}): the database was replaced or rewritten; {advice}"
        )


def check_entries(storage: LogStore, start: int, end: int, reader: TileHashReader) -> None:
    """Entries [start, end) are stored, readable, and hash to their leaves in the tiles
    (DataLossError naming the first that is not)."""
    for at in range(start, end, CHECK_CHUNK):
        stop = min(end, at + CHECK_CHUNK)
        leaves = reader.read_hashes([(0, i) for i in range(at, stop)])
        _compare(storage, at, stop, leaves)


def _compare(storage: LogStore, start: int, end: int, leaves: list[bytes]) -> None:
    try:
        stored = list(storage.entries(start, end))
    except DataLossError:
        for index in range(start, end):  # name the first unreadable one
            storage.entry(index)
        raise
    hashes = hashing.leaf_hashes([data for _, data in stored])
    for offset, index in enumerate(range(start, end)):
        if offset >= len(stored) or stored[offset][0] != index:
            raise DataLossError(f"entry {index} is missing from {storage.location}")
        if hashes[offset] != leaves[offset]:
            raise DataLossError(
                f"entry {index} in {storage.location} does not hash to its leaf in the log's tree; "
                "the database was altered or damaged"
            )


@dataclass
class CheckReport:
    """What check_log found: the size checked, and each problem (empty: the log is sound)."""

    size: int
    problems: list[str] = field(default_factory=list)

    MAX_PROBLEMS = 100

    def summary(self) -> str:
        """One line: the first problem and how many more."""
        more = len(self.problems) - 1
        return self.problems[0] + (f" (and {more} more problems)" if more else "")


def check_log(
    storage: LogStore,
    verifier_key: str,
    kept: KeptCheckpoint | None = None,
    progress: Callable[[int, int], None] | None = None,
    pause: float = 0.0,
) -> CheckReport:
    """Every entry and every tile of the stored log against its latest checkpoint (and that
    checkpoint against the kept one, if given).

    Rebuilds the tree from the level-0 tiles, comparing every entry with its leaf and every
    rebuilt tile with the stored one, then the root with the checkpoint's. A damaged entry is
    reported and the check goes on from its stored leaf; progress(done, total) after each
    chunk, then a sleep of pause seconds (a live server's check leaves room to serve). Safe
    while the log grows: it checks the tree of the checkpoint it started from. Stops after
    CheckReport.MAX_PROBLEMS problems.
    """
    text = storage.checkpoint()
    if text is None:
        raise StorageError(f"{storage.location} holds no checkpoint")
    cp = open_checkpoint(text, verifier_key, f"stored in {storage.location}")
    report = CheckReport(cp.size)
    problems = report.problems
    if kept is not None:
        try:
            _check_not_behind(kept, cp, TileHashReader(cp.size, storage.read_tiles), verifier_key)
        except StorageError as e:
            problems.append(str(e))
    latest: dict[int, bytes] = {}  # level -> the rebuilt tree's rightmost tile there

    def read_rebuilt(tiles: list[Tile]) -> list[bytes]:
        return [latest[t.level] for t in tiles]

    size, root = 0, hashing.EMPTY_ROOT
    while size < cp.size and len(problems) < CheckReport.MAX_PROBLEMS:
        end = min(cp.size, size + CHECK_CHUNK)
        leaves: list[bytes] = []
        for at in range(size, end, WIDTH):
            leaves += _check_level0(storage, at, min(end, at + WIDTH), problems)
        if len(leaves) != end - size:
            break  # a level-0 tile and its entries both unreadable: nothing to go on
        growth = grow(size, leaves, read_rebuilt)
        for tile, data in sorted(growth.tiles.items()):
            latest[tile.level] = data
            if tile.level == 0:
                continue  # compared entry by entry
            try:
                (stored,) = storage.read_tiles([tile])
            except StorageUnavailableError:
                raise
            except StorageError as e:
                problems.append(str(e))
                continue
            if stored[: len(data)] != data:
                problems.append(f"{tile.path()} in {storage.location} is not the log's tile")
        size, root = end, growth.root()
        if progress is not None:
            progress(size, cp.size)
        if pause:
            time.sleep(pause)
    if size == cp.size and root != cp.root_hash:
        problems.append(
            f"the tree rebuilt from {storage.location} has root {root.hex()}, not the root of the "
            f"signed checkpoint of size {cp.size}"
        )
    if len(problems) < CheckReport.MAX_PROBLEMS:
        problems += _check_public(storage, verifier_key, cp)
    return report


def _check_public(storage: LogStore, verifier_key: str, cp: Checkpoint) -> list[str]:
    """Problems with the public copy of the checkpoint (none where the storage keeps none).

    Readers of the bucket trust it without asking the log: it must be a checkpoint the log
    signed (the very note recorded for its size) and not be behind the tree just checked. A
    newer one is a publication under way (its checkpoint is recorded before it is copied)."""
    text = storage.public_checkpoint()
    if text is None:
        if storage.shared:
            return [f"the public checkpoint is missing from {storage.location}"]
        return []
    where = f"published in {storage.location}"
    try:
        public = open_checkpoint(text, verifier_key, where)
    except StorageError as e:
        return [str(e)]
    if public.size < cp.size:
        return [
            f"the checkpoint {where} is of size {public.size}, behind the log's published tree "
            f"of size {cp.size}: it went back (an older copy was restored over it)"
        ]
    if storage.checkpoint_at(public.size) != text:
        return [
            f"the checkpoint {where} (size {public.size}) is not the checkpoint the log signed "
            "at that size: the log's key signed two trees of one size, a fork"
        ]
    return []


def _check_level0(storage: LogStore, start: int, end: int, problems: list[str]) -> list[bytes]:
    """The leaf hashes of [start, end) from the stored level-0 tile (or, if it is unreadable,
    from the entries), recording every entry that does not match its leaf."""
    tile = Tile(0, start // WIDTH, end - start if end - start < WIDTH else WIDTH)
    try:
        (data,) = storage.read_tiles([tile])
        leaves: list[bytes] | None = tile_hashes(data[: tile.width * hashing.HASH_SIZE])
    except StorageUnavailableError:
        raise
    except StorageError as e:
        problems.append(str(e))
        leaves = None
    unreadable: set[int] = set()
    try:
        stored = dict(storage.entries(start, end))
    except DataLossError:
        stored = {}
        for index in range(start, end):  # one by one, to name every unreadable entry
            try:
                if (entry := storage.entry(index)) is not None:
                    stored[index] = entry
            except DataLossError as damaged:
                problems.append(str(damaged))
                unreadable.add(index)
    indexes = [i for i in range(start, end) if i in stored]
    hashes = dict(zip(indexes, hashing.leaf_hashes([stored[i] for i in indexes]), strict=True))
    for offset, index in enumerate(range(start, end)):
        if index not in stored:
            if index not in unreadable:
                problems.append(f"entry {index} is missing from {storage.location}")
        elif leaves is not None and hashes[index] != leaves[offset]:
            problems.append(
                f"entry {index} in {storage.location} does not hash to its leaf in the log's tree"
            )
    if leaves is not None:
        return leaves
    return [hashes[i] for i in indexes]
