"""Tests for merkle.cosignature: C2SP tlog-cosignature, Ed25519 cosignature/v1."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from affidavit.merkle import checkpoint, cosignature, errors, keys, note
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

# The example checkpoint of c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature, with its
# log signature and one witness cosignature (CC-BY-4.0, C2SP). The spec publishes no keys for
# it, so only the framing of the witness line can be checked.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_NOTE = (
    SPEC_BODY
    + "\n"
    + "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    + "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    + "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b"
    + "2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)

# A fixed witness key (the RFC 8032 section 7.1 TEST 1 secret key as the seed; its public key is
# d75a9801...511a, visible in the vkey) and a cosignature made with it at a fixed time. Not a
# published vector: the expected line was produced byte for byte by Go's
# golang.org/x/mod/sumdb/note Sign with a Go cosignature/v1 signer written from the spec, and
# accepted by Go's note.Open, outside this suite (Ed25519 is deterministic).
FIXED_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
FIXED_TIME = 1679315147
BODY = "example.com/affidavit/test\n5\nBmxtyEBT1RwtgIXttV0VMdS9TkNNLZm3eSwlxuZYwOY=\n"


def fixed_clock(at: int) -> Callable[[], int]:
    return lambda: at


def fixed_signer() -> cosignature.CosignatureV1Signer:
    return cosignature.CosignatureV1Signer(
        "witness.example/w1", FIXED_SEED, fixed_clock(FIXED_TIME)
    )


def test_signed_message_matches_the_spec_example() -> None:
    assert cosignature.signed_message(1679315147, SPEC_BODY.encode()) == (
        b"cosignature/v1\n"
        b"time 1679315147\n"
        b"example.com/behind-the-sofa\n"
        b"20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert cosignature.signed_message(0, b"a\nb\nc\n").startswith(b"cosignature/v1\ntime 0\n")


def test_spec_example_witness_line_framing() -> None:
    text, sigs = note.parse_note(SPEC_NOTE)
    assert text == SPEC_BODY
    witness = sigs[1]
    assert witness.name == "witness.example.com/w1"
    assert witness.key_hash.hex() == "8d66cf3f"
    assert len(witness.signature) == cosignature.SIGNATURE_SIZE == 72
    assert cosignature.timestamp_of(witness.signature) == 1679315147
    with pytest.raises(errors.InvalidSignatureError, match="72 bytes"):
        cosignature.timestamp_of(sigs[0].signature)
    cp = checkpoint.parse(text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)


def test_witness_key_uses_alg_0x04_in_hash_and_key_text() -> None:
    signer = fixed_signer()
    public = signer.verifier().public_key
    assert signer.key_hash == hashlib.sha256(b"witness.example/w1\n\x04" + public).digest()[:4]
    vkey_text = signer.verifier().key_text()
    name, hash_hex, material = vkey_text.split("+", 2)
    assert name == "witness.example/w1"
    assert hash_hex == signer.key_hash.hex()
    assert base64.b64decode(material) == b"\x04" + public
    # The same Ed25519 key as a note key (0x01) has another hash: they never match each other.
    ed = keys.Ed25519Signer("witness.example/w1", FIXED_SEED)
    assert ed.key_hash != signer.key_hash
    assert ed.verifier().public_key == public


def test_fixed_cosignature_known_answer() -> None:
    signed = note.sign(BODY, fixed_signer())
    _, sigs = note.parse_note(signed)
    assert sigs[0].key_hash == fixed_signer().key_hash
    assert sigs[0].signature[:8] == FIXED_TIME.to_bytes(8, "big")
    assert signed == BODY + "\n" + EXPECTED_FIXED_LINE
    assert fixed_signer().verifier().key_text() == EXPECTED_FIXED_VKEY


EXPECTED_FIXED_VKEY = "witness.example/w1+eb762cc2+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
EXPECTED_FIXED_LINE = (
    "— witness.example/w1 63YswgAAAABkGFDLAisSk7mC7Uqh+hcfmRQDbGncQgb1RGgi6sxa2Vb4ogv/"
    "gbx0wVQJqYRm7fEr6H+hjTztNlWYz3+fC1P/7V1mDQ==\n"
)


def test_round_trip_through_note_with_timestamp() -> None:
    skey, vkey = keys.generate_key("witness.example/w2", keys.ALG_COSIGNATURE_V1)
    signer = cosignature.CosignatureV1Signer.from_key_text(skey, clock=fixed_clock(1_700_000_000))
    cosigned = note.sign(BODY, signer)
    n = note.open_note(cosigned, [vkey])
    assert n.text == BODY
    assert n.signatures[0].timestamp == 1_700_000_000
    # Dispatch on the algorithm byte gives the cosignature classes.
    assert isinstance(note.parse_signer(skey), cosignature.CosignatureV1Signer)
    assert isinstance(note.parse_verifier(vkey), cosignature.CosignatureV1Verifier)
    assert note.open(note.sign(BODY, skey), [note.parse_verifier(vkey)]) == BODY


def test_default_clock_is_now() -> None:
    import time

    before = int(time.time())
    signer = cosignature.CosignatureV1Signer("w", FIXED_SEED)
    stamp = cosignature.timestamp_of(signer.sign(BODY.encode()))
    assert before <= stamp <= int(time.time())


def _replace_signature(signed: str, index: int, new_sig: bytes) -> str:
    text, sigs = note.parse_note(signed)
    lines = [s.line() for s in sigs]
    old = sigs[index]
    lines[index] = note.Signature(old.name, old.key_hash, new_sig).line()
    return text + "\n" + "".join(lines)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, cosignature.MAX_TIMESTAMP).filter(lambda t: t != FIXED_TIME))
def test_altered_timestamp_fails(new_time: int) -> None:
    signed = note.sign(BODY, fixed_signer())
    _, sigs = note.parse_note(signed)
    altered = _replace_signature(signed, 0, new_time.to_bytes(8, "big") + sigs[0].signature[8:])
    with pytest.raises(errors.InvalidSignatureError):
        note.open(altered, [fixed_signer().verifier()])


def test_altered_body_and_signature_fail() -> None:
    signed = note.sign(BODY, fixed_signer())
    verifier = fixed_signer().verifier()
    with pytest.raises(errors.InvalidSignatureError):
        note.open(signed.replace("\n5\n", "\n6\n"), [verifier])
    _, sigs = note.parse_note(signed)
    sig = bytearray(sigs[0].signature)
    sig[-1] ^= 1
    with pytest.raises(errors.InvalidSignatureError):
        note.open(_replace_signature(signed, 0, bytes(sig)), [verifier])
    with pytest.raises(errors.InvalidSignatureError):
        note.open(_replace_signature(signed, 0, bytes(sig[:-1])), [verifier])


def test_signature_covers_extension_lines() -> None:
    body = BODY + "Extendo\n"
    signed = note.sign(body, fixed_signer())
    assert note.open(signed, [fixed_signer().verifier()]) == body
    with pytest.raises(errors.InvalidSignatureError):
        note.open(signed.replace("Extendo", "Extendi"), [fixed_signer().verifier()])


def test_note_key_cannot_open_a_cosignature() -> None:
    # The same public key as an Ed25519 note key has another key hash, so the line is unknown.
    signed = note.sign(BODY, fixed_signer())
    ed_vkey = keys.Ed25519Signer("witness.example/w1", FIXED_SEED).verifier().key_text()
    with pytest.raises(errors.UnverifiedNoteError):
        note.open(signed, [ed_vkey])


def test_timestamp_beyond_2_63_is_rejected() -> None:
    with pytest.raises(ValueError):
        fixed_signer().sign_at(BODY.encode(), 2**63)
    with pytest.raises(ValueError):
        fixed_signer().sign_at(BODY.encode(), -1)
    # A well-formed Ed25519 signature over such a timestamp still does not verify.
    stamp = 2**63
    message = b"cosignature/v1\ntime %d\n" % stamp + BODY.encode()
    raw = Ed25519PrivateKey.from_private_bytes(FIXED_SEED).sign(message)
    sig = stamp.to_bytes(8, "big") + raw
    assert not fixed_signer().verifier().verify(BODY.encode(), sig)


def test_cosigner_signs_only_checkpoints() -> None:
    with pytest.raises(errors.MalformedCheckpointError):
        note.sign("not a checkpoint\n", fixed_signer())
    with pytest.raises(errors.MalformedCheckpointError):
        fixed_signer().sign(b"\xff\n1\n2\n")


def test_verifier_rejects_short_bodies() -> None:
    # Go's cosigner never signs a body of fewer than three lines; a signature over one is refused.
    body = b"a\nb"
    stamp = 5
    raw = Ed25519PrivateKey.from_private_bytes(FIXED_SEED).sign(
        cosignature.signed_message(stamp, body)
    )
    assert not fixed_signer().verifier().verify(body, stamp.to_bytes(8, "big") + raw)


def test_kind_specific_constructors_reject_other_algorithm() -> None:
    skey, vkey = keys.generate_key("w", keys.ALG_ED25519)
    with pytest.raises(errors.MalformedKeyError, match="not a cosignature/v1 key"):
        cosignature.CosignatureV1Signer.from_key_text(skey)
    with pytest.raises(errors.MalformedKeyError, match="not a cosignature/v1 key"):
        cosignature.CosignatureV1Verifier.from_key_text(vkey)


def test_witness_quorum_flow() -> None:
    """A log signs, witnesses add cosignatures, the server merges, a client counts its quorum."""
    log_skey, log_vkey = note.generate_key("example.com/affidavit/test")
    witnesses = [keys.generate_key(f"w{i}.example", keys.ALG_COSIGNATURE_V1) for i in range(3)]
    signed = note.sign(BODY, log_skey)
    cosigned = [
        note.add_signatures(
            signed, cosignature.CosignatureV1Signer.from_key_text(s, clock=fixed_clock(100 + i))
        )
        for i, (s, _) in enumerate(witnesses)
    ]
    merged = note.merge(cosigned)
    n = note.open_note(merged, [log_vkey, witnesses[0][1], witnesses[2][1]])
    log_key = note.parse_verifier(log_vkey)
    assert n.verified_by(log_key.name, log_key.key_hash) is not None
    stamps = {s.name: s.timestamp for s in n.signatures}
    assert stamps == {"example.com/affidavit/test": None, "w0.example": 100, "w2.example": 102}
    assert [s.name for s in n.unverified_signatures] == ["w1.example"]
    assert checkpoint.parse(n.text).size == 5
