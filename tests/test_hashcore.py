"""The C hashing core, affidavit.merkle._hashcore: byte for byte equal to hashlib, to
PythonCore, to the RFC 6962 reference tree, and to itself with the SHA extensions switched off."""

from __future__ import annotations

import array
import hashlib
import inspect
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from affidavit.merkle.hashing import EMPTY_ROOT, PythonCore
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.c_cores import skip_if_c_cores_off

try:
    from affidavit.merkle import _hashcore as c
except ImportError as e:
    skip_if_c_cores_off(module=True)
    raise ImportError(
        "affidavit.merkle._hashcore is not built (pip install -e .); the project always builds "
        "it, so its absence is a failure unless AFFIDAVIT_PURE_PYTHON=1"
    ) from e

py = PythonCore()
unchecked: Any = c  # the C core called past its type stub, for the error cases
VECTORS = Path(__file__).parent / "vectors"

# Entry lengths around the SHA-256 block boundaries. A leaf hashes len + 1 bytes (0x00 first);
# the padding, 0x80 and an 8-byte length, shares the last 64-byte block only if that block holds
# at most 55 message bytes. So 54 | 55 and 118 | 119 straddle an extra padding block, and 62 | 63
# and 126 | 127 a block filled exactly.
BOUNDARY_LENGTHS = [0, 1, 54, 55, 56, 62, 63, 64, 118, 119, 120, 126, 127, 128, 1024, 3000]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rand_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH written as the RFC does: split at the largest power of two below n."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:]))


# ---- known answers -----------------------------------------------------------------------------


def test_known_answers() -> None:
    # SHA-256(0x00): the RFC 6962 hash of an empty entry (also the 1-leaf reference root).
    assert c.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    # The FIPS 180-2 "abc" and two-block messages, behind the leaf and node prefixes.
    abc = b"abc"
    two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
    assert c.leaf_hash(abc) == sha256(b"\x00" + abc)
    assert c.leaf_hash(two_blocks) == sha256(b"\x00" + two_blocks)
    assert c.node_hash(bytes(32), bytes(32)) == sha256(b"\x01" + bytes(64))
    assert c.node_hash(b"\xff" * 32, b"\xff" * 32) == sha256(b"\x01" + b"\xff" * 64)
    # A million bytes: many whole blocks straight from the caller's buffer, GIL released.
    million = b"a" * 1_000_000
    assert c.leaf_hash(million) == sha256(b"\x00" + million)
    assert c.root_hash(b"") == EMPTY_ROOT == sha256(b"")


@pytest.mark.parametrize("n", BOUNDARY_LENGTHS)
def test_leaf_hash_boundary_lengths(n: int) -> None:
    entry = rand_bytes(n, n)
    assert c.leaf_hash(entry) == py.leaf_hash(entry) == sha256(b"\x00" + entry)


def test_rfc6962_reference_tree() -> None:
    ref = json.loads((VECTORS / "rfc6962-reference.json").read_text())
    entries = [bytes.fromhex(h) for h in ref["leaves_hex"]]
    leaves = c.leaf_hashes(entries)
    assert leaves == b"".join(c.leaf_hash(e) for e in entries)
    assert c.root_hash(b"").hex() == ref["empty_tree_root_hex"]
    assert ref["roots"]
    for root in ref["roots"]:
        size = root["size"]
        assert c.root_hash(leaves[: 32 * size]).hex() == root["root_hex"], size
    by_size = {root["size"]: root["root_hex"] for root in ref["roots"]}
    assert c.subtree_roots(leaves, 3).hex() == by_size[8]
    assert c.subtree_roots(leaves[: 32 * 4], 2).hex() == by_size[4]


# ---- C equals PythonCore -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_leaf_hash_matches_python(entry: bytes) -> None:
    assert c.leaf_hash(entry) == py.leaf_hash(entry)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40))
def test_leaf_hashes_matches_python(entries: list[bytes]) -> None:
    assert c.leaf_hashes(entries) == py.leaf_hashes(entries)


def test_leaf_hashes_large_batch() -> None:
    # Enough work to hash without the GIL; every boundary length, and random ones.
    rng = random.Random(1)
    entries = [rand_bytes(n, n) for n in BOUNDARY_LENGTHS]
    entries += [rng.randbytes(rng.randrange(3001)) for _ in range(300)]
    assert c.leaf_hashes(entries) == py.leaf_hashes(entries)
    assert c.leaf_hashes(tuple(entries)) == py.leaf_hashes(entries)
    assert c.leaf_hashes([]) == b""


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_node_hash_matches_python(left: bytes, right: bytes) -> None:
    assert c.node_hash(left, right) == py.node_hash(left, right)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 9), st.integers(0, 4), st.integers(0, 2**32))
def test_subtree_roots_matches_python(height: int, runs: int, seed: int) -> None:
    hashes = rand_bytes(32 * runs << height, seed)
    assert c.subtree_roots(hashes, height) == py.subtree_roots(hashes, height)


def test_subtree_roots_levels() -> None:
    hashes = rand_bytes(32 * 1024, 2)
    assert c.subtree_roots(hashes, 0) == hashes
    level = hashes
    for height in range(1, 11):
        level = c.subtree_roots(level, 1)
        assert c.subtree_roots(hashes, height) == level == py.subtree_roots(hashes, height)
    assert level == c.root_hash(hashes)


def test_root_hash_every_size_to_600() -> None:
    hashes = rand_bytes(32 * 600, 3)
    split = [hashes[i : i + 32] for i in range(0, len(hashes), 32)]
    for n in range(601):
        assert c.root_hash(hashes[: 32 * n]) == py.root_hash(hashes[: 32 * n]), n
        if n <= 150:
            assert c.root_hash(hashes[: 32 * n]) == mth(split[:n]), n


@pytest.mark.parametrize("n", [1023, 1024, 1025, 2047, 3000, 4096, 5001])
def test_root_hash_thousands(n: int) -> None:
    hashes = rand_bytes(32 * n, n)
    root = c.root_hash(hashes)
    assert root == py.root_hash(hashes)
    assert root == mth([hashes[i : i + 32] for i in range(0, len(hashes), 32)])


# ---- buffers -----------------------------------------------------------------------------------


def test_buffer_inputs() -> None:
    entry = rand_bytes(1000, 4)
    hashes = rand_bytes(32 * 64, 5)
    # An odd offset into a larger buffer: nothing may assume alignment.
    shifted = memoryview(b"\x99" + hashes)[1:]
    kinds: list[Callable[[bytes], Any]] = [bytearray, memoryview, lambda b: array.array("B", b)]
    for kind in kinds:
        assert c.leaf_hash(kind(entry)) == c.leaf_hash(entry)
        assert c.leaf_hashes([kind(entry), entry]) == c.leaf_hash(entry) * 2
        assert c.node_hash(kind(hashes[:32]), kind(hashes[32:64])) == py.node_hash(
            hashes[:32], hashes[32:64]
        )
        assert c.subtree_roots(kind(hashes), 3) == py.subtree_roots(hashes, 3)
        assert c.root_hash(kind(hashes)) == py.root_hash(hashes)
    assert c.leaf_hash(memoryview(b"\x99" + entry)[1:]) == c.leaf_hash(entry)
    assert c.root_hash(shifted) == py.root_hash(hashes)
    assert c.subtree_roots(shifted, 6) == py.subtree_roots(hashes, 6)
    assert c.node_hash(shifted[:32], shifted[32:64]) == py.node_hash(hashes[:32], hashes[32:64])


def test_inputs_are_not_modified_and_outputs_are_bytes() -> None:
    hashes = bytearray(rand_bytes(32 * 100, 6))
    before = bytes(hashes)
    for out in (c.root_hash(hashes), c.subtree_roots(hashes, 2), c.leaf_hashes([hashes])):
        assert type(out) is bytes
    assert hashes == before


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: unchecked.leaf_hash("text"), TypeError),
        (lambda: unchecked.leaf_hash(None), TypeError),
        (lambda: unchecked.leaf_hash(7), TypeError),
        (lambda: unchecked.leaf_hashes([b"a", "b"]), TypeError),
        (lambda: unchecked.leaf_hashes([b"a", 1]), TypeError),
        (lambda: unchecked.leaf_hashes(7), TypeError),
        (lambda: unchecked.node_hash(b"\0" * 31, b"\0" * 32), ValueError),
        (lambda: unchecked.node_hash(b"\0" * 32, b"\0" * 33), ValueError),
        (lambda: unchecked.node_hash(b"", b""), ValueError),
        (lambda: unchecked.node_hash("x" * 32, b"\0" * 32), TypeError),
        (lambda: unchecked.node_hash(b"\0" * 32), TypeError),
        (lambda: unchecked.node_hash(b"\0" * 32, b"\0" * 32, b"\0" * 32), TypeError),
        (lambda: unchecked.subtree_roots(b"\0" * 33, 0), ValueError),
        (lambda: unchecked.subtree_roots(b"\0" * 96, 1), ValueError),
        (lambda: unchecked.subtree_roots(b"\0" * 64, 2), ValueError),
        (lambda: unchecked.subtree_roots(b"\0" * 64, -1), ValueError),
        (lambda: unchecked.subtree_roots(b"", 63), ValueError),
        (lambda: unchecked.subtree_roots(b"", 10**30), ValueError),
        (lambda: unchecked.subtree_roots(b"", 1.0), TypeError),
        (lambda: unchecked.subtree_roots("x" * 64, 1), TypeError),
        (lambda: unchecked.subtree_roots(b"\0" * 64), TypeError),
        (lambda: unchecked.root_hash(b"\0" * 33), ValueError),
        (lambda: unchecked.root_hash(b"\0" * 31), ValueError),
        (lambda: unchecked.root_hash("x" * 64), TypeError),
        (lambda: unchecked.root_hash(memoryview(b"\0" * 128)[::2]), BufferError),
    ],
)
def test_errors(call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def test_buffers_are_released() -> None:
    # A bytearray cannot be resized while a buffer on it is held: each call below must have
    # let go of its buffers by the time it returns or raises.
    held = bytearray(32)
    c.leaf_hash(held)
    c.leaf_hashes([held, held])
    c.node_hash(held, held)
    c.subtree_roots(held, 0)
    c.root_hash(held)
    with pytest.raises(TypeError):
        unchecked.leaf_hashes([held, held, "not bytes"])
    with pytest.raises(ValueError):
        c.node_hash(held, bytearray(31))
    with pytest.raises(ValueError):
        c.subtree_roots(held, 1)
    odd = bytearray(33)
    with pytest.raises(ValueError):
        c.root_hash(odd)
    held.append(0)
    odd.append(0)


def test_subtree_roots_of_nothing() -> None:
    assert c.subtree_roots(b"", 0) == c.subtree_roots(b"", 62) == b""


# ---- threads and the two SHA-256 paths ---------------------------------------------------------


def test_threads() -> None:
    # Large calls run without the GIL: concurrent ones must not disturb each other.
    inputs = [rand_bytes(32 * (5000 + i), 100 + i) for i in range(4)]
    expected = [c.root_hash(h) for h in inputs]
    results: dict[int, list[bytes]] = {}

    def work(i: int) -> None:
        results[i] = [c.root_hash(inputs[i]) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == [expected[i]] * 20 for i in range(4))


def outputs_digest(core: Any) -> str:
    """SHA-256 over the outputs of every core function on fixed pseudo-random inputs.

    Runs in subprocesses too (sent as source), so it imports what it needs itself.
    """
    import hashlib
    import random

    rng = random.Random(6962)
    d = hashlib.sha256()
    entries = [rng.randbytes(n) for n in range(300)] + [rng.randbytes(4096) for _ in range(20)]
    d.update(core.leaf_hashes(entries))
    d.update(core.leaf_hash(rng.randbytes(100_000)))
    hashes = rng.randbytes(32 * 1024)
    for i in range(0, 512, 64):
        d.update(core.node_hash(hashes[i : i + 32], hashes[i + 32 : i + 64]))
    for height in range(11):
        d.update(core.subtree_roots(hashes, height))
    for n in [*range(130), 1000, 1023, 1024]:
        d.update(core.root_hash(hashes[: 32 * n]))
    return d.hexdigest()


def run_digest(portable: bool) -> tuple[bool, str]:
    env = {k: v for k, v in os.environ.items() if k != "AFFIDAVIT_HASHCORE_PORTABLE"}
    if portable:
        env["AFFIDAVIT_HASHCORE_PORTABLE"] = "1"
    script = (
        "from typing import Any\n"
        + inspect.getsource(outputs_digest)
        + "from affidavit.merkle import _hashcore\n"
        + "print(_hashcore.has_sha_extensions(), outputs_digest(_hashcore))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    sha, digest = out.stdout.split()
    return sha == "True", digest


def cpu_has_sha_ni() -> bool | None:
    """Whether Linux lists the x86 SHA extensions among the CPU's flags (None: no /proc)."""
    try:
        return " sha_ni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def test_portable_and_sha_extensions_agree() -> None:
    fast_sha, fast = run_digest(portable=False)
    portable_sha, portable = run_digest(portable=True)
    assert not portable_sha
    assert fast_sha or not cpu_has_sha_ni(), "SHA extensions unused: the same path twice"
    assert fast == portable == outputs_digest(py)


def test_sha_extensions_used_when_present() -> None:
    has = cpu_has_sha_ni()
    if has is None or os.environ.get("AFFIDAVIT_HASHCORE_PORTABLE") == "1":
        pytest.skip("no /proc/cpuinfo to compare with, or the portable path was forced")
    assert c.has_sha_extensions() == has
