"""C2SP signed-note keys: names, key hashes, key texts, and the Ed25519 signer and verifier.

A key is identified by its name and a 4-byte key hash,
``SHA-256(name ‖ 0x0A ‖ alg ‖ public key)[:4]``, where ``alg`` is the signature type byte
(c2sp.org/signed-note). Key texts are the plain-text encodings Go's ``sumdb/note`` uses:

- verifier key: ``<name>+<8 hex key hash>+<base64(alg ‖ public key)>``
- signer key:   ``PRIVATE+KEY+<name>+<8 hex key hash>+<base64(alg ‖ Ed25519 seed)>``

Both Ed25519 note keys (alg 0x01) and Ed25519 witness cosignature keys (alg 0x04,
c2sp.org/tlog-cosignature) use a 32-byte Ed25519 public key and a 32-byte seed, so this module
encodes, decodes and generates both; the cosignature/v1 *signature scheme* lives in
``merkle.cosignature``, and ``merkle.note`` turns a key text into the right signer or verifier.

Invariant: every key text this module returns parses back to the same key, and every key it
accepts has a key hash that matches its name, algorithm and public key. Error messages never
contain private key material (nor the signer key text it came from).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from affidavit.merkle import errors
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

ALG_ED25519: Final = 0x01
"""Signature type of an Ed25519 signature over the note text (c2sp.org/signed-note)."""

ALG_COSIGNATURE_V1: Final = 0x04
"""Signature type of a timestamped Ed25519 witness cosignature (c2sp.org/tlog-cosignature)."""

KNOWN_ALGS: Final = frozenset({ALG_ED25519, ALG_COSIGNATURE_V1})

KEY_HASH_SIZE: Final = 4
ED25519_PUBLIC_KEY_SIZE: Final = 32
ED25519_SEED_SIZE: Final = 32
ED25519_SIGNATURE_SIZE: Final = 64

PRIVATE_KEY_PREFIX: Final = "PRIVATE+KEY+"

# The Unicode White_Space property: exactly the runes Go's unicode.IsSpace reports, which is what
# Go's note uses to validate names. (Python's str.isspace differs: it also takes U+001C..U+001F.)
_WHITE_SPACE: Final = frozenset(
    (
        *range(0x09, 0x0E),
        *(0x20, 0x85, 0xA0, 0x1680),
        *range(0x2000, 0x200B),
        *(0x2028, 0x2029, 0x202F, 0x205F, 0x3000),
    )
)

# Standard base64 with padding, as Go's base64.StdEncoding accepts it (including non-zero
# trailing bits, which Go does not reject either).
_STD_BASE64: Final = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_KEY_HASH_HEX: Final = re.compile(r"[0-9A-Fa-f]{8}")


def decode_base64(text: str) -> bytes | None:
    """Decode standard padded base64 exactly as Go's StdEncoding does; None if it is invalid."""
    if _STD_BASE64.fullmatch(text) is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # unreachable after the regex; belt and braces
        return None


def encode_base64(data: bytes) -> str:
    """Standard padded base64, as every C2SP format uses."""
    return base64.b64encode(data).decode("ascii")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid key name, or None if it is one.

    A key name is non-empty, valid UTF-8, and has neither Unicode white space nor '+'
    (Go's note.isValidName).
    """
    if not name:
        return "key name is empty"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "key name is not valid UTF-8"
    if "+" in name:
        return "key name contains '+'"
    for ch in name:
        if ord(ch) in _WHITE_SPACE:
            return f"key name contains white space U+{ord(ch):04X}"
    return None


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a valid key name (see ``name_problem``)."""
    return name_problem(name) is None


def check_name(name: str) -> None:
    """Raise MalformedKeyError unless ``name`` is a valid key name."""
    problem = name_problem(name)
    if problem is not None:
        raise errors.MalformedKeyError(problem)


def key_hash(name: str, alg_and_pubkey: bytes) -> bytes:
    """The 4-byte key hash: SHA-256(name ‖ 0x0A ‖ alg ‖ public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + alg_and_pubkey).digest()[:KEY_HASH_SIZE]


def _expected_key_size(alg: int) -> int:
    # Both known algorithms are Ed25519-based: 32-byte public keys and 32-byte seeds.
    if alg not in KNOWN_ALGS:
        raise errors.MalformedKeyError(f"unknown key algorithm 0x{alg:02x}")
    return ED25519_PUBLIC_KEY_SIZE


def ed25519_public_key(seed: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key of a 32-byte seed."""
    if len(seed) != ED25519_SEED_SIZE:
        raise errors.MalformedKeyError(f"Ed25519 seed must be {ED25519_SEED_SIZE} bytes")
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    return priv.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


@dataclass(frozen=True)
class VerifierKey:
    """A decoded verifier key; invariant: valid name, known alg, key of the alg's size."""

    name: str
    alg: int
    public_key: bytes

    def __post_init__(self) -> None:
        check_name(self.name)
        size = _expected_key_size(self.alg)
        if len(self.public_key) != size:
            raise errors.MalformedKeyError(
                f"public key for algorithm 0x{self.alg:02x} must be {size} bytes, "
                f"got {len(self.public_key)}"
            )

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, bytes([self.alg]) + self.public_key)

    def text(self) -> str:
        """The verifier key text ``<name>+<hash>+<base64(alg ‖ key)>``."""
        material = encode_base64(bytes([self.alg]) + self.public_key)
        return f"{self.name}+{self.key_hash.hex()}+{material}"


@dataclass(frozen=True)
class SignerKey:
    """A decoded signer key; invariant as VerifierKey. The seed never appears in its repr."""

    name: str
    alg: int
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        size = _expected_key_size(self.alg)
        if len(self.seed) != size:
            raise errors.MalformedKeyError(
                f"private key for algorithm 0x{self.alg:02x} must be {size} bytes"
            )

    @property
    def public_key(self) -> bytes:
        return ed25519_public_key(self.seed)

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, bytes([self.alg]) + self.public_key)

    def verifier_key(self) -> VerifierKey:
        return VerifierKey(self.name, self.alg, self.public_key)

    def text(self) -> str:
        """The signer key text ``PRIVATE+KEY+<name>+<hash>+<base64(alg ‖ seed)>``. Secret."""
        material = encode_base64(bytes([self.alg]) + self.seed)
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_hash.hex()}+{material}"


def _split_key(text: str, what: str) -> tuple[str, bytes, int, bytes]:
    """Split ``<name>+<hash>+<base64>`` into (name, key hash, alg, key bytes).

    Like Go, the name ends at the first '+', the hash at the second; the rest is base64 (which
    may itself contain '+'). Messages name the part at fault, never the key material.
    """
    name, sep1, rest = text.partition("+")
    hash_hex, sep2, material = rest.partition("+")
    if not sep1 or not sep2:
        raise errors.MalformedKeyError(f"{what} must have the form <name>+<key hash>+<key>")
    problem = name_problem(name)
    if problem is not None:
        raise errors.MalformedKeyError(f"{what}: {problem}")
    if _KEY_HASH_HEX.fullmatch(hash_hex) is None:
        raise errors.MalformedKeyError(f"{what} for {name!r}: key hash must be 8 hex digits")
    raw = decode_base64(material)
    if raw is None:
        raise errors.MalformedKeyError(f"{what} for {name!r}: key is not valid standard base64")
    if not raw:
        raise errors.MalformedKeyError(f"{what} for {name!r}: key is empty")
    alg, key = raw[0], raw[1:]
    if alg not in KNOWN_ALGS:
        raise errors.MalformedKeyError(f"{what} for {name!r}: unknown key algorithm 0x{alg:02x}")
    if len(key) != _expected_key_size(alg):
        raise errors.MalformedKeyError(
            f"{what} for {name!r}: key for algorithm 0x{alg:02x} must be "
            f"{_expected_key_size(alg)} bytes, got {len(key)}"
        )
    return name, bytes.fromhex(hash_hex), alg, key


def parse_verifier_key(text: str) -> VerifierKey:
    """Decode a verifier key text; MalformedKeyError unless it is well formed and consistent."""
    name, claimed, alg, key = _split_key(text, "verifier key")
    vkey = VerifierKey(name, alg, key)
    if vkey.key_hash != claimed:
        raise errors.MalformedKeyError(
            f"verifier key for {name!r}: key hash {claimed.hex()} does not match the key "
            f"(expected {vkey.key_hash.hex()})"
        )
    return vkey


def parse_signer_key(text: str) -> SignerKey:
    """Decode a signer key text; MalformedKeyError unless it is well formed and consistent.

    The key hash is checked against the public key derived from the seed, as Go's NewSigner
    does, so a signer never signs under a hash its verifiers would not compute.
    """
    if not text.startswith(PRIVATE_KEY_PREFIX):
        raise errors.MalformedKeyError("signer key must start with 'PRIVATE+KEY+'")
    name, claimed, alg, seed = _split_key(text[len(PRIVATE_KEY_PREFIX) :], "signer key")
    skey = SignerKey(name, alg, seed)
    if skey.key_hash != claimed:
        raise errors.MalformedKeyError(
            f"signer key for {name!r}: key hash {claimed.hex()} does not match the key"
        )
    return skey


def format_verifier_key(name: str, alg: int, public_key: bytes) -> str:
    """Encode a verifier key text."""
    return VerifierKey(name, alg, public_key).text()


def format_signer_key(name: str, alg: int, seed: bytes) -> str:
    """Encode a signer key text (secret: it holds the seed)."""
    return SignerKey(name, alg, seed).text()


def generate_key(name: str, alg: int = ALG_ED25519) -> tuple[str, str]:
    """A fresh Ed25519 key pair for ``name``: (signer key text, verifier key text).

    ``alg`` is ALG_ED25519 for a note signer (a log) or ALG_COSIGNATURE_V1 for a witness.
    """
    check_name(name)
    _expected_key_size(alg)
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    skey = SignerKey(name, alg, seed)
    return skey.text(), skey.verifier_key().text()


@runtime_checkable
class Signer(Protocol):
    """Signs note texts with one key.

    ``sign`` returns the signature bytes that follow the 4-byte key hash in a signature line
    (as Go's note.Signer.Sign does); the note code adds the name and key hash.
    """

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@runtime_checkable
class Verifier(Protocol):
    """Checks signatures made by one key.

    ``verify`` gets the note text and the signature bytes that follow the 4-byte key hash, and
    reports whether they are a valid signature by this key; it never raises for bad input.
    """

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


class Ed25519Verifier:
    """Verifies Ed25519 note signatures (alg 0x01): a plain 64-byte signature over the text."""

    def __init__(self, name: str, public_key: bytes) -> None:
        self._key = VerifierKey(name, ALG_ED25519, public_key)
        self._public = Ed25519PublicKey.from_public_bytes(public_key)
        self._hash = self._key.key_hash

    @classmethod
    def from_key_text(cls, text: str) -> Ed25519Verifier:
        vkey = parse_verifier_key(text)
        if vkey.alg != ALG_ED25519:
            raise errors.MalformedKeyError(
                f"verifier key for {vkey.name!r} is not an Ed25519 note key (alg 0x{vkey.alg:02x})"
            )
        return cls(vkey.name, vkey.public_key)

    @property
    def name(self) -> str:
        return self._key.name

    @property
    def key_hash(self) -> bytes:
        return self._hash

    @property
    def public_key(self) -> bytes:
        return self._key.public_key

    def key_text(self) -> str:
        return self._key.text()

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"Ed25519Verifier({self.key_text()!r})"


class Ed25519Signer:
    """Makes Ed25519 note signatures (alg 0x01) with a 32-byte seed."""

    def __init__(self, name: str, seed: bytes) -> None:
        self._key = SignerKey(name, ALG_ED25519, seed)
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._hash = self._key.key_hash

    @classmethod
    def from_key_text(cls, text: str) -> Ed25519Signer:
        skey = parse_signer_key(text)
        if skey.alg != ALG_ED25519:
            raise errors.MalformedKeyError(
                f"signer key for {skey.name!r} is not an Ed25519 note key (alg 0x{skey.alg:02x})"
            )
        return cls(skey.name, skey.seed)

    @property
    def name(self) -> str:
        return self._key.name

    @property
    def key_hash(self) -> bytes:
        return self._hash

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self._key.name, self._key.public_key)

    def __repr__(self) -> str:
        # Never the seed.
        return f"Ed25519Signer(name={self.name!r}, key_hash={self.key_hash.hex()!r})"
