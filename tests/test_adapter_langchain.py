"""LangChain v1 agents (examples/langchain_agent.py) recording into a real log.

A real `create_agent` loop drives the tools; the model is LangChain's GenericFakeChatModel
emitting scripted tool calls (no model API). Every check reads the log back as the auditor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from affidavit.adapters.langchain import AuditCallbackHandler
from affidavit.adapters.spool import Spool
from affidavit.client.client import Client
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.canonical import commitment
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.types import Command

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

example = load_example("langchain_agent")


class ScriptedModel(GenericFakeChatModel):
    """LangChain's fake chat model, answering with the scripted messages in turn; binding
    tools changes nothing (the script already names them)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


def script(*calls: tuple[str, dict[str, Any]]) -> ScriptedModel:
    """A model that asks for each tool call in turn, then says it is done."""
    messages = [
        AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": f"call-{i}"}])
        for i, (n, a) in enumerate(calls)
    ]
    return ScriptedModel(messages=iter([*messages, AIMessage(content="done")]))


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdapterLog]:
    with running_log(tmp_path_factory, "langchain") as log:
        yield log


GRANT = {
    "tools": ["create_issue", "delete_repository", "send_email"],
    "resources": ["repo:acme/*", "mailto:*@acme.example"],
    "access": [pb.CREATE],
}


def run(agent: Any, prompt: str, thread: str) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread}}
    result: dict[str, Any] = agent.invoke({"messages": [("user", prompt)]}, config)
    return result


def tool_messages(result: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


def test_tool_calls_are_recorded_before_and_after_with_secrets_redacted(log: AdapterLog) -> None:
    actor = log.agent("lc-recorded")
    grant_id = log.grant("lc-recorded", **GRANT)
    args = {"repo": "acme/web", "title": "Flaky login test", "token": GITHUB_TOKEN}
    effects: list[str] = []
    agent, _ = example.build_agent(script(("create_issue", args)), actor, grant_id, effects)
    result = run(agent, "open an issue", "t1")
    assert effects == ["issue:acme/web:Flaky login test"]
    assert [m.status for m in tool_messages(result)] == ["success"]

    trail = log.trail("lc-recorded")
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
    assert op.tool_call_id == "call-0" and intent.action.actor.framework == "langchain"
    assert intent.action.authorization.enforcement_point == "langchain"
    assert intent.statement.header.producer.adapter == "affidavit-langchain/1"
    # The secret is only a redaction marker, in the log and in every entry's bytes.
    assert (
        GITHUB_TOKEN not in op.parameters_json and "«redacted:github-token:" in op.parameters_json
    )
    assert [(r.path, r.rule) for r in op.redactions] == [("/token", "github-token")]
    for r in trail:
        [entry] = log.auditor.entries(r.hit.index, r.hit.index + 1)
        assert GITHUB_TOKEN.encode() not in entry.data
    assert outcome.action.outcome.status == pb.OK
    # A keyed commitment to what the tool returned, opened by the agent's key for this action.
    opening = actor.result_opening(intent.action.action_id)
    returned = "opened issue 'Flaky login test' in acme/web"
    assert outcome.action.outcome.result_digest == commitment(opening, returned)


def test_an_out_of_scope_call_is_blocked_and_recorded_as_attempted(log: AdapterLog) -> None:
    actor = log.agent("lc-blocked")
    grant_id = log.grant("lc-blocked", **GRANT)
    effects: list[str] = []
    agent, _ = example.build_agent(
        script(("delete_repository", {"repo": "acme/web"})), actor, grant_id, effects
    )
    result = run(agent, "clean up", "t2")
    assert effects == []  # never ran
    [message] = tool_messages(result)
    assert message.status == "error" and "OUT_OF_SCOPE" in str(message.content)

    intent, outcome = intent_and_outcome(log.trail("lc-blocked"), "delete_repository")
    check_intent(
        intent,
        tool="delete_repository",
        resource="repo:acme/web",
        arguments={"repo": "acme/web"},
        grant_id=grant_id,
        verdict="OUT_OF_SCOPE",
    )
    assert outcome.action.outcome.status == pb.DENIED
    assert outcome.action.outcome.error_code == "OUT_OF_SCOPE"


def test_a_human_approval_binds_the_parameters_that_run(log: AdapterLog) -> None:
    actor = log.agent("lc-approval")
    grant_id = log.grant("lc-approval", **GRANT)
    effects: list[str] = []
    asked = {"to": "ops@acme.example", "body": "deploy at 5"}
    edited = {"to": "ops@acme.example", "body": "deploy at 6"}
    agent, audit = example.build_agent(
        script(("send_email", asked), ("send_email", asked)), actor, grant_id, effects
    )
    config = {"configurable": {"thread_id": "t3"}}
    paused = agent.invoke({"messages": [("user", "tell ops")]}, config)
    [pause] = paused["__interrupt__"]
    assert effects == []  # waiting for the human
    decisions = [{"type": "edit", "edited_action": {"name": "send_email", "args": edited}}]
    [approval_id] = audit.record_review(log.alice, pause.value, decisions)
    paused = agent.invoke(Command(resume={"decisions": decisions}), config)
    assert effects == ["email:ops@acme.example"]  # the edited call ran

    # The model asks again; this time the human rejects, and nothing runs.
    [pause] = paused["__interrupt__"]
    rejection = [{"type": "reject", "message": "not today"}]
    audit.record_review(log.alice, pause.value, rejection)
    agent.invoke(Command(resume={"decisions": rejection}), config)
    assert effects == ["email:ops@acme.example"]

    trail = log.trail("lc-approval")
    intent, outcome = intent_and_outcome(trail, "send_email")
    check_intent(
        intent,
        tool="send_email",
        resource="mailto:ops@acme.example",
        arguments=edited,
        grant_id=grant_id,
        verdict="IN_SCOPE",
    )
    assert intent.action.approval_id == approval_id
    assert intent.action.authorization.decision == pb.ALLOW_IF_APPROVED
    assert outcome.action.outcome.status == pb.OK
    # The approvals are in the log, by the human, bound to the parameters' digests.
    approvals = [
        h for h in log.auditor.search(approver="alice@acme.example") if h.kind == "approval"
    ]
    assert approval_id in {h.statement_id for h in approvals}


def test_a_gated_call_without_an_approval_does_not_run(log: AdapterLog) -> None:
    actor = log.agent("lc-unapproved")
    grant_id = log.grant("lc-unapproved", **GRANT)
    effects: list[str] = []
    audit = example.AuditMiddleware(
        actor, grant_ids=[grant_id], target=example.target, approval_required=["send_email"]
    )
    # No human in the loop at all: the audit still asks the log, which finds no approval.
    from langchain.agents import create_agent

    agent = create_agent(
        script(("send_email", {"to": "ops@acme.example", "body": "x"})),
        example.make_tools(effects),
        middleware=[audit],
    )
    result = agent.invoke({"messages": [HumanMessage("tell ops")]})
    assert effects == []
    [message] = tool_messages(result)
    assert "OUT_OF_SCOPE" in str(message.content) and "approval-missing" in str(message.content)


def test_the_log_down_stops_the_tool_or_spools_it_in_order(log: AdapterLog, tmp_path: Path) -> None:
    factory = ServerFactory(tmp_path)
    try:
        own = AdapterLog.start(factory, tmp_path)
        args = {"repo": "acme/web", "title": "t", "token": "x"}
        closed = own.agent("lc-closed", retries=0)
        open_ = own.agent("lc-open", retries=0)
        closed_grant = own.grant("lc-closed", **GRANT)
        open_grant = own.grant("lc-open", **GRANT)
        own.server.kill()

        # Fail closed (the default): the tool does not run.
        effects: list[str] = []
        agent, _ = example.build_agent(
            script(("create_issue", args)), closed, closed_grant, effects
        )
        result = run(agent, "open an issue", "down-1")
        assert effects == []
        [message] = tool_messages(result)
        assert message.status == "error" and "unreachable" in str(message.content)

        # Fail open with a spool: the tools run, the statements wait on disk, in order.
        spool = Spool(tmp_path / "spool")
        agent, _ = example.build_agent(
            script(("create_issue", args), ("create_issue", {**args, "title": "u"})),
            open_,
            open_grant,
            effects,
            spool=spool,
        )
        run(agent, "open two issues", "down-2")
        assert effects == ["issue:acme/web:t", "issue:acme/web:u"]
        waiting = spool.leaves()
        assert len(waiting) == 4  # two INTENTs, two OUTCOMEs

        own.server.start()  # the same log, back (on a new port)
        own.auditor = Client(
            own.server.address, own.policy, token=own.server.auditor_token, timeout=RPC_TIMEOUT
        )
        with own.client() as client:
            receipts = spool.replay(client)
        assert len(spool) == 0
        assert [r.leaf_hash for r in receipts] == [merkle.leaf_hash(leaf) for leaf in waiting]
        trail = own.trail("lc-open")
        assert [r.hit.leaf_hash for r in trail] == [r.leaf_hash for r in receipts]
        phases = [(r.action.phase, r.action.operation.tool_name) for r in trail]
        assert (
            phases
            == [
                (pb.AgentAction.INTENT, "create_issue"),
                (pb.AgentAction.OUTCOME, "create_issue"),
            ]
            * 2
        )
        assert [r.verdict for r in trail if r.action.phase == pb.AgentAction.INTENT] == [
            "IN_SCOPE",
            "IN_SCOPE",
        ]
        own.close()
    finally:
        factory.cleanup()


def test_the_callback_handler_only_observes(log: AdapterLog) -> None:
    actor = log.agent("lc-callbacks")
    grant_id = log.grant("lc-callbacks", **GRANT)
    effects: list[str] = []
    handler = AuditCallbackHandler(actor, grant_ids=[grant_id], target=example.target)
    [_, delete, _] = example.make_tools(effects)
    delete.invoke({"repo": "acme/web"}, config={"callbacks": [handler]})
    assert effects == ["deleted:acme/web"]  # observe-only: out of scope, and it ran

    intent, outcome = intent_and_outcome(log.trail("lc-callbacks"), "delete_repository")
    assert intent.verdict == "OUT_OF_SCOPE"
    assert intent.action.authorization.enforcement_point == "observe-only"
    assert outcome.action.outcome.status == pb.OK
