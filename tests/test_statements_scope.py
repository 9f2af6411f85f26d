"""Statement rules on scope (statements.scope, ingest): the verdict an action gets from its
grants (in scope; each out-of-scope reason; not the grantee; exhausted, revoked and unrooted
grants; no grant), approvals (allow-if-approved, only by a human), outcomes that differ from or
inherit their intent; and how an OUTCOME must follow its INTENT (the right hash, the same
agent, once).

The world they run in is tests/statement_world.py. A refused statement must leave the state
byte-for-byte as it was.
"""

from __future__ import annotations

import pytest
from affidavit.merkle.hashing import leaf_hash
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.redact import parameters_digest
from affidavit.statements.state import VerdictRecord

from tests.statement_world import (
    ADMIN,
    ALICE,
    BOB,
    BOT,
    DENIED,
    EXISTS,
    HOUR,
    OTHER,
    PARAMS,
    PRECONDITION,
    SUB,
    T0,
    grant_body,
    intent_body,
    operation,
    outcome_body,
    populated,
    scoped_world,
    uuid7_at,
)

# Scope verdicts.


def test_in_scope_when_tool_resource_access_match() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    assert r.name == ("IN_SCOPE", "")
    assert r.verdict == VerdictRecord(pb.IN_SCOPE, "", gid, T0)
    assert w.state.verdict(r.index) == r.verdict
    assert w.state.grant_uses(gid) == 1
    out = w.outcome(BOT, r)
    assert out.name == ("IN_SCOPE", "")
    assert w.state.grant_uses(gid) == 1  # an outcome is not another use
    # The first grant in scope is the one recorded, whatever precedes it.
    other = w.grant(ALICE, "code-agent", tools=["jira.*"])
    r = w.intent(BOT, [other, uuid7_at(999), gid])
    assert r.verdict == VerdictRecord(pb.IN_SCOPE, "", gid, T0)


OUT_OF_SCOPE: list[tuple[str, dict[str, object]]] = [
    ("tool-not-granted", {"op": operation(tool="shell.exec")}),
    ("operation-not-granted", {"op": operation(operation_name="chat")}),
    ("resource-not-granted", {"op": operation(resource="repo:other/web")}),
    ("access-not-granted", {"op": operation(access=pb.DELETE)}),
    ("grant-expired", {"t": T0 + HOUR}),
    ("grant-not-yet-valid", {"t": T0 - HOUR - 1}),
]


@pytest.mark.parametrize(("reason", "action"), OUT_OF_SCOPE, ids=[r for r, _ in OUT_OF_SCOPE])
def test_out_of_scope_reasons(reason: str, action: dict[str, object]) -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid], **action)  # type: ignore[arg-type]
    assert r.name == ("OUT_OF_SCOPE", reason)
    assert w.state.verdict(r.index) == r.verdict
    assert w.state.grant_uses(gid) == 0  # an action out of scope uses nothing up
    # The boundaries themselves are inside.
    if reason == "grant-expired":
        assert w.intent(BOT, [gid], t=T0 + HOUR - 1).name == ("IN_SCOPE", "")
    if reason == "grant-not-yet-valid":
        assert w.intent(BOT, [gid], t=T0 - HOUR).name == ("IN_SCOPE", "")


def test_not_grantee() -> None:
    w, gid = scoped_world()
    assert w.intent(OTHER, [gid]).name == ("OUT_OF_SCOPE", "not-grantee")


def test_grant_exhausted_after_max_uses_in_scope_intents() -> None:
    w, gid = scoped_world(max_uses=2)
    assert w.intent(BOT, [gid]).name == ("IN_SCOPE", "")
    # Intents out of scope do not use the grant up.
    assert w.intent(BOT, [gid], op=operation(tool="shell.exec")).name[0] == "OUT_OF_SCOPE"
    assert w.intent(BOT, [gid]).name == ("IN_SCOPE", "")
    assert w.state.grant_uses(gid) == 2
    assert w.intent(BOT, [gid]).name == ("OUT_OF_SCOPE", "grant-exhausted")
    assert w.state.grant_uses(gid) == 2


def test_denied_intent_uses_nothing() -> None:
    """An intent its policy denied will not run: in scope or not, it uses no grant."""
    w, gid = scoped_world(max_uses=1)
    assert w.intent(BOT, [gid], decision=pb.DENY).name == ("IN_SCOPE", "")
    assert w.state.grant_uses(gid) == 0
    assert w.intent(BOT, [gid]).name == ("IN_SCOPE", "")
    assert w.state.grant_uses(gid) == 1


def test_grantor_revoked() -> None:
    w, gid = scoped_world()
    assert w.intent(BOT, [gid]).name == ("IN_SCOPE", "")
    w.send(ADMIN, build.revoke("alice@example.com"))
    assert w.intent(BOT, [gid]).name == ("OUT_OF_SCOPE", "grantor-revoked")


def test_chain_not_rooted_in_human() -> None:
    """Admission never lets an agent grant without a parent; scope still refuses such a root,
    should one be in a state (defence in depth). The statement is applied directly."""
    w = populated()
    body = grant_body("sub-agent")
    w.refuse(DENIED, BOT, body, match="human")
    leaf = w.sign(BOT, body)
    st_ = build.statement_of(leaf)
    w.state.apply(len(w.leaves), leaf_hash(leaf), st_, None)
    assert w.intent(SUB, [st_.header.statement_id]).name == (
        "OUT_OF_SCOPE",
        "chain-not-rooted-in-human",
    )


def test_no_grant() -> None:
    w, gid = scoped_world()
    assert w.intent(BOT, []).name == ("NO_GRANT", "no-grant")
    assert w.intent(BOT, [uuid7_at(999)]).name == ("NO_GRANT", "unknown-grant")
    # A known grant's reason wins over unknown ones.
    r = w.intent(BOT, [uuid7_at(999), gid], op=operation(tool="shell.exec"))
    assert r.name == ("OUT_OF_SCOPE", "tool-not-granted")


APPROVAL_CASES = [
    ("approval-missing", "none"),
    ("approval-missing", "unknown"),
    ("approval-mismatch", "digest"),
    ("approval-mismatch", "action"),
    ("approval-rejected", "reject"),
    ("approver-not-valid", "revoked"),
    ("", "approve"),
    ("", "edit"),
]


@pytest.mark.parametrize(("reason", "case"), APPROVAL_CASES, ids=[c for _, c in APPROVAL_CASES])
def test_allow_if_approved(reason: str, case: str) -> None:
    w, gid = scoped_world()
    action_id = w.new_id()
    params: object = PARAMS
    approval_id = ""
    if case == "unknown":
        approval_id = uuid7_at(999)
    elif case == "digest":
        approval_id = w.approve(action_id, {**PARAMS, "branch": "main"})
    elif case == "action":
        approval_id = w.approve(w.new_id())
    elif case == "reject":
        approval_id = w.approve(action_id, decision=pb.Approval.REJECT)
    elif case == "revoked":
        gid = w.grant(ALICE, "code-agent", approval=pb.ApprovalPolicy(approvers=[BOB.identity_id]))
        approval_id = w.approve(action_id, approver=BOB)
        w.send(ADMIN, build.revoke("bob@example.com"))
    elif case == "approve":
        approval_id = w.approve(action_id)
    elif case == "edit":  # approved with edited parameters: the action carries the edited ones
        params = {**PARAMS, "title": "Fix bug (reviewed)"}
        approval_id = w.approve(action_id, params, decision=pb.Approval.EDIT)
    elif case != "none":
        raise AssertionError(case)
    r = w.intent(
        BOT,
        [gid],
        action_id=action_id,
        decision=pb.ALLOW_IF_APPROVED,
        approval_id=approval_id,
        op=operation(params=params),
    )
    expected = ("OUT_OF_SCOPE", reason) if reason else ("IN_SCOPE", "")
    assert r.name == expected


def test_approval_only_by_a_human() -> None:
    w, _ = scoped_world()
    body = pb.Approval(
        action_id=w.new_id(),
        agent_id="code-agent",
        parameters_digest=parameters_digest(PARAMS),
        decision=pb.Approval.APPROVE,
    )
    w.refuse(DENIED, BOT, body, match="human")


def test_outcome_differs_from_intent() -> None:
    cases: list[pb.Operation] = [
        operation(resource="repo:acme/api"),
        operation(tool="github.merge_pull_request"),
        operation(params={**PARAMS, "branch": "main"}),
        operation(access=pb.READ),
        operation(operation_name="create_agent"),
    ]
    for op in cases:
        w, gid = scoped_world()
        r = w.intent(BOT, [gid])
        out = w.outcome(BOT, r, op=op)
        assert out.name == ("OUT_OF_SCOPE", "outcome-differs-from-intent"), op
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    assert w.outcome(BOT, r).name == ("IN_SCOPE", "")


def test_executed_despite_deny() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid], decision=pb.DENY)
    assert w.outcome(BOT, r).name == ("OUT_OF_SCOPE", "executed-despite-deny")
    r = w.intent(BOT, [gid], decision=pb.DENY)
    assert w.outcome(BOT, r, status=pb.DENIED).name[0] != "OUT_OF_SCOPE"


def test_outcome_inherits_an_out_of_scope_intent() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid], op=operation(tool="shell.exec"))
    out = w.outcome(BOT, r, op=operation(tool="shell.exec"))
    assert out.name == ("OUT_OF_SCOPE", "tool-not-granted")


# Outcomes and intents.


def test_outcome_without_intent_is_refused() -> None:
    w, _ = scoped_world()
    body = outcome_body("code-agent", w.new_id(), b"\x01" * 32)
    w.refuse(PRECONDITION, BOT, body, match="no INTENT")


def test_outcome_with_the_wrong_intent_hash_is_refused() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    body = outcome_body("code-agent", r.action_id, leaf_hash(w.leaves[0]))
    w.refuse(PRECONDITION, BOT, body, match="intent_leaf_hash")


def test_outcome_by_another_agent_finds_no_intent() -> None:
    """An OUTCOME answers its own agent's INTENT: another agent's action is another action."""
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    body = outcome_body("other-agent", r.action_id, r.leaf_hash)
    w.refuse(PRECONDITION, OTHER, body, match="'other-agent' has no INTENT of action")


def test_second_outcome_and_second_intent_are_refused() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    w.outcome(BOT, r)
    w.refuse(EXISTS, BOT, outcome_body("code-agent", r.action_id, r.leaf_hash), match="OUTCOME")
    w.refuse(EXISTS, BOT, intent_body("code-agent", [gid], r.action_id), match="INTENT")


def test_actions_only_by_the_agent_they_name() -> None:
    w, gid = scoped_world()
    w.refuse(DENIED, ALICE, intent_body("alice@example.com", [gid], w.new_id()), match="agent")
    w.refuse(DENIED, BOT, intent_body("other-agent", [gid], w.new_id()), match="agent_id")
