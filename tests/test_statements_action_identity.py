"""An action is (acting agent, action id): ids are the producer's choice, so two agents may
choose the same one, and neither may take the other's action by it — not its INTENT (a
squatted id once refused the rightful INTENT: intent-exists), not its OUTCOME, not a human's
REJECT of it. And the rewrite of layout 1 state (keyed by action id alone) gives exactly the
state the new rules build.

Layout 1 is built here from a layout 2 state by the old key rule, as cc86bae's
statements.state wrote it: s/x/<action id> -> the INTENT record, s/r/<action id> -> the
statement id of the first REJECT of that id, whichever agent it named (tests/layout1.py).
"""

from __future__ import annotations

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import state_migration
from affidavit.statements.state import DictKV, LogState, intent_key
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.layout1 import as_layout1
from tests.statement_world import (
    ALICE,
    BOT,
    EXISTS,
    OTHER,
    PRECONDITION,
    Receipt,
    World,
    intent_body,
    outcome_body,
    populated,
)

AGENTS = {"code-agent": BOT, "other-agent": OTHER}


def two_agents() -> tuple[World, dict[str, str]]:
    """A world where alice grants both agents the same scope: agent -> grant id."""
    w = populated()
    return w, {agent: w.grant(ALICE, agent) for agent in AGENTS}


def test_another_agents_intent_with_the_same_id_does_not_squat_it() -> None:
    w, grants = two_agents()
    squat = w.intent(OTHER, [grants["other-agent"]], action_id="call_1")
    mine = w.intent(BOT, [grants["code-agent"]], action_id="call_1")
    assert mine.name == squat.name == ("IN_SCOPE", "")
    mine_state = w.state.intent("code-agent", "call_1")
    assert mine_state is not None and mine_state.index == mine.index
    squat_state = w.state.intent("other-agent", "call_1")
    assert squat_state is not None and squat_state.index == squat.index
    # Each OUTCOME answers its own agent's INTENT, whichever comes first.
    assert w.outcome(BOT, mine).name == ("IN_SCOPE", "")
    assert w.outcome(OTHER, squat).name == ("IN_SCOPE", "")


def test_one_agent_records_one_intent_per_id() -> None:
    w, grants = two_agents()
    w.intent(BOT, [grants["code-agent"]], action_id="call_1")
    body = intent_body("code-agent", [grants["code-agent"]], "call_1")
    w.refuse(EXISTS, BOT, body, match="'code-agent' already recorded an INTENT of action call_1")


def test_an_outcome_cannot_answer_another_agents_intent() -> None:
    """Not even when it names that INTENT's leaf hash: it has no INTENT of its own by that id."""
    w, grants = two_agents()
    theirs = w.intent(BOT, [grants["code-agent"]], action_id="call_1")
    body = outcome_body("other-agent", "call_1", theirs.leaf_hash)
    w.refuse(PRECONDITION, OTHER, body, match="'other-agent' has no INTENT of action call_1")


def test_a_reject_counts_for_the_agent_it_names_only() -> None:
    w, grants = two_agents()
    w.approve("call_1", decision=pb.Approval.REJECT, agent="other-agent")
    assert w.intent(BOT, [grants["code-agent"]], action_id="call_1").name == ("IN_SCOPE", "")
    assert w.intent(OTHER, [grants["other-agent"]], action_id="call_1").name == (
        "OUT_OF_SCOPE",
        "approval-rejected",
    )


def test_executed_despite_reject_only_for_the_agent_it_names() -> None:
    w, grants = two_agents()
    mine = w.intent(BOT, [grants["code-agent"]], action_id="call_1")
    theirs = w.intent(OTHER, [grants["other-agent"]], action_id="call_1")
    w.approve("call_1", decision=pb.Approval.REJECT, agent="other-agent")
    assert w.outcome(BOT, mine).name == ("IN_SCOPE", "")
    assert w.outcome(OTHER, theirs).name == ("OUT_OF_SCOPE", "executed-despite-reject")


# A run of actions by two agents over a few ids, with REJECTs among them: what each agent may
# record follows from its own actions alone.
_STEP = st.tuples(
    st.sampled_from(["intent", "outcome", "reject"]),
    st.sampled_from(sorted(AGENTS)),
    st.sampled_from(["a", "b", "call\x00x"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_STEP, max_size=24))
def test_each_agent_owns_its_action_ids(steps: list[tuple[str, str, str]]) -> None:
    w, grants = two_agents()
    intents: dict[tuple[str, str], Receipt] = {}  # (agent, id) -> its INTENT
    answered: set[tuple[str, str]] = set()
    rejected: set[tuple[str, str]] = set()
    for kind, agent, action_id in steps:
        key, action = AGENTS[agent], (agent, action_id)
        if kind == "reject":
            w.approve(action_id, decision=pb.Approval.REJECT, agent=agent)
            rejected.add(action)
        elif kind == "intent":
            if action in intents:
                w.refuse(EXISTS, key, intent_body(agent, [grants[agent]], action_id))
                continue
            made = w.intent(key, [grants[agent]], action_id=action_id)
            intents[action] = made
            want = ("OUT_OF_SCOPE", "approval-rejected") if action in rejected else ("IN_SCOPE", "")
            assert made.name == want
        else:
            r = intents.get(action)
            if r is None:
                # Naming the leaf hash of another agent's INTENT with this id, if there is one.
                other = next((v for (_, i), v in intents.items() if i == action_id), None)
                leaf_hash = other.leaf_hash if other is not None else b"\x01" * 32
                w.refuse(PRECONDITION, key, outcome_body(agent, action_id, leaf_hash))
                continue
            if action in answered:
                w.refuse(EXISTS, key, outcome_body(agent, action_id, r.leaf_hash))
                continue
            o = w.outcome(key, r)
            answered.add(action)
            want = (
                ("OUT_OF_SCOPE", "executed-despite-reject")
                if action in rejected
                else ("OUT_OF_SCOPE", "approval-rejected")
                if r.name[1] == "approval-rejected"
                else ("IN_SCOPE", "")
            )
            assert o.name == want
    # The rewrite of this log's state in layout 1 (where it has one: one INTENT per id) is
    # this state, record for record.
    ids = [i for _, i in intents]
    if len(ids) == len(set(ids)):
        _assert_rewrite_gives(w.kv)


def _assert_rewrite_gives(kv: DictKV) -> None:
    layout2 = dict(kv.encoded())
    old = as_layout1(layout2)
    rewrite = state_migration.rewrite(state_migration.scan_dict(old))
    for key in rewrite.deletes:
        del old[key]
    old.update(rewrite.puts)
    assert old == layout2
    again = state_migration.rewrite(state_migration.scan_dict(old))
    assert again.puts == {} and again.deletes == []  # idempotent


def test_rewrite_of_layout1_state_is_the_new_state() -> None:
    """A log layout 1 could hold (one INTENT per id), REJECTs of one id naming each agent:
    the rewrite moves the INTENTs and rebuilds the first REJECT of each (agent, id)."""
    w, grants = two_agents()
    r = w.intent(BOT, [grants["code-agent"]], action_id="call_1")
    w.approve("call_1", decision=pb.Approval.REJECT, agent="other-agent")
    w.approve("call_1", decision=pb.Approval.REJECT, agent="code-agent")
    w.approve("call_1", decision=pb.Approval.REJECT, agent="code-agent")
    w.outcome(BOT, r)
    w.intent(OTHER, [grants["other-agent"]], action_id="call_2")
    _assert_rewrite_gives(w.kv)
    state = LogState(w.kv)
    assert state.intent("code-agent", "call_1") is not None
    assert w.kv.get(intent_key("code-agent", "call_1")) is not None
