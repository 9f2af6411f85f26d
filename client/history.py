"""An identity's history: each key it held, the span of the log in which that key was valid,
and how the span ended (a rotation, the identity's revocation), all read from the identity
events in the log and each one proven included in one checkpoint the client trusts.

A key is valid from the entry that registers it (REGISTER, ROTATE_KEY) up to, not including,
the entry that retires it (the next ROTATE_KEY, or REVOKE); the log refuses statements signed
with it outside that span. Times are the clocks of the admins who signed the events, which the
log held to within minutes of its own at ingest.

Beside the keys, the attempts the log refused that claimed the identity as issuer or one of its
keys as signer (a retired key still in use, a revoked agent trying on): the log's own `Refusal`
records (statements.refusals), each proven included and its signature checked against the
log's key. A record may stand for many attempts (count, over first..last by the log's clock).
A source's window-end aggregate over several claimed identities names none of them, so it
cannot be shown here: `affidavit search --refused` finds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from affidavit.client.client import Client
from affidavit.client.errors import NotFoundError, VerificationError
from affidavit.client.proven import ProvenEntry, fetch_proven
from affidavit.client.verify import Verified
from affidavit.merkle import keys
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import refusals
from affidavit.statements.build import statement_of
from affidavit.statements.errors import Rejection
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
class RefusedAttempt:
    """A log record of count refused attempts claiming issuer and key_id, received from source
    between first_ms and last_ms (the log's clock); index is the record's own log index."""

    index: int
    leaf_hash: bytes
    refused_leaf_hash: bytes
    issuer: str
    key_id: str
    reason: str
    source: str
    count: int
    first_ms: int
    last_ms: int


@dataclass(frozen=True)
class History:
    identity_id: str
    kind: str
    owner: str
    display_name: str
    keys: tuple[KeySpan, ...]
    events: tuple[IdentityEventRow, ...]
    revoked_at: int | None
    refused: tuple[RefusedAttempt, ...]
    checkpoint: Verified

    def refused_count(self, key: str) -> int:
        """Attempts refused that claimed key (the records' counts summed)."""
        return sum(r.count for r in self.refused if r.key_id == key)


def _refused(
    client: Client, identity_id: str, key_ids: list[str], verified: Verified
) -> tuple[RefusedAttempt, ...]:
    """The log's refusal records of attempts claiming identity_id or one of key_ids, each
    proven included in verified and signed by the log; VerificationError otherwise."""
    size = verified.checkpoint.size
    found = {h.index for h in client.search(refused=True, actor=identity_id) if h.index < size}
    if key_ids:
        found |= {h.index for h in client.search(refused=True, key_id=key_ids) if h.index < size}
    log_key = keys.parse_verifier_key(client.policy.log_key).public_key
    out = []
    for entry in fetch_proven(client, found, verified):
        r = refusal_of(entry, log_key)
        if r is not None and (r.identity_id == identity_id or r.key_id in key_ids):
            out.append(
                RefusedAttempt(
                    entry.index,
                    entry.leaf_hash,
                    r.leaf_hash,
                    r.identity_id,
                    r.key_id,
                    r.reason,
                    r.source,
                    r.count,
                    r.first_ms,
                    r.last_ms,
                )
            )
    return tuple(out)


def refusal_of(entry: ProvenEntry, log_key: bytes) -> pb.Refusal | None:
    """The Refusal at entry, checked to be the log's own; None if entry holds another kind."""
    signed = pb.SignedStatement.FromString(entry.leaf)
    statement = pb.Statement.FromString(signed.statement)
    if statement.WhichOneof("body") != "refusal":
        return None
    try:
        refusals.check(signed, statement, log_key)
    except Rejection as e:
        raise VerificationError(
            f"the refusal record at index {entry.index} is not the log's own: {e.message}"
        ) from None
    return statement.refusal


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
        _refused(client, identity_id, [k.key_id for k in spans], verified),
        verified,
    )
