"""Refused attempts on the record: the log's own statements about what it refused.

An attempt is evidence: a revoked key still in use, an agent widening its own grant, a stranger
registering identities. So when the log refuses a well-formed statement (one that passed the
schema and the secret guard, so its claimed key id and issuer are safe to show), it records a
`Refusal`: the refused statement's leaf hash, the key id and issuer it claimed, the reason code
and where it came from — never any other byte of it. Refusals of malformed statements (no reason
code) are not recorded: they claim nothing anyone can check.

The log signs refusals itself, with its checkpoint key, over the statement domain
(`affidavit/v1/statement\\n` ‖ statement). That message can never be a signed-note body (whose
second line is a decimal tree size: the statement bytes start with a newline) nor a
cosignature (`cosignature/v1\\n`), so the one key serves both without ambiguity, and anyone who
trusts the log's checkpoints can check its refusals with the same public key. Their issuer is
`log`; no identity can sign one.
"""

from __future__ import annotations

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import signing
from affidavit.statements.errors import Rejection
from google.protobuf.message import DecodeError

LOG_ISSUER = "log"
"""The header issuer of the log's own statements."""


def check(signed: pb.SignedStatement, statement: pb.Statement, log_key: bytes | None) -> None:
    """A refusal must be the log's own: signed by log_key (the log's public key). Rejection
    otherwise; log_key None (the checker does not know the log's key) refuses every one."""
    if statement.header.issuer != LOG_ISSUER:
        raise Rejection.denied(
            f"a refusal is the log's own statement: its issuer is {LOG_ISSUER!r}",
            reason="not-permitted",
        )
    if log_key is None or signed.key_id != signing.key_id(log_key):
        raise Rejection.unauthenticated(
            "a refusal must be signed with the log's own key", reason="not-permitted"
        )
    if not signing.verify(signed.statement, signed.signature, log_key):
        raise Rejection.unauthenticated(
            "the refusal's signature does not verify with the log's key", reason="bad-signature"
        )


def attempt(prepared_leaf: bytes) -> tuple[str, str] | None:
    """The (key id, issuer) a refused leaf claimed, when it decodes well enough to say; the
    schema has checked both by the time a refusal has a reason code."""
    try:
        signed = pb.SignedStatement.FromString(prepared_leaf)
        statement = pb.Statement.FromString(signed.statement)
    except DecodeError:
        return None
    return signed.key_id, statement.header.issuer
