"""Tests for merkle.checkpoint: C2SP tlog-checkpoint bodies."""

from __future__ import annotations

import base64
import hashlib

import pytest
from affidavit.merkle import errors
from affidavit.merkle.checkpoint import MAX_TREE_SIZE, Checkpoint, parse
from hypothesis import given
from hypothesis import strategies as st

# c2sp.org/tlog-checkpoint example body (CC-BY-4.0, C2SP).
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962 root of the empty tree
EMPTY_B64 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def test_spec_example_known_answer() -> None:
    cp = parse(SPEC_BODY)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert cp.format() == SPEC_BODY


def test_format_known_answer() -> None:
    cp = Checkpoint("example.com/affidavit/prod", 0, EMPTY_ROOT)
    assert cp.format() == f"example.com/affidavit/prod\n0\n{EMPTY_B64}\n"
    ext = Checkpoint("o", MAX_TREE_SIZE, b"\xff" * 32, ("ext one", "— two"))
    assert ext.format() == (
        "o\n18446744073709551615\n//////////////////////////////////////////8=\next one\n— two\n"
    )
    assert parse(ext.format()) == ext


def test_go_sumdb_body_parses() -> None:
    # The Go checksum database's tree note body (origin has spaces: allowed, as in Go).
    body = "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n"
    cp = parse(body)
    assert cp.origin == "go.sum database tree"
    assert cp.size == 31700353
    assert cp.root_hash.hex() == "a88352d464458561f076451ea8b1283f8c843244c1073c41906c0642556555cb"


_LINE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@given(
    _LINE,
    st.integers(0, MAX_TREE_SIZE),
    st.binary(min_size=32, max_size=32),
    st.lists(_LINE, max_size=3).map(tuple),
)
def test_round_trip(origin: str, size: int, root: bytes, extensions: tuple[str, ...]) -> None:
    cp = Checkpoint(origin, size, root, extensions)
    body = cp.format()
    assert parse(body) == cp
    assert parse(body).format() == body


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (SPEC_BODY[:-1], "newline"),
        ("", "newline"),
        ("example.com/x\n1\n", "line"),
        ("\n1\n" + EMPTY_B64 + "\n", "origin is empty"),
        ("o\x01\n1\n" + EMPTY_B64 + "\n", "control"),
        ("o\t\n1\n" + EMPTY_B64 + "\n", "control"),
        ("o\n01\n" + EMPTY_B64 + "\n", "leading zeros"),
        ("o\n00\n" + EMPTY_B64 + "\n", "leading zeros"),
        ("o\n-1\n" + EMPTY_B64 + "\n", "decimal"),
        ("o\n+1\n" + EMPTY_B64 + "\n", "decimal"),
        ("o\n 1\n" + EMPTY_B64 + "\n", "decimal"),
        ("o\n1 \n" + EMPTY_B64 + "\n", "decimal"),
        ("o\n1_0\n" + EMPTY_B64 + "\n", "decimal"),
        ("o\n\u0661\n" + EMPTY_B64 + "\n", "decimal"),  # ARABIC-INDIC DIGIT ONE
        ("o\n0x10\n" + EMPTY_B64 + "\n", "decimal"),
        ("o\n\n" + EMPTY_B64 + "\n", "decimal"),
        ("o\n18446744073709551616\n" + EMPTY_B64 + "\n", "64 bits"),
        ("o\n99999999999999999999\n" + EMPTY_B64 + "\n", "64 bits"),
        ("o\n123456789012345678901\n" + EMPTY_B64 + "\n", "decimal"),
        ("o\n1\n" + EMPTY_B64[:-1] + "\n", "44 characters"),  # no padding
        ("o\n1\n" + EMPTY_B64 + "=\n", "44 characters"),
        ("o\n1\n" + EMPTY_B64.replace("+", "-") + "\n", "44 characters"),  # URL alphabet
        ("o\n1\n" + base64.b64encode(b"\x00" * 31).decode() + "\n", "44 characters"),
        ("o\n1\n" + base64.b64encode(b"\x00" * 33).decode() + "\n", "44 characters"),
        ("o\n1\n" + EMPTY_B64[:-2] + "V=\n", "canonical"),  # non-zero unused bits
        ("o\n1\n\n", "44 characters"),
        ("o\n1\n" + EMPTY_B64 + "\n\n", "extension line 1 is empty"),
        ("o\n1\n" + EMPTY_B64 + "\next\n\n", "extension line 2 is empty"),
        ("o\n1\n" + EMPTY_B64 + "\nex\rt\n", "control"),
        ("o\ud800\n1\n" + EMPTY_B64 + "\n", "UTF-8"),
    ],
)
def test_rejects(body: str, fragment: str) -> None:
    with pytest.raises(errors.MalformedCheckpointError, match=fragment):
        parse(body)


def test_max_size_accepted() -> None:
    assert parse(f"o\n{MAX_TREE_SIZE}\n{EMPTY_B64}\n").size == MAX_TREE_SIZE


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("", 1, EMPTY_ROOT), "origin is empty"),
        (("a\nb", 1, EMPTY_ROOT), "control"),
        (("o", -1, EMPTY_ROOT), "outside"),
        (("o", MAX_TREE_SIZE + 1, EMPTY_ROOT), "outside"),
        (("o", True, EMPTY_ROOT), "integer"),
        (("o", 1, EMPTY_ROOT[:31]), "32 bytes"),
        (("o", 1, EMPTY_ROOT, ("",)), "extension line 1 is empty"),
        (("o", 1, EMPTY_ROOT, ("a\nb",)), "control"),
    ],
)
def test_constructor_rejects(args: tuple[object, ...], fragment: str) -> None:
    with pytest.raises(errors.MalformedCheckpointError, match=fragment):
        Checkpoint(*args)  # type: ignore[arg-type]
