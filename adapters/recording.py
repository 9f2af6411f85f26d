"""What every adapter does at a tool boundary: INTENT before the effect, OUTCOME after it.

    recorder = Recorder(actor, grant_ids=[grant_id], adapter="langchain")
    pending = recorder.intent(ToolCall("github.create_pull_request", args, call_id="c1"))
    result = run_the_tool(args)              # only reached if the INTENT was recorded (or
    recorder.outcome(pending, result=result) # spooled) and, under enforce, authorised

Invariants:
  * The INTENT is recorded before the tool runs. Under enforce (the default) a verdict of
    OUT_OF_SCOPE or NO_GRANT raises NotAuthorisedError before the tool runs, after recording
    the OUTCOME as DENIED, so an attempt is always in the log.
  * Parameters go through the client's redaction (the shared secret guard) before signing;
    the log gets only redaction markers for secrets, and the digest of what actually ran.
  * The log unreachable: by default the call fails closed (UnavailableError, the tool does not
    run). With a Spool the call fails open: statements go to the spool, in session order, and
    are replayed before the next statement; a spooled INTENT has no verdict, so it runs.
  * One Recorder serialises its statements (the session chain is a sequence): frameworks that
    run tool calls in parallel threads share it safely.
  * observe_only records say so (Authorization.enforcement_point "observe-only") and never
    block: they are made where the tool call cannot be stopped (callbacks, exported spans).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from affidavit.adapters.spool import Spool
from affidavit.client.actor import (
    Actor,
    check_verdict,
    denied_outcome,
    outcome_body,
)
from affidavit.client.client import Receipt
from affidavit.client.errors import NotAuthorisedError, UnavailableError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.canonical import canonical_json, commitment

OBSERVE_ONLY = "observe-only"
"""Authorization.enforcement_point of a record made where the call could not be stopped."""


@dataclass(frozen=True)
class ToolCall:
    """One tool call as a framework hands it over. arguments must be JSON-compatible."""

    tool: str
    arguments: Any
    call_id: str = ""
    tool_server: str = ""
    trace_id: str = ""  # W3C trace-id, 32 hex
    span_id: str = ""  # 16 hex


@dataclass(frozen=True)
class Target:
    """What a tool call acts on: the resource URI the grant's patterns match, and how."""

    resource: str
    access: pb.AccessKind.ValueType


def default_target(call: ToolCall) -> Target:
    """`tool:<name>`, EXECUTE: grant it by tool name until a mapping says what the tool touches."""
    return Target(f"tool:{call.tool}", pb.EXECUTE)


@dataclass
class Pending:
    """A tool call whose INTENT is in the log (receipt) or in the spool (receipt None)."""

    call: ToolCall
    intent: pb.AgentAction
    leaf: bytes
    receipt: Receipt | None

    @property
    def action_id(self) -> str:
        return self.intent.action_id

    @property
    def verdict(self) -> str:
        """The log's verdict, or "SPOOLED" when the log has not seen the INTENT yet."""
        return self.receipt.verdict if self.receipt is not None else "SPOOLED"


def result_bytes(result: Any) -> str | bytes:
    """What a result's commitment covers: text and bytes as they are, anything else as
    canonical JSON (its str() for objects JSON cannot express)."""
    if isinstance(result, bytes | str):
        return result
    try:
        return canonical_json(result)
    except (TypeError, ValueError):
        return str(result)


class Recorder:
    """An Actor's tool calls, recorded under its grants by one framework adapter."""

    def __init__(
        self,
        actor: Actor,
        *,
        grant_ids: Iterable[str] = (),
        enforce: bool = True,
        target: Callable[[ToolCall], Target] = default_target,
        spool: Spool | None = None,
        adapter: str = "python",
        observe_only: bool = False,
        framework: str = "",
    ) -> None:
        self.actor = actor
        self.grant_ids = list(grant_ids)
        self.enforce = enforce and not observe_only
        self.target = target
        self.spool = spool
        self.observe_only = observe_only
        self.adapter = adapter
        self.framework = framework
        self.actor.signer.adapter = f"affidavit-{adapter}/1"
        self._lock = threading.Lock()

    # The two records.

    def intent(
        self,
        call: ToolCall,
        *,
        action_id: str | None = None,
        approval_id: str = "",
        decision: pb.PolicyDecision.ValueType = pb.ALLOW,
    ) -> Pending:
        """Record the INTENT; raise NotAuthorisedError (enforce) or UnavailableError (fail
        closed) when the tool must not run."""
        where = self.target(call)
        body = self.actor.action(
            call.tool,
            where.resource,
            where.access,
            call.arguments,
            grant_ids=self.grant_ids,
            action_id=action_id,
            approval_id=approval_id,
            decision=decision,
            authorization=pb.Authorization(
                enforcement_point=OBSERVE_ONLY if self.observe_only else self.adapter
            ),
            actor=pb.Actor(framework=self.framework or self.adapter),
            tool_server=call.tool_server,
            tool_call_id=call.call_id,
            trace_id=call.trace_id,
            span_id=call.span_id,
        ).intent
        with self._lock:
            leaf, receipt = self._submit(body)
        pending = Pending(call, body, leaf, receipt)
        if self.enforce and receipt is not None:
            try:
                check_verdict(body.action_id, receipt)
            except NotAuthorisedError as e:
                self._finish(pending, denied_outcome(e.verdict))
                raise
        return pending

    def outcome(
        self,
        pending: Pending,
        *,
        result: Any = None,
        error: BaseException | str | None = None,
        status: pb.OutcomeStatus.ValueType | None = None,
        effect_ref: str = "",
    ) -> None:
        """Record how the call went: OK with the result's digest, or ERROR with the error's
        type (a str names the type when the framework reports errors as text)."""
        outcome = pb.Outcome(effect_ref=effect_ref)
        if error is not None:
            outcome.status = pb.ERROR
            outcome.error_code = error if isinstance(error, str) else type(error).__name__
        else:
            outcome.status = pb.OK
            if result is not None:  # a keyed commitment: it confirms no guess of the result
                opening = self.actor.result_opening(pending.action_id)
                outcome.result_digest = commitment(opening, result_bytes(result))
        if status is not None:
            outcome.status = status
        self._finish(pending, outcome)

    def _finish(self, pending: Pending, outcome: pb.Outcome) -> None:
        with self._lock:
            self._submit(outcome_body(pending.leaf, outcome))

    # The same, from async frameworks: the gRPC calls run in a worker thread.

    async def aintent(
        self,
        call: ToolCall,
        *,
        action_id: str | None = None,
        approval_id: str = "",
        decision: pb.PolicyDecision.ValueType = pb.ALLOW,
    ) -> Pending:
        return await asyncio.to_thread(
            lambda: self.intent(
                call, action_id=action_id, approval_id=approval_id, decision=decision
            )
        )

    async def aoutcome(
        self,
        pending: Pending,
        *,
        result: Any = None,
        error: BaseException | str | None = None,
        effect_ref: str = "",
    ) -> None:
        await asyncio.to_thread(
            lambda: self.outcome(pending, result=result, error=error, effect_ref=effect_ref)
        )

    # Sending, or spooling.

    def _submit(self, body: pb.AgentAction) -> tuple[bytes, Receipt | None]:
        """Append the next statement of the session: (leaf, receipt), or (leaf, None) when it
        was spooled. Without a spool this is Actor.submit (UnavailableError propagates)."""
        if self.spool is None:
            recorded = self.actor.submit(body)
            return recorded.leaf, recorded.receipt
        if len(self.spool):
            with contextlib.suppress(UnavailableError):  # still down: this one waits too
                self.spool.replay(self.actor.client)  # what waits goes first, in order
        signer = self.actor.signer
        leaf = signer.sign(body)
        receipt: Receipt | None = None
        if len(self.spool):
            self.spool.put(leaf)
        else:
            try:
                receipt = self.actor.client.append(leaf)
            except UnavailableError:
                # The log may or may not have it; the spool sends the same bytes again
                # (idempotent), and the chain carries on from it either way.
                self.spool.put(leaf)
        signer.advance(leaf)
        return leaf, receipt

    def replay(self) -> list[Receipt]:
        """Send what the spool holds (nothing without a spool); UnavailableError if the log is
        still unreachable."""
        if self.spool is None:
            return []
        with self._lock:
            return self.spool.replay(self.actor.client)
