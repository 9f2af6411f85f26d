"""Inclusion and consistency proofs: known answers, reference verdicts, the RFC, properties."""

from __future__ import annotations

from typing import Any

import pytest
from affidavit.merkle import hashing, proofs
from affidavit.merkle.compact import CompactRange
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit import merkle
from tests.conftest import load_vector

RFC = load_vector("rfc6962-reference.json")
TD = load_vector("transparency-dev-merkle.json")
H = bytes.fromhex

pytestmark = pytest.mark.usefixtures("backend")
HYPO = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def rfc_leaves() -> list[bytes]:
    return [merkle.leaf_hash(H(x)) for x in RFC["leaves_hex"]]


def leaves(n: int) -> list[bytes]:
    return hashing.leaf_hashes([i.to_bytes(4, "big") for i in range(n)])


# A second, independent reading of RFC 9162 §2.1: the recursive definitions as written.
def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashing.EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return merkle.node_hash(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def test_rfc6962_roots() -> None:
    ls = rfc_leaves()
    assert merkle.root_hash([]).hex() == RFC["empty_tree_root_hex"]
    for case in RFC["roots"]:
        assert merkle.root_hash(ls[: case["size"]]).hex() == case["root_hex"]


def test_rfc6962_inclusion_proofs() -> None:
    ls = rfc_leaves()
    for case in RFC["inclusion"]:
        size, index = case["size"], case["index"]
        proof = merkle.inclusion_proof(ls, index, size)
        assert [p.hex() for p in proof] == case["proof_hex"]
        merkle.verify_inclusion(ls[index], index, size, proof, merkle.root_hash(ls[:size]))


def test_rfc6962_consistency_proofs() -> None:
    ls = rfc_leaves()
    for case in RFC["consistency"]:
        old, new = case["old_size"], case["new_size"]
        proof = merkle.consistency_proof(ls, old, new)
        assert [p.hex() for p in proof] == case["proof_hex"]
        merkle.verify_consistency(
            old, new, proof, merkle.root_hash(ls[:old]), merkle.root_hash(ls[:new])
        )


@pytest.mark.parametrize("case", TD["inclusion"], ids=lambda c: c["source"])
def test_transparency_dev_inclusion_verdicts(case: dict[str, Any]) -> None:
    args = (
        H(case["leaf_hash_hex"]),
        case["index"],
        case["size"],
        [H(p) for p in case["proof_hex"]],
    )
    if case["want_err"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args, H(case["root_hex"]))
    else:
        merkle.verify_inclusion(*args, H(case["root_hex"]))


@pytest.mark.parametrize("case", TD["consistency"], ids=lambda c: c["source"])
def test_transparency_dev_consistency_verdicts(case: dict[str, Any]) -> None:
    args = (case["old_size"], case["new_size"], [H(p) for p in case["proof_hex"]])
    roots = (H(case["old_root_hex"]), H(case["new_root_hex"]))
    if case["want_err"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args, *roots)
    else:
        merkle.verify_consistency(*args, *roots)


def test_generation_matches_rfc_recursion_exhaustively() -> None:
    ls = leaves(70)
    for size in range(1, 71):
        d = ls[:size]
        assert merkle.root_hash(d) == ref_mth(d)
        for m in range(size):
            assert merkle.inclusion_proof(ls, m, size) == ref_path(m, d)
        for old in range(1, size + 1):
            assert merkle.consistency_proof(ls, old, size) == ref_subproof(old, d, True)


def test_bad_generation_arguments() -> None:
    ls = leaves(8)
    for index, size in [(8, 8), (-1, 8), (0, 0), (0, 9)]:
        with pytest.raises(ValueError):
            merkle.inclusion_proof(ls, index, size)
    for old, new in [(0, 8), (5, 4), (1, 9)]:
        with pytest.raises(ValueError):
            merkle.consistency_proof(ls, old, new)


def _mutations(proof: list[bytes], data: st.DataObject) -> list[list[bytes]]:
    """Every way of damaging a proof the properties below must reject."""
    out = [proof + [proof[-1] if proof else hashing.EMPTY_ROOT], proof + [b"\x00" * 32]]
    out.append([b"\x07" * 32, *proof])
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="hash")
        bit = data.draw(st.integers(0, 255), label="bit")
        flipped = bytearray(proof[i])
        flipped[bit // 8] ^= 1 << (bit % 8)
        out.append(proof[:i] + [bytes(flipped)] + proof[i + 1 :])
        out.append(proof[:-1])
        out.append(proof[1:])
    if len(set(proof)) > 1:
        i, j = data.draw(
            st.lists(st.integers(0, len(proof) - 1), min_size=2, max_size=2, unique=True)
        )
        if proof[i] != proof[j]:
            swapped = list(proof)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            out.append(swapped)
    return out


@HYPO
@given(size=st.integers(1, 3000), data=st.data())
def test_inclusion_property(size: int, data: st.DataObject) -> None:
    ls = leaves(size)
    root = merkle.root_hash(ls)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = merkle.inclusion_proof(ls, index, size)
    merkle.verify_inclusion(ls[index], index, size, proof, root)
    for bad in _mutations(proof, data):
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(ls[index], index, size, bad, root)
    other = data.draw(
        st.integers(0, size - 1).filter(lambda i: i != index) if size > 1 else st.none()
    )
    if other is not None:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(ls[index], other, size, proof, root)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(ls[other], index, size, proof, root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(ls[index], index, size, proof, merkle.root_hash(ls[:-1]))


@HYPO
@given(new=st.integers(2, 3000), data=st.data())
def test_consistency_property(new: int, data: st.DataObject) -> None:
    ls = leaves(new)
    old = data.draw(st.integers(1, new - 1), label="old")
    old_root, new_root = merkle.root_hash(ls[:old]), merkle.root_hash(ls)
    proof = merkle.consistency_proof(ls, old, new)
    merkle.verify_consistency(old, new, proof, old_root, new_root)
    for bad in _mutations(proof, data):
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, new, bad, old_root, new_root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(old, new, proof, new_root, old_root)
    # A forked history: the same old tree with a different last leaf is caught.
    forked = ls[: old - 1] + [merkle.leaf_hash(b"fork")]
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(old, new, proof, merkle.root_hash(forked), new_root)


def test_equal_sizes() -> None:
    root = merkle.root_hash(leaves(5))
    merkle.verify_consistency(5, 5, [], root, root)
    with pytest.raises(merkle.ProofError, match="must be empty"):
        merkle.verify_consistency(5, 5, [root], root, root)
    with pytest.raises(merkle.ProofError, match="different roots"):
        merkle.verify_consistency(5, 5, [], root, merkle.root_hash(leaves(4)))


def test_proof_plans_are_the_rfc_subtrees() -> None:
    # Leaf 5 of 8: leaves [4, 5), [6, 8), [0, 4).
    assert proofs.inclusion_plan(5, 8) == ([(0, 4), (1, 3), (2, 0)], 3, 3)
    # 3 to 7: leaves [2, 3), [3, 4), [0, 2), then [4, 7) folded from [4, 6) and [6, 7).
    assert proofs.consistency_plan(3, 7) == (
        [(0, 2), (0, 3), (1, 0), (1, 2), (0, 6)],
        3,
        5,
    )
    assert proofs.consistency_plan(4, 8) == ([(2, 1)], 1, 1)
    assert proofs.consistency_plan(6, 6) == ([], 0, 0)
    # Node 2/1 (leaves 4..7) of 13: [0, 4), then [8, 13) folded from [8, 12) and [12, 13).
    assert proofs.path_plan(2, 1, 13) == ([(2, 0), (2, 2), (0, 12)], 1, 3)
    for level, n, size in [(0, 8, 8), (2, 2, 11), (-1, 0, 4), (0, -1, 4)]:
        with pytest.raises(ValueError):
            proofs.path_plan(level, n, size)


def test_batch_inclusion_proofs_equal_single_ones() -> None:
    ls = leaves(1000)
    reader = proofs.LeafHashReader(ls)
    indexes = [0, 1, 500, 999, 500, 998]
    assert proofs.prove_inclusions(indexes, 1000, reader) == [
        merkle.inclusion_proof(ls, i, 1000) for i in indexes
    ]
    assert proofs.prove_inclusions([], 1000, reader) == []


@HYPO
@given(old=st.integers(0, 3000), added=st.integers(1, 600), data=st.data())
def test_batch_inclusion_proofs_equal_single_ones_and_root(
    old: int, added: int, data: st.DataObject
) -> None:
    ls = leaves(old + added)
    edge = CompactRange()
    edge.extend(ls[:old])
    root, batch = proofs.batch_inclusion_proofs(edge, ls[old:])
    assert root == merkle.root_hash(ls)
    assert len(batch) == added
    for index in data.draw(st.lists(st.integers(old, old + added - 1), max_size=8)):
        assert batch[index - old] == merkle.inclusion_proof(ls, index, old + added)
    assert batch[0] == merkle.inclusion_proof(ls, old, old + added)
    assert batch[-1] == merkle.inclusion_proof(ls, old + added - 1, old + added)


def test_batch_inclusion_proofs_exhaustively_for_small_trees() -> None:
    ls = leaves(40)
    for old in range(40):
        edge = CompactRange()
        edge.extend(ls[:old])
        for new in range(old + 1, 41):
            root, batch = proofs.batch_inclusion_proofs(edge, ls[old:new])
            assert root == merkle.root_hash(ls[:new])
            assert batch == [merkle.inclusion_proof(ls, i, new) for i in range(old, new)]


def test_levels_hold_what_they_claim() -> None:
    ls = leaves(300)
    edge = CompactRange()
    edge.extend(ls[:100])
    levels = proofs.Levels.grow(100, ls[100:], proofs.edge_heads(edge))
    assert levels.size == 300
    assert levels.starts[:3] == (100, 50, 24)  # node 24 at level 2 is the old edge
    assert levels.node(2, 24) == merkle.root_hash(ls[96:100])
    assert levels.node(0, 299) == ls[299]
    for level, n in [(0, 99), (0, 300), (2, 22), (9, 0)]:
        with pytest.raises(ValueError):
            levels.node(level, n)
    with pytest.raises(ValueError, match="not in these levels"):
        levels.inclusion_proofs(range(99, 100))
    with pytest.raises(ValueError, match="a range of step 1"):
        levels.inclusion_proofs(range(100, 300, 2))
    assert levels.inclusion_proofs(range(200, 200)) == []
    assert proofs.Levels.grow(0, [], {}).root() == merkle.EMPTY_ROOT


@HYPO
@given(old=st.integers(0, 700), added=st.integers(1, 300), data=st.data())
def test_levels_prove_any_run_of_their_leaves(old: int, added: int, data: st.DataObject) -> None:
    # Any run of the leaves the levels hold gets RFC 6962's proofs, each in a list of its own
    # (the upper parts are built once and shared while building).
    ls = leaves(old + added)
    edge = CompactRange()
    edge.extend(ls[:old])
    levels = proofs.Levels.grow(old, ls[old:], proofs.edge_heads(edge))
    begin = data.draw(st.integers(old, old + added - 1))
    end = data.draw(st.integers(begin + 1, old + added))
    run = levels.inclusion_proofs(range(begin, end))
    assert run == [merkle.inclusion_proof(ls, i, old + added) for i in range(begin, end)]
    assert len({id(proof) for proof in run}) == len(run)  # each its own list
    with pytest.raises(ValueError, match="not in these levels"):
        levels.inclusion_proofs(range(begin, old + added + 1))
    first = levels.starts[0]  # old, or the old edge's leaf when old is odd
    if first:
        with pytest.raises(ValueError, match=f"leaf {first - 1} is not"):
            levels.inclusion_proofs(range(first - 1, end))


def test_levels_refuse_heads_that_leave_siblings_out() -> None:
    ls = leaves(8)
    # Without the old edge, level 0 would start at the odd node 5: its sibling is missing.
    with pytest.raises(ValueError, match="level 0 starts at node 5"):
        proofs.Levels.grow(5, ls[5:], {})
    with pytest.raises(ValueError, match="levels a tree of size 8 does not have"):
        proofs.Levels.grow(4, ls[4:], {5: [ls[0]]})
    with pytest.raises(ValueError, match="does not end"):
        proofs.Levels(8, [0, 0, 0, 0], [ls, [], [], []])
