"""OpenAI Agents SDK: record every tool call of a run through its lifecycle hooks.

    from affidavit.adapters.openai_agents import AuditHooks
    hooks = AuditHooks(actor, grant_ids=[grant_id])
    result = await Runner.run(agent, "open an issue", hooks=hooks)

`on_tool_start` records the INTENT before the tool is invoked (the SDK awaits it first), and
`on_tool_end` the OUTCOME with the digest of the tool's output. Under enforce (the default) a
call the log judges OUT_OF_SCOPE or NO_GRANT raises NotAuthorisedError from on_tool_start, so
the tool is not invoked and the run ends with the SDK's UserError naming the verdict (its
__cause__ the NotAuthorisedError); with the log unreachable the run ends the same way, caused
by UnavailableError, before the tool runs (unless the Recorder has a spool).

Tools that need approval (`function_tool(needs_approval=True)`): the run pauses with
`result.interruptions`; for each one, `hooks.record_approval(reviewer, item, approve=...)`
signs an APPROVAL statement by the reviewer, bound to the exact arguments of that call, before
you `state.approve(item)` (or reject) and resume. The INTENT then names that approval, and the
log checks the arguments that run are the ones approved.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from affidavit.adapters.recording import Pending, Recorder, Target, ToolCall, default_target
from affidavit.adapters.spool import Spool
from affidavit.client.actor import Actor
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.ids import uuid7
from agents import Agent, RunContextWrapper, RunHooks, Tool, ToolApprovalItem
from agents.tool_context import ToolContext


def _arguments(text: str) -> Any:
    """The tool's arguments as the model sent them (a JSON object as text)."""
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"arguments": text}  # not JSON: kept as the text it is (still redacted)


def _needs_approval(tool: Tool) -> bool:
    return getattr(tool, "needs_approval", False) is not False


class AuditHooks(RunHooks[Any]):
    """RunHooks that record each local tool call of a run as INTENT and OUTCOME."""

    def __init__(
        self,
        actor: Actor,
        *,
        grant_ids: Iterable[str] = (),
        enforce: bool = True,
        target: Callable[[ToolCall], Target] = default_target,
        spool: Spool | None = None,
    ) -> None:
        self.recorder = Recorder(
            actor,
            grant_ids=grant_ids,
            enforce=enforce,
            target=target,
            spool=spool,
            adapter="openai-agents",
            framework="openai-agents",
        )
        self._pending: dict[str, Pending] = {}
        # tool call id -> (action id, approval statement id), from record_approval.
        self._approvals: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def record_approval(
        self, reviewer: Actor, item: ToolApprovalItem, *, approve: bool, comment: str = ""
    ) -> str:
        """Record a reviewer's decision on a paused tool call as an APPROVAL statement bound to
        its exact arguments; the statement id."""
        raw = item.raw_item
        call_id = str(getattr(raw, "call_id", "") or "")
        arguments = _arguments(str(getattr(raw, "arguments", "") or ""))
        action_id = uuid7()
        approval = reviewer.approve(
            action_id,
            arguments,
            agent_id=self.recorder.actor.identity_id,
            decision=pb.Approval.APPROVE if approve else pb.Approval.REJECT,
            comment=comment,
        )
        with self._lock:
            self._approvals[call_id] = (action_id, approval.statement_id)
        return approval.statement_id

    @staticmethod
    def _key(context: RunContextWrapper[Any], tool: Tool) -> str:
        call_id = context.tool_call_id if isinstance(context, ToolContext) else ""
        return call_id or f"{tool.name}@{id(context)}"

    async def on_tool_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool
    ) -> None:
        call_id, arguments = "", {}  # other local tools (computer, shell) carry no arguments
        if isinstance(context, ToolContext):
            call_id, arguments = context.tool_call_id, _arguments(context.tool_arguments)
        fields: dict[str, Any] = {}
        if _needs_approval(tool):
            with self._lock:
                found = self._approvals.pop(call_id, None)
            fields["decision"] = pb.ALLOW_IF_APPROVED
            if found is not None:
                fields["action_id"], fields["approval_id"] = found
        pending = await self.recorder.aintent(ToolCall(tool.name, arguments, call_id), **fields)
        with self._lock:
            self._pending[self._key(context, tool)] = pending

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: object
    ) -> None:
        with self._lock:
            pending = self._pending.pop(self._key(context, tool), None)
        if pending is not None:
            await self.recorder.aoutcome(pending, result=result)
