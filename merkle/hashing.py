"""RFC 6962 / RFC 9162 §2.1.1 hashing: the one entry point for every hash the log computes.

    leaf hash  = SHA-256(0x00 ‖ entry)
    node hash  = SHA-256(0x01 ‖ left ‖ right)
    empty root = SHA-256("")

Two cores compute the same bytes: the C extension affidavit.merkle._hashcore (whole batches per
call, SHA extensions when the CPU has them) and a pure-Python one over hashlib. The C core is used
when it is importable, unless AFFIDAVIT_PURE_PYTHON=1 is set when this module is imported.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Protocol

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class Core(Protocol):
    """What a hashing core provides. Batches travel as concatenated 32-byte hashes."""

    def leaf_hash(self, entry: bytes, /) -> bytes: ...

    def node_hash(self, left: bytes, right: bytes, /) -> bytes: ...

    def leaf_hashes(self, entries: Sequence[bytes], /) -> bytes:
        """The leaf hashes of entries, concatenated."""
        ...

    def subtree_roots(self, hashes: bytes, height: int, /) -> bytes:
        """The root of each consecutive run of 2**height hashes, concatenated.

        len(hashes) must be a multiple of 32 * 2**height; height 1 gives the parents of a level.
        """
        ...

    def root_hash(self, hashes: bytes, /) -> bytes:
        """The RFC 9162 Merkle tree hash (MTH) of a run of leaf hashes (EMPTY_ROOT for none)."""
        ...


class PythonCore:
    """The pure-Python core: hashlib, one call per hash."""

    name = "python"

    @staticmethod
    def leaf_hash(entry: bytes, /) -> bytes:
        return hashlib.sha256(_LEAF_PREFIX + bytes(entry)).digest()

    @staticmethod
    def node_hash(left: bytes, right: bytes, /) -> bytes:
        return hashlib.sha256(_NODE_PREFIX + left + right).digest()

    @staticmethod
    def leaf_hashes(entries: Sequence[bytes], /) -> bytes:
        sha = hashlib.sha256
        return b"".join([sha(_LEAF_PREFIX + bytes(e)).digest() for e in entries])

    @staticmethod
    def subtree_roots(hashes: bytes, height: int, /) -> bytes:
        _check_run(hashes, height)
        level = _split(hashes)
        for _ in range(height):
            level = _parents(level)
        return b"".join(level)

    @staticmethod
    def root_hash(hashes: bytes, /) -> bytes:
        _check_run(hashes, 0)
        level = _split(hashes)
        if not level:
            return EMPTY_ROOT
        # Pairing bottom-up and carrying an odd last node up unchanged is the same tree
        # as MTH's split at the largest power of two below n.
        while len(level) > 1:
            carry = [level[-1]] if len(level) % 2 else []
            level = _parents(level) + carry
        return level[0]


def _split(hashes: bytes) -> list[bytes]:
    return [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]


def _parents(level: list[bytes]) -> list[bytes]:
    sha = hashlib.sha256
    return [
        sha(_NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
    ]


def _check_run(hashes: bytes, height: int) -> None:
    if len(hashes) % (HASH_SIZE << height):
        raise ValueError(f"{len(hashes)} bytes is not a whole number of {1 << height}-hash runs")


def _load_c_core() -> Core | None:
    try:
        from affidavit.merkle import _hashcore
    except ImportError:
        return None
    return _hashcore


_CORES: dict[str, Core] = {"python": PythonCore()}
_c = _load_c_core()
if _c is not None:
    _CORES["c"] = _c
_core: Core = _CORES[
    "python" if os.environ.get("AFFIDAVIT_PURE_PYTHON") == "1" or _c is None else "c"
]


def backend() -> str:
    """Which core is active: "c" or "python"."""
    return "c" if _core is _c else "python"


def available_backends() -> list[str]:
    """The cores this installation has ("python" always)."""
    return sorted(_CORES)


def set_backend(name: str) -> None:
    """Make the named core the active one (tests and benchmarks compare the two)."""
    global _core
    try:
        _core = _CORES[name]
    except KeyError:
        raise ValueError(
            f"no {name!r} hashing core here; available: {available_backends()}"
        ) from None


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 ‖ entry): the hash of one log entry."""
    return _core.leaf_hash(entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right): the hash of an interior node."""
    return _core.node_hash(left, right)


def leaf_hashes(entries: Sequence[bytes]) -> list[bytes]:
    """The leaf hash of each entry, in order (one call into the core for the whole batch)."""
    return _split(_core.leaf_hashes(entries))


def subtree_roots(hashes: Sequence[bytes], height: int) -> list[bytes]:
    """The root of each consecutive run of 2**height hashes; len(hashes) must be a multiple."""
    return _split(_core.subtree_roots(b"".join(hashes), height))


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (RFC 9162 §2.1.1); EMPTY_ROOT for an empty list."""
    return _core.root_hash(b"".join(leaf_hashes))
