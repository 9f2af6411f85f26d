"""LangChain / LangGraph: record every tool call of an agent at the tool boundary.

    from affidavit.adapters.langchain import AuditMiddleware
    audit = AuditMiddleware(actor, grant_ids=[grant_id])
    agent = create_agent(model, tools, middleware=[audit])

AuditMiddleware (LangChain v1 agents, `wrap_tool_call`) records the INTENT before the tool runs
and the OUTCOME after it; under enforce (the default) a call the log judges OUT_OF_SCOPE or
NO_GRANT does not run, and the model gets an error ToolMessage naming the verdict. With the log
unreachable the tool does not run either (unless the Recorder has a spool).

Human in the loop: list the tools that need approval (`approval_required`) and put LangChain's
HumanInTheLoopMiddleware *before* this one (first listed = outermost, so edits are applied
before we see the call). When resuming the agent with the reviewer's decisions, hand them to
`record_review(reviewer, request, decisions)`: each decision becomes an APPROVAL statement
signed by the reviewer and bound to the digest of the exact parameters approved (or edited).
A gated call runs only if the parameters about to run are the ones approved.

AuditCallbackHandler is for older chains: it only observes (callbacks cannot stop a tool), and
its records say so (enforcement_point "observe-only").
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from affidavit.adapters.recording import Pending, Recorder, Target, ToolCall, default_target
from affidavit.adapters.spool import Spool
from affidavit.client.actor import Actor
from affidavit.client.errors import NotAuthorisedError, UnavailableError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import parameters_digest
from langchain.agents.middleware import AgentMiddleware
from langchain.agents.middleware.types import ToolCallRequest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage
from langgraph.types import Command

_DECISIONS = {
    "approve": pb.Approval.APPROVE,
    "edit": pb.Approval.EDIT,
    "reject": pb.Approval.REJECT,
}


def _call_of(request: ToolCallRequest) -> ToolCall:
    tool_call = request.tool_call
    return ToolCall(tool_call["name"], dict(tool_call["args"]), call_id=tool_call.get("id") or "")


def _refusal(request: ToolCallRequest, why: str) -> ToolMessage:
    """What the model sees instead of the tool's result when the call did not run."""
    return ToolMessage(
        content=f"tool call not executed: {why}",
        tool_call_id=request.tool_call.get("id") or "",
        name=request.tool_call["name"],
        status="error",
    )


def _result_of(response: ToolMessage | Command[Any]) -> tuple[Any, str | None]:
    """(what to digest, error type or None) from what the tool node produced."""
    if isinstance(response, ToolMessage):
        error = "ToolError" if response.status == "error" else None
        return response.content, error
    return None, None  # a Command: a graph update, not a result to digest


class AuditMiddleware(AgentMiddleware):
    """Records (and under enforce, gates) every tool call of a LangChain v1 agent."""

    def __init__(
        self,
        actor: Actor,
        *,
        grant_ids: Iterable[str] = (),
        enforce: bool = True,
        target: Callable[[ToolCall], Target] = default_target,
        spool: Spool | None = None,
        approval_required: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.recorder = Recorder(
            actor,
            grant_ids=grant_ids,
            enforce=enforce,
            target=target,
            spool=spool,
            adapter="langchain",
            framework="langchain",
        )
        self.approval_required = frozenset(approval_required)
        # (tool, parameters digest) -> (action id, approval statement id), from record_review.
        self._approvals: dict[tuple[str, str], tuple[str, str]] = {}
        self._lock = threading.Lock()

    # Human in the loop.

    def record_review(
        self,
        reviewer: Actor,
        request: Mapping[str, Any],
        decisions: Sequence[Mapping[str, Any]],
    ) -> list[str]:
        """Record a reviewer's decisions on a HumanInTheLoopMiddleware interrupt (its value, an
        HITLRequest) as APPROVAL statements; their statement ids, in order. Call it with what
        you resume the agent with: `Command(resume={"decisions": decisions})`."""
        actions = list(request["action_requests"])
        if len(actions) != len(decisions):
            raise ValueError(f"{len(decisions)} decisions for {len(actions)} reviewed tool calls")
        ids = []
        for asked, decision in zip(actions, decisions, strict=True):
            kind = decision["type"]
            if kind not in _DECISIONS:
                continue  # "respond": the tool does not run, the human answered for it
            name, args = asked["name"], asked["args"]
            if kind == "edit":
                name, args = decision["edited_action"]["name"], decision["edited_action"]["args"]
            action_id = uuid7()
            approval = reviewer.approve(
                action_id,
                args,
                agent_id=self.recorder.actor.identity_id,
                decision=_DECISIONS[kind],
                comment=decision.get("message", ""),
            )
            with self._lock:
                self._approvals[(name, parameters_digest(args))] = (
                    action_id,
                    approval.statement_id,
                )
            ids.append(approval.statement_id)
        return ids

    def _approval_of(self, call: ToolCall) -> dict[str, Any]:
        """The INTENT's approval fields: gated tools name the approval of these exact
        parameters (or none, which the log judges approval-missing)."""
        if call.tool not in self.approval_required:
            return {}
        with self._lock:
            found = self._approvals.pop((call.tool, parameters_digest(call.arguments)), None)
        if found is None:
            return {"decision": pb.ALLOW_IF_APPROVED}
        action_id, approval_id = found
        return {
            "decision": pb.ALLOW_IF_APPROVED,
            "action_id": action_id,
            "approval_id": approval_id,
        }

    # The tool boundary.

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        call = _call_of(request)
        try:
            pending = self.recorder.intent(call, **self._approval_of(call))
        except NotAuthorisedError as e:
            return _refusal(request, str(e))
        except UnavailableError as e:
            return _refusal(request, f"the audit log is unreachable ({e})")
        try:
            response = handler(request)
        except BaseException as e:
            self.recorder.outcome(pending, error=e)
            raise
        result, error = _result_of(response)
        self.recorder.outcome(pending, result=result, error=error)
        return response

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        call = _call_of(request)
        try:
            pending = await self.recorder.aintent(call, **self._approval_of(call))
        except NotAuthorisedError as e:
            return _refusal(request, str(e))
        except UnavailableError as e:
            return _refusal(request, f"the audit log is unreachable ({e})")
        try:
            response = await handler(request)
        except BaseException as e:
            await self.recorder.aoutcome(pending, error=e)
            raise
        result, error = _result_of(response)
        await self.recorder.aoutcome(pending, result=result, error=error)
        return response


class AuditCallbackHandler(BaseCallbackHandler):
    """Observe-only recording for chains without middleware: INTENT on tool start, OUTCOME on
    its end or error. It cannot stop a tool; its records say "observe-only"."""

    def __init__(
        self,
        actor: Actor,
        *,
        grant_ids: Iterable[str] = (),
        target: Callable[[ToolCall], Target] = default_target,
        spool: Spool | None = None,
    ) -> None:
        self.recorder = Recorder(
            actor,
            grant_ids=grant_ids,
            target=target,
            spool=spool,
            adapter="langchain-callbacks",
            framework="langchain",
            observe_only=True,
        )
        self._pending: dict[UUID, Pending] = {}
        self._lock = threading.Lock()

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name") or "unknown-tool"
        arguments: Any = inputs if inputs is not None else {"input": input_str}
        call_id = str((kwargs.get("metadata") or {}).get("tool_call_id") or "")
        pending = self.recorder.intent(ToolCall(name, arguments, call_id=call_id))
        with self._lock:
            self._pending[run_id] = pending

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            pending = self._pending.pop(run_id, None)
        if pending is not None:
            content = output.content if isinstance(output, ToolMessage) else output
            self.recorder.outcome(pending, result=content)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            pending = self._pending.pop(run_id, None)
        if pending is not None:
            self.recorder.outcome(pending, error=error)
