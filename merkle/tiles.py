"""C2SP tlog-tiles with height 8: where a tree's hashes are stored and how they are named.

Tile (level L, index N) holds the hashes of tree level 8·L for nodes [256·N, 256·N + W): level-0
tiles hold leaf hashes, level-1 tiles the roots of each 256 leaves, and so on. A tile is full at
W = 256 and then never changes; the rightmost tile of a level is partial, 1 ≤ W < 256, and only
grows. Any subtree hash of a tree is computable from one tile: levels between 8L and 8L+8 are
recomputed from the tile's row. A tile's bytes are its W hashes, concatenated.

Entry bundles, the raw entries of 256 leaves, live at tile/entries/N[.p/W]; here they are the
Tile with level ENTRIES.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from merkle import hashing
from merkle.compact import Node
from merkle.errors import TileError

HEIGHT = 8
WIDTH = 1 << HEIGHT
MAX_LEVEL = 63
ENTRIES = -1
"""The level of entry bundles (path element "entries"), as Go's tlog uses -1 for data tiles."""


@dataclass(frozen=True, order=True)
class Tile:
    """Tile index at level, holding width hashes (or entries, at level ENTRIES)."""

    level: int
    index: int
    width: int = WIDTH

    def __post_init__(self) -> None:
        if not ENTRIES <= self.level <= MAX_LEVEL:
            raise TileError(f"tile level {self.level} is outside {ENTRIES}..{MAX_LEVEL}")
        if self.index < 0:
            raise TileError(f"tile index {self.index} is negative")
        if not 1 <= self.width <= WIDTH:
            raise TileError(f"tile width {self.width} is outside 1..{WIDTH}")

    def path(self) -> str:
        """tile/<L>/<N>[.p/<W>], N in zero-padded groups of three, all but the last x-prefixed."""
        level = "entries" if self.level == ENTRIES else str(self.level)
        digits = f"{self.index:03d}"
        digits = "0" * (-len(digits) % 3) + digits
        groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
        n = "/".join([f"x{g}" for g in groups[:-1]] + groups[-1:])
        partial = f".p/{self.width}" if self.width < WIDTH else ""
        return f"tile/{level}/{n}{partial}"


_PATH = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?"
)


def parse_path(path: str) -> Tile:
    """The tile a C2SP tile path names; TileError for anything not in canonical form."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise TileError(f"{path!r} is not a tile path (tile/<L>/<N>[.p/<W>])")
    level_text, n_text, w_text = m.groups()
    level = ENTRIES if level_text == "entries" else int(level_text)
    index = int(n_text.replace("x", "").replace("/", ""))
    width = int(w_text) if w_text else WIDTH
    tile = Tile(level, index, width)
    if tile.path() != path:
        raise TileError(f"{path!r} is not the canonical path of {tile}")
    return tile


def row_size(tree_size: int, level: int) -> int:
    """How many hashes tree level 8·level has in a tree of tree_size leaves (entries: leaves)."""
    return tree_size >> (HEIGHT * max(level, 0))


def tile_at(level: int, index: int, tree_size: int) -> Tile:
    """Tile index at level as it stands in a tree of tree_size (its width there)."""
    width = min(row_size(tree_size, level) - index * WIDTH, WIDTH)
    if width < 1:
        raise TileError(f"tile {level}/{index} does not exist in a tree of size {tree_size}")
    return Tile(level, index, width)


def tiles_for_size(tree_size: int, level: int) -> list[Tile]:
    """Every tile of one level in a tree of tree_size, the last one partial if need be."""
    row = row_size(tree_size, level)
    return [tile_at(level, n, tree_size) for n in range((row + WIDTH - 1) // WIDTH)]


def new_tiles(old_size: int, new_size: int) -> list[Tile]:
    """The tiles that appear or grow as the tree goes from old_size to new_size (Go's NewTiles)."""
    out = []
    level = 0
    while row_size(new_size, level) > 0:
        old_row, new_row = row_size(old_size, level), row_size(new_size, level)
        for n in range(old_row // WIDTH, (new_row + WIDTH - 1) // WIDTH):
            tile = tile_at(level, n, new_size)
            if n * WIDTH + tile.width > old_row:
                out.append(tile)
        level += 1
    return out


def node_tile(node: Node, tree_size: int) -> tuple[Tile, int, int]:
    """The tile that holds node's subtree in a tree of tree_size, and the row span [start, end) in
    it whose hashes make the node: level 8·L ≤ node.level < 8·L + 8."""
    level = node.level // HEIGHT
    shift = node.level - level * HEIGHT
    first = node.index << shift
    tile = tile_at(level, first // WIDTH, tree_size)
    start = first % WIDTH
    end = start + (1 << shift)
    if end > tile.width:
        raise TileError(
            f"node {node.level}/{node.index} is not complete in a tree of size {tree_size}"
        )
    return tile, start, end


def tile_hashes(data: bytes) -> list[bytes]:
    """The hashes a tile's bytes hold."""
    if len(data) % hashing.HASH_SIZE:
        raise TileError(f"tile data of {len(data)} bytes is not a run of 32-byte hashes")
    return [data[i : i + hashing.HASH_SIZE] for i in range(0, len(data), hashing.HASH_SIZE)]


TileReader = Callable[[list[Tile]], Sequence[bytes]]
"""Reads tiles: returns, for each tile asked, at least its first width hashes' bytes."""


class TileHashReader:
    """A HashReader over the tiles of a tree of a fixed size.

    It trusts its tiles (the log's own storage); whoever reads tiles from elsewhere checks the
    proofs they make against a signed checkpoint, which catches any altered tile.
    """

    def __init__(self, tree_size: int, read_tiles: TileReader) -> None:
        self._size = tree_size
        self._read_tiles = read_tiles

    def read_hashes(self, nodes: Sequence[Node], /) -> list[bytes]:
        spans = [node_tile(node, self._size) for node in nodes]
        wanted = sorted({tile for tile, _, _ in spans})
        data = dict(zip(wanted, self._read_tiles(wanted), strict=True))
        out = []
        for (tile, start, end), node in zip(spans, nodes, strict=True):
            row = data[tile]
            if len(row) < tile.width * hashing.HASH_SIZE:
                raise TileError(
                    f"tile {tile.path()} holds {len(row) // 32} hashes, not {tile.width}"
                )
            run = row[start * hashing.HASH_SIZE : end * hashing.HASH_SIZE]
            if end - start == 1:
                out.append(run)
            else:
                out.append(hashing.subtree_roots(tile_hashes(run), node.level % HEIGHT)[0])
        return out


def grow_tiles(
    old_size: int, leaf_hashes: Sequence[bytes], read_tiles: TileReader
) -> dict[Tile, bytes]:
    """The new contents of every tile that changes when leaf_hashes are appended to a tree of
    old_size: level by level, each completed run of 256 hashes adds its root to the level above.

    read_tiles is asked only for the partial tiles of the old tree that grow.
    """
    new_size = old_size + len(leaf_hashes)
    grown = []
    level = 0
    while row_size(new_size, level) > row_size(old_size, level):
        if row_size(old_size, level) % WIDTH:
            grown.append(tile_at(level, row_size(old_size, level) // WIDTH, old_size))
        level += 1
    existing = {t.level: data for t, data in zip(grown, read_tiles(grown), strict=True)}
    out: dict[Tile, bytes] = {}
    added = list(leaf_hashes)
    level = 0
    while added:
        old_row = row_size(old_size, level)
        first = old_row // WIDTH
        head = existing.get(level, b"")[: (old_row % WIDTH) * hashing.HASH_SIZE]
        row = head + b"".join(added)
        for n in range(0, len(row), WIDTH * hashing.HASH_SIZE):
            chunk = row[n : n + WIDTH * hashing.HASH_SIZE]
            out[
                Tile(
                    level, first + n // (WIDTH * hashing.HASH_SIZE), len(chunk) // hashing.HASH_SIZE
                )
            ] = chunk
        # Roots of the tiles this growth completed: the new hashes of the row above.
        full = len(row) // (WIDTH * hashing.HASH_SIZE) * WIDTH
        added = hashing.subtree_roots(tile_hashes(row[: full * hashing.HASH_SIZE]), HEIGHT)
        level += 1
    return out
