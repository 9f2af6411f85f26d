"""C2SP tlog-tiles: paths, coordinates, growth, and proofs served from tiles."""

from __future__ import annotations

import random

import pytest
from affidavit.merkle import hashing, proofs, tiles
from affidavit.merkle.compact import CompactRange
from affidavit.merkle.errors import TileError
from affidavit.merkle.tiles import ENTRIES, Tile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit import merkle


def leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return hashing.leaf_hashes([salt + i.to_bytes(4, "big") for i in range(n)])


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 1234067), "tile/0/x001/x234/067"),  # the example in C2SP tlog-tiles
        (Tile(0, 0), "tile/0/000"),
        (Tile(1, 5, 3), "tile/1/005.p/3"),
        (Tile(3, 1000, 255), "tile/3/x001/000.p/255"),
        (Tile(ENTRIES, 42), "tile/entries/042"),
        (Tile(ENTRIES, 1000000, 7), "tile/entries/x001/x000/000.p/7"),
    ],
)
def test_paths(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert tiles.parse_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1234",
        "tile/00/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/007",
        "tile/0/x000/001",
        "tile/64/000",
        "tile/-1/000",
        "tile/data/000",
        "/tile/0/000",
        "tile/0/000/",
    ],
)
def test_non_canonical_paths_rejected(path: str) -> None:
    with pytest.raises(TileError):
        tiles.parse_path(path)


@given(st.integers(ENTRIES, 63), st.integers(0, 10**15), st.integers(1, 256))
def test_path_round_trip(level: int, index: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert tiles.parse_path(tile.path()) == tile


def test_tile_bounds() -> None:
    for bad in [(64, 0, 1), (-2, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257)]:
        with pytest.raises(TileError):
            Tile(*bad)


def test_coordinates() -> None:
    size = 256 * 256 * 2 + 256 * 3 + 17
    assert tiles.tiles_for_size(size, 0)[-1] == Tile(0, 2 * 256 + 3, 17)
    assert tiles.tiles_for_size(size, 1)[-1] == Tile(1, 2, 3)
    assert tiles.tiles_for_size(size, 2) == [Tile(2, 0, 2)]
    assert tiles.tiles_for_size(size, 3) == []
    # Node at level 9 index 1 = two level-8 hashes 2..3 of level-1 tile 0.
    assert tiles.node_tile((9, 1), size) == (Tile(1, 0, 256), 2, 4)
    assert tiles.node_tile((0, size - 1), size) == (Tile(0, 515, 17), 16, 17)
    with pytest.raises(TileError):
        tiles.node_tile((0, size), size)
    with pytest.raises(TileError):
        tiles.node_tile((3, (size >> 3)), size)  # a subtree not yet complete


def test_new_tiles() -> None:
    assert tiles.new_tiles(0, 1) == [Tile(0, 0, 1)]
    assert tiles.new_tiles(255, 257) == [Tile(0, 0), Tile(0, 1, 1), Tile(1, 0, 1)]
    assert tiles.new_tiles(256, 256) == []
    assert tiles.new_tiles(256, 257) == [Tile(0, 1, 1)]


class Store:
    """Tiles in a dict, as storage would keep them: the latest (widest) contents per tile."""

    def __init__(self) -> None:
        self.data: dict[tuple[int, int], bytes] = {}
        self.reads: list[Tile] = []

    def read(self, wanted: list[Tile]) -> list[bytes]:
        self.reads.extend(wanted)
        return [self.data[(t.level, t.index)][: t.width * 32] for t in wanted]

    def grow(self, size: int, new: list[bytes]) -> tiles.Growth:
        growth = tiles.grow(size, new, self.read)
        for tile, data in growth.tiles.items():
            assert len(data) == tile.width * 32
            self.data[(tile.level, tile.index)] = data
        return growth


@pytest.mark.usefixtures("backend")
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_grown_tiles_serve_the_same_proofs(batches: list[int], rnd: random.Random) -> None:
    store, all_leaves, size = Store(), [], 0
    for n in batches:
        new = leaves(n, salt=size.to_bytes(4, "big"))
        store.reads.clear()
        growth = store.grow(size, new)
        # Only the old tree's partial tiles are read, at most one per tile level.
        assert store.reads == [t for t in tiles.new_tiles(0, size) if t.width < 256]
        assert sorted(growth.tiles) == sorted(tiles.new_tiles(size, size + n))
        all_leaves += new
        # The root and the new leaves' proofs come with the growth, equal to the reference.
        assert growth.size == size + n
        assert growth.root() == merkle.root_hash(all_leaves)
        new_proofs = growth.levels.inclusion_proofs(range(size, size + n))
        for index in rnd.sample(range(size, size + n), min(n, 5)):
            assert new_proofs[index - size] == merkle.inclusion_proof(all_leaves, index, size + n)
        size += n
        reader = tiles.TileHashReader(size, store.read)
        assert CompactRange.from_reader(size, reader).root() == merkle.root_hash(all_leaves)
        index = rnd.randrange(size)
        assert proofs.prove_inclusion(index, size, reader) == merkle.inclusion_proof(
            all_leaves, index, size
        )
        old = rnd.randrange(1, size + 1)
        assert proofs.prove_consistency(old, size, reader) == merkle.consistency_proof(
            all_leaves, old, size
        )
    # Every stored tile equals the row computed from scratch.
    for level in range(3):
        row = all_leaves
        for _ in range(level):
            row = hashing.subtree_roots(row[: len(row) // 256 * 256], 8)
        for tile in tiles.tiles_for_size(size, level):
            assert store.data[(level, tile.index)] == b"".join(
                row[tile.index * 256 : tile.index * 256 + tile.width]
            )


def test_proof_reads_are_logarithmic() -> None:
    store, size = Store(), 0
    for _ in range(4):
        store.grow(size, leaves(70000, salt=size.to_bytes(4, "big")))
        size += 70000
    reader = tiles.TileHashReader(size, store.read)
    store.reads.clear()
    proofs.prove_inclusion(123456, size, reader)
    assert len(store.reads) <= 2 * 3  # at most a few tiles per tile level
    store.reads.clear()
    proofs.prove_consistency(100001, size, reader)
    assert len(store.reads) <= 2 * 3 + 2


def test_short_tile_data_is_an_error() -> None:
    reader = tiles.TileHashReader(10, lambda ts: [b"\x00" * 32 * 3 for _ in ts])
    with pytest.raises(TileError, match="holds 3 hashes"):
        reader.read_hashes([(0, 5)])
    with pytest.raises(TileError, match="not a run"):
        tiles.tile_hashes(b"\x00" * 33)


def _grown_store(*batches: int) -> tuple[Store, list[bytes]]:
    store, all_leaves = Store(), list[bytes]()
    for n in batches:
        new = leaves(n, salt=len(all_leaves).to_bytes(4, "big"))
        store.grow(len(all_leaves), new)
        all_leaves += new
    return store, all_leaves


@pytest.mark.usefixtures("backend")
def test_cached_tiles_serve_proofs_without_reading_again() -> None:
    store, ls = _grown_store(70000, 3, 1000)
    size = len(ls)
    cache = tiles.TileCache(store.read)
    for index in (0, 255, 256, 65535, 65536, size - 1):
        assert proofs.prove_inclusion(
            index, size, tiles.TileHashReader(size, cache)
        ) == merkle.inclusion_proof(ls, index, size)
    store.reads.clear()
    # Every hash of these proofs is now a slice of a cached tile level: no reads, same bytes.
    for index in (0, 255, 256, 65535, 65536, size - 1):
        assert proofs.prove_inclusion(
            index, size, tiles.TileHashReader(size, cache)
        ) == merkle.inclusion_proof(ls, index, size)
    assert store.reads == []
    # An older tree size reads its own (narrower) partial tiles; its proofs are its own.
    old = size - 500
    assert proofs.prove_consistency(
        old, size, tiles.TileHashReader(size, cache)
    ) == merkle.consistency_proof(ls, old, size)
    assert proofs.prove_inclusion(
        old - 1, old, tiles.TileHashReader(old, cache)
    ) == merkle.inclusion_proof(ls, old - 1, old)


@pytest.mark.usefixtures("backend")
def test_tile_cache_is_bounded() -> None:
    store, ls = _grown_store(256 * 40)
    full = 510 * 32  # a full tile with all eight levels
    cache = tiles.TileCache(store.read, max_bytes=10 * full)
    reader = tiles.TileHashReader(len(ls), cache)
    for index in range(0, len(ls), 256):  # every level-0 tile, each to its top level
        proofs.prove_inclusion(index, len(ls), reader)
        assert cache.held_bytes <= 10 * full
    assert cache.held_bytes > 8 * full
    # The least recently used went first: the last tiles are still there.
    store.reads.clear()
    proofs.prove_inclusion(len(ls) - 1, len(ls), reader)
    assert store.reads == []
    proofs.prove_inclusion(0, len(ls), reader)
    assert store.reads == [Tile(0, 0)]


@pytest.mark.usefixtures("backend")
def test_tile_cache_refuses_nodes_the_tree_lacks() -> None:
    store, ls = _grown_store(300)
    cache = tiles.TileCache(store.read)
    with pytest.raises(TileError, match="not complete"):
        cache.read_hashes(300, [(0, 300)])
    with pytest.raises(TileError, match="not complete"):
        cache.read_hashes(300, [(3, 37)])  # leaves 296..303
    with pytest.raises(TileError, match="not complete"):
        cache.read_hashes(300, [(0, -1)])
    assert cache.read_hashes(300, [(2, 73), (8, 0)]) == [
        merkle.root_hash(ls[292:296]),
        merkle.root_hash(ls[:256]),
    ]
