"""Grants and scope: whether an action stays inside the authority delegated to its agent.

A grant's patterns follow the name grammar of statements.names: wildcards stay inside one
segment unless a whole `**` segment says otherwise, and a malformed name matches nothing. A
child grant attenuates its parent: each of its patterns must be covered by one of the parent's,
its access kinds a subset, its window and use limit within the parent's. Covering is judged
conservatively (names.covers), so a grant is never accepted as narrower than it is.

Time. Windows are judged at the log's admission time, which the agent cannot choose; the
agent's claimed time must lie on the same side of every window boundary, or the action is out
of scope (window-straddle): a backdated claim can never revive an expired grant.

Approval. A grant's ApprovalPolicy, and that of every grant up its chain, says which actions
need a human's approval and who may give it; the agent's own decision (ALLOW_IF_APPROVED) can
add the need, never remove it. An approval counts only for the action id, the acting agent and
the parameters digest it names, and only from an approver every requiring grant accepts. Any
REJECT puts the action it names — the acting agent's action id — out of scope: another agent's
action with the same id is another action.
"""

from __future__ import annotations

from collections.abc import Iterable

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import names
from affidavit.statements.names import Kind
from affidavit.statements.state import GrantRecord, IntentRecord, LogState, VerdictRecord

MAX_CHAIN = 16
"""Longest delegation chain followed (human → agent → sub-agent → ...)."""

_KIND: dict[str, Kind] = {"tools": "tool", "operations": "tool", "resources": "resource"}


def matches_any(kind: Kind, patterns: Iterable[str], value: str) -> bool:
    # A loop, not any() over a generator: half the cost per call (0.5 against 0.95 µs).
    for pattern in patterns:  # noqa: SIM110
        if names.matches(kind, pattern, value):
            return True
    return False


def attenuation_problem(parent: pb.Grant, child: pb.Grant) -> str | None:
    """Why child is not within parent, or None when it is."""
    for name in ("tools", "resources"):
        for pattern in getattr(child, name):
            if not any(names.covers(_KIND[name], p, pattern) for p in getattr(parent, name)):
                return f"{name[:-1]} pattern {pattern!r} is not within the parent grant"
    if parent.operations:
        if not child.operations:
            return "the parent grant limits operations; the child must too"
        for pattern in child.operations:
            if not any(names.covers("tool", p, pattern) for p in parent.operations):
                return f"operation pattern {pattern!r} is not within the parent grant"
    if not set(child.access) <= set(parent.access):
        return "access kinds go beyond the parent grant"
    if parent.not_before_ms and child.not_before_ms < parent.not_before_ms:
        return "it starts before the parent grant"
    if parent.not_after_ms and not (0 < child.not_after_ms <= parent.not_after_ms):
        return "it ends after the parent grant"
    if parent.max_uses and not (0 < child.max_uses <= parent.max_uses):
        return "it allows more uses than the parent grant"
    return None


def _outside(g: pb.Grant, t: int) -> str | None:
    if g.not_before_ms and t < g.not_before_ms:
        return "grant-not-yet-valid"
    if g.not_after_ms and t >= g.not_after_ms:
        return "grant-expired"
    return None


def _window_problem(g: pb.Grant, admitted_ms: int, claimed_ms: int) -> str | None:
    """Judged at admission; a claim on the other side of a boundary is a straddle."""
    problem = _outside(g, admitted_ms)
    if problem:
        return problem
    return "window-straddle" if _outside(g, claimed_ms) else None


def chain(state: LogState, grant_id: str) -> list[GrantRecord] | None:
    """The grant and its ancestors, the grant first; None when a link is missing or the chain
    is longer than MAX_CHAIN."""
    out: list[GrantRecord] = []
    for _ in range(MAX_CHAIN):
        record = state.grant(grant_id)
        if record is None:
            return None
        out.append(record)
        grant_id = record.decoded().parent_grant_id
        if not grant_id:
            return out
    return None


def principal_chain(state: LogState, grant_id: str) -> list[str] | None:
    """The identities authority flowed through to a grant's grantee, outermost first (the root
    grantor, each delegating agent, the grantee), as the log holds them; None if unknown."""
    records = chain(state, grant_id)
    if records is None:
        return None
    return [r.issuer for r in reversed(records)] + [records[0].decoded().grantee]


def _chain_problem(
    state: LogState, record: GrantRecord, admitted_ms: int, claimed_ms: int
) -> tuple[str | None, list[GrantRecord]]:
    """Walk a grant (its record given) up to its root: every link unrevoked, valid now and not
    used up, issued by an unrevoked grantor, the root by a human. The problem, if any, and the
    links walked (the whole chain, the grant first, when there is no problem)."""
    walked: list[GrantRecord] = []
    for _ in range(MAX_CHAIN):
        walked.append(record)
        if record.revoked_at is not None:
            return "grant-revoked", walked
        g = record.decoded()
        problem = _window_problem(g, admitted_ms, claimed_ms)
        if problem:
            return problem, walked
        if g.max_uses and state.grant_uses(record.grant_id) >= g.max_uses:
            return "grant-exhausted", walked  # uses of its children count against it too
        grantor = state.identity(record.issuer)
        if grantor is None or grantor.revoked_at is not None:
            return "grantor-revoked", walked
        if not g.parent_grant_id:
            return (None if grantor.kind == pb.HUMAN else "chain-not-rooted-in-human"), walked
        parent = state.grant(g.parent_grant_id)
        if parent is None:
            return "unknown-grant", walked
        record = parent
    return "chain-too-long", walked


def evaluate_grant(
    state: LogState,
    grant_id: str,
    agent_id: str,
    op: pb.Operation,
    admitted_ms: int,
    claimed_ms: int,
) -> tuple[str | None, list[GrantRecord]]:
    """Why the operation agent_id acted is outside this grant (None when it is inside), and the
    grant's chain, the grant first, when it is inside: the approval check reads the same
    links, walked once."""
    record = state.grant(grant_id)
    if record is None:
        return "unknown-grant", []
    g = record.decoded()
    if g.grantee != agent_id:
        return "not-grantee", []
    if g.max_uses and state.grant_uses(grant_id) >= g.max_uses:
        return "grant-exhausted", []
    problem, records = _chain_problem(state, record, admitted_ms, claimed_ms)
    if problem:
        return problem, []
    if not matches_any("tool", g.tools, op.tool_name):
        return "tool-not-granted", []
    if g.operations and not matches_any("tool", g.operations, op.operation_name):
        return "operation-not-granted", []
    if not matches_any("resource", g.resources, op.resource):
        return "resource-not-granted", []
    if op.access not in g.access:
        return "access-not-granted", []
    return None, records


def _requires_approval(policy: pb.ApprovalPolicy, op: pb.Operation) -> bool:
    return bool(
        policy.all_actions
        or (policy.tools and matches_any("tool", policy.tools, op.tool_name))
        or (policy.resources and matches_any("resource", policy.resources, op.resource))
        or (policy.access and op.access in policy.access)
    )


def may_approve(state: LogState, record: GrantRecord, approver_id: str) -> bool:
    """Whether approver_id may approve actions under this grant's policy: a registered,
    unrevoked human who is a named approver, holds a named role, or (with neither named) is
    the grantor."""
    approver = state.identity(approver_id)
    if approver is None or approver.revoked_at is not None or approver.kind != pb.HUMAN:
        return False
    policy = record.decoded().approval
    if not policy.approvers and not policy.roles:
        return approver_id == record.issuer
    return approver_id in policy.approvers or any(approver.has_role(r) for r in policy.roles)


def approval_needed(records: list[GrantRecord], action: pb.AgentAction) -> list[GrantRecord]:
    """The grants whose approver rules an approval of this action must satisfy, given the
    chain of the grant acted under (the grant first): every grant up the chain whose policy
    requires approval for it, or, when only the agent's own decision asks for approval, the
    grant acted under. Empty when no approval is needed."""
    op = action.operation
    needing = [r for r in records if _requires_approval(r.decoded().approval, op)]
    if not needing and action.authorization.decision == pb.ALLOW_IF_APPROVED and records:
        needing = records[:1]
    return needing


def _approval_problem(
    state: LogState, action: pb.AgentAction, needing: list[GrantRecord]
) -> str | None:
    if not action.approval_id:
        return "approval-missing"
    approval = state.approval(action.approval_id)
    if approval is None:
        return "approval-missing"
    if (
        approval.action_id != action.action_id
        or approval.agent_id != action.actor.agent_id
        or approval.parameters_digest != action.operation.parameters_digest
    ):
        return "approval-mismatch"
    if approval.decision == pb.Approval.REJECT:
        return "approval-rejected"
    if not all(may_approve(state, r, approval.issuer) for r in needing):
        return "approver-not-valid"
    return None


def intent_verdict(
    state: LogState, action: pb.AgentAction, admitted_ms: int, claimed_ms: int
) -> VerdictRecord:
    """The verdict on an INTENT: in scope of one of its grants (and approved wherever that
    grant's chain or the agent's decision requires approval, with no REJECT of the action),
    out of scope with the first grant's reason, or no grant."""
    grant_ids = action.grant_ids
    if not grant_ids:
        return VerdictRecord(pb.NO_GRANT, "no-grant", admitted_ms=admitted_ms)
    agent_id, op = action.actor.agent_id, action.operation
    reasons = []
    for grant_id in grant_ids:
        problem, records = evaluate_grant(state, grant_id, agent_id, op, admitted_ms, claimed_ms)
        if problem is None and state.rejection(agent_id, action.action_id):
            problem = "approval-rejected"
        if problem is None:
            needing = approval_needed(records, action)
            if needing:
                problem = _approval_problem(state, action, needing)
            if problem is None:
                return VerdictRecord(pb.IN_SCOPE, "", grant_id, admitted_ms)
        reasons.append(problem)
    if all(r == "unknown-grant" for r in reasons):
        return VerdictRecord(pb.NO_GRANT, "unknown-grant", admitted_ms=admitted_ms)
    reason = next(r for r in reasons if r != "unknown-grant")
    return VerdictRecord(pb.OUT_OF_SCOPE, reason, admitted_ms=admitted_ms)


def outcome_verdict(
    state: LogState, action: pb.AgentAction, intent: IntentRecord, admitted_ms: int
) -> VerdictRecord:
    """The verdict on an OUTCOME, given its INTENT's record: the INTENT's verdict, unless the
    outcome did something else, or ran although the policy denied it or a human rejected it."""
    op = action.operation
    if (op.tool_name, op.operation_name, op.resource, op.access, op.parameters_digest) != (
        intent.tool_name,
        intent.operation_name,
        intent.resource,
        intent.access,
        intent.parameters_digest,
    ):
        return VerdictRecord(
            pb.OUT_OF_SCOPE, "outcome-differs-from-intent", admitted_ms=admitted_ms
        )
    ran = action.outcome.status == pb.OK
    if intent.policy_decision == pb.DENY and ran:
        return VerdictRecord(pb.OUT_OF_SCOPE, "executed-despite-deny", admitted_ms=admitted_ms)
    if ran and state.rejection(intent.issuer, action.action_id):
        return VerdictRecord(pb.OUT_OF_SCOPE, "executed-despite-reject", admitted_ms=admitted_ms)
    return VerdictRecord(intent.verdict, intent.reason, admitted_ms=admitted_ms)
