"""Statement rules on delegation (statements.scope, state): an agent attenuates a grant it holds,
never widens it; an expired parent takes its children with it; a child's uses count against its
parent.

The world they run in is tests/statement_world.py.
"""

from __future__ import annotations

import pytest
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.state import VerdictRecord

from tests.statement_world import (
    ADMIN,
    BOT,
    DENIED,
    HOUR,
    OTHER,
    PRECONDITION,
    SUB,
    T0,
    grant_body,
    operation,
    scoped_world,
    uuid7_at,
)

# Delegation.


def test_agent_attenuates_a_grant_it_holds() -> None:
    w, parent = scoped_world(max_uses=5)
    child = w.grant(
        BOT,
        "sub-agent",
        parent=parent,
        tools=["github.create_pull_request"],
        resources=["repo:acme/web"],
        access=[pb.CREATE],
        not_before=T0 - 60_000,
        not_after=T0 + 60_000,
        max_uses=2,
    )
    r = w.intent(SUB, [child])
    assert r.verdict == VerdictRecord(pb.IN_SCOPE, "", child, T0)
    # The child's own limits bind the sub-agent.
    assert w.intent(SUB, [child], op=operation(access=pb.READ)).name == (
        "OUT_OF_SCOPE",
        "access-not-granted",
    )
    assert w.intent(SUB, [child], t=T0 + 60_000).name == ("OUT_OF_SCOPE", "grant-expired")
    # The sub-agent cannot act under its parent's grant, which it does not hold.
    assert w.intent(SUB, [parent]).name == ("OUT_OF_SCOPE", "not-grantee")
    # Revoking the delegating agent cuts the sub-agent off.
    w.send(ADMIN, build.revoke("code-agent"))
    assert w.intent(SUB, [child]).name == ("OUT_OF_SCOPE", "grantor-revoked")


def test_an_expired_parent_takes_its_children_with_it() -> None:
    w, parent = scoped_world(not_after=T0 + 10)
    child = w.grant(BOT, "sub-agent", parent=parent, not_after=T0 + 10)
    assert w.intent(SUB, [child], t=T0 + 5).name == ("IN_SCOPE", "")
    assert w.intent(SUB, [child], t=T0 + 10).name == ("OUT_OF_SCOPE", "grant-expired")


WIDENINGS: list[tuple[str, dict[str, object], dict[str, object]]] = [
    ("tool", {}, {"tools": ["shell.*"]}),
    ("tool-glob", {}, {"tools": ["git*"]}),
    ("resource", {}, {"resources": ["repo:*"]}),
    ("resource-sibling", {}, {"resources": ["repo:acme/web", "repo:other/web"]}),
    ("operation", {}, {"operations": ["*"]}),
    ("operation-dropped", {}, {"operations": []}),
    ("access", {}, {"access": [pb.READ, pb.DELETE]}),
    ("starts-earlier", {}, {"not_before": T0 - 2 * HOUR}),
    ("no-start", {}, {"not_before": 0}),
    ("ends-later", {}, {"not_after": T0 + 2 * HOUR}),
    ("no-end", {}, {"not_after": 0}),
    ("more-uses", {"max_uses": 3}, {"max_uses": 4}),
    ("unlimited-uses", {"max_uses": 3}, {"max_uses": 0}),
]


@pytest.mark.parametrize(("case", "parent", "child"), WIDENINGS, ids=[c for c, _, _ in WIDENINGS])
def test_a_child_grant_that_widens_its_parent_is_refused(
    case: str, parent: dict[str, object], child: dict[str, object]
) -> None:
    w, parent_id = scoped_world(**parent)
    fields = {"max_uses": parent.get("max_uses", 0), **child}
    body = grant_body("sub-agent", parent=parent_id, **fields)  # type: ignore[arg-type]
    w.refuse(PRECONDITION, BOT, body, match="widens its parent")


def test_a_child_grant_within_its_parent_is_admitted() -> None:
    w, parent = scoped_world(max_uses=3)
    for child in (
        {"max_uses": 3},
        {"max_uses": 1, "tools": ["github.create_*"], "resources": ["repo:acme/web*"]},
        {"max_uses": 1, "tools": ["github.create_pull_request", "github.get_?"]},
        {"max_uses": 2, "access": [pb.READ], "operations": ["execute_tool"]},
    ):
        w.grant(BOT, "sub-agent", parent=parent, **child)


def test_agent_grants_need_a_parent_it_holds() -> None:
    w, parent = scoped_world()
    w.refuse(DENIED, BOT, grant_body("sub-agent"), match="parent grant")
    w.refuse(DENIED, OTHER, grant_body("sub-agent", parent=parent), match="does not hold")
    w.refuse(
        PRECONDITION, BOT, grant_body("sub-agent", parent=uuid7_at(999)), match="not in the log"
    )


def test_uses_of_a_child_grant_count_against_its_parent() -> None:
    """A one-off approval (max_uses 1) held by an agent must stay one-off: the agent cannot
    multiply it by delegating it, to sub-agents or to itself, once per child grant."""
    w, parent = scoped_world(max_uses=1)
    first = w.grant(BOT, "sub-agent", parent=parent, max_uses=1)
    second = w.grant(BOT, "sub-agent", parent=parent, max_uses=1)
    to_itself = w.grant(BOT, "code-agent", parent=parent, max_uses=1)
    assert w.intent(SUB, [first]).name == ("IN_SCOPE", "")
    assert w.state.grant_uses(parent) == 1
    assert w.intent(SUB, [second]).name == ("OUT_OF_SCOPE", "grant-exhausted")
    assert w.intent(BOT, [to_itself]).name == ("OUT_OF_SCOPE", "grant-exhausted")
    assert w.intent(BOT, [parent]).name == ("OUT_OF_SCOPE", "grant-exhausted")
