"""Inclusion and consistency proofs, exactly as RFC 9162 §2.1.3 and §2.1.4.

A proof is a list of 32-byte hashes ordered from the leaf up (the order Go's tlog and
transparency-dev/merkle use). Each proof hash is the Merkle tree hash of one range of leaves;
making a proof first works out those ranges (arithmetic only), then asks a HashReader for the
perfect subtrees that cover them, in one call, and folds each range's subtrees into its hash.

Every proof range [lo, hi) starts at a multiple of a power of two at least hi - lo, so its
decomposition has strictly decreasing sizes and compact.fold gives its MTH.
"""

from __future__ import annotations

from collections.abc import Sequence

from merkle import hashing
from merkle.compact import HashReader, Node, decompose, fold
from merkle.errors import ProofError


def _split_point(n: int) -> int:
    """The largest power of two strictly less than n (n > 1): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the inclusion proof of index in a tree of size."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not in a tree of size {size}")
    ranges = []
    lo, hi = 0, size
    # PATH(m, D[lo:hi]) unrolled top-down; the proof lists the sibling ranges bottom-up.
    while hi - lo > 1:
        mid = lo + _split_point(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the consistency proof from old_size to new_size.

    Sizes must satisfy 0 < old_size <= new_size; old_size == new_size gives no ranges.
    A proof from the empty tree is refused, as Go's tlog and transparency-dev/merkle do:
    every tree is consistent with it, so it proves nothing.
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    ranges = []
    lo, hi, whole = 0, new_size, True
    # SUBPROOF(m, D[lo:hi], b) unrolled top-down, with m = old_size - lo.
    while old_size != hi:
        mid = lo + _split_point(hi - lo)
        if old_size <= mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo, whole = mid, False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def hash_ranges(ranges: Sequence[tuple[int, int]], reader: HashReader) -> list[bytes]:
    """The MTH of each proof range, with one read of the distinct subtree hashes they need."""
    parts = [decompose(lo, hi) for lo, hi in ranges]
    wanted = list(dict.fromkeys(node for nodes in parts for node in nodes))
    known = dict(zip(wanted, reader.read_hashes(wanted), strict=True))
    return [fold([known[node] for node in nodes]) for nodes in parts]


def prove_inclusion(index: int, size: int, reader: HashReader) -> list[bytes]:
    """The inclusion proof of leaf index in the tree of the given size, from stored hashes."""
    return hash_ranges(inclusion_ranges(index, size), reader)


def prove_consistency(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """The consistency proof between two sizes of one tree, from stored hashes."""
    return hash_ranges(consistency_ranges(old_size, new_size), reader)


def prove_inclusions(indexes: Sequence[int], size: int, reader: HashReader) -> list[list[bytes]]:
    """The inclusion proofs of many leaves in one tree, reading each shared subtree once."""
    per_leaf = [inclusion_ranges(index, size) for index in indexes]
    hashes = hash_ranges([r for ranges in per_leaf for r in ranges], reader)
    out = []
    at = 0
    for ranges in per_leaf:
        out.append(hashes[at : at + len(ranges)])
        at += len(ranges)
    return out


class LeafHashReader:
    """A HashReader over an in-memory list of leaf hashes (tests, small trees, the demo)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._leaves = leaf_hashes

    def read_hashes(self, nodes: Sequence[Node], /) -> list[bytes]:
        out = []
        for node in nodes:
            lo, hi = node.index << node.level, (node.index + 1) << node.level
            if hi > len(self._leaves):
                raise ValueError(f"subtree {node} is beyond {len(self._leaves)} leaves")
            out.append(hashing.root_hash(self._leaves[lo:hi]))
        return out


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """The inclusion proof of leaf index in the tree of the first size leaf hashes."""
    if size > len(leaf_hashes):
        raise ValueError(f"size {size} is beyond the {len(leaf_hashes)} leaf hashes given")
    return prove_inclusion(index, size, LeafHashReader(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """The consistency proof from the tree of the first old_size leaves to the first new_size."""
    if new_size > len(leaf_hashes):
        raise ValueError(f"size {new_size} is beyond the {len(leaf_hashes)} leaf hashes given")
    return prove_consistency(old_size, new_size, LeafHashReader(leaf_hashes))


def _check_hash(what: str, h: bytes) -> None:
    if len(h) != hashing.HASH_SIZE:
        raise ProofError(f"{what} is {len(h)} bytes, not {hashing.HASH_SIZE}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf_hash is leaf index of the tree of this size and root (RFC 9162 §2.1.3.2).

    Returns None; raises ProofError saying what failed. The (size, root) pair must come together
    from one signed checkpoint: the algorithm accepts some proofs for a different size paired
    with the right root, exactly as the RFC computes.
    """
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    for i, p in enumerate(proof):
        _check_hash(f"proof hash {i}", p)
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof is too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            r = hashing.node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashing.node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short: {len(proof)} hashes")
    if r != root:
        raise ProofError(
            f"inclusion proof of leaf {index} does not lead to the root of size {size}"
        )


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that tree (old_size, old_root) is a prefix of (new_size, new_root), RFC 9162 §2.1.4.2.

    Returns None; raises ProofError saying what failed. old_size 0 is refused (see
    consistency_ranges); equal sizes need an empty proof and equal roots.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof can go from size {old_size} to size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("sizes are equal, so the consistency proof must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same size {old_size}")
        return
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    for i, p in enumerate(proof):
        _check_hash(f"proof hash {i}", p)
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof is too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            fr = hashing.node_hash(c, fr)
            sr = hashing.node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hashing.node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof is too short: {len(proof)} hashes")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root of size {old_size}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root of size {new_size}")
