"""An identity acting through the client library (client/actor.py): an action records its
INTENT then its OUTCOME, one that raises records an error, secrets in the parameters are
redacted while the approval still binds, enforcement stops what the log does not authorise,
and a secret outside the parameters never leaves. On World (tests/clientworld.py).
"""

from __future__ import annotations

import hashlib

import pytest
from affidavit.client.errors import (
    NotAuthorisedError,
    NotSentError,
    RefusedError,
)
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.canonical import canonical_json, commitment
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import parameters_digest

from affidavit import merkle
from tests.clientworld import (
    GITHUB_TOKEN,
    Stub,
    World,
    world,
)

__all__ = ["world"]  # fixtures, used by name


# An identity acting: the common flows.


PR = {"repo": "acme/web", "title": "Fix login redirect", "head": "fix-login"}


def test_action_records_intent_then_outcome(world: World) -> None:
    with world.bot.action(
        "github.create_pull_request", "repo:acme/web", pb.CREATE, PR, grant_ids=[world.grant_id]
    ) as act:
        assert act.intent_recorded is not None and act.outcome_recorded is None
        act.result = {"number": 42, "url": "https://github.com/acme/web/pull/42"}
        act.effect_ref = "commit:3f2a9c1e"
    intent, outcome = act.intent_recorded, act.outcome_recorded
    assert outcome is not None
    assert (
        intent.receipt.verdict == "IN_SCOPE" and outcome.receipt.index == intent.receipt.index + 1
    )

    i = world.statement(intent.receipt)
    assert i.header.issuer == "bot" and i.header.statement_id == intent.statement_id
    assert i.action.phase == pb.AgentAction.INTENT and i.action.action_id == act.action_id
    assert i.action.operation.tool_name == "github.create_pull_request"
    assert i.action.operation.parameters_digest == parameters_digest(PR)
    assert list(i.action.grant_ids) == [world.grant_id]

    o = world.statement(outcome.receipt)
    assert o.action.phase == pb.AgentAction.OUTCOME and o.action.action_id == act.action_id
    assert o.action.intent_leaf_hash == merkle.leaf_hash(intent.leaf)
    assert o.action.outcome.status == pb.OK
    assert o.action.outcome.effect_ref == "commit:3f2a9c1e"
    # A keyed commitment: the agent's opening key confirms the result; a guess without it cannot.
    opening = world.bot.result_opening(act.action_id)
    assert o.action.outcome.result_digest == commitment(opening, canonical_json(act.result))
    assert (
        o.action.outcome.result_digest
        != hashlib.sha256(canonical_json(act.result).encode()).hexdigest()
    )
    assert o.action.outcome.error_code == ""
    # One session: the OUTCOME follows the INTENT in the bot's chain.
    assert o.header.session_id == i.header.session_id
    assert o.header.sequence == i.header.sequence + 1
    assert o.header.previous_hash == merkle.leaf_hash(intent.leaf)


class ToolFailed(RuntimeError):
    pass


def test_action_that_raises_records_an_error(world: World) -> None:
    act = world.bot.action(
        "github.merge_pull_request",
        "repo:acme/web",
        pb.CREATE,
        {"n": 42},
        grant_ids=[world.grant_id],
    )
    with pytest.raises(ToolFailed, match="merge conflict"), act:
        act.result = "never recorded"
        raise ToolFailed("merge conflict")
    assert act.outcome_recorded is not None
    o = world.statement(act.outcome_recorded.receipt)
    assert o.action.phase == pb.AgentAction.OUTCOME
    assert o.action.outcome.status == pb.ERROR
    assert o.action.outcome.error_code == "ToolFailed"
    assert o.action.outcome.result_digest == ""


def test_secrets_in_parameters_are_redacted_and_the_approval_still_binds(world: World) -> None:
    params = {"repo": "acme/web", "auth": {"token": GITHUB_TOKEN}, "title": "Rotate keys"}
    action_id = uuid7()
    approval = world.alice.approve(action_id, params, agent_id="bot", ticket="CHG-7")
    with world.bot.action(
        "github.create_pull_request",
        "repo:acme/web",
        pb.CREATE,
        params,
        grant_ids=[world.grant_id],
        action_id=action_id,
        approval_id=approval.statement_id,
        decision=pb.ALLOW_IF_APPROVED,
    ) as act:
        pass
    assert act.intent_recorded is not None and act.outcome_recorded is not None
    # Approved parameters, matched by digest although the log holds only the redacted text.
    assert act.intent_recorded.receipt.verdict == "IN_SCOPE", act.intent_recorded.receipt
    entry = world.entry(act.intent_recorded.receipt)
    assert GITHUB_TOKEN.encode() not in entry.data
    assert GITHUB_TOKEN.encode() not in act.outcome_recorded.leaf
    op = build.statement_of(entry.data).action.operation
    assert "«redacted:github-token:" in op.parameters_json
    assert GITHUB_TOKEN not in op.parameters_json and "acme/web" in op.parameters_json
    assert [(r.path, r.rule) for r in op.redactions] == [("/auth/token", "github-token")]
    assert op.redactions[0].fingerprint in op.parameters_json
    assert op.parameters_digest == parameters_digest(params)

    # An approval of other parameters does not cover this action.
    other_id = uuid7()
    other = world.alice.approve(other_id, {**params, "title": "something else"}, agent_id="bot")
    unapproved = world.bot.action(
        "github.create_pull_request",
        "repo:acme/web",
        pb.CREATE,
        params,
        grant_ids=[world.grant_id],
        action_id=other_id,
        approval_id=other.statement_id,
        decision=pb.ALLOW_IF_APPROVED,
    )
    with pytest.raises(NotAuthorisedError, match="OUT_OF_SCOPE"), unapproved:
        raise AssertionError("an unapproved action must not run")
    assert unapproved.intent_recorded is not None
    assert unapproved.intent_recorded.receipt.verdict == "OUT_OF_SCOPE"


def test_enforcement_stops_what_the_log_does_not_authorise(world: World) -> None:
    ran: list[str] = []
    act = world.bot.action("shell.exec", "host:db", pb.EXECUTE, {"cmd": "ls"})  # no grant
    with pytest.raises(NotAuthorisedError) as raised, act:
        ran.append("shell.exec")
    assert ran == []
    assert (raised.value.verdict, raised.value.action_id) == ("NO_GRANT", act.action_id)
    assert raised.value.reason and raised.value.reason in str(raised.value)
    # Recorded as attempted: the INTENT, then an OUTCOME saying it was denied.
    assert act.intent_recorded is not None and act.outcome_recorded is not None
    o = world.statement(act.outcome_recorded.receipt).action
    assert o.phase == pb.AgentAction.OUTCOME and o.action_id == act.action_id
    assert (o.outcome.status, o.outcome.error_code) == (pb.DENIED, "NO_GRANT")
    assert o.intent_leaf_hash == merkle.leaf_hash(act.intent_recorded.leaf)

    # Observe-only (enforce=False): recorded with its verdict, and it runs.
    with world.bot.action(
        "github.delete_repository",
        "repo:other/x",
        pb.DELETE,
        {},
        grant_ids=[world.grant_id],
        enforce=False,
    ) as observed:
        ran.append("github.delete_repository")
    assert ran == ["github.delete_repository"]
    assert observed.intent_recorded is not None and observed.outcome_recorded is not None
    assert observed.intent_recorded.receipt.verdict == "OUT_OF_SCOPE"
    assert world.statement(observed.outcome_recorded.receipt).action.outcome.status == pb.OK


def test_a_secret_outside_the_parameters_never_leaves(world: World) -> None:
    before = world.server.checkpoint().size
    real = world.client.stub
    counting = Stub(real)
    world.client.stub = counting  # type: ignore[assignment]
    try:
        act = world.bot.action(
            "github.get_file",
            f"repo:acme/web?token={GITHUB_TOKEN}",
            pb.READ,
            {},
            grant_ids=[world.grant_id],
        )
        with pytest.raises(NotSentError) as refused, act:
            pytest.fail("the block must not run: the INTENT was refused")
    finally:
        world.client.stub = real
    assert not isinstance(refused.value, RefusedError)  # stopped here, not by the log
    assert "resource" in refused.value.message
    assert GITHUB_TOKEN not in str(refused.value)
    assert counting.calls.get("Append", 0) == 0  # never sent
    assert world.server.checkpoint().size == before
    # The session did not advance: the bot's next statement is accepted.
    with world.bot.action(
        "github.get_file", "repo:acme/web", pb.READ, {}, grant_ids=[world.grant_id]
    ) as ok:
        pass
    assert ok.outcome_recorded is not None and world.server.checkpoint().size == before + 2
