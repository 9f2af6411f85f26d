"""An identity acting through a client: the common flows of an agent-audit log.

    admin.register("code-agent", AGENT, key.public_key, owner="alice@example.com")
    grant = alice.grant("code-agent", tools=["github.*"], resources=["repo:acme/*"],
                        access=[CREATE])
    alice.approve(action_id, params)
    with agent.action("github.create_pull_request", "repo:acme/web", CREATE, params,
                      grant_ids=[grant.statement_id], action_id=action_id) as act:
        act.result = open_pr(...)      # recorded as OUTCOME OK with the result digest
        act.effect_ref = "commit:3f2a…"
    # an exception inside records OUTCOME ERROR with the exception's type, then propagates
    # enforce (the default): an INTENT the log judges OUT_OF_SCOPE or NO_GRANT raises
    # NotAuthorisedError before the body runs, after recording the OUTCOME as DENIED

Each statement goes through the client (signed, redacted, verified); the session chain
advances only once the log has accepted a statement.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from affidavit.client.client import Client, Receipt
from affidavit.client.errors import NotAuthorisedError, RefusedError, UnavailableError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.canonical import (
    RESULT_COMMITMENT,
    canonical_json,
    commitment,
    commitment_key,
)
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import parameters_digest, redact_parameters
from affidavit.statements.signing import IdentityKey

from affidavit import merkle


@dataclass(frozen=True)
class Recorded:
    """A statement in the log: its id, its exact bytes and the verified receipt."""

    statement_id: str
    leaf: bytes
    receipt: Receipt


def outcome_body(intent_leaf: bytes, outcome: pb.Outcome) -> pb.AgentAction:
    """The OUTCOME of the action whose INTENT is intent_leaf: the same action, linked to its
    intent by leaf hash, with how it went."""
    body = pb.AgentAction()
    body.CopyFrom(build.statement_of(intent_leaf).action)
    body.phase = pb.AgentAction.OUTCOME
    body.intent_leaf_hash = merkle.leaf_hash(intent_leaf)
    body.authorization.Clear()
    body.outcome.CopyFrom(outcome)
    return body


NOT_AUTHORISED = frozenset({"OUT_OF_SCOPE", "NO_GRANT"})
"""Verdicts under which an enforced action does not run."""


def denied_outcome(verdict: str) -> pb.Outcome:
    """The OUTCOME of an action not executed because of the log's verdict."""
    return pb.Outcome(status=pb.DENIED, error_code=verdict)


def check_verdict(action_id: str, receipt: Receipt) -> None:
    """Raise NotAuthorisedError when the INTENT's receipt says the action is not authorised."""
    if receipt.verdict in NOT_AUTHORISED:
        raise NotAuthorisedError(action_id, receipt.verdict, receipt.verdict_reason)


class Actor:
    """One identity's statements in one session, through one client."""

    def __init__(
        self,
        client: Client,
        key: IdentityKey,
        *,
        session_id: str | None = None,
        assurance: pb.Assurance.ValueType = pb.SELF_ASSERTED,
    ) -> None:
        self.client = client
        self.key = key
        self.signer = build.SessionSigner(
            key, session_id=session_id or uuid7(), assurance=assurance
        )
        # Fingerprints of redacted secrets and commitments to results: keyed by the identity, so
        # its owner can tell which secret a fingerprint stands for, or open one result's
        # commitment (result_opening), and no one else can confirm a guess of either.
        self.redaction_key = hmac.new(key.seed, b"affidavit/v1/redaction", hashlib.sha256).digest()
        self._unsettled: bytes | None = None  # a leaf sent whose answer was lost

    @property
    def identity_id(self) -> str:
        return self.key.identity_id

    def submit(self, body: build.Body, *, statement_id: str | None = None) -> Recorded:
        """Sign the next statement of the session, append it, verify the receipt, advance."""
        self._settle()
        statement_id = statement_id or uuid7()
        leaf = self.signer.sign(body, statement_id=statement_id)
        try:
            receipt = self.client.append(leaf)
        except UnavailableError:
            self._unsettled = leaf  # the log may have it: it must be settled before the next
            raise
        self.signer.advance(leaf)
        return Recorded(statement_id, leaf, receipt)

    def _settle(self) -> None:
        """A statement whose answer never came may be in the log, and the log then expects the
        next one to follow it: send the same bytes again (a statement already in the log is
        answered with its index), so the session chain carries on either way."""
        leaf, self._unsettled = self._unsettled, None
        if leaf is None:
            return
        try:
            self.client.append(leaf)
        except RefusedError:
            return  # not in the log, and never will be: the chain did not move
        except UnavailableError:
            self._unsettled = leaf
            raise
        self.signer.advance(leaf)

    # Sessions.

    def open_session(self, purpose: str = "") -> Recorded:
        """Record this session's OPEN; it must be the session's first statement."""
        return self.submit(pb.SessionEvent(op=pb.SessionEvent.OPEN, purpose=purpose))

    def close_session(self) -> Recorded:
        """Record this session's CLOSE: the log refuses anything appended to it afterwards,
        so everything recorded in it is provably complete."""
        return self.submit(pb.SessionEvent(op=pb.SessionEvent.CLOSE))

    # Identities (admins).

    def register(
        self,
        identity_id: str,
        kind: pb.IdentityKind.ValueType,
        public_key: bytes,
        *,
        owner: str = "",
        display_name: str = "",
        attributes: dict[str, str] | None = None,
    ) -> Recorded:
        return self.submit(
            build.register(
                identity_id,
                kind,
                public_key,
                owner=owner,
                display_name=display_name,
                attributes=attributes,
            )
        )

    def rotate(self, identity_id: str, public_key: bytes) -> Recorded:
        return self.submit(build.rotate(identity_id, public_key))

    def revoke(self, identity_id: str) -> Recorded:
        return self.submit(build.revoke(identity_id))

    # Delegation and approval (humans; agents attenuating a grant they hold).

    def grant(
        self,
        grantee: str,
        *,
        tools: Iterable[str],
        resources: Iterable[str],
        access: Iterable[pb.AccessKind.ValueType],
        operations: Iterable[str] = (),
        not_before_ms: int = 0,
        not_after_ms: int = 0,
        max_uses: int = 0,
        parent_grant_id: str = "",
        ticket: str = "",
        justification: str = "",
        approval: pb.ApprovalPolicy | None = None,
    ) -> Recorded:
        """Delegate a scope; approval says which actions need whose approval."""
        return self.submit(
            pb.Grant(
                approval=approval,
                grantee=grantee,
                tools=list(tools),
                resources=list(resources),
                access=list(access),
                operations=list(operations),
                not_before_ms=not_before_ms,
                not_after_ms=not_after_ms,
                max_uses=max_uses,
                parent_grant_id=parent_grant_id,
                ticket=ticket,
                justification=justification,
            )
        )

    def approve(
        self,
        action_id: str,
        parameters: Any,
        *,
        agent_id: str,
        decision: pb.Approval.Decision.ValueType = pb.Approval.APPROVE,
        ticket: str = "",
        comment: str = "",
    ) -> Recorded:
        """Approve (or reject) one intended action of agent_id, bound to the digest of its exact
        parameters (as shown once their secrets are redacted: the digest the agent's INTENT
        carries)."""
        return self.submit(
            pb.Approval(
                action_id=action_id,
                agent_id=agent_id,
                parameters_digest=parameters_digest(parameters),
                decision=decision,
                ticket=ticket,
                comment=comment,
            )
        )

    def revoke_grant(self, grant_id: str, *, reason: str = "") -> Recorded:
        """Withdraw a grant this identity issued (or, as an admin, any grant) from now on."""
        return self.submit(pb.GrantRevocation(grant_id=grant_id, reason=reason))

    # Actions (agents).

    def result_opening(self, action_id: str) -> bytes:
        """The key that opens one action's result commitment (Outcome.result_digest): give it
        with the result to whoever must check that result; it opens no other."""
        return commitment_key(self.redaction_key, RESULT_COMMITMENT, action_id)

    def action(
        self,
        tool: str,
        resource: str,
        access: pb.AccessKind.ValueType,
        parameters: Any,
        *,
        grant_ids: Iterable[str] = (),
        operation: str = "execute_tool",
        action_id: str | None = None,
        approval_id: str = "",
        decision: pb.PolicyDecision.ValueType = pb.ALLOW,
        authorization: pb.Authorization | None = None,
        credential: pb.CredentialRef | None = None,
        actor: pb.Actor | None = None,
        principal_chain: Iterable[str] = (),
        tool_server: str = "",
        tool_call_id: str = "",
        trace_id: str = "",
        span_id: str = "",
        parent_action_id: str = "",
        enforce: bool = True,
    ) -> Action:
        """A tool call to record: INTENT on entering the with-block, OUTCOME on leaving it.

        With enforce (the default) an INTENT judged OUT_OF_SCOPE or NO_GRANT is answered by a
        DENIED OUTCOME and NotAuthorisedError, raised before the body runs; enforce=False
        records the verdict and runs the body anyway (observe-only)."""
        json_text, params_digest, redactions = redact_parameters(parameters, self.redaction_key)
        auth = pb.Authorization()
        if authorization is not None:
            auth.CopyFrom(authorization)
        auth.decision = decision
        who = pb.Actor()
        if actor is not None:
            who.CopyFrom(actor)
        who.agent_id = self.identity_id
        body = pb.AgentAction(
            phase=pb.AgentAction.INTENT,
            action_id=action_id or uuid7(),
            actor=who,
            grant_ids=list(grant_ids),
            principal_chain=list(principal_chain),
            approval_id=approval_id,
            authorization=auth,
            credential=credential,
            operation=pb.Operation(
                operation_name=operation,
                tool_name=tool,
                tool_call_id=tool_call_id,
                tool_server=tool_server,
                resource=resource,
                access=access,
                parameters_json=json_text,
                parameters_digest=params_digest,
                redactions=redactions,
            ),
            correlation=pb.Correlation(
                trace_id=trace_id, span_id=span_id, parent_action_id=parent_action_id
            ),
        )
        return Action(self, body, enforce=enforce)


@dataclass
class Action:
    """One tool call's INTENT and OUTCOME. Set result (committed to in result_digest) and
    effect_ref (e.g. "commit:<sha>") inside the with-block; status follows how it exits."""

    actor: Actor
    intent: pb.AgentAction
    result: Any = None
    effect_ref: str = ""
    intent_recorded: Recorded | None = None
    outcome_recorded: Recorded | None = None
    status: pb.OutcomeStatus.ValueType = field(default=pb.OK)
    enforce: bool = True

    @property
    def action_id(self) -> str:
        return self.intent.action_id

    def __enter__(self) -> Action:
        self.intent_recorded = self.actor.submit(self.intent)
        if self.enforce:
            try:
                check_verdict(self.action_id, self.intent_recorded.receipt)
            except NotAuthorisedError as e:
                self.outcome_recorded = self.actor.submit(
                    outcome_body(self.intent_recorded.leaf, denied_outcome(e.verdict))
                )
                raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.intent_recorded is not None
        outcome = pb.Outcome(
            status=self.status if error is None else pb.ERROR, effect_ref=self.effect_ref
        )
        if error is not None:
            outcome.error_code = type(error).__name__
        elif self.result is not None:
            raw = (
                self.result if isinstance(self.result, bytes | str) else canonical_json(self.result)
            )
            opening = self.actor.result_opening(self.action_id)
            outcome.result_digest = commitment(opening, raw)
        self.outcome_recorded = self.actor.submit(outcome_body(self.intent_recorded.leaf, outcome))
