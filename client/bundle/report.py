"""What a verified bundle proves: the action's story (its chain of grants, its approval, its
outcome) and what was checked, for a person (Report.text) or as data."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

from affidavit.client.verify import TrustPolicy, Verified
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.state import LogState, VerdictRecord


@dataclass(frozen=True)
class GrantLink:
    """One grant of an action's chain of authority."""

    grant_id: str
    index: int
    grantor: str
    grantor_kind: str
    grant: pb.Grant
    revoked_at: int | None = None
    revoked_by: str = ""


@dataclass(frozen=True)
class ApprovalInfo:
    """An approval in the bundle; problem is None when it is a human's approval bound to the
    action's id and exact parameter digest."""

    approval_id: str
    index: int
    approver: str
    approver_kind: str
    time_ms: int
    approval: pb.Approval
    named_by_action: bool
    problem: str | None


@dataclass(frozen=True)
class Report:
    """What a verified bundle proves: the action's story, and what was checked to prove it.

    verdict is the scope verdict recomputed offline (IN_SCOPE, OUT_OF_SCOPE, NO_GRANT); findings
    say in words why the action was not properly authorised, empty when it was.
    """

    action_id: str
    agent: str
    owner: str
    owner_kind: str
    intent: pb.AgentAction
    intent_index: int
    intent_time_ms: int
    outcome: pb.AgentAction | None
    outcome_index: int | None
    outcome_time_ms: int | None
    authority: tuple[GrantLink, ...]
    approvals: tuple[ApprovalInfo, ...]
    verdict: str
    verdict_reason: str
    findings: tuple[str, ...]
    checkpoint: Checkpoint
    witnesses: tuple[tuple[str, int], ...]
    quorum: int
    witnesses_known: int
    unknown_signatures: int
    entries: int
    identity_events: int
    key_rotations: int
    session_links: int
    genesis_admin: str

    @property
    def in_scope(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        """The story and the checks, in plain words."""
        a, op = self.intent, self.intent.operation
        who = f"agent {self.agent!r}"
        details = [x for x in (a.actor.agent_name, a.actor.agent_version, a.actor.model) if x]
        if details:
            who += f" ({', '.join(details)}: the producer's claim)"
        owner = f"{self.owner!r}" + (f" ({self.owner_kind})" if self.owner_kind else "")
        lines = [
            f"Action {self.action_id}: "
            + ("IN SCOPE" if self.in_scope else f"NOT AUTHORISED ({self.verdict})"),
            f"  Who:       {who}, owned by {owner if self.owner else 'no one named'}",
            f"  Did:       {op.tool_name} / {op.operation_name or '-'} "
            f"({pb.AccessKind.Name(op.access)}) on {op.resource}",
            f"  When:      {_utc(self.intent_time_ms)} by the agent's clock (INTENT, log index "
            f"{self.intent_index}); in the log by {self._witnessed_by()}",
            f"  Parameters: {_clip(op.parameters_json or '-')} (digest {op.parameters_digest}"
            + (f", {len(op.redactions)} secret(s) redacted" if op.redactions else "")
            + ")",
        ]
        if a.credential.kind or a.credential.key_id or a.credential.token_jti:
            c = a.credential
            lines.append(
                f"  Credential: {c.kind or '-'} {c.key_id or c.token_jti}"
                + (f" from {c.issuer}" if c.issuer else "")
            )
        lines.append(
            "  Authority: "
            + (
                "none (the action names no grant)"
                if not self.authority
                else "grant chain, human first:"
            )
        )
        for n, link in enumerate(self.authority, 1):
            g = link.grant
            lines.append(
                f"    {n}. grant {link.grant_id} (log index {link.index}) by {link.grantor!r} "
                f"({link.grantor_kind}) to {g.grantee!r}, ticket {g.ticket or '-'}"
                + (f", justification {g.justification!r}" if g.justification else "")
            )
            lines.append(f"       scope: {_scope(g)}")
            if link.revoked_at is not None:
                lines.append(
                    f"       REVOKED at log index {link.revoked_at} by {link.revoked_by!r}"
                )
        if a.principal_chain:
            lines.append(
                f"  Principal chain: {' -> '.join(a.principal_chain)} (checked against the "
                "grant chain at ingest)"
            )
        if a.authorization.policy_id or a.authorization.matched_rule:
            z = a.authorization
            lines.append(
                f"  Policy:    {z.policy_id or '-'} {z.policy_version} rule "
                f"{z.matched_rule or '-'} at {z.enforcement_point or '-'} (the producer's claim)"
            )
        for ap in self.approvals:
            d = pb.Approval.Decision.Name(ap.approval.decision)
            state = (
                f"bound to this action's parameters digest {ap.approval.parameters_digest}"
                if ap.problem is None
                else f"NOT VALID FOR THIS ACTION: {ap.problem}"
            )
            lines.append(
                f"  Approval:  {d} by {ap.approver!r} ({ap.approver_kind}), ticket "
                f"{ap.approval.ticket or '-'}, at {_utc(ap.time_ms)} (log index {ap.index}); "
                f"{state}" + (f"; comment {ap.approval.comment!r}" if ap.approval.comment else "")
            )
        if not self.approvals:
            lines.append("  Approval:  none")
        if self.outcome is None:
            lines.append("  Outcome:   none in this bundle (not recorded up to this checkpoint)")
        else:
            o = self.outcome.outcome
            parts = [pb.OutcomeStatus.Name(o.status)]
            if o.effect_ref:
                parts.append(f"effect {o.effect_ref}")
            if o.error_code:
                parts.append(f"error {o.error_code}")
            if o.result_digest:
                parts.append(f"result digest {o.result_digest}")
            lines.append(
                f"  Outcome:   {', '.join(parts)} at {_utc(self.outcome_time_ms or 0)} "
                f"(log index {self.outcome_index})"
            )
        for finding in self.findings:
            lines.append(f"  FINDING:   {finding}")
        cp = self.checkpoint
        quorum = (
            f"{len(self.witnesses)} valid cosignature(s); policy quorum {self.quorum} of "
            f"{self.witnesses_known} known witness(es)"
        )
        lines += [
            "Verified offline:",
            f"  - checkpoint of log {cp.origin!r}, size {cp.size}, root "
            f"{base64.b64encode(cp.root_hash).decode()}, signed by the log's key",
            "  - cosigned by "
            + (
                ", ".join(f"{name} at {_utc(t * 1000, ms=False)}" for name, t in self.witnesses)
                if self.witnesses
                else "no known witness"
            )
            + f" ({quorum})"
            + (
                f"; {self.unknown_signatures} signature line(s) by keys outside the policy ignored"
                if self.unknown_signatures
                else ""
            ),
            f"  - {self.entries} inclusion proofs: every entry's leaf hash recomputed from its "
            "bytes and proven at its index in that checkpoint",
            f"  - {self.entries} signatures, each under the key its signer held at that index; "
            f"the key history from {self.identity_events} identity event(s) "
            f"({self.key_rotations} key rotation(s)), back to the genesis admin "
            f"{self.genesis_admin!r} at index 0, each event signed by an admin known then",
            "  - every statement passes the log's admission rules (schema, secret guard, "
            "signer's kind) at its place in index order",
        ]
        if self.authority:
            lines.append(
                f"  - grant chain of {len(self.authority)}: each grant within its parent, "
                f"rooted in a human ({self.authority[0].grantor!r})"
            )
        lines.append(
            "  - scope recomputed (grantee is the actor; tool, operation, resource and access "
            "within the grant; the log's admission time inside every window of the chain, the "
            "agent's claimed time on the same side; approval where a grant or the agent's "
            f"decision required one, by a permitted approver): {self.verdict}"
            + (f" ({self.verdict_reason})" if self.verdict_reason else "")
        )
        for ap in self.approvals:
            if ap.named_by_action and ap.problem is None:
                lines.append(
                    f"  - approval by a human, bound to action {self.action_id} and "
                    f"parameters digest {ap.approval.parameters_digest}"
                )
        if self.outcome is not None:
            lines.append("  - OUTCOME linked to the INTENT by the INTENT's leaf hash")
        lines += [
            f"  - {self.session_links} session-chain link(s) between bundled statements",
            "Not verifiable offline (needs the full log: affidavit audit):",
            "  - that the signers' session chains are gap-free",
            "  - that no revocation or key rotation lies between the entries shown, that the "
            "grants were not used up (max uses), that no other OUTCOME or approval exists",
            "  - the verdict the log recorded at ingest (recomputed here from the bundle)",
        ]
        return "\n".join(lines)

    def _witnessed_by(self) -> str:
        if not self.witnesses:
            return "the checkpoint (no witness time)"
        name, t = min(self.witnesses, key=lambda w: w[1])
        return f"{_utc(t * 1000, ms=False)} ({name}'s cosignature)"


def _verdict(value: int) -> str:
    return pb.Verdict.Name(pb.Verdict.ValueType(value))


def _utc(time_ms: int, *, ms: bool = True) -> str:
    text = datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return (text[:-3] if ms else text[:-7]) + " UTC"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scope(g: pb.Grant) -> str:
    parts = [
        f"tools {', '.join(g.tools)}",
        f"resources {', '.join(g.resources)}",
        f"access {', '.join(pb.AccessKind.Name(k) for k in g.access)}",
    ]
    if g.operations:
        parts.insert(1, f"operations {', '.join(g.operations)}")
    if g.not_before_ms or g.not_after_ms:
        start = _utc(g.not_before_ms) if g.not_before_ms else "any time"
        end = _utc(g.not_after_ms) if g.not_after_ms else "no end"
        parts.append(f"valid {start} to {end}")
    if g.max_uses:
        parts.append(f"at most {g.max_uses} use(s)")
    return "; ".join(parts)


def build_report(
    statements: dict[int, pb.Statement],
    state: LogState,
    verdicts: dict[int, VerdictRecord],
    action_id: str,
    intent_index: int,
    policy: TrustPolicy,
    verified: Verified,
    witnesses: tuple[tuple[str, int], ...],
    unknown: int,
    links: int,
) -> Report:
    intent_st = statements[intent_index]
    intent = intent_st.action
    outcome_index = next(
        (
            i
            for i, st in statements.items()
            if st.WhichOneof("body") == "action" and st.action.phase == pb.AgentAction.OUTCOME
        ),
        None,
    )
    agent = state.identity(intent.actor.agent_id)
    assert agent is not None  # admit checked the issuer, and the actor is the issuer
    owner = state.identity(agent.owner) if agent.owner else None

    def kind(identity_id: str) -> str:
        record = state.identity(identity_id)
        return (
            ""
            if record is None
            else pb.IdentityKind.Name(pb.IdentityKind.ValueType(record.kind)).lower()
        )

    verdict = verdicts[intent_index]
    findings: list[str] = []
    if verdict.verdict != pb.IN_SCOPE:
        findings.append(
            f"the action is {_verdict(verdict.verdict)}"
            f" ({verdict.reason}) under the grants it names"
        )
    if outcome_index is not None:
        ov = verdicts[outcome_index]
        if ov.verdict != verdict.verdict or ov.reason != verdict.reason:
            findings.append(f"the OUTCOME is {_verdict(ov.verdict)} ({ov.reason})")

    chain_top = verdict.grant_id or (intent.grant_ids[0] if intent.grant_ids else "")
    links_out: list[GrantLink] = []
    while chain_top:
        record = state.grant(chain_top)
        assert record is not None  # _check_relevant: every named grant and parent is here
        links_out.append(
            GrantLink(
                chain_top,
                record.index,
                record.issuer,
                kind(record.issuer),
                record.decoded(),
                record.revoked_at,
                record.revoked_by,
            )
        )
        chain_top = record.decoded().parent_grant_id

    approvals = []
    for i, st in statements.items():
        if st.WhichOneof("body") != "approval":
            continue
        ap = st.approval
        problem = None
        if ap.action_id != action_id:
            problem = f"it is for action {ap.action_id}"
        elif ap.agent_id != intent.actor.agent_id:
            problem = f"it is for agent {ap.agent_id!r}"
        elif ap.parameters_digest != intent.operation.parameters_digest:
            problem = (
                f"it approves parameters digest {ap.parameters_digest}, the action's is "
                f"{intent.operation.parameters_digest}"
            )
        elif ap.decision == pb.Approval.REJECT:
            problem = "it rejects the action"
        named = st.header.statement_id == intent.approval_id
        if named and problem is not None:
            findings.append(f"the approval the action names is not valid for it: {problem}")
        approvals.append(
            ApprovalInfo(
                st.header.statement_id,
                i,
                st.header.issuer,
                kind(st.header.issuer),
                st.header.client_time_ms,
                ap,
                named,
                problem,
            )
        )

    events = [st.identity for st in statements.values() if st.WhichOneof("body") == "identity"]
    outcome_st = statements[outcome_index] if outcome_index is not None else None
    genesis = statements[0].header.issuer
    return Report(
        action_id=action_id,
        agent=intent.actor.agent_id,
        owner=agent.owner,
        owner_kind="" if owner is None else kind(owner.identity_id),
        intent=intent,
        intent_index=intent_index,
        intent_time_ms=intent_st.header.client_time_ms,
        outcome=None if outcome_st is None else outcome_st.action,
        outcome_index=outcome_index,
        outcome_time_ms=None if outcome_st is None else outcome_st.header.client_time_ms,
        authority=tuple(reversed(links_out)),
        approvals=tuple(approvals),
        verdict=_verdict(verdict.verdict),
        verdict_reason=verdict.reason,
        findings=tuple(findings),
        checkpoint=verified.checkpoint,
        witnesses=witnesses,
        quorum=policy.quorum,
        witnesses_known=len(policy.witness_keys),
        unknown_signatures=unknown,
        entries=len(statements),
        identity_events=len(events),
        key_rotations=sum(e.op == pb.IdentityEvent.ROTATE_KEY for e in events),
        session_links=links,
        genesis_admin=genesis,
    )


def statement_kind(st: pb.Statement) -> str:
    """What a statement is, in words: "a grant", "the INTENT of action …"."""
    body = st.WhichOneof("body")
    if body == "action":
        return f"the {pb.AgentAction.Phase.Name(st.action.phase)} of action {st.action.action_id}"
    return {
        "identity": "an identity event",
        "grant": "a grant",
        "approval": "an approval",
        "session": "a session event",
        "grant_revocation": "a grant revocation",
    }.get(body or "", "an empty statement")


def describe(index: int, st: pb.Statement) -> str:
    """An entry named for a person: its index, what it is, its statement id and issuer."""
    what = statement_kind(st)
    return f"entry {index} ({what}, statement {st.header.statement_id} by {st.header.issuer!r})"
