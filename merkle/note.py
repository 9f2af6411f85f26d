"""C2SP signed-note: signing, parsing and verifying notes, exactly as Go's ``sumdb/note`` does.

A signed note is a text ending in '\\n', a blank line, and one or more signature lines
``— <key name> <base64(4-byte key hash ‖ signature)>\\n`` (U+2014 EM DASH, space). The text is
separated from the signatures by the *last* blank line. Notes are valid UTF-8 with no ASCII
control characters other than '\\n'.

Verification follows Go's note.Open: signatures from unknown keys (name and key hash not both
matching a given verifier) are ignored; a known key's signature that fails is an error for the
whole note (InvalidSignatureError), not skipped; repeated signatures by one known key after the
first are dropped unchecked; a note with no verified signature is rejected
(UnverifiedNoteError). Two verifiers with the same name and key hash make any signature under
that name and hash ambiguous, which is an error (MalformedKeyError), as in Go's VerifierList.

Limits: at most MAX_SIGNATURES (100, Go's limit) signature lines, and MAX_NOTE_SIZE (1 MiB of
UTF-8) in all; Go's Open has no size limit, we add one so a hostile peer cannot make us parse
arbitrarily large input. ``sign`` and friends never produce a note that ``open_note`` would
reject as malformed.

Invariant: every note this module emits opens under the verifiers of its signers, in Go too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

from affidavit.merkle import errors
from affidavit.merkle.cosignature import CosignatureV1Signer, CosignatureV1Verifier
from affidavit.merkle.keys import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    KEY_HASH_SIZE,
    Ed25519Signer,
    Ed25519Verifier,
    Signer,
    Verifier,
    decode_base64,
    encode_base64,
    name_problem,
    parse_signer_key,
    parse_verifier_key,
)
from affidavit.merkle.keys import generate_key as _generate_key

MAX_NOTE_SIZE: Final = 1 << 20
"""Largest note, in UTF-8 bytes, that is parsed or produced (1 MiB)."""

MAX_SIGNATURES: Final = 100
"""Most signature lines a note may carry (Go's note.Open limit)."""

SIGNATURE_PREFIX: Final = "\u2014 "  # EM DASH, SPACE

# ASCII control characters other than '\n' (Go: r < 0x20 && r != '\n').
_CONTROL: Final = re.compile(r"[\x00-\x09\x0b-\x1f]")

SignerInput: TypeAlias = "str | Signer | Iterable[str | Signer]"
VerifierInput: TypeAlias = "str | Verifier | Iterable[str | Verifier]"


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, 4-byte key hash, and the signature bytes that follow it.

    ``timestamp`` is set only on a *verified* cosignature/v1 signature (the witness's Unix time);
    it is None otherwise.
    """

    name: str
    key_hash: bytes
    signature: bytes
    timestamp: int | None = None

    @property
    def base64(self) -> str:
        return encode_base64(self.key_hash + self.signature)

    def line(self) -> str:
        """The signature line, final newline included."""
        return f"{SIGNATURE_PREFIX}{self.name} {self.base64}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the signatures that verified, and those from unknown keys.

    Both tuples keep the order of the lines in the note; ``signatures`` is never empty for a
    note returned by ``open_note``.
    """

    text: str
    signatures: tuple[Signature, ...]
    unverified_signatures: tuple[Signature, ...] = ()

    def verified_by(self, name: str, key_hash: bytes) -> Signature | None:
        """The verified signature by the key (name, key_hash), if there is one."""
        for sig in self.signatures:
            if sig.name == name and sig.key_hash == key_hash:
                return sig
        return None


def generate_key(name: str) -> tuple[str, str]:
    """A fresh Ed25519 note key pair: (signer key text, verifier key text)."""
    return _generate_key(name, ALG_ED25519)


def parse_signer(text: str) -> Signer:
    """The signer for a signer key text, by its algorithm byte (0x01 Ed25519, 0x04 witness)."""
    skey = parse_signer_key(text)
    if skey.alg == ALG_COSIGNATURE_V1:
        return CosignatureV1Signer(skey.name, skey.seed)
    return Ed25519Signer(skey.name, skey.seed)


def parse_verifier(text: str) -> Verifier:
    """The verifier for a verifier key text, by its algorithm byte (0x01 or 0x04)."""
    vkey = parse_verifier_key(text)
    if vkey.alg == ALG_COSIGNATURE_V1:
        return CosignatureV1Verifier(vkey.name, vkey.public_key)
    return Ed25519Verifier(vkey.name, vkey.public_key)


def _as_signers(signers: SignerInput) -> list[Signer]:
    items: Iterable[str | Signer]
    items = [signers] if isinstance(signers, str | Signer) else signers
    out = [parse_signer(s) if isinstance(s, str) else s for s in items]
    if not out:
        raise ValueError("at least one signer is required")
    seen: set[tuple[str, bytes]] = set()
    for s in out:
        problem = name_problem(s.name)
        if problem is not None:
            raise errors.MalformedKeyError(f"invalid signer: {problem}")
        if len(s.key_hash) != KEY_HASH_SIZE:
            raise errors.MalformedKeyError(f"invalid signer {s.name!r}: key hash is not 4 bytes")
        if (s.name, s.key_hash) in seen:
            raise ValueError(f"signer {s.name}+{s.key_hash.hex()} is given more than once")
        seen.add((s.name, s.key_hash))
    return out


def _as_verifiers(verifiers: VerifierInput) -> list[Verifier]:
    items: Iterable[str | Verifier]
    items = [verifiers] if isinstance(verifiers, str | Verifier) else verifiers
    return [parse_verifier(v) if isinstance(v, str) else v for v in items]


def _decode(note: str | bytes) -> str:
    """The note as text, after the size, UTF-8 and control-character checks."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_SIZE:
            raise errors.MalformedNoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
        try:
            text = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise errors.MalformedNoteError(
                f"note is not valid UTF-8 (at byte {e.start})"
            ) from None
    else:
        text = note
        # Each character is at least one byte: a cheap bound before encoding.
        if len(text) > MAX_NOTE_SIZE:
            raise errors.MalformedNoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise errors.MalformedNoteError(
                f"note is not valid UTF-8 (lone surrogate at character {e.start})"
            ) from None
        if size > MAX_NOTE_SIZE:
            raise errors.MalformedNoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    match = _CONTROL.search(text)
    if match is not None:
        raise errors.MalformedNoteError(
            f"note contains control character U+{ord(match.group()):04X} "
            f"at character {match.start()}"
        )
    return text


def _parse_line(line: str, number: int) -> Signature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise errors.MalformedNoteError(
            f"signature line {number} does not start with an em dash (U+2014) and a space"
        )
    # Like Go: the name ends at the first space; everything after it is the base64.
    name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    problem = name_problem(name)
    if problem is not None:
        raise errors.MalformedNoteError(f"signature line {number}: {problem}")
    raw = decode_base64(b64) if b64 else None
    if raw is None:
        raise errors.MalformedNoteError(f"signature line {number}: signature is not valid base64")
    if len(raw) < KEY_HASH_SIZE + 1:
        raise errors.MalformedNoteError(
            f"signature line {number}: signature is {len(raw)} bytes; "
            f"a key hash and at least one signature byte are needed"
        )
    return Signature(name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:])


def _split(note: str | bytes) -> tuple[str, list[str]]:
    """The note's text and its signature lines (without newlines), before line parsing."""
    message = _decode(note)
    split = message.rfind("\n\n")
    if split < 0:
        raise errors.MalformedNoteError("note has no blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block:
        raise errors.MalformedNoteError("note has no signature lines after its blank line")
    if not block.endswith("\n"):
        raise errors.MalformedNoteError("note does not end with a newline")
    return text, block[:-1].split("\n")


def _check_count(number: int) -> None:
    if number > MAX_SIGNATURES:
        raise errors.MalformedNoteError(
            f"note has more than {MAX_SIGNATURES} signature lines; at most {MAX_SIGNATURES} "
            f"are allowed"
        )


def parse_note(note: str | bytes) -> tuple[str, tuple[Signature, ...]]:
    """Split a signed note into its text and its signature lines, checking syntax only.

    Nothing is verified: the text must be ignored until ``open_note`` has checked a signature.
    Raises MalformedNoteError exactly where Go's note.Open reports a malformed note, and also
    for notes over MAX_NOTE_SIZE.
    """
    text, lines = _split(note)
    sigs = []
    for number, line in enumerate(lines, 1):
        sigs.append(_parse_line(line, number))
        _check_count(number)
    return text, tuple(sigs)


def open_note(note: str | bytes, verifiers: VerifierInput) -> Note:
    """Parse and verify a signed note against known verifiers (key texts or Verifier objects).

    Returns the Note with the signatures that verified (cosignatures with their timestamps)
    and those from unknown keys. Raises MalformedNoteError for bad syntax, MalformedKeyError for
    a bad key text or an ambiguous key, InvalidSignatureError when a known key's signature does
    not verify, and UnverifiedNoteError when no signature is from a known key.
    """
    text, lines = _split(note)
    known: dict[tuple[str, bytes], list[Verifier]] = {}
    for v in _as_verifiers(verifiers):
        known.setdefault((v.name, v.key_hash), []).append(v)

    message = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    seen_known: set[tuple[str, bytes]] = set()
    seen_unknown: set[Signature] = set()
    # Line by line, as Go does, so that errors come in the same order as Go's: a bad signature
    # from a known key is reported before a malformed line that follows it.
    for number, line in enumerate(lines, 1):
        sig = _parse_line(line, number)
        _check_count(number)
        key = (sig.name, sig.key_hash)
        candidates = known.get(key)
        if candidates is None:
            if sig not in seen_unknown:  # Go drops repeated identical unknown lines.
                seen_unknown.add(sig)
                unverified.append(sig)
            continue
        if len(candidates) > 1:
            raise errors.MalformedKeyError(
                f"ambiguous key {sig.name}+{sig.key_hash.hex()}: "
                f"{len(candidates)} verifiers have this name and key hash"
            )
        if key in seen_known:  # Go checks only the first signature by each known key.
            continue
        seen_known.add(key)
        verifier = candidates[0]
        if not verifier.verify(message, sig.signature):
            raise errors.InvalidSignatureError(
                f"invalid signature for key {sig.name}+{sig.key_hash.hex()}"
            )
        if isinstance(verifier, CosignatureV1Verifier):
            sig = Signature(
                sig.name, sig.key_hash, sig.signature, verifier.timestamp(sig.signature)
            )
        verified.append(sig)

    if not verified:
        raise errors.UnverifiedNoteError(
            f"note has no verifiable signatures ({len(lines)} signature line(s), "
            f"none from a known key)"
        )
    return Note(text, tuple(verified), tuple(unverified))


def open(note: str | bytes, verifiers: VerifierInput) -> str:  # shadows the builtin: Go's name
    """Verify a signed note and return its text (see ``open_note`` for the rules and errors)."""
    return open_note(note, verifiers).text


def _check_text(text: str) -> None:
    """Raise MalformedNoteError unless ``text`` can be the text of a signed note."""
    if not text.endswith("\n"):
        raise errors.MalformedNoteError("note text must end with a newline")
    _decode(text)


def _assemble(text: str, sigs: Iterable[Signature]) -> str:
    lines = [s.line() for s in sigs]
    if len(lines) > MAX_SIGNATURES:
        raise errors.MalformedNoteError(
            f"note would have {len(lines)} signature lines; at most {MAX_SIGNATURES} are allowed"
        )
    out = text + "\n" + "".join(lines)
    if len(out.encode("utf-8")) > MAX_NOTE_SIZE:
        raise errors.MalformedNoteError(f"note would be larger than {MAX_NOTE_SIZE} bytes")
    return out


def _sign_all(text: str, signers: SignerInput) -> list[Signature]:
    message = text.encode("utf-8")
    return [Signature(s.name, s.key_hash, s.sign(message)) for s in _as_signers(signers)]


def sign(text: str, signers: SignerInput) -> str:
    """Sign a note text with one or more signers (signer key texts or Signer objects).

    The text must end in '\\n' and be valid note text (UTF-8, no control characters but '\\n').
    Signature lines appear in the order the signers are given.
    """
    _check_text(text)
    return _assemble(text, _sign_all(text, signers))


def add_signatures(note: str | bytes, signers: SignerInput) -> str:
    """Append signature lines to an already signed note (a witness adds its cosignature).

    Existing lines are kept, in order, ahead of the new ones, except a line by the same key
    (name and key hash) as a new signer, which the new signature replaces (as Go's Sign does).
    Existing signatures are not verified here: open the note first.
    """
    text, existing = parse_note(note)
    new = _sign_all(text, signers)
    replaced = {(s.name, s.key_hash) for s in new}
    kept = [s for s in existing if (s.name, s.key_hash) not in replaced]
    return _assemble(text, [*kept, *new])


def merge(notes: Iterable[str | bytes]) -> str:
    """Combine the signature lines of notes that share one text (e.g. gathered cosignatures).

    Lines keep the order of first appearance; only the first line by each key (name and key
    hash) is kept, as verifiers only check that one. Nothing is verified: check each
    cosignature before merging it. MalformedNoteError if the texts differ.
    """
    text: str | None = None
    merged: list[Signature] = []
    keys: set[tuple[str, bytes]] = set()
    for note in notes:
        note_text, sigs = parse_note(note)
        if text is None:
            text = note_text
        elif note_text != text:
            raise errors.MalformedNoteError("notes to merge have different texts")
        for sig in sigs:
            if (sig.name, sig.key_hash) not in keys:
                keys.add((sig.name, sig.key_hash))
                merged.append(sig)
    if text is None:
        raise ValueError("no notes to merge")
    return _assemble(text, merged)
