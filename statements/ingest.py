"""Admission: the rules a signed statement passes to enter the log, in one fixed order.

prepare() needs no history (decode, schema, sizes, secret guard, and the signature when the
key is already known) so it can run in parallel, off the log's sequencing path; admit() checks
what depends on the log so far — the key valid at this point, the session chain, the body's
rules — and computes an action's scope verdict. The server runs both at ingest, the client
runs prepare() before sending, the auditor runs both on replay: one implementation of each rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import refusals, schema, scope, signing
from affidavit.statements.errors import Rejection
from affidavit.statements.state import KeyRecord, LogState, VerdictRecord

MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
"""How far a statement's client time may be from the log's admission time. Grant windows are
judged at the admission time (recorded with the verdict, so replay judges them at the same
time), and the claim must agree with it about every window boundary (scope: window-straddle)."""


@dataclass(frozen=True)
class Prepared:
    """A decoded, well-formed statement; verified_with is the public key its signature was
    checked against, or None when its key was not known yet."""

    signed: pb.SignedStatement
    statement: pb.Statement
    verified_with: bytes | None


def prepare(leaf: bytes, known_key: Callable[[str], KeyRecord | None]) -> Prepared:
    """The checks that need no history. Raises Rejection."""
    signed, statement = schema.decode(leaf)
    schema.check(signed, statement)
    record = known_key(signed.key_id)
    if record is None:
        return Prepared(signed, statement, None)
    _verify(signed, record.public_key)
    return Prepared(signed, statement, record.public_key)


def _verify(signed: pb.SignedStatement, public_key: bytes) -> None:
    if not signing.verify(signed.statement, signed.signature, public_key):
        raise Rejection.unauthenticated(
            f"the signature does not verify with key {signed.key_id}: the statement was altered "
            "after signing or signed with another key",
            reason="bad-signature",
        )


def _is_genesis(prepared: Prepared, state: LogState) -> bool:
    """The log's first admin registers itself: a self-signed REGISTER of an ADMIN, accepted
    only while the log has no admin."""
    st = prepared.statement
    e = st.identity
    return (
        not state.has_admin()
        and st.WhichOneof("body") == "identity"
        and e.op == pb.IdentityEvent.REGISTER
        and e.kind == pb.ADMIN
        and e.identity_id == st.header.issuer
        and signing.key_id(e.public_key) == prepared.signed.key_id
    )


def admit(
    prepared: Prepared, state: LogState, admitted_ms: int | None, log_key: bytes | None = None
) -> VerdictRecord | None:
    """The checks that depend on the log so far; the verdict for an action, None otherwise.

    admitted_ms is the log's clock at admission: the server's clock at ingest; on replay, the
    time the log recorded with an action's verdict (None for other statements, whose admission
    time the log does not keep: their client time is then not bounded again). An action needs
    it. log_key is the log's public key, the only key that signs a refusal (statements.refusals).
    Raises Rejection; nothing is changed either way (the caller applies admitted statements).
    """
    signed, st = prepared.signed, prepared.statement
    # Each protobuf field read costs a lookup in the message (upb): fields read by several
    # rules are read once here and handed down.
    h = st.header
    issuer = h.issuer
    body = st.WhichOneof("body")
    genesis = False
    if body == "refusal":
        refusals.check(signed, st, log_key)
    else:
        genesis = _check_key(prepared, issuer, state)
    if state.statement_index(h.statement_id) is not None:
        raise Rejection.exists(
            f"statement_id {h.statement_id} is already in the log", reason="statement-id-reused"
        )
    _check_session(h, issuer, state)
    if admitted_ms is None:
        if body == "action":
            raise Rejection.precondition(
                "the log recorded no admission time for this action, so its grant windows "
                "cannot be judged",
                reason="admission-time-missing",
            )
    elif abs(h.client_time_ms - admitted_ms) > MAX_CLOCK_SKEW_MS:
        raise Rejection.precondition(
            f"header.client_time_ms is {(h.client_time_ms - admitted_ms) / 1000:+.0f} s from the "
            f"log's clock; at most {MAX_CLOCK_SKEW_MS // 1000} s is accepted: fix the producer's "
            "clock",
            reason="clock-skew",
        )
    if body == "refusal":
        return None
    if body == "identity":
        if not genesis:
            _check_identity_event(st, state)
        return None
    if body == "grant":
        _check_grant(st, state)
        return None
    if body == "approval":
        _require_kind(state, issuer, pb.HUMAN, "approve actions")
        agent = state.identity(st.approval.agent_id)
        if agent is None or agent.kind != pb.AGENT:
            raise Rejection.precondition(
                f"approval.agent_id {st.approval.agent_id!r} is not a registered agent",
                reason="agent-unknown",
            )
        return None
    if body == "session":
        if st.session.op == pb.SessionEvent.OPEN and h.sequence != 0:
            raise Rejection.precondition(
                f"a session's OPEN is its first statement (sequence 0); session "
                f"{h.session_id!r} of {issuer!r} is at sequence {h.sequence}",
                reason="session-open-not-first",
            )
        return None
    if body == "grant_revocation":
        _check_grant_revocation(st, state)
        return None
    return _check_action(st, issuer, state, admitted_ms)


def _check_key(prepared: Prepared, issuer: str, state: LogState) -> bool:
    """The signature under the key registered to the issuer at this point; True for the
    genesis admin's self-registration."""
    signed, st = prepared.signed, prepared.statement
    key = state.key(signed.key_id)
    genesis = key is None and _is_genesis(prepared, state)
    if key is None and not genesis:
        raise Rejection.unauthenticated(
            f"key {signed.key_id} is not registered in this log; an admin must register "
            f"identity {issuer!r} with it first",
            reason="key-unknown",
        )
    public_key = key.public_key if key is not None else st.identity.public_key
    if prepared.verified_with != public_key:
        _verify(signed, public_key)
    if key is not None:
        _check_signer(key, issuer, state)
    return genesis


def _check_signer(key: KeyRecord, issuer: str, state: LogState) -> None:
    if key.identity_id != issuer:
        raise Rejection.denied(
            f"key {key.key_id} belongs to {key.identity_id!r}, not to the issuer {issuer!r}",
            reason="key-of-another-identity",
        )
    if key.retired_at is not None:
        raise Rejection.denied(
            f"key {key.key_id} of {issuer!r} was retired at index {key.retired_at} (rotated or "
            "revoked); sign with the identity's current key",
            reason="key-retired",
        )
    identity = state.identity(issuer)
    if identity is None or identity.revoked_at is not None:
        raise Rejection.denied(f"identity {issuer!r} is revoked", reason="issuer-revoked")


def _check_session(h: pb.Header, issuer: str, state: LogState) -> None:
    head = state.session(issuer, h.session_id)
    if head is not None and head.closed_at is not None:
        raise Rejection.precondition(
            f"session {h.session_id!r} of {issuer!r} was closed at index {head.closed_at}; "
            "nothing may be appended to a closed session: open a new one",
            reason="session-closed",
        )
    expected, previous = (0, b"") if head is None else (head.next_sequence, head.last_leaf_hash)
    if h.sequence != expected or h.previous_hash != previous:
        want = f"sequence {expected}" + (
            f" with previous_hash {previous.hex()}" if previous else ""
        )
        raise Rejection.precondition(
            f"session {h.session_id!r} of {issuer!r} expects {want}; got sequence {h.sequence} "
            "(a gap, a replay or a fork of the session chain)",
            reason="session-chain",
        )


def _require_kind(
    state: LogState, identity_id: str, kind: pb.IdentityKind.ValueType, what: str
) -> None:
    identity = state.identity(identity_id)
    if identity is None or identity.kind != kind:
        name = pb.IdentityKind.Name(kind).lower()
        raise Rejection.denied(
            f"only a registered {name} may {what}; {identity_id!r} is not one",
            reason="not-permitted",
        )


def _check_identity_event(st: pb.Statement, state: LogState) -> None:
    _require_kind(state, st.header.issuer, pb.ADMIN, "register, rotate or revoke identities")
    e = st.identity
    current = state.identity(e.identity_id)
    if e.op == pb.IdentityEvent.REGISTER:
        if current is not None:
            raise Rejection.exists(
                f"identity {e.identity_id!r} is already registered", reason="identity-exists"
            )
    elif current is None:
        raise Rejection.precondition(
            f"identity {e.identity_id!r} is not registered", reason="identity-unknown"
        )
    elif current.revoked_at is not None:
        raise Rejection.precondition(
            f"identity {e.identity_id!r} was revoked at index {current.revoked_at}",
            reason="identity-revoked",
        )
    if e.op != pb.IdentityEvent.REVOKE and state.key(signing.key_id(e.public_key)) is not None:
        raise Rejection.exists(
            "that public key is already registered; every identity needs its own key",
            reason="key-reused",
        )


def _check_grant(st: pb.Statement, state: LogState) -> None:
    g, issuer = st.grant, st.header.issuer
    grantee = state.identity(g.grantee)
    if grantee is None or grantee.revoked_at is not None:
        raise Rejection.precondition(
            f"grantee {g.grantee!r} is not a registered, unrevoked identity",
            reason="grantee-not-valid",
        )
    if not g.parent_grant_id:
        _require_kind(
            state,
            issuer,
            pb.HUMAN,
            "grant on their own authority (an agent must name the parent grant it attenuates)",
        )
        return
    parent = state.grant(g.parent_grant_id)
    if parent is None:
        raise Rejection.precondition(
            f"parent grant {g.parent_grant_id} is not in the log", reason="parent-grant-unknown"
        )
    if parent.revoked_at is not None:
        raise Rejection.precondition(
            f"parent grant {g.parent_grant_id} was revoked at index {parent.revoked_at}",
            reason="parent-grant-revoked",
        )
    if parent.decoded().grantee != issuer:
        raise Rejection.denied(
            f"{issuer!r} does not hold parent grant {g.parent_grant_id}",
            reason="not-parent-grantee",
        )
    problem = scope.attenuation_problem(parent.decoded(), g)
    if problem:
        raise Rejection.precondition(
            f"grant widens its parent: {problem}", reason="grant-widens-parent"
        )


def _check_grant_revocation(st: pb.Statement, state: LogState) -> None:
    r, issuer = st.grant_revocation, st.header.issuer
    grant = state.grant(r.grant_id)
    if grant is None:
        raise Rejection.precondition(
            f"grant {r.grant_id} is not in the log", reason="grant-unknown"
        )
    revoker = state.identity(issuer)
    if issuer != grant.issuer and (revoker is None or revoker.kind != pb.ADMIN):
        raise Rejection.denied(
            f"only the grantor ({grant.issuer!r}) or an admin may revoke grant {r.grant_id}",
            reason="not-grantor",
        )
    if grant.revoked_at is not None:
        raise Rejection.precondition(
            f"grant {r.grant_id} was already revoked at index {grant.revoked_at}",
            reason="grant-already-revoked",
        )


def _check_principal_chain(a: pb.AgentAction, state: LogState) -> None:
    """A principal chain the producer states must be one the log holds: the chain of grantors
    of one of the action's grants, ending in the actor. Anything else is refused, so no output
    can show an invented chain beside the verified one."""
    if not a.principal_chain:
        return
    claimed = list(a.principal_chain)
    if any(scope.principal_chain(state, g) == claimed for g in a.grant_ids):
        return
    raise Rejection.precondition(
        "action.principal_chain is not the delegation chain of any of its grants in this log; "
        "leave it empty (the log derives the chain) or state it exactly",
        reason="principal-chain-mismatch",
    )


def _check_action(
    st: pb.Statement, issuer: str, state: LogState, admitted_ms: int | None
) -> VerdictRecord:
    a = st.action
    _require_kind(state, issuer, pb.AGENT, "record agent actions")
    if a.actor.agent_id != issuer:
        raise Rejection.denied(
            f"actor.agent_id {a.actor.agent_id!r} is not the issuer {issuer!r}",
            reason="actor-not-issuer",
        )
    assert admitted_ms is not None  # admit() refused an action without it
    _check_principal_chain(a, state)
    action_id = a.action_id
    # An action is (acting agent, action id): another agent's INTENT with the same id is
    # another action, and an OUTCOME finds only its own agent's INTENT.
    intent = state.intent(issuer, action_id)
    if a.phase == pb.AgentAction.INTENT:
        if intent is not None:
            raise Rejection.exists(
                f"{issuer!r} already recorded an INTENT of action {action_id} "
                f"(index {intent.index}); give each action its own id",
                reason="intent-exists",
            )
        return scope.intent_verdict(state, a, admitted_ms, st.header.client_time_ms)
    if intent is None:
        raise Rejection.precondition(
            f"{issuer!r} has no INTENT of action {action_id} in the log (an OUTCOME answers "
            "its own agent's INTENT); record the INTENT first",
            reason="intent-missing",
        )
    if intent.leaf_hash != a.intent_leaf_hash:
        raise Rejection.precondition(
            f"intent_leaf_hash is not the leaf hash of {issuer!r}'s INTENT of action {action_id}",
            reason="intent-hash-mismatch",
        )
    if intent.outcome_index is not None:
        raise Rejection.exists(
            f"{issuer!r}'s action {action_id} already has an OUTCOME "
            f"(index {intent.outcome_index})",
            reason="outcome-exists",
        )
    return scope.outcome_verdict(state, a, intent, admitted_ms)
