"""OpenAI Agents SDK runs (examples/openai_agents_agent.py) recording into a real log.

The SDK's real Runner loop drives the tools; the model is a scripted `agents.Model` (no model
API, tracing off). Every check reads the log back as the auditor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from affidavit.adapters.openai_agents import AuditHooks
from affidavit.adapters.spool import Spool
from affidavit.client.client import Client
from affidavit.client.errors import NotAuthorisedError, UnavailableError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.canonical import commitment
from agents import Agent, Model, ModelResponse, RunConfig, Runner, RunResult, Usage, UserError
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from affidavit import merkle
from tests.adapterlog import (
    GITHUB_TOKEN,
    AdapterLog,
    check_intent,
    intent_and_outcome,
    load_example,
    running_log,
)
from tests.serverproc import RPC_TIMEOUT, ServerFactory

example = load_example("openai_agents_agent")
OFFLINE = RunConfig(tracing_disabled=True)


class ScriptedModel(Model):
    """A Model answering each turn from a script: tool calls, then a final message."""

    def __init__(self, *calls: tuple[str, dict[str, Any]]) -> None:
        self.turns: list[list[Any]] = [
            [
                ResponseFunctionToolCall(
                    arguments=json.dumps(args),
                    call_id=f"call-{i}",
                    name=name,
                    type="function_call",
                    id=f"fc-{i}",
                    status="completed",
                )
            ]
            for i, (name, args) in enumerate(calls)
        ]
        self.turns.append(
            [
                ResponseOutputMessage(
                    id="msg-final",
                    content=[ResponseOutputText(text="done", type="output_text", annotations=[])],
                    role="assistant",
                    status="completed",
                    type="message",
                )
            ]
        )

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return ModelResponse(output=self.turns.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the tests do not stream")


def run(agent: Agent[None], hooks: AuditHooks, prompt: Any = "go") -> RunResult:
    return asyncio.run(Runner.run(agent, prompt, hooks=hooks, run_config=OFFLINE))


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdapterLog]:
    with running_log(tmp_path_factory, "openai-agents") as log:
        yield log


GRANT = {
    "tools": ["create_issue", "delete_repository", "send_email"],
    "resources": ["repo:acme/*", "mailto:*@acme.example"],
    "access": [pb.CREATE],
}


def test_tool_calls_are_recorded_before_and_after_with_secrets_redacted(log: AdapterLog) -> None:
    actor = log.agent("oa-recorded")
    grant_id = log.grant("oa-recorded", **GRANT)
    args = {"repo": "acme/web", "title": "Flaky login test", "token": GITHUB_TOKEN}
    effects: list[str] = []
    agent = example.make_agent(ScriptedModel(("create_issue", args)), effects)
    result = run(agent, example.hooks_for(actor, grant_id))
    assert result.final_output == "done"
    assert effects == ["issue:acme/web:Flaky login test"]

    trail = log.trail("oa-recorded")
    intent, outcome = intent_and_outcome(trail, "create_issue")
    check_intent(
        intent,
        tool="create_issue",
        resource="repo:acme/web",
        arguments=args,
        grant_id=grant_id,
        verdict="IN_SCOPE",
    )
    op = intent.action.operation
    assert op.tool_call_id == "call-0"
    assert intent.statement.header.producer.adapter == "affidavit-openai-agents/1"
    assert (
        GITHUB_TOKEN not in op.parameters_json and "«redacted:github-token:" in op.parameters_json
    )
    for r in trail:
        [entry] = log.auditor.entries(r.hit.index, r.hit.index + 1)
        assert GITHUB_TOKEN.encode() not in entry.data
    assert outcome.action.outcome.status == pb.OK
    opening = actor.result_opening(intent.action.action_id)
    returned = "opened issue 'Flaky login test' in acme/web"
    assert outcome.action.outcome.result_digest == commitment(opening, returned)


def test_an_out_of_scope_call_is_blocked_and_recorded_as_attempted(log: AdapterLog) -> None:
    actor = log.agent("oa-blocked")
    grant_id = log.grant("oa-blocked", **GRANT)
    effects: list[str] = []
    agent = example.make_agent(ScriptedModel(("delete_repository", {"repo": "acme/web"})), effects)
    # The SDK reports a hook's exception as the tool's UserError, the verdict in its message.
    with pytest.raises(UserError, match="OUT_OF_SCOPE") as raised:
        run(agent, example.hooks_for(actor, grant_id))
    assert isinstance(raised.value.__cause__, NotAuthorisedError)
    assert effects == []  # never ran

    intent, outcome = intent_and_outcome(log.trail("oa-blocked"), "delete_repository")
    check_intent(
        intent,
        tool="delete_repository",
        resource="repo:acme/web",
        arguments={"repo": "acme/web"},
        grant_id=grant_id,
        verdict="OUT_OF_SCOPE",
    )
    assert (outcome.action.outcome.status, outcome.action.outcome.error_code) == (
        pb.DENIED,
        "OUT_OF_SCOPE",
    )


def test_tools_needing_approval_run_only_as_approved(log: AdapterLog) -> None:
    actor = log.agent("oa-approval")
    grant_id = log.grant("oa-approval", **GRANT)
    effects: list[str] = []
    email = {"to": "ops@acme.example", "body": "deploy at 5"}
    agent = example.make_agent(ScriptedModel(("send_email", email)), effects)
    hooks = example.hooks_for(actor, grant_id)
    paused = run(agent, hooks)
    [item] = paused.interruptions
    assert effects == []  # waiting for the human
    approval_id = hooks.record_approval(log.alice, item, approve=True, comment="ok")
    state = paused.to_state()
    state.approve(item)
    resumed = run(agent, hooks, state)
    assert resumed.final_output == "done" and effects == ["email:ops@acme.example"]

    intent, outcome = intent_and_outcome(log.trail("oa-approval"), "send_email")
    check_intent(
        intent,
        tool="send_email",
        resource="mailto:ops@acme.example",
        arguments=email,
        grant_id=grant_id,
        verdict="IN_SCOPE",
    )
    assert intent.action.approval_id == approval_id
    assert intent.action.authorization.decision == pb.ALLOW_IF_APPROVED
    assert outcome.action.outcome.status == pb.OK

    # Approved in the SDK but with no APPROVAL in the log: the log says so, and it does not run.
    other = example.make_agent(ScriptedModel(("send_email", email)), effects)
    unrecorded = example.hooks_for(log.agent("oa-unrecorded"), log.grant("oa-unrecorded", **GRANT))
    paused = run(other, unrecorded)
    state = paused.to_state()
    state.approve(paused.interruptions[0])
    with pytest.raises(UserError, match="approval-missing") as raised:
        run(other, unrecorded, state)
    assert isinstance(raised.value.__cause__, NotAuthorisedError)
    assert effects == ["email:ops@acme.example"]


def test_the_log_down_stops_the_tool_or_spools_it_in_order(tmp_path: Path) -> None:
    factory = ServerFactory(tmp_path)
    try:
        own = AdapterLog.start(factory, tmp_path)
        args = {"repo": "acme/web", "title": "t", "token": "x"}
        closed = own.agent("oa-closed", retries=0)
        open_ = own.agent("oa-open", retries=0)
        closed_grant, open_grant = own.grant("oa-closed", **GRANT), own.grant("oa-open", **GRANT)
        own.server.kill()

        effects: list[str] = []
        agent = example.make_agent(ScriptedModel(("create_issue", args)), effects)
        with pytest.raises(UserError, match="UNAVAILABLE") as raised:
            run(agent, example.hooks_for(closed, closed_grant))
        assert isinstance(raised.value.__cause__, UnavailableError)
        assert effects == []  # fail closed: the tool did not run

        spool = Spool(tmp_path / "spool")
        hooks = AuditHooks(open_, grant_ids=[open_grant], target=example.target, spool=spool)
        agent = example.make_agent(
            ScriptedModel(("create_issue", args), ("create_issue", {**args, "title": "u"})),
            effects,
        )
        run(agent, hooks)
        assert effects == ["issue:acme/web:t", "issue:acme/web:u"]
        waiting = spool.leaves()
        assert len(waiting) == 4

        own.server.start()
        own.auditor = Client(
            own.server.address, own.policy, token=own.server.auditor_token, timeout=RPC_TIMEOUT
        )
        with own.client() as client:
            receipts = spool.replay(client)
        assert len(spool) == 0
        assert [r.leaf_hash for r in receipts] == [merkle.leaf_hash(leaf) for leaf in waiting]
        trail = own.trail("oa-open")
        assert [r.hit.leaf_hash for r in trail] == [r.leaf_hash for r in receipts]
        assert [r.verdict for r in trail if r.action.phase == pb.AgentAction.INTENT] == [
            "IN_SCOPE",
            "IN_SCOPE",
        ]
        own.close()
    finally:
        factory.cleanup()
