"""Copy a log's tlog-tiles tree into a directory, checked, for any static host or object store.

The directory gets exactly the paths of the HTTP API (checkpoint, tile/<L>/<N>[.p/<W>],
optionally tile/entries/<N>[.p/<W>]) for the log's published checkpoint. Everything is checked
before it is written: the checkpoint against the trust policy; every tile of level k+1 against
the roots of the full tiles below it, and the level-0 row (so every tile) against the
checkpoint's root; every entry bundle against its level-0 tile. Files are replaced atomically,
tiles first and the checkpoint last, so a host serving the directory never publishes a
checkpoint whose tiles are not there yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from affidavit.client.errors import VerificationError
from affidavit.client.tiles import TileLog
from affidavit.client.trust import write_atomic
from affidavit.client.verify import TrustPolicy, Verified, open_checkpoint
from affidavit.merkle import hashing, tiles
from affidavit.merkle.compact import CompactRange
from affidavit.merkle.tiles import Tile, TileHashReader


@dataclass(frozen=True)
class Exported:
    checkpoint: Verified
    tiles: int
    bundles: int


def export(
    log: TileLog,
    policy: TrustPolicy,
    directory: Path,
    *,
    entries: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> Exported:
    """Export the published checkpoint's tree of log into directory (see module doc)."""
    note_text = log.checkpoint()
    cp = open_checkpoint(note_text, policy)
    size = cp.checkpoint.size
    fetched: dict[Tile, bytes] = {}
    level = 0
    while tiles.row_size(size, level) > 0:
        wanted = tiles.tiles_for_size(size, level)
        for at in range(0, len(wanted), 256):
            batch = wanted[at : at + 256]
            fetched.update(zip(batch, log.read_tiles(batch), strict=True))
        progress(f"level {level}: {len(wanted)} tiles")
        level += 1
    _check(fetched, size, cp)
    written = 0
    for tile, data in sorted(fetched.items()):
        write_atomic(directory / tile.path(), data)
        written += 1
    bundles = 0
    if entries:
        for tile in tiles.tiles_for_size(size, tiles.ENTRIES):
            start = tile.index * tiles.WIDTH
            bundle = log.entries(start, start + tile.width)
            level0 = fetched[Tile(0, tile.index, tile.width)]
            if b"".join(hashing.leaf_hashes(bundle)) != level0:
                raise VerificationError(
                    f"entry bundle {tile.path()} does not hash to its level-0 tile"
                )
            body = b"".join(len(e).to_bytes(2, "big") + e for e in bundle)
            write_atomic(directory / tile.path(), body)
            bundles += 1
        progress(f"entries: {bundles} bundles")
    write_atomic(directory / "checkpoint", note_text.encode())
    return Exported(cp, written, bundles)


def _check(fetched: dict[Tile, bytes], size: int, cp: Verified) -> None:
    """Each tile above level 0 holds the roots of the full tiles below; level 0 (and so the
    whole tree) gives the checkpoint's root."""
    for tile, data in fetched.items():
        if tile.level == 0:
            continue
        below = [
            fetched[Tile(tile.level - 1, tile.index * tiles.WIDTH + i)] for i in range(tile.width)
        ]
        roots = [hashing.subtree_roots(tiles.tile_hashes(b), tiles.HEIGHT)[0] for b in below]
        if b"".join(roots) != data:
            raise VerificationError(
                f"tile {tile.path()} does not hold the roots of the tiles below"
            )
    reader = TileHashReader(size, lambda want: [fetched[t] for t in want])
    if CompactRange.from_reader(size, reader).root() != cp.checkpoint.root_hash:
        raise VerificationError("the tiles do not give the checkpoint's root")
