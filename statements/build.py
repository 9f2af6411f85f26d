"""Building signed statements: headers, session chains, and the bodies of each kind.

A SessionSigner is one issuer's side of one session: it stamps each statement with the next
sequence and the previous statement's leaf hash, signs it, and moves on only once the log has
accepted the statement (advance), so a refused or lost statement can be retried as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from affidavit.merkle import hashing
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.ids import uuid7
from affidavit.statements.schema import SCHEMA_VERSION
from affidavit.statements.signing import IdentityKey

ADAPTER = "affidavit-python/1"

Body = (
    pb.IdentityEvent
    | pb.Grant
    | pb.Approval
    | pb.AgentAction
    | pb.SessionEvent
    | pb.GrantRevocation
    | pb.Refusal
)
_BODY_FIELD = {
    pb.IdentityEvent: "identity",
    pb.Grant: "grant",
    pb.Approval: "approval",
    pb.AgentAction: "action",
    pb.SessionEvent: "session",
    pb.GrantRevocation: "grant_revocation",
    pb.Refusal: "refusal",
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SessionSigner:
    """Signs one issuer's statements in one session, keeping the chain."""

    key: IdentityKey
    session_id: str = field(default_factory=uuid7)
    sequence: int = 0
    previous_hash: bytes = b""
    assurance: pb.Assurance.ValueType = pb.SELF_ASSERTED
    adapter: str = ADAPTER

    def sign(
        self, body: Body, *, statement_id: str | None = None, time_ms: int | None = None
    ) -> bytes:
        """The leaf (a serialized SignedStatement) for the next statement of this session."""
        header = pb.Header(
            statement_id=statement_id or uuid7(),
            issuer=self.key.identity_id,
            session_id=self.session_id,
            sequence=self.sequence,
            previous_hash=self.previous_hash,
            client_time_ms=time_ms or now_ms(),
            schema_version=SCHEMA_VERSION,
            producer=pb.Producer(adapter=self.adapter, assurance=self.assurance),
        )
        statement = pb.Statement(header=header)
        getattr(statement, _BODY_FIELD[type(body)]).CopyFrom(body)
        return self.key.sign(statement.SerializeToString())

    def advance(self, leaf: bytes) -> None:
        """The log accepted leaf: the next statement follows it."""
        self.sequence += 1
        self.previous_hash = hashing.leaf_hash(leaf)


def statement_of(leaf: bytes) -> pb.Statement:
    """The statement inside a leaf (no checks: use statements.ingest for that)."""
    return pb.Statement.FromString(pb.SignedStatement.FromString(leaf).statement)


def register(
    identity_id: str,
    kind: pb.IdentityKind.ValueType,
    public_key: bytes,
    *,
    owner: str = "",
    display_name: str = "",
    attributes: dict[str, str] | None = None,
) -> pb.IdentityEvent:
    return pb.IdentityEvent(
        op=pb.IdentityEvent.REGISTER,
        identity_id=identity_id,
        kind=kind,
        public_key=public_key,
        owner=owner,
        display_name=display_name,
        attributes=attributes or {},
    )


def rotate(identity_id: str, public_key: bytes) -> pb.IdentityEvent:
    return pb.IdentityEvent(
        op=pb.IdentityEvent.ROTATE_KEY, identity_id=identity_id, public_key=public_key
    )


def revoke(identity_id: str) -> pb.IdentityEvent:
    return pb.IdentityEvent(op=pb.IdentityEvent.REVOKE, identity_id=identity_id)
