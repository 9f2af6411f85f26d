"""Compact ranges: a tree's right edge, enough to extend it and compute its root in O(log n).

A range [begin, end) of leaves decomposes into maximal perfect subtrees, each a Node
(level, n) covering leaves [n·2^level, (n+1)·2^level). For the range [0, size) the
decomposition has one node per set bit of size, largest first; their hashes are all the state
an append-only tree needs to grow and to produce its root without holding the leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from affidavit.merkle import hashing

Node = tuple[int, int]
"""(level, n): the perfect subtree at height level whose leaves are [n·2^level, (n+1)·2^level);
n is its position in its level, from 0 at the left (Go tlog's n). A plain tuple: proofs make,
compare and hash nodes in bulk, and a tuple does all three at C speed."""


class HashReader(Protocol):
    """Something that has the hashes of a tree's perfect subtrees (storage, tiles, a list)."""

    def read_hashes(self, nodes: Sequence[Node], /) -> list[bytes]:
        """The hash of each node, in the order asked."""
        ...


def decompose(begin: int, end: int) -> list[Node]:
    """The maximal perfect subtrees covering leaves [begin, end), left to right."""
    if not 0 <= begin <= end:
        raise ValueError(f"invalid range [{begin}, {end})")
    nodes = []
    while begin < end:
        # The largest subtree that starts at begin (alignment) and ends by end (length).
        level = (begin & -begin).bit_length() - 1 if begin else (end - begin).bit_length() - 1
        while begin + (1 << level) > end:
            level -= 1
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root over subtree hashes of strictly decreasing size, left to right.

    Only such runs — the decomposition of a range that starts at a multiple of a power of two
    at least its length, as [0, n) and every range of a proof does — are folded this way.
    """
    if not hashes:
        return hashing.EMPTY_ROOT
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = hashing.node_hash(h, root)
    return root


class CompactRange:
    """The compact range of leaves [0, size): the hashes of decompose(0, size)."""

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} edge hashes, got {len(hashes)}"
            )
        if any(len(h) != hashing.HASH_SIZE for h in hashes):
            raise ValueError("edge hashes must be 32 bytes")
        self._size = size
        self._hashes = list(hashes)

    @classmethod
    def from_reader(cls, size: int, reader: HashReader) -> CompactRange:
        """Resume the tree of the given size from stored subtree hashes."""
        return cls(size, reader.read_hashes(decompose(0, size)))

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The edge hashes, largest subtree first: all that is needed to resume."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf to the right edge."""
        if len(leaf_hash) != hashing.HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        h = leaf_hash
        # Each trailing one bit of the old size is a subtree of the new leaf's size: merge.
        size = self._size
        while size & 1:
            h = hashing.node_hash(self._hashes.pop(), h)
            size >>= 1
        self._hashes.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """MTH of the leaves [0, size)."""
        return fold(self._hashes)
