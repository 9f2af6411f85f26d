"""Grants and scope: whether an action stays inside the authority delegated to its agent.

A grant's patterns are globs (`*` any run of characters, `?` one character, nothing else
special). A child grant attenuates its parent: each of its patterns must be covered by one of
the parent's, its access kinds a subset, its window and use limit within the parent's.
Covering is judged conservatively (a child pattern is covered when it is literally one of the
parent's, when a parent pattern matches it as text, or when it extends a parent's trailing-`*`
prefix), so a grant is never accepted as narrower than it is.
"""

from __future__ import annotations

import re
from functools import lru_cache

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.state import LogState, VerdictRecord

MAX_CHAIN = 16
"""Longest delegation chain followed (human → agent → sub-agent → ...)."""


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S
    )


def matches(pattern: str, value: str) -> bool:
    return _glob(pattern).fullmatch(value) is not None


def matches_any(patterns: list[str] | tuple[str, ...], value: str) -> bool:
    return any(matches(p, value) for p in patterns)


def _is_literal(pattern: str) -> bool:
    return "*" not in pattern and "?" not in pattern


def covers(parent: str, child: str) -> bool:
    """Whether every string child matches is also matched by parent (judged conservatively)."""
    if parent == child:
        return True
    if _is_literal(child):
        return matches(parent, child)
    # A wildcard child is covered only by a prefix glob ("repo/*") that its literal start extends.
    return parent.endswith("*") and _is_literal(parent[:-1]) and child.startswith(parent[:-1])


def attenuation_problem(parent: pb.Grant, child: pb.Grant) -> str | None:
    """Why child is not within parent, or None when it is."""
    for name in ("tools", "resources"):
        for pattern in getattr(child, name):
            if not any(covers(p, pattern) for p in getattr(parent, name)):
                return f"{name[:-1]} pattern {pattern!r} is not within the parent grant"
    if parent.operations:
        if not child.operations:
            return "the parent grant limits operations; the child must too"
        for pattern in child.operations:
            if not any(covers(p, pattern) for p in parent.operations):
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


def _window_problem(g: pb.Grant, now_ms: int) -> str | None:
    if g.not_before_ms and now_ms < g.not_before_ms:
        return "grant-not-yet-valid"
    if g.not_after_ms and now_ms >= g.not_after_ms:
        return "grant-expired"
    return None


def _chain_problem(state: LogState, grant_id: str, now_ms: int) -> str | None:
    """Walk a grant up to its root: every link valid now and not used up, issued by an unrevoked
    grantor, the root by a human."""
    for _ in range(MAX_CHAIN):
        record = state.grant(grant_id)
        if record is None:
            return "unknown-grant"
        g = record.decoded()
        problem = _window_problem(g, now_ms)
        if problem:
            return problem
        if g.max_uses and state.grant_uses(grant_id) >= g.max_uses:
            return "grant-exhausted"  # uses of its children count against it too
        grantor = state.identity(record.issuer)
        if grantor is None or grantor.revoked_at is not None:
            return "grantor-revoked"
        if not g.parent_grant_id:
            return None if grantor.kind == pb.HUMAN else "chain-not-rooted-in-human"
        grant_id = g.parent_grant_id
    return "chain-too-long"


def evaluate_grant(
    state: LogState, grant_id: str, action: pb.AgentAction, now_ms: int
) -> str | None:
    """Why the action is outside this grant, or None when it is inside."""
    record = state.grant(grant_id)
    if record is None:
        return "unknown-grant"
    g = record.decoded()
    if g.grantee != action.actor.agent_id:
        return "not-grantee"
    if g.max_uses and state.grant_uses(grant_id) >= g.max_uses:
        return "grant-exhausted"
    problem = _chain_problem(state, grant_id, now_ms)
    if problem:
        return problem
    op = action.operation
    if not matches_any(tuple(g.tools), op.tool_name):
        return "tool-not-granted"
    if g.operations and not matches_any(tuple(g.operations), op.operation_name):
        return "operation-not-granted"
    if not matches_any(tuple(g.resources), op.resource):
        return "resource-not-granted"
    if op.access not in g.access:
        return "access-not-granted"
    return None


def _approval_problem(state: LogState, action: pb.AgentAction) -> str | None:
    if not action.approval_id:
        return "approval-missing"
    approval = state.approval(action.approval_id)
    if approval is None:
        return "approval-missing"
    if (
        approval.action_id != action.action_id
        or approval.parameters_digest != action.operation.parameters_digest
    ):
        return "approval-mismatch"
    if approval.decision == pb.Approval.REJECT:
        return "approval-rejected"
    approver = state.identity(approval.issuer)
    if approver is None or approver.revoked_at is not None or approver.kind != pb.HUMAN:
        return "approver-not-valid"
    return None


def intent_verdict(state: LogState, action: pb.AgentAction, now_ms: int) -> VerdictRecord:
    """The verdict on an INTENT: in scope of one of its grants (and approved where its policy
    decision requires approval), out of scope with the first grant's reason, or no grant."""
    if not action.grant_ids:
        return VerdictRecord(pb.NO_GRANT, "no-grant")
    reasons = []
    for grant_id in action.grant_ids:
        problem = evaluate_grant(state, grant_id, action, now_ms)
        if problem is None:
            if action.authorization.decision == pb.ALLOW_IF_APPROVED:
                problem = _approval_problem(state, action)
            if problem is None:
                return VerdictRecord(pb.IN_SCOPE, "", grant_id)
        reasons.append(problem)
    if all(r == "unknown-grant" for r in reasons):
        return VerdictRecord(pb.NO_GRANT, "unknown-grant")
    return VerdictRecord(pb.OUT_OF_SCOPE, next(r for r in reasons if r != "unknown-grant"))


def outcome_verdict(state: LogState, action: pb.AgentAction) -> VerdictRecord:
    """The verdict on an OUTCOME: its INTENT's, unless the outcome did something else."""
    intent = state.intent(action.action_id)
    assert intent is not None  # admission checked it
    op = action.operation
    if (op.tool_name, op.operation_name, op.resource, op.access, op.parameters_digest) != (
        intent.tool_name,
        intent.operation_name,
        intent.resource,
        intent.access,
        intent.parameters_digest,
    ):
        return VerdictRecord(pb.OUT_OF_SCOPE, "outcome-differs-from-intent")
    if intent.policy_decision == pb.DENY and action.outcome.status == pb.OK:
        return VerdictRecord(pb.OUT_OF_SCOPE, "executed-despite-deny")
    return VerdictRecord(intent.verdict, intent.reason)
