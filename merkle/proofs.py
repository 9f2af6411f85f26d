"""Inclusion and consistency proofs, exactly as RFC 9162 §2.1.3 and §2.1.4.

A proof is a list of 32-byte hashes ordered from the leaf up (the order Go's tlog and
transparency-dev/merkle use). Each proof hash is the Merkle tree hash of a range of leaves
that is a perfect subtree (a Node), except at most one: the range from where the proven
node's path leaves the tree's right edge to the end of the tree, whose hash folds the edge
nodes below that point. Making a proof works out those nodes (arithmetic only, as Go's
proof.Inclusion and proof.Consistency do), asks a HashReader for them in one call, and
folds that one run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from affidavit.merkle import hashing
from affidavit.merkle.compact import CompactRange, HashReader, Node, fold
from affidavit.merkle.errors import ProofError

Plan = tuple[list[Node], int, int]
"""The nodes of a proof and the run [a, b) of them that folds into one hash: the proof is
hashes of nodes[:a], then fold(nodes[a:b]) when a < b, then hashes of nodes[b:]."""


def path_plan(level: int, n: int, size: int) -> Plan:
    """The plan of the inclusion proof of node (level, n) in the tree of size leaves.

    The node's path leaves the path to leaf size (just past the tree) at the fork level
    top = level + bit_length(n ^ (size >> level)) - 1. The proof is the node's siblings below
    top; then the hash of the leaves right of the fork, [(size >> top) << top, size): the
    tree's edge nodes below top, folded (none when that range is empty); then the left
    siblings of the fork's ancestors, which are the edge nodes above top.
    """
    if level < 0 or not 0 <= n < size >> level:
        raise ValueError(f"node {level}/{n} is not in a tree of size {size}")
    top = level + (n ^ (size >> level)).bit_length() - 1
    nodes = [(up, (n >> (up - level)) ^ 1) for up in range(level, top)]
    a = len(nodes)
    nodes += [(up, (size >> up) - 1) for up in range(top - 1, -1, -1) if size >> up & 1]
    b = len(nodes)
    nodes += [(up, (size >> up) - 1) for up in range(top + 1, size.bit_length()) if size >> up & 1]
    return nodes, a, b


def inclusion_plan(index: int, size: int) -> Plan:
    """The plan of the inclusion proof of leaf index in a tree of size."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not in a tree of size {size}")
    return path_plan(0, index, size)


def consistency_plan(old_size: int, new_size: int) -> Plan:
    """The plan of the consistency proof from old_size to new_size.

    Sizes must satisfy 0 < old_size <= new_size; old_size == new_size gives no nodes.
    A proof from the empty tree is refused, as Go's tlog and transparency-dev/merkle do:
    every tree is consistent with it, so it proves nothing. Otherwise the proof is the
    inclusion proof of the largest perfect subtree ending at old_size (level = its trailing
    zero bits) in the new tree, after that subtree's own hash unless it is the whole old
    tree (old_size a power of two: the verifier has the old root).
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == new_size:
        return [], 0, 0
    level = (old_size & -old_size).bit_length() - 1
    n = (old_size - 1) >> level
    nodes, a, b = path_plan(level, n, new_size)
    if n == 0:
        return nodes, a, b
    return [(level, n), *nodes], a + 1, b + 1


def _assemble(hashes: list[bytes], a: int, b: int) -> list[bytes]:
    """The proof from its plan's node hashes: the run [a, b) folded into one hash."""
    if a == b:
        return hashes
    return [*hashes[:a], fold(hashes[a:b]), *hashes[b:]]


def _prove(plan: Plan, reader: HashReader) -> list[bytes]:
    nodes, a, b = plan
    return _assemble(reader.read_hashes(nodes), a, b)


def prove_inclusion(index: int, size: int, reader: HashReader) -> list[bytes]:
    """The inclusion proof of leaf index in the tree of the given size, from stored hashes."""
    return _prove(inclusion_plan(index, size), reader)


def prove_consistency(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """The consistency proof between two sizes of one tree, from stored hashes."""
    return _prove(consistency_plan(old_size, new_size), reader)


def prove_inclusions(indexes: Sequence[int], size: int, reader: HashReader) -> list[list[bytes]]:
    """The inclusion proofs of many leaves in one tree, reading each shared node once."""
    plans = [inclusion_plan(index, size) for index in indexes]
    wanted = list(dict.fromkeys(node for nodes, _, _ in plans for node in nodes))
    known = dict(zip(wanted, reader.read_hashes(wanted), strict=True))
    return [_assemble([known[node] for node in nodes], a, b) for nodes, a, b in plans]


class Levels:
    """Node hashes of one tree, level by level, from a boundary to the tree's right edge.

    For the tree of size leaves, rows[L] holds the hashes of the level-L nodes
    [starts[L], size >> L) — every complete level-L node from starts[L] on — for each level
    L < size.bit_length(). The constructor checks two invariants:

      * every starts[L] is even: each node in a row has its left sibling in the row too;
      * starts[L] ≤ starts[0] >> L: each ancestor of a leaf in [starts[0], size) is in a row.

    Together they put in the rows every hash of the inclusion proof of each leaf in
    [starts[0], size), and every hash of the tree's right edge, so root() and
    inclusion_proofs() read hashes only (plus one node hash per level of the edge).
    """

    __slots__ = ("_root", "_tails", "rows", "size", "starts")

    def __init__(self, size: int, starts: Sequence[int], rows: Sequence[Sequence[bytes]]) -> None:
        if size < 0 or len(starts) != size.bit_length() or len(rows) != len(starts):
            raise ValueError(f"a tree of size {size} has {size.bit_length()} levels")
        for level, (start, row) in enumerate(zip(starts, rows, strict=True)):
            if start < 0 or start % 2 or start > starts[0] >> level:
                raise ValueError(f"level {level} starts at node {start}: the levels lack hashes")
            if start + len(row) != size >> level:
                raise ValueError(f"level {level} does not end at the tree's right edge")
        self.size = size
        self.starts = tuple(starts)
        self.rows = tuple(rows)
        self._root: bytes | None = None
        self._tails: list[list[bytes]] = []

    @classmethod
    def grow(
        cls,
        old_size: int,
        leaf_hashes: Sequence[bytes],
        heads: Mapping[int, Sequence[bytes]],
    ) -> Levels:
        """The levels of the tree of old_size leaves grown by leaf_hashes.

        Level 0's row is heads[0] then leaf_hashes; level L's is heads[L] then the parents of
        level L-1's row. So heads[L] are old level-L hashes directly left of what the level
        below yields (ending at node old_size at level 0, at starts[L-1] / 2 above). They must
        make every row start at an even node, which two kinds of heads do: the old tree's
        edge (edge_heads), or the old tree's partial tiles (merkle.tiles.grow). Hashing: one
        core call per level, over that level's row; nothing else.
        """
        new_size = old_size + len(leaf_hashes)
        if old_size < 0 or any(not 0 <= level < new_size.bit_length() for level in heads):
            raise ValueError(f"heads at levels a tree of size {new_size} does not have")
        starts: list[int] = []
        rows: list[list[bytes]] = []
        for level in range(new_size.bit_length()):
            head = heads.get(level, ())
            if level == 0:
                starts.append(old_size - len(head))
                rows.append([*head, *leaf_hashes])
            else:
                below = rows[-1]
                starts.append(starts[-1] // 2 - len(head))
                rows.append([*head, *hashing.subtree_roots(below[: len(below) & ~1], 1)])
        return cls(new_size, starts, rows)

    def node(self, level: int, n: int) -> bytes:
        """The hash of node (level, n); ValueError if the rows do not hold it."""
        if not 0 <= level < len(self.rows) or not self.starts[level] <= n < self.size >> level:
            raise ValueError(f"node {level}/{n} is not in these levels")
        return self.rows[level][n - self.starts[level]]

    def root(self) -> bytes:
        """MTH of the tree's leaves: its right edge, folded."""
        if self._root is None:
            self._fold_edge()
        assert self._root is not None
        return self._root

    def inclusion_proofs(self, leaves: range) -> list[list[bytes]]:
        """The inclusion proof of each leaf of a run (a range of step 1, in [starts[0], size))
        in this tree.

        A leaf's path leaves the path to leaf size (the first one not in the tree) at the
        fork level k = bit_length(index ^ size) - 1. Its proof is its sibling at each level
        below k (in the rows, by the invariants), then a tail that depends on k alone (see
        _fold_edge), shared by every leaf with that fork level. The part of a proof from level
        L up is the same for every leaf under one level-L node, so the proofs are built from
        the top level down, each node's part once: its sibling, then its parent's part (about
        two list joins a leaf, where a walk per leaf would index every level).
        """
        if leaves.step != 1:
            raise ValueError("inclusion_proofs takes a run of leaves: a range of step 1")
        if not leaves:
            return []
        if not self._tails:
            self._fold_edge()
        size, tails, begin, end = self.size, self._tails, leaves.start, leaves.stop
        if not self.starts[0] <= begin < end <= size:
            bad = begin if begin < self.starts[0] else end - 1
            raise ValueError(f"leaf {bad} is not in these levels")
        # up: the parts of the level above, for its nodes from up_first on. A node on the
        # right edge (n == size >> L) has no part: its leaves fork below it. The node left of
        # it (n ^ edge == 1) forks at L: its part is the tail. Any other node's sibling is in
        # the rows (the class invariants), and its parent has a part.
        up: list[list[bytes]] = []
        up_first = 0
        for level in reversed(range(len(self.rows))):
            row, start, edge = self.rows[level], self.starts[level], size >> level
            first, last = begin >> level, (end - 1) >> level
            tail = tails[level]
            up = [
                [row[(n ^ 1) - start], *up[(n >> 1) - up_first]]
                if n ^ edge > 1
                else (list(tail) if n ^ edge else [])
                for n in range(first, last + 1)
            ]
            up_first = first
        return up

    def _fold_edge(self) -> None:
        """Root and proof tails from the right edge: node (L, (size >> L) - 1) for each one bit
        L of size, whose MTHs cover the tree left to right, largest first.

        For fork level k, the tail is the MTH of the leaves right of the fork node (the edge
        nodes below k, folded), when there are any, then the edge nodes above k, bottom-up:
        the left siblings of the fork's ancestors.
        """
        size = self.size
        edge = [
            row[(size >> level) - 1 - start] if size >> level & 1 else None
            for level, (row, start) in enumerate(zip(self.rows, self.starts, strict=True))
        ]
        right: bytes | None = None  # MTH of the leaves [(size >> k) << k, size)
        tails = []
        for k, h in enumerate(edge):
            above = [e for e in edge[k + 1 :] if e is not None]
            tails.append(above if right is None else [right, *above])
            if h is not None:
                right = h if right is None else hashing.node_hash(h, right)
        self._tails = tails
        self._root = hashing.EMPTY_ROOT if right is None else right


def edge_heads(old: CompactRange) -> dict[int, list[bytes]]:
    """Heads for Levels.grow from the old tree's compact range: its edge hash at each one bit
    of its size. A row then starts at node start - 1 (the edge) when its start is odd."""
    levels = [level for level in reversed(range(old.size.bit_length())) if old.size >> level & 1]
    return {level: [h] for level, h in zip(levels, old.hashes, strict=True)}


def batch_inclusion_proofs(
    old: CompactRange, leaf_hashes: Sequence[bytes]
) -> tuple[bytes, list[list[bytes]]]:
    """The root of the tree old grows into with leaf_hashes appended, and the inclusion proof
    of each appended leaf in it: one core call per level over just the appended span, the
    old tree's edge as the left siblings, then about log2(size) list lookups per proof."""
    levels = Levels.grow(old.size, leaf_hashes, edge_heads(old))
    return levels.root(), levels.inclusion_proofs(range(old.size, levels.size))


class LeafHashReader:
    """A HashReader over an in-memory list of leaf hashes (tests, small trees, the demo)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._leaves = leaf_hashes

    def read_hashes(self, nodes: Sequence[Node], /) -> list[bytes]:
        out = []
        for level, n in nodes:
            lo, hi = n << level, (n + 1) << level
            if hi > len(self._leaves):
                raise ValueError(f"subtree {level}/{n} is beyond {len(self._leaves)} leaves")
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
