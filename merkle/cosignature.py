"""C2SP tlog-cosignature, Ed25519 ``cosignature/v1``: witness signatures over checkpoints.

A witness cosignature is an ordinary signed-note signature line whose key uses signature type
0x04, so the key hash is ``SHA-256(name ‖ 0x0A ‖ 0x04 ‖ Ed25519 public key)[:4]`` and the
witness's verifier key text is ``<name>+<hash>+<base64(0x04 ‖ public key)>``. What follows the key
hash in the signature line is ``timestamp (8 bytes, big-endian) ‖ Ed25519 signature (64)``, and
the Ed25519 signature covers::

    cosignature/v1\\n
    time <timestamp, decimal, no leading zeros>\\n
    <the whole checkpoint body, final newline included>

Invariant: a cosignature made here verifies under the matching verifier exactly when the body
and timestamp are the ones signed; the timestamp of a cosignature is never above 2^63 - 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from affidavit.merkle import checkpoint, errors
from affidavit.merkle.keys import (
    ALG_COSIGNATURE_V1,
    ED25519_SIGNATURE_SIZE,
    SignerKey,
    VerifierKey,
    parse_signer_key,
    parse_verifier_key,
)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

HEADER: Final = b"cosignature/v1\n"
TIMESTAMP_SIZE: Final = 8
SIGNATURE_SIZE: Final = TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE
"""Bytes after the key hash in a cosignature/v1 signature line: timestamp ‖ Ed25519 signature."""

MAX_TIMESTAMP: Final = 2**63 - 1
"""The spec: a cosignature timestamp MUST NOT exceed 2^63 - 1."""


def signed_message(timestamp: int, body: bytes) -> bytes:
    """The exact bytes a cosignature/v1 Ed25519 signature covers."""
    _check_timestamp(timestamp)
    return HEADER + b"time %d\n" % timestamp + body


def timestamp_of(signature: bytes) -> int:
    """The timestamp carried by a cosignature/v1 signature (the bytes after the key hash).

    It only reads the bytes; whether the signature is valid is ``verify``'s business.
    """
    if len(signature) != SIGNATURE_SIZE:
        raise errors.InvalidSignatureError(
            f"cosignature/v1 signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    return int.from_bytes(signature[:TIMESTAMP_SIZE], "big")


def _check_timestamp(timestamp: int) -> None:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"cosignature timestamp {timestamp} is outside 0..2^63-1")


def _now() -> int:
    return int(time.time())


class CosignatureV1Verifier:
    """Verifies a witness's cosignature/v1 signatures; usable as a note Verifier."""

    def __init__(self, name: str, public_key: bytes) -> None:
        self._key = VerifierKey(name, ALG_COSIGNATURE_V1, public_key)
        self._public = Ed25519PublicKey.from_public_bytes(public_key)
        self._hash = self._key.key_hash

    @classmethod
    def from_key_text(cls, text: str) -> CosignatureV1Verifier:
        """From a witness verifier key text; its algorithm byte must be 0x04."""
        vkey = parse_verifier_key(text)
        if vkey.alg != ALG_COSIGNATURE_V1:
            raise errors.MalformedKeyError(
                f"verifier key for {vkey.name!r} is not a cosignature/v1 key (alg 0x{vkey.alg:02x})"
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
        if len(signature) != SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        # Go's cosigner refuses bodies of fewer than three lines; no such body was signed.
        if message.count(b"\n") < 2:
            return False
        try:
            self._public.verify(signature[TIMESTAMP_SIZE:], signed_message(timestamp, message))
        except InvalidSignature:
            return False
        return True

    def timestamp(self, signature: bytes) -> int:
        """The timestamp of a cosignature by this key (see ``timestamp_of``)."""
        return timestamp_of(signature)

    def __repr__(self) -> str:
        return f"CosignatureV1Verifier({self.key_text()!r})"


class CosignatureV1Signer:
    """Makes a witness's cosignature/v1 signatures over checkpoint bodies; a note Signer.

    ``sign`` stamps the current time from ``clock`` (Unix seconds); ``sign_at`` takes it
    explicitly. Only a valid checkpoint body is cosigned: a cosignature is a statement about a
    checkpoint, so signing anything else is refused with MalformedCheckpointError.
    """

    def __init__(self, name: str, seed: bytes, clock: Callable[[], int] = _now) -> None:
        self._key = SignerKey(name, ALG_COSIGNATURE_V1, seed)
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._hash = self._key.key_hash
        self._clock = clock

    @classmethod
    def from_key_text(cls, text: str, clock: Callable[[], int] = _now) -> CosignatureV1Signer:
        """From a witness signer key text; its algorithm byte must be 0x04."""
        skey = parse_signer_key(text)
        if skey.alg != ALG_COSIGNATURE_V1:
            raise errors.MalformedKeyError(
                f"signer key for {skey.name!r} is not a cosignature/v1 key (alg 0x{skey.alg:02x})"
            )
        return cls(skey.name, skey.seed, clock)

    @property
    def name(self) -> str:
        return self._key.name

    @property
    def key_hash(self) -> bytes:
        return self._hash

    def sign(self, message: bytes) -> bytes:
        return self.sign_at(message, self._clock())

    def sign_at(self, message: bytes, timestamp: int) -> bytes:
        """timestamp (8, big-endian) ‖ Ed25519 signature over the cosigned message."""
        _check_timestamp(timestamp)
        try:
            body = message.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.MalformedCheckpointError("checkpoint body is not valid UTF-8") from None
        checkpoint.parse(body)
        signature = self._private.sign(signed_message(timestamp, message))
        return timestamp.to_bytes(TIMESTAMP_SIZE, "big") + signature

    def verifier(self) -> CosignatureV1Verifier:
        return CosignatureV1Verifier(self._key.name, self._key.public_key)

    def __repr__(self) -> str:
        # Never the seed.
        return f"CosignatureV1Signer(name={self.name!r}, key_hash={self.key_hash.hex()!r})"
