"""Compact ranges: decomposition and the incremental tree."""

from __future__ import annotations

import itertools

import pytest
from affidavit.merkle import hashing
from affidavit.merkle.compact import CompactRange, decompose
from affidavit.merkle.proofs import LeafHashReader
from hypothesis import given
from hypothesis import strategies as st

from affidavit import merkle

pytestmark = pytest.mark.usefixtures("backend")


def leaves(n: int) -> list[bytes]:
    return hashing.leaf_hashes([i.to_bytes(4, "big") for i in range(n)])


@given(st.integers(0, 5000), st.integers(0, 5000))
def test_decompose_covers_range_with_maximal_aligned_subtrees(a: int, b: int) -> None:
    begin, end = min(a, b), max(a, b)
    nodes = decompose(begin, end)
    at = begin
    for level, n in nodes:
        assert n << level == at  # contiguous, aligned
        at += 1 << level
    assert at == end
    # Maximal: no two neighbours are siblings that could merge.
    for (level, n), (right_level, _) in itertools.pairwise(nodes):
        assert not (level == right_level and n % 2 == 0)
    assert len(nodes) <= 2 * max(end - begin, 1).bit_length()


def test_decompose_known() -> None:
    assert decompose(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert decompose(3, 13) == [(0, 3), (2, 1), (2, 2), (0, 12)]
    assert decompose(5, 5) == []
    with pytest.raises(ValueError):
        decompose(6, 5)


def test_incremental_root_equals_mth_for_every_size() -> None:
    ls = leaves(600)
    cr = CompactRange()
    assert cr.root() == merkle.EMPTY_ROOT
    for i, h in enumerate(ls):
        cr.append(h)
        assert cr.size == i + 1
        assert len(cr.hashes) == (i + 1).bit_count()
        assert cr.root() == merkle.root_hash(ls[: i + 1])


@given(st.integers(0, 3000), st.integers(0, 300))
def test_resume_from_state_and_from_reader(size: int, more: int) -> None:
    ls = leaves(size + more)
    grown = CompactRange()
    grown.extend(ls[:size])
    resumed = CompactRange(grown.size, grown.hashes)
    assert CompactRange.from_reader(size, LeafHashReader(ls)).hashes == grown.hashes
    resumed.extend(ls[size:])
    assert resumed.root() == merkle.root_hash(ls)


def test_rejects_inconsistent_state() -> None:
    with pytest.raises(ValueError, match="edge hashes"):
        CompactRange(3, [b"\x00" * 32])
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange(1, [b"\x00" * 31])
    with pytest.raises(ValueError):
        CompactRange().append(b"short")
