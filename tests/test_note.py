"""Tests for merkle.keys and merkle.note: C2SP signed-note keys and notes, Go-compatible."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from affidavit.merkle import checkpoint, errors, keys, note
from hypothesis import given, settings
from hypothesis import strategies as st

VECTORS = Path(__file__).parent / "vectors"

# Known answers from Go's golang.org/x/mod/sumdb/note (note.go package doc and note_test.go,
# BSD-3-Clause, The Go Authors): the PeterNeumann and EnochRoot keys and their signatures.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"
PETER_SIGNED = GO_TEXT + "\n" + PETER_SIG


def real_notes() -> dict[str, Any]:
    with (VECTORS / "real-signed-notes.json").open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def alter_b64(sig_line: str, at: int, insert: str) -> str:
    return sig_line[:at] + insert + sig_line[at:]


# --- keys -------------------------------------------------------------------------------------


def test_go_known_answer_key_texts() -> None:
    skey = keys.parse_signer_key(PETER_SKEY)
    assert skey.name == "PeterNeumann"
    assert skey.alg == keys.ALG_ED25519
    assert skey.key_hash == bytes.fromhex("c74f20a3")
    assert skey.text() == PETER_SKEY
    assert skey.verifier_key().text() == PETER_VKEY
    vkey = keys.parse_verifier_key(PETER_VKEY)
    assert vkey.public_key == skey.public_key
    assert vkey.text() == PETER_VKEY
    # The key hash is SHA-256(name ‖ '\n' ‖ 0x01 ‖ public key)[:4], in full here.
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + vkey.public_key).digest()
    assert keys.key_hash("PeterNeumann", b"\x01" + vkey.public_key) == digest[:4]


def test_key_text_seed_does_not_appear_in_repr() -> None:
    skey = keys.parse_signer_key(PETER_SKEY)
    signer = keys.Ed25519Signer.from_key_text(PETER_SKEY)
    secret = PETER_SKEY.rsplit("+", 1)[1]
    assert secret not in repr(skey)
    assert skey.seed.hex() not in repr(skey)
    assert secret not in repr(signer)


def _manglings(text: str) -> list[str]:
    """Go's note_test.go manglings: every proper substring, and every byte bumped by one."""
    out = [text[i:j] for i in range(len(text) + 1) for j in range(i + 1, len(text) + 1)]
    out.remove(text)
    out += [text[:i] + chr(ord(text[i]) + 1) + text[i + 1 :] for i in range(len(text))]
    return out


def test_mangled_verifier_keys_rejected() -> None:
    for bad in _manglings(PETER_VKEY):
        with pytest.raises(errors.MalformedKeyError):
            keys.parse_verifier_key(bad)
    # From Go's TestNewVerifier: wrong key length and unknown algorithm, each with a matching hash.
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(errors.MalformedKeyError):
            keys.parse_verifier_key(bad)


def test_mangled_signer_keys_rejected_without_leaking_the_seed() -> None:
    secret = PETER_SKEY.rsplit("+", 1)[1]
    for bad in _manglings(PETER_SKEY):
        with pytest.raises(errors.MalformedKeyError) as info:
            keys.parse_signer_key(bad)
        message = str(info.value)
        # No run of 8+ characters of the key material may appear in the message.
        for i in range(len(secret) - 7):
            assert secret[i : i + 8] not in message, (bad, message)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("PeterNeumann", "form"),
        ("PeterNeumann+c74f20a3", "form"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "empty"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "white space"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex"),
        ("PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
        ("PeterNeumann+c74f20a3+", "empty"),
        ("PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "unknown key alg"),
        ("PeterNeumann+c74f20a3+ARpc", "32 bytes"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
    ],
)
def test_verifier_key_error_messages(text: str, fragment: str) -> None:
    with pytest.raises(errors.MalformedKeyError, match=fragment):
        keys.parse_verifier_key(text)


def test_uppercase_key_hash_accepted_like_go() -> None:
    # Go parses the hash with strconv.ParseUint(_, 16, 32), which takes either case.
    assert keys.parse_verifier_key(PETER_VKEY.replace("c74f20a3", "C74F20A3")).text() == PETER_VKEY


@pytest.mark.parametrize(
    "name",
    ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2028b", "a\u3000b", "a\u0085b", "\ud800"],
)
def test_invalid_key_names(name: str) -> None:
    assert not keys.is_valid_name(name)
    with pytest.raises(errors.MalformedKeyError):
        keys.generate_key(name)
    with pytest.raises(errors.MalformedKeyError):
        note.generate_key(name)


@pytest.mark.parametrize("name", ["a", "example.com/log", "Ünïcødé", "a\u200bb", "a\x7fb"])
def test_valid_key_names(name: str) -> None:
    # U+200B (zero width space) is not White_Space in Unicode, so Go accepts it too.
    assert keys.is_valid_name(name)


# Go's base64.StdEncoding.DecodeString verdicts (checked with Go 1.19): padding required and only
# at the end, non-zero unused bits accepted. (Go also skips '\r' and '\n' inside the input; those
# cannot occur in a note, and in key texts we reject them.)
@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("", True),
        ("QQ==", True),
        ("QUI=", True),
        ("QUJD", True),
        ("QR==", True),
        ("QUK=", True),
        ("QQ=", False),
        ("QQ", False),
        ("Q===", False),
        ("QUJD=", False),
        ("QUJD==", False),
        ("QUJD====", False),
        ("QUJD=QUJD", False),
        ("QQ==QUJD", False),
        ("QUI==", False),
        ("QU I=", False),
        ("-_-_", False),
    ],
)
def test_base64_acceptance_matches_go(text: str, ok: bool) -> None:
    assert (keys.decode_base64(text) is not None) == ok


def test_size_limit_constants() -> None:
    assert note.MAX_NOTE_SIZE == 1 << 20
    assert note.MAX_SIGNATURES == 100


def test_generate_key_round_trip() -> None:
    skey_text, vkey_text = note.generate_key("example.com/log")
    assert skey_text.startswith("PRIVATE+KEY+example.com/log+")
    skey = keys.parse_signer_key(skey_text)
    vkey = keys.parse_verifier_key(vkey_text)
    assert skey.alg == vkey.alg == keys.ALG_ED25519
    assert skey.verifier_key() == vkey
    assert vkey_text.split("+")[1] == vkey.key_hash.hex()
    assert base64.b64decode(vkey_text.split("+", 2)[2])[0] == 0x01
    signer = note.parse_signer(skey_text)
    verifier = note.parse_verifier(vkey_text)
    assert isinstance(signer, keys.Ed25519Signer)
    assert isinstance(verifier, keys.Ed25519Verifier)
    sig = signer.sign(b"hi")
    assert verifier.verify(b"hi", sig)
    assert not verifier.verify(b"hj", sig)
    assert not verifier.verify(b"hi", sig[:-1])
    assert not verifier.verify(b"hi", bytes([sig[0] ^ 1]) + sig[1:])


def test_kind_specific_constructors_reject_other_algorithm() -> None:
    skey_text, vkey_text = keys.generate_key("w", keys.ALG_COSIGNATURE_V1)
    with pytest.raises(errors.MalformedKeyError, match="not an Ed25519"):
        keys.Ed25519Signer.from_key_text(skey_text)
    with pytest.raises(errors.MalformedKeyError, match="not an Ed25519"):
        keys.Ed25519Verifier.from_key_text(vkey_text)


# --- Go known answers for notes -----------------------------------------------------------------


def test_sign_matches_go_byte_for_byte() -> None:
    # Ed25519 is deterministic, so our note must equal Go's TestSign output exactly.
    assert note.sign(GO_TEXT, PETER_SKEY) == PETER_SIGNED
    assert note.sign(GO_TEXT, keys.Ed25519Signer.from_key_text(PETER_SKEY)) == PETER_SIGNED
    assert note.sign(GO_TEXT, [PETER_SKEY]) == PETER_SIGNED


def test_open_go_notes() -> None:
    assert note.open(PETER_SIGNED, [PETER_VKEY]) == GO_TEXT
    assert note.open(PETER_SIGNED.encode(), PETER_VKEY) == GO_TEXT
    n = note.open_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [PETER_VKEY])
    assert n.text == GO_TEXT
    assert [(s.name, s.key_hash.hex()) for s in n.signatures] == [("PeterNeumann", "c74f20a3")]
    assert [(s.name, s.key_hash.hex()) for s in n.unverified_signatures] == [
        ("EnochRoot", "af0cfe78")
    ]
    both = note.open_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [PETER_VKEY, ENOCH_VKEY])
    assert [s.name for s in both.signatures] == ["PeterNeumann", "EnochRoot"]
    assert both.unverified_signatures == ()
    assert [s.line() for s in both.signatures] == [PETER_SIG, ENOCH_SIG]
    assert both.verified_by("EnochRoot", bytes.fromhex("af0cfe78")) is not None
    assert both.verified_by("EnochRoot", bytes.fromhex("af0cfe79")) is None


def test_open_with_no_known_key_is_unverified() -> None:
    with pytest.raises(errors.UnverifiedNoteError):
        note.open(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])


def test_ambiguous_verifiers_like_go() -> None:
    # Go's VerifierList: a duplicated verifier is an error only once a signature needs it.
    with pytest.raises(errors.MalformedKeyError, match="ambiguous key EnochRoot\\+af0cfe78"):
        note.open(GO_TEXT + "\n" + ENOCH_SIG, [ENOCH_VKEY, PETER_VKEY, ENOCH_VKEY])
    assert note.open(PETER_SIGNED, [ENOCH_VKEY, PETER_VKEY, ENOCH_VKEY]) == GO_TEXT


def test_invalid_signature_from_known_key() -> None:
    # Go's TestOpen: four base64 characters spliced into the signature.
    bad = GO_TEXT + "\n" + alter_b64(PETER_SIG, 60, "ABCD")
    with pytest.raises(errors.InvalidSignatureError, match="PeterNeumann\\+c74f20a3"):
        note.open(bad, [PETER_VKEY])


def test_known_bad_signature_fails_even_with_another_valid_one() -> None:
    bad = GO_TEXT + "\n" + PETER_SIG + alter_b64(ENOCH_SIG, 60, "ABCD")
    with pytest.raises(errors.InvalidSignatureError, match="EnochRoot"):
        note.open(bad, [PETER_VKEY, ENOCH_VKEY])
    # ... but is ignored when its key is unknown.
    assert note.open(bad, [PETER_VKEY]) == GO_TEXT


def test_duplicate_signatures_like_go() -> None:
    # Go's TestOpen: repeats of a known key's signature are dropped, and so are identical
    # repeats of an unknown one; a different unknown line is kept.
    msg = (
        GO_TEXT
        + "\n"
        + PETER_SIG
        + PETER_SIG
        + ENOCH_SIG
        + ENOCH_SIG
        + alter_b64(ENOCH_SIG, 60, "ABCD")
    )
    n = note.open_note(msg, [PETER_VKEY])
    assert len(n.signatures) == 1
    assert len(n.unverified_signatures) == 2
    assert n.unverified_signatures[0].line() == ENOCH_SIG
    assert n.unverified_signatures[1].line() == alter_b64(ENOCH_SIG, 60, "ABCD")


def test_later_bad_signature_by_same_known_key_is_not_checked() -> None:
    msg = GO_TEXT + "\n" + PETER_SIG + alter_b64(PETER_SIG, 60, "ABCD")
    assert note.open(msg, [PETER_VKEY]) == GO_TEXT


@pytest.mark.parametrize(
    "msg",
    [
        # Go's TestOpen bad messages.
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + f"— Bad Name {PETER_B64}",
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        # More.
        GO_TEXT + "\n" + PETER_SIG.replace("— ", "-- "),
        GO_TEXT + "\n" + PETER_SIG.replace("— ", "—"),
        GO_TEXT + "\n" + PETER_SIG.replace("— ", "—  "),
        GO_TEXT + "\n" + "— PeterNeumann\n",
        GO_TEXT + "\n" + "— PeterNeumann \n",
        GO_TEXT + "\n" + PETER_SIG.replace("=\n", "\n"),  # missing padding
        GO_TEXT + "\n" + PETER_SIG.replace("=\n", "==\n"),  # excess padding
        GO_TEXT + "\n" + PETER_SIG.replace("=\n", "= \n"),  # trailing space
        GO_TEXT + "\n" + PETER_SIG.replace("x08go", "x08g_"),  # URL alphabet
        GO_TEXT + "\n" + "— PeterNeumann x08gow==\n",  # 4 bytes: a key hash, no signature
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter+Neumann"),
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter\u00a0Neumann"),
        GO_TEXT + "\n" + PETER_SIG + "\n",
        GO_TEXT + "\n" + "\n" + PETER_SIG[:-1] + "\r\n",
        GO_TEXT.replace("problem,", "problem,\t") + "\n" + PETER_SIG,
        GO_TEXT.replace("problem,", "problem,\x1f") + "\n" + PETER_SIG,
        GO_TEXT.replace("problem,", "problem,\x00") + "\n" + PETER_SIG,
        "\ud800" + GO_TEXT + "\n" + PETER_SIG,
    ],
)
def test_malformed_notes(msg: str) -> None:
    with pytest.raises(errors.MalformedNoteError):
        note.open(msg, [PETER_VKEY])
    with pytest.raises(errors.MalformedNoteError):
        note.parse_note(msg)


def test_five_byte_signature_parses_but_is_invalid() -> None:
    # The parse minimum: a 4-byte key hash and one signature byte.
    msg = GO_TEXT + "\n" + "— PeterNeumann x08goxA=\n"
    _, sigs = note.parse_note(msg)
    assert len(sigs[0].signature) == 1
    with pytest.raises(errors.InvalidSignatureError):
        note.open(msg, [PETER_VKEY])


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff" + PETER_SIGNED.encode(),  # Go's TestOpen: invalid UTF-8
        PETER_SIGNED.encode().replace(b"you", b"y\xc3u"),  # truncated sequence
        PETER_SIGNED.encode().replace(b"you", b"\xed\xa0\x80"),  # encoded surrogate
        PETER_SIGNED.encode().replace(b"you", b"\xc0\xaf"),  # overlong '/'
    ],
)
def test_non_utf8_is_malformed(raw: bytes) -> None:
    with pytest.raises(errors.MalformedNoteError, match="UTF-8"):
        note.open(raw, [PETER_VKEY])


def test_delete_and_c1_controls_are_allowed_like_go() -> None:
    # Go only rejects runes below U+0020 (other than newline).
    text = "a\x7fb\u0085c\n"
    signed = note.sign(text, PETER_SKEY)
    assert note.open(signed, [PETER_VKEY]) == text


def test_signature_count_limit() -> None:
    assert note.open(GO_TEXT + "\n" + PETER_SIG * note.MAX_SIGNATURES, [PETER_VKEY]) == GO_TEXT
    for verifiers in ([PETER_VKEY], []):
        with pytest.raises(errors.MalformedNoteError, match="at most 100"):
            note.open(GO_TEXT + "\n" + PETER_SIG * (note.MAX_SIGNATURES + 1), verifiers)


def test_size_limit() -> None:
    filler = "x" * 1000 + "\n"
    text = filler * (note.MAX_NOTE_SIZE // len(filler))
    with pytest.raises(errors.MalformedNoteError, match="larger than"):
        note.sign(text + filler, PETER_SKEY)
    big = text + filler + "\n" + PETER_SIG
    with pytest.raises(errors.MalformedNoteError, match="larger than"):
        note.open(big, [PETER_VKEY])
    with pytest.raises(errors.MalformedNoteError, match="larger than"):
        note.open(big.encode(), [PETER_VKEY])
    # Multi-byte characters count as their UTF-8 size.
    wide = "\u2014" * (note.MAX_NOTE_SIZE // 3 + 1) + "\n"
    with pytest.raises(errors.MalformedNoteError, match="larger than"):
        note.parse_note(wide + "\n" + PETER_SIG)
    # Just under the limit is fine.
    room = note.MAX_NOTE_SIZE - len(PETER_SIG.encode()) - 2
    fits = "y" * room + "\n"
    assert note.open(note.sign(fits, PETER_SKEY), [PETER_VKEY]) == fits


# --- real notes ---------------------------------------------------------------------------------


def test_real_sumdb_notes_open_and_parse_as_checkpoints() -> None:
    data = real_notes()
    for entry in data["notes"]:
        text = note.open(entry["signed_note"], [data["vkey"]])
        cp = checkpoint.parse(text)
        assert cp.origin == entry["origin"] == "go.sum database tree"
        assert cp.size == entry["size"]
        assert cp.root_hash.hex() == entry["root_hex"]
        assert cp.format() == text


def test_real_sumdb_notes_fail_when_size_changes() -> None:
    data = real_notes()
    for entry in data["notes"]:
        size = str(entry["size"])
        altered = entry["signed_note"].replace(f"\n{size}\n", f"\n{int(size) + 1}\n", 1)
        assert altered != entry["signed_note"]
        with pytest.raises(errors.InvalidSignatureError, match=r"sum\.golang\.org\+033de0ae"):
            note.open(altered, [data["vkey"]])


def test_real_sumdb_note_with_other_keys_is_unverified() -> None:
    data = real_notes()
    with pytest.raises(errors.UnverifiedNoteError):
        note.open(data["notes"][0]["signed_note"], [PETER_VKEY, ENOCH_VKEY])


# --- behaviour with fresh keys -------------------------------------------------------------------


def test_signed_by_another_key_is_unverified() -> None:
    skey, _ = note.generate_key("example.com/log")
    _, other_vkey = note.generate_key("example.com/log")
    signed = note.sign("hello\n", skey)
    with pytest.raises(errors.UnverifiedNoteError):
        note.open(signed, [other_vkey])


def test_same_key_under_another_name_is_unknown() -> None:
    skey_text, _ = note.generate_key("example.com/log")
    skey = keys.parse_signer_key(skey_text)
    renamed_vkey = keys.format_verifier_key("example.com/other", keys.ALG_ED25519, skey.public_key)
    signed = note.sign("hello\n", skey_text)
    with pytest.raises(errors.UnverifiedNoteError):
        note.open(signed, [renamed_vkey])
    # A signature line claiming the right name with the other name's hash is unknown too.
    renamed = keys.parse_verifier_key(renamed_vkey)
    _, sigs = note.parse_note(signed)
    forged = note.Signature("example.com/log", renamed.key_hash, sigs[0].signature)
    with pytest.raises(errors.UnverifiedNoteError):
        note.open("hello\n\n" + forged.line(), [renamed_vkey])


def test_unknown_keys_ignored_when_a_known_one_verifies() -> None:
    log_skey, log_vkey = note.generate_key("example.com/log")
    other_skeys = [note.generate_key(f"other{i}")[0] for i in range(3)]
    signed = note.sign("body\n", [other_skeys[0], log_skey, *other_skeys[1:]])
    n = note.open_note(signed, [log_vkey])
    assert [s.name for s in n.signatures] == ["example.com/log"]
    assert [s.name for s in n.unverified_signatures] == ["other0", "other1", "other2"]


def test_multiple_signatures_all_verify() -> None:
    pairs = [note.generate_key(f"example.com/k{i}") for i in range(5)]
    signers = [note.parse_signer(s) for s, _ in pairs]
    signed = note.sign("multi\nline\n\nbody\n", signers)
    n = note.open_note(signed, [v for _, v in pairs])
    assert n.text == "multi\nline\n\nbody\n"
    assert [s.name for s in n.signatures] == [f"example.com/k{i}" for i in range(5)]
    verifiers = [note.parse_verifier(v) for _, v in pairs]
    assert note.open(signed, verifiers[2]) == "multi\nline\n\nbody\n"


@settings(max_examples=50, deadline=None)
@given(
    st.data(),
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"),
        min_size=1,
    ),
)
def test_one_changed_character_breaks_the_signature(data: st.DataObject, word: str) -> None:
    skey, vkey = note.generate_key("example.com/log")
    text = "origin\n42\n" + "".join(c for c in word if ord(c) >= 0x20) + "x\n"
    signed = note.sign(text, skey)
    i = data.draw(st.integers(0, len(text) - 2).filter(lambda k: text[k] != "\n"))
    replacement = data.draw(st.sampled_from("abcXYZ019").filter(lambda c: c != text[i]))
    altered = signed[:i] + replacement + signed[i + 1 :]
    with pytest.raises(errors.InvalidSignatureError):
        note.open(altered, [vkey])


_TEXT_CHARS = st.characters(blacklist_categories=["Cs"], min_codepoint=0x20) | st.just("\n")
_NAMES = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="+"
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=_TEXT_CHARS, max_size=200), st.lists(_NAMES, min_size=1, max_size=4))
def test_sign_open_round_trip(body: str, names: list[str]) -> None:
    text = body + "\n"
    pairs = [note.generate_key(n) for n in dict.fromkeys(names)]
    signed = note.sign(text, [s for s, _ in pairs])
    n = note.open_note(signed, [v for _, v in pairs])
    assert n.text == text
    assert len(n.signatures) == len(pairs)
    parsed_text, sigs = note.parse_note(signed.encode())
    assert parsed_text == text
    assert "".join(s.line() for s in sigs) == signed[len(text) + 1 :]


def test_sign_rejects_bad_text_and_signers() -> None:
    with pytest.raises(errors.MalformedNoteError, match="newline"):
        note.sign("abc", PETER_SKEY)  # Go's TestSign: short text
    with pytest.raises(errors.MalformedNoteError, match="control"):
        note.sign("a\rb\n", PETER_SKEY)
    with pytest.raises(errors.MalformedNoteError, match="UTF-8"):
        note.sign("a\ud800\n", PETER_SKEY)
    with pytest.raises(ValueError, match="at least one signer"):
        note.sign("a\n", [])
    with pytest.raises(ValueError, match="more than once"):
        note.sign("a\n", [PETER_SKEY, PETER_SKEY])
    with pytest.raises(errors.MalformedKeyError):
        note.sign("a\n", "not a key")

    class BadName:
        name = "bad name"
        key_hash = b"\x00\x00\x00\x00"

        def sign(self, message: bytes) -> bytes:
            return b"x"

    with pytest.raises(errors.MalformedKeyError, match="invalid signer"):
        note.sign("a\n", BadName())


def test_add_signatures_appends_and_replaces_same_key() -> None:
    other_skey, other_vkey = note.generate_key("example.com/witness")
    cosigned = note.add_signatures(PETER_SIGNED, other_skey)
    assert cosigned.startswith(PETER_SIGNED)
    n = note.open_note(cosigned, [PETER_VKEY, other_vkey])
    assert [s.name for s in n.signatures] == ["PeterNeumann", "example.com/witness"]
    # Re-signing with a key already present replaces that line (Go's Sign does the same).
    assert note.add_signatures(PETER_SIGNED, PETER_SKEY) == PETER_SIGNED
    again = note.add_signatures(cosigned, PETER_SKEY)
    assert again == GO_TEXT + "\n" + cosigned[len(PETER_SIGNED) :] + PETER_SIG
    with pytest.raises(errors.MalformedNoteError):
        note.add_signatures(GO_TEXT, other_skey)


def test_add_signatures_respects_the_signature_limit() -> None:
    full = (
        GO_TEXT
        + "\n"
        + "".join(note.Signature(f"k{i}", b"\x00\x00\x00\x00", b"\x01").line() for i in range(100))
    )
    with pytest.raises(errors.MalformedNoteError, match="at most 100"):
        note.add_signatures(full, PETER_SKEY)


def test_merge_combines_signature_lines() -> None:
    w1_skey, w1_vkey = note.generate_key("w1")
    w2_skey, w2_vkey = note.generate_key("w2")
    a = note.add_signatures(PETER_SIGNED, w1_skey)
    b = note.add_signatures(PETER_SIGNED, w2_skey)
    merged = note.merge([a, b.encode(), PETER_SIGNED])
    n = note.open_note(merged, [PETER_VKEY, w1_vkey, w2_vkey])
    assert [s.name for s in n.signatures] == ["PeterNeumann", "w1", "w2"]
    assert note.merge([a]) == a
    with pytest.raises(errors.MalformedNoteError, match="different texts"):
        note.merge([a, note.sign("other\n", w1_skey)])
    with pytest.raises(ValueError, match="no notes"):
        note.merge([])


def test_merge_keeps_first_line_per_key() -> None:
    other = note.Signature("PeterNeumann", bytes.fromhex("c74f20a3"), b"\x00" * 64).line()
    merged = note.merge([PETER_SIGNED, GO_TEXT + "\n" + other])
    assert merged == PETER_SIGNED
