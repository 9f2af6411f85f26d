"""Who may read entries and search: holders of an auditor bearer token.

Checkpoints, proofs and hashes are public (witnesses need no secret); appending is authorised
by each statement's own signature. Reading entry contents and searching need a token the
operator configured at serve time. The server keeps only SHA-256 hashes of tokens and compares
in constant time, so neither its configuration nor its memory holds a usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import grpc
from affidavit.server.errors import RequestError

TOKEN_PREFIX = "afv_"


def new_token() -> tuple[str, str]:
    """A fresh auditor token and the hash to configure the server with."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Auditors:
    """The configured auditor token hashes."""

    def __init__(self, token_hashes: list[str]) -> None:
        self._hashes = [bytes.fromhex(h) for h in token_hashes]

    @property
    def configured(self) -> bool:
        """Whether any auditor token is configured (with none, nobody reads entries)."""
        return bool(self._hashes)

    def allows(self, token: str) -> bool:
        """Whether token is an auditor's (compared in constant time with every hash)."""
        presented = hashlib.sha256(token.encode()).digest()
        # Compare against every hash, always, so timing says nothing about which one matched.
        ok = False
        for h in self._hashes:
            ok |= hmac.compare_digest(presented, h)
        return ok

    def check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Pass, or raise RequestError: UNAUTHENTICATED without a token, PERMISSION_DENIED with
        one that is not an auditor's."""
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                token = value[len("Bearer ") :]
        if token is None:
            raise RequestError(
                grpc.StatusCode.UNAUTHENTICATED,
                "reading entries and searching need an auditor token: "
                "send 'authorization: Bearer <token>'",
            )
        if not self.allows(token):
            raise RequestError(
                grpc.StatusCode.PERMISSION_DENIED, "that token is not an auditor token of this log"
            )
