"""The inclusion proofs an integration gives with its receipts, in the tree it just grew.

Entries the batch appended are proven from the grown levels it computed (no reads); older
entries (duplicates of earlier ones) from the tiles, the batch's own in front of the stored
ones (which may not hold them yet).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from affidavit.merkle import proofs
from affidavit.merkle.tiles import Growth, Tile, TileHashReader

TileRead = Callable[[Sequence[Tile]], list[bytes]]


def prover(
    indexes: Sequence[int], old_size: int, size: int, growth: Growth | None, read_stored: TileRead
) -> Callable[[int], list[bytes]]:
    """The inclusion proof, in the tree of size, of each of the accepted entries' indexes:
    those appended at old_size from growth (None: nothing appended), older ones from tiles."""
    fresh = growth.levels.inclusion_proofs(range(old_size, size)) if growth else []
    older = sorted({i for i in indexes if i < old_size})
    if older:
        read = read_stored if growth is None else _Overlay(growth.tiles, read_stored)
        proven = proofs.prove_inclusions(older, size, TileHashReader(size, read))
        by_index = dict(zip(older, proven, strict=True))
    else:
        by_index = {}

    def proof_of(index: int) -> list[bytes]:
        return fresh[index - old_size] if index >= old_size else by_index[index]

    return proof_of


class _Overlay:
    """Tiles being written this batch, in front of the stored ones."""

    def __init__(self, fresh: Mapping[Tile, bytes], read_stored: TileRead):
        self._fresh = {(t.level, t.index): data for t, data in fresh.items()}
        self._read_stored = read_stored

    def __call__(self, tiles: Sequence[Tile]) -> list[bytes]:
        missing = [t for t in tiles if (t.level, t.index) not in self._fresh]
        stored = dict(zip(missing, self._read_stored(missing), strict=True))
        return [self._fresh.get((t.level, t.index)) or stored[t] for t in tiles]
