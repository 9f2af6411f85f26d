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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from affidavit.merkle import hashing, proofs
from affidavit.merkle.compact import Node
from affidavit.merkle.errors import TileError

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
    level, index, width, inner, offset = _node_place(*node, tree_size)
    return Tile(level, index, width), offset << inner, (offset + 1) << inner


def _node_place(level: int, n: int, tree_size: int) -> tuple[int, int, int, int, int]:
    """Where node (level, n) of a tree of tree_size is: (tile level, tile index, tile width,
    inner level j, offset) — the node is hash number offset of level j above the tile's row.
    TileError if the tree does not have the node complete."""
    tile_level, inner = divmod(level, HEIGHT)
    index = (n << inner) >> HEIGHT
    width = min(row_size(tree_size, tile_level) - index * WIDTH, WIDTH)
    offset = n - (index << (HEIGHT - inner))
    if n < 0 or level < 0 or offset >= width >> inner:
        raise TileError(f"node {level}/{n} is not complete in a tree of size {tree_size}")
    return tile_level, index, width, inner, offset


def tile_hashes(data: bytes) -> list[bytes]:
    """The hashes a tile's bytes hold."""
    if len(data) % hashing.HASH_SIZE:
        raise TileError(f"tile data of {len(data)} bytes is not a run of 32-byte hashes")
    return [data[i : i + hashing.HASH_SIZE] for i in range(0, len(data), hashing.HASH_SIZE)]


TileReader = Callable[[list[Tile]], Sequence[bytes]]
"""Reads tiles: returns, for each tile asked, at least its first width hashes' bytes."""

DEFAULT_CACHE_BYTES = 64 << 20
"""TileCache's default bound: 4,112 full tiles with all their levels, which for a log of
1,000,000 entries (3,924 tiles) is every tile it has."""


class TileCache:
    """Tiles as node hashes: each tile's row and the levels above it, recently used ones kept.

    The entry of a tile of width W at tile level k holds, for j = 0, 1, ..., the W >> j hashes
    of tree level 8k + j over the tile's span, concatenated (j = 0 is the row; each next level
    is the parents of the one below, one core call, made when first asked for). Any node of
    tree level 8k + j is then one slice of its tile's level j: no hashing on a hit.

    Entries are keyed by (level, index, width). A tile's first width hashes never change (full
    tiles never change, partial ones only grow), so an entry is never stale and is never
    invalidated; a growing partial tile gets one entry per width asked for, and old widths age
    out. Memory is bounded: the entries' hash bytes stay within max_bytes, least recently used
    evicted first, once each call is served (during a call, the tiles that call reads may
    exceed it transiently). A full tile with all eight levels is 510 hashes, 16,320 bytes, plus
    about 0.5 KB of Python objects (at the default bound: 64 MiB of hashes, about 66 MiB in
    all). Not thread-safe: one cache per thread.
    """

    def __init__(self, read_tiles: TileReader, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._read_tiles = read_tiles
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[int, int, int], list[bytes]] = OrderedDict()

    @property
    def held_bytes(self) -> int:
        """Hash bytes the cache holds now (at most max_bytes between calls)."""
        return self._bytes

    def read_hashes(self, tree_size: int, nodes: Sequence[Node]) -> list[bytes]:
        """The hash of each node of the tree of tree_size, reading the tiles not held in one
        call to read_tiles; TileError for a node the tree does not have complete."""
        entries = self._entries
        spans = []
        keys: dict[tuple[int, int, int], None] = {}
        height, width_full, hash_size = HEIGHT, WIDTH, hashing.HASH_SIZE
        for level, n in nodes:
            # _node_place, inlined: this loop is the proof read path.
            tile_level, inner = level // height, level % height
            index = (n << inner) >> height
            width = (tree_size >> height * tile_level) - index * width_full
            if width > width_full:
                width = width_full
            offset = n - (index << (height - inner))
            if n < 0 or level < 0 or offset >= width >> inner:
                raise TileError(f"node {level}/{n} is not complete in a tree of size {tree_size}")
            key = (tile_level, index, width)
            spans.append((key, inner, offset * hash_size))
            keys[key] = None
        missing = [key for key in keys if key not in entries]
        if missing:
            self._load(missing)
        for key in keys:
            entries.move_to_end(key)
        out = []
        for key, inner, at in spans:
            levels = entries[key]
            while len(levels) <= inner:
                up = _parents(levels[-1])
                levels.append(up)
                self._bytes += len(up)
            out.append(levels[inner][at : at + hashing.HASH_SIZE])
        while self._bytes > self._max_bytes and entries:
            _, evicted = entries.popitem(last=False)
            self._bytes -= sum(len(level) for level in evicted)
        return out

    def _load(self, keys: list[tuple[int, int, int]]) -> None:
        wanted = [Tile(*key) for key in keys]
        for tile, key, data in zip(wanted, keys, self._read_tiles(wanted), strict=True):
            row = _row(tile, data)
            self._entries[key] = [row]
            self._bytes += len(row)


def _row(tile: Tile, data: bytes) -> bytes:
    """The tile's width hashes from what a TileReader gave for it (which may be wider)."""
    size = tile.width * hashing.HASH_SIZE
    if len(data) < size:
        raise TileError(
            f"tile {tile.path()} holds {len(data) // hashing.HASH_SIZE} hashes, not {tile.width}"
        )
    return bytes(data[:size])


def _parents(run: bytes) -> bytes:
    """The parents of a run of hashes starting at an even node (a last odd one has none).

    One call into the active hashing core, byte run in and byte run out: merkle.hashing's
    list API would split the result into 32-byte objects only for this to join them again,
    which costs as much as the hashing (measured: +30-40% cached proofs/s when tiles miss).
    """
    pairs = len(run) // (2 * hashing.HASH_SIZE)
    return hashing._core.subtree_roots(run[: pairs * 2 * hashing.HASH_SIZE], 1)


class TileHashReader:
    """A HashReader over the tiles of a tree of a fixed size, through a TileCache.

    Given a TileCache (as the server holds one per log), it shares it; given a bare
    TileReader, it makes a cache of its own that lives as long as the reader. It trusts its
    tiles (the log's own storage); whoever reads tiles from elsewhere checks the proofs they
    make against a signed checkpoint, which catches any altered tile.
    """

    def __init__(self, tree_size: int, tiles: TileCache | TileReader) -> None:
        self._size = tree_size
        self._cache = tiles if isinstance(tiles, TileCache) else TileCache(tiles)

    def read_hashes(self, nodes: Sequence[Node], /) -> list[bytes]:
        return self._cache.read_hashes(self._size, nodes)


@dataclass(frozen=True)
class Growth:
    """What appending leaf hashes to a tree changes: the tiles to write, and the grown tree's
    levels (its root, and the inclusion proofs of the new leaves) from the same hashes."""

    tiles: dict[Tile, bytes]
    levels: proofs.Levels

    @property
    def size(self) -> int:
        return self.levels.size

    def root(self) -> bytes:
        """The grown tree's root: that of the tiles, since both come from the same rows."""
        return self.levels.root()


def grow(old_size: int, leaf_hashes: Sequence[bytes], read_tiles: TileReader) -> Growth:
    """The tiles that change, and the grown tree's levels, when leaf_hashes are appended to a
    tree of old_size whose tiles read_tiles reads.

    The stored hashes of the old tree's partial tiles (one per tile level at most, all that is
    read) are the heads of proofs.Levels.grow at levels 8k, so the row of each level 8k starts
    at its partial tile's first hash and every row starts at an even node. The changed tiles
    are cut from the rows of levels 8k; the root and the new leaves' proofs are read from the
    same rows, so a checkpoint's root can only be the root of the tiles written with it.
    """
    new_size = old_size + len(leaf_hashes)
    partial = [
        tile_at(level, row_size(old_size, level) // WIDTH, old_size)
        for level in range(_tile_levels(old_size))
        if row_size(old_size, level) % WIDTH
    ]
    heads = {
        HEIGHT * tile.level: tile_hashes(_row(tile, data))
        for tile, data in zip(partial, read_tiles(partial), strict=True)
    }
    levels = proofs.Levels.grow(old_size, leaf_hashes, heads)
    changed = {}
    for level in range(_tile_levels(new_size)):
        if row_size(new_size, level) == row_size(old_size, level):
            continue
        row, start = levels.rows[HEIGHT * level], levels.starts[HEIGHT * level]
        assert start % WIDTH == 0, "rows of levels 8k start at a tile's first hash"
        for at in range(0, len(row), WIDTH):
            chunk = row[at : at + WIDTH]
            changed[Tile(level, (start + at) // WIDTH, len(chunk))] = b"".join(chunk)
    return Growth(changed, levels)


def _tile_levels(tree_size: int) -> int:
    """How many tile levels a tree of tree_size has (levels with at least one hash)."""
    return (tree_size.bit_length() + HEIGHT - 1) // HEIGHT
