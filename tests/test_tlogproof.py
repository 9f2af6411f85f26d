"""merkle.tlogproof: the c2sp.org/tlog-proof@v1 text format, strict both ways; and its offline
check (client.verify.check_tlog_proof) with log and witness keys."""

from __future__ import annotations

import base64

import pytest
from affidavit.client.errors import VerificationError
from affidavit.client.verify import TrustPolicy, check_tlog_proof
from affidavit.merkle import hashing, note, tlogproof
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.cosignature import CosignatureV1Signer
from affidavit.merkle.errors import MalformedProofError
from affidavit.merkle.tlogproof import TlogProof
from hypothesis import given
from hypothesis import strategies as st

from affidavit import merkle

LOG_SIGNER, LOG_KEY = note.generate_key("example.com/log")


def _witness() -> tuple[CosignatureV1Signer, str]:
    seed = bytes(range(32))
    signer = CosignatureV1Signer("w1.example", seed)
    return signer, signer.verifier().key_text()


def signed_checkpoint(entries: list[bytes], witnesses: list[CosignatureV1Signer]) -> str:
    root = hashing.root_hash(hashing.leaf_hashes(entries))
    body = Checkpoint("example.com/log", len(entries), root).format()
    return note.merge([note.sign(body, LOG_SIGNER), *(note.sign(body, w) for w in witnesses)])


SPEC_EXAMPLE_HEAD = (
    "c2sp.org/tlog-proof@v1\n"
    "extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\n"
    "index 73894\n"
    "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
    "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
)


def test_the_specs_shape_parses() -> None:
    cp = signed_checkpoint([b"a", b"b"], [])
    text = SPEC_EXAMPLE_HEAD + "\n" + cp
    proof = tlogproof.parse(text)
    assert proof.index == 73894
    assert proof.extra == b"age-v1.2.1-darwin-arm64.tar.gz"
    assert len(proof.hashes) == 2
    assert proof.checkpoint == cp
    assert proof.format() == text


@given(
    index=st.integers(0, 2**64 - 1),
    hashes=st.lists(st.binary(min_size=32, max_size=32), max_size=63),
    extra=st.none() | st.binary(min_size=1, max_size=100),
)
def test_format_and_parse_round_trip(index: int, hashes: list[bytes], extra: bytes | None) -> None:
    p = TlogProof(index, tuple(hashes), signed_checkpoint([b"x"], []), extra)
    text = p.format()
    assert tlogproof.parse(text) == p
    assert tlogproof.parse(text).format() == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("c2sp.org/tlog-proof@v2\nindex 0\n\n", "first line"),
        ("c2sp.org/tlog-proof@v1\nindex 01\n\n", "index"),
        ("c2sp.org/tlog-proof@v1\nindex -1\n\n", "index"),
        ("c2sp.org/tlog-proof@v1\n\n", "index"),
        ("c2sp.org/tlog-proof@v1\nindex 3\n", "blank line"),
        ("c2sp.org/tlog-proof@v1\nindex 3\nAAAA\n\n", "not 32"),
        ("c2sp.org/tlog-proof@v1\nindex 3\n" + "A" * 43 + "\n\n", "base64"),
        ("c2sp.org/tlog-proof@v1\nextra !!\nindex 3\n\n", "extra"),
        ("c2sp.org/tlog-proof@v1\nextra \nindex 3\n\n", "extra"),
        ("c2sp.org/tlog-proof@v1\nindex 3\nextra AAAA\n\n", "base64"),
        ("c2sp.org/tlog-proof@v1\nindex 3\n\nnot a note", "signed note"),
        (
            "c2sp.org/tlog-proof@v1\nindex 3\n"
            + (base64.b64encode(b"\0" * 32).decode() + "\n") * 64
            + "\n",
            "at most 63",
        ),
    ],
)
def test_malformed_proofs_are_refused(text: str, words: str) -> None:
    if text.endswith("\n\n"):
        text += signed_checkpoint([b"x"], [])
    with pytest.raises(MalformedProofError, match=words):
        tlogproof.parse(text)


def test_offline_check_with_witness_quorum() -> None:
    entries = [f"e{i}".encode() for i in range(7)]
    signer, witness_key = _witness()
    cosigned = signed_checkpoint(entries, [signer])
    leaves = hashing.leaf_hashes(entries)
    proof = TlogProof(4, tuple(merkle.inclusion_proof(leaves, 4, 7)), cosigned)
    policy = TrustPolicy(LOG_KEY, (witness_key,), 1)
    got, cp = check_tlog_proof(proof.format(), b"e4", policy)
    assert got.index == 4 and cp.witnesses == ("w1.example",)
    with pytest.raises(VerificationError, match="inclusion proof"):
        check_tlog_proof(proof.format(), b"e5", policy)
    unwitnessed = TlogProof(4, proof.hashes, signed_checkpoint(entries, []))
    with pytest.raises(VerificationError, match="needs 1"):
        check_tlog_proof(unwitnessed.format(), b"e4", policy)
    _, other_key = note.generate_key("example.com/log")
    with pytest.raises(VerificationError):
        check_tlog_proof(proof.format(), b"e4", TrustPolicy(other_key))
    with pytest.raises(VerificationError, match="not a tlog-proof"):
        check_tlog_proof("hello", b"e4", policy)
