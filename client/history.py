"""An identity's history: each key it held, the span of the log in which that key was valid,
and how the span ended (a rotation, the identity's revocation), all read from the identity
events in the log and each one proven included in one checkpoint the client trusts.

A key is valid from the entry that registers it (REGISTER, ROTATE_KEY) up to, not including,
the entry that retires it (the next ROTATE_KEY, or REVOKE); the log refuses statements signed
with it outside that span. Times are the clocks of the admins who signed the events, which the
log held to within minutes of its own at ingest.
"""

from __future__ import annotations

from dataclasses import dataclass

from affidavit.client.client import Client
from affidavit.client.errors import NotFoundError
from affidavit.client.proven import fetch_proven
from affidavit.client.verify import Verified
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.build import statement_of
from affidavit.statements.signing import key_id


@dataclass(frozen=True)
class KeySpan:
    """One key of the identity and where in the log it was valid: [from_index, until_index);
    until_index None while it is the current key; ended_by 'rotation', 'revocation' or ''."""

    key_id: str
    public_key: bytes
    from_index: int
    from_time_ms: int
    until_index: int | None
    until_time_ms: int | None
    ended_by: str


@dataclass(frozen=True)
class IdentityEventRow:
    index: int
    time_ms: int
    op: str
    signed_by: str
    key_id: str


@dataclass(frozen=True)
class History:
    identity_id: str
    kind: str
    owner: str
    display_name: str
    keys: tuple[KeySpan, ...]
    events: tuple[IdentityEventRow, ...]
    revoked_at: int | None
    checkpoint: Verified


def identity_history(client: Client, identity_id: str) -> History:
    """The history of identity_id; NotFoundError if the log has no REGISTER of it."""
    verified = client.checkpoint()
    size = verified.checkpoint.size
    indexes = [h.index for h in client.search(subject=identity_id) if h.index < size]
    events = []
    for entry in fetch_proven(client, indexes, verified):
        st = statement_of(entry.leaf)
        if st.WhichOneof("body") == "identity" and st.identity.identity_id == identity_id:
            events.append((entry.index, st))
    if not events or events[0][1].identity.op != pb.IdentityEvent.REGISTER:
        raise NotFoundError(f"identity {identity_id!r} is not registered in this log")
    first = events[0][1].identity
    spans: list[KeySpan] = []
    rows: list[IdentityEventRow] = []
    revoked_at = None
    for index, st in events:
        e, t = st.identity, st.header.client_time_ms
        op = pb.IdentityEvent.Op.Name(e.op)
        rows.append(
            IdentityEventRow(
                index, t, op, st.header.issuer, key_id(e.public_key) if e.public_key else ""
            )
        )
        if spans and spans[-1].until_index is None and e.op != pb.IdentityEvent.REGISTER:
            ended = "rotation" if e.op == pb.IdentityEvent.ROTATE_KEY else "revocation"
            last = spans[-1]
            spans[-1] = KeySpan(
                last.key_id, last.public_key, last.from_index, last.from_time_ms, index, t, ended
            )
        if e.op in (pb.IdentityEvent.REGISTER, pb.IdentityEvent.ROTATE_KEY):
            spans.append(KeySpan(key_id(e.public_key), e.public_key, index, t, None, None, ""))
        elif e.op == pb.IdentityEvent.REVOKE:
            revoked_at = index
    return History(
        identity_id,
        pb.IdentityKind.Name(first.kind).lower(),
        first.owner,
        first.display_name,
        tuple(spans),
        tuple(rows),
        revoked_at,
        verified,
    )
