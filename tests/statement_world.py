"""The statement rules' test world: fixed keys, statement ids and client times, and World, which
drives the one ingest path the server and the auditor use (prepare(), admit(), then
LogState.apply()) over an in-memory DictKV, so a run is repeatable; base(kind), a well-formed
statement of each kind, and the schema checks the schema tests (and tests/test_schema_walk.py,
test_guard_cores.py, test_cores_adversarial.py, test_map_guard_order.py) mutate it against.

The tests are tests/test_statements_*.py, one kind of rule each.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from affidavit.merkle.hashing import leaf_hash
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build, ingest
from affidavit.statements.canonical import canonical_json
from affidavit.statements.errors import Rejection
from affidavit.statements.redact import parameters_digest, redact_parameters
from affidavit.statements.signing import IdentityKey
from affidavit.statements.state import DictKV, LogState, VerdictRecord

T0 = 1_760_000_000_000
"""The client time of every statement unless a test says otherwise (Unix ms)."""
HOUR = 3_600_000

INVALID = "INVALID_ARGUMENT"
PRECONDITION = "FAILED_PRECONDITION"
UNAUTHENTICATED = "UNAUTHENTICATED"
DENIED = "PERMISSION_DENIED"
EXISTS = "ALREADY_EXISTS"

GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
"""A fake GitHub token of the real shape (split so no scanner flags this file)."""
PASSWORD = "hunter2xyz!"


def uuid7_at(n: int, ms: int = T0) -> str:
    """A deterministic UUIDv7: time ms, then n in the random bits."""
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62) | n))


def ident(name: str, generation: int = 0) -> IdentityKey:
    """A fixed key for an identity (generation > 0: its rotated keys)."""
    return IdentityKey(name, hashlib.sha256(f"seed:{name}:{generation}".encode()).digest())


ADMIN = ident("admin")
ALICE = ident("alice@example.com")  # a human who delegates
BOB = ident("bob@example.com")  # a human who approves
BOT = ident("code-agent")  # an agent alice delegates to
SUB = ident("sub-agent")  # a sub-agent BOT delegates to
OTHER = ident("other-agent")  # an agent with no grants

PARAMS = {"branch": "fix-1", "repo": "acme/web", "title": "Fix bug"}


def operation(
    *,
    tool: str = "github.create_pull_request",
    resource: str = "repo:acme/web",
    access: pb.AccessKind.ValueType = pb.CREATE,
    params: object = PARAMS,
    operation_name: str = "execute_tool",
) -> pb.Operation:
    return pb.Operation(
        operation_name=operation_name,
        tool_name=tool,
        resource=resource,
        access=access,
        parameters_json=canonical_json(params),
        parameters_digest=parameters_digest(params),
    )


def grant_body(
    grantee: str,
    *,
    tools: Sequence[str] = ("github.*",),
    operations: Sequence[str] = ("execute_tool",),
    resources: Sequence[str] = ("repo:acme/*",),
    access: Sequence[pb.AccessKind.ValueType] = (pb.READ, pb.CREATE),
    not_before: int = T0 - HOUR,
    not_after: int = T0 + HOUR,
    max_uses: int = 0,
    parent: str = "",
    approval: pb.ApprovalPolicy | None = None,
) -> pb.Grant:
    return pb.Grant(
        approval=approval,
        grantee=grantee,
        tools=tools,
        operations=operations,
        resources=resources,
        access=access,
        not_before_ms=not_before,
        not_after_ms=not_after,
        max_uses=max_uses,
        parent_grant_id=parent,
        ticket="CHG-1042",
        justification="test",
    )


def intent_body(
    agent: str,
    grant_ids: Sequence[str],
    action_id: str,
    *,
    op: pb.Operation | None = None,
    decision: pb.PolicyDecision.ValueType = pb.ALLOW,
    approval_id: str = "",
) -> pb.AgentAction:
    return pb.AgentAction(
        phase=pb.AgentAction.INTENT,
        action_id=action_id,
        actor=pb.Actor(agent_id=agent, agent_version="1.0", model="test-model"),
        grant_ids=grant_ids,
        approval_id=approval_id,
        authorization=pb.Authorization(decision=decision, policy_id="p1"),
        operation=op or operation(),
    )


def outcome_body(
    agent: str,
    action_id: str,
    intent_leaf_hash: bytes,
    *,
    op: pb.Operation | None = None,
    status: pb.OutcomeStatus.ValueType = pb.OK,
) -> pb.AgentAction:
    return pb.AgentAction(
        phase=pb.AgentAction.OUTCOME,
        action_id=action_id,
        intent_leaf_hash=intent_leaf_hash,
        actor=pb.Actor(agent_id=agent),
        operation=op or operation(),
        outcome=pb.Outcome(status=status, effect_ref="commit:9f2c1e7a"),
    )


@dataclass
class Receipt:
    index: int
    leaf: bytes
    leaf_hash: bytes
    statement_id: str
    verdict: VerdictRecord | None
    action_id: str = ""

    @property
    def name(self) -> tuple[str, str]:
        """The verdict as (name, reason)."""
        assert self.verdict is not None
        return pb.Verdict.Name(self.verdict.verdict), self.verdict.reason  # type: ignore[arg-type]


class World:
    """A log's state built through the ingest rules, one statement at a time."""

    def __init__(self, *, genesis: bool = True) -> None:
        self.kv = DictKV()
        self.state = LogState(self.kv)
        self.leaves: list[bytes] = []
        self.verdicts: list[VerdictRecord | None] = []
        self.signers: dict[str, build.SessionSigner] = {}
        self._n = 0
        if genesis:
            self.send(ADMIN, build.register("admin", pb.ADMIN, ADMIN.public_key))

    def new_id(self) -> str:
        self._n += 1
        return uuid7_at(self._n)

    def signer(self, key: IdentityKey) -> build.SessionSigner:
        s = self.signers.setdefault(
            key.identity_id, build.SessionSigner(key, session_id=f"session-{key.identity_id}")
        )
        s.key = key  # after a rotation the same session goes on with the new key
        return s

    def sign(
        self, key: IdentityKey, body: build.Body, *, statement_id: str = "", t: int = T0
    ) -> bytes:
        return self.signer(key).sign(body, statement_id=statement_id or self.new_id(), time_ms=t)

    def append(self, leaf: bytes, now_ms: int | None = None) -> Receipt:
        """Admit leaf at the log time now_ms (by default: the statement's own client time)."""
        prepared = ingest.prepare(leaf, self.state.key)
        admitted = now_ms if now_ms is not None else prepared.statement.header.client_time_ms
        verdict = ingest.admit(prepared, self.state, admitted)
        index, lh = len(self.leaves), leaf_hash(leaf)
        self.state.apply(index, lh, prepared.statement, verdict)
        self.leaves.append(leaf)
        self.verdicts.append(verdict)
        return Receipt(index, leaf, lh, prepared.statement.header.statement_id, verdict)

    def send(self, key: IdentityKey, body: build.Body, **kw: object) -> Receipt:
        leaf = self.sign(key, body, **kw)  # type: ignore[arg-type]
        receipt = self.append(leaf)
        self.signer(key).advance(leaf)
        return receipt

    def refuse(
        self,
        code: str,
        key: IdentityKey | None,
        body: build.Body | None = None,
        *,
        leaf: bytes = b"",
        match: str = "",
        **kw: object,
    ) -> Rejection:
        """Submit a statement that must be refused with code; the state must not change."""
        if not leaf:
            assert key is not None and body is not None
            leaf = self.sign(key, body, **kw)  # type: ignore[arg-type]
        before, size = dict(self.kv.data), len(self.leaves)
        with pytest.raises(Rejection) as caught:
            self.append(leaf)
        e = caught.value
        assert e.code == code, e.message
        assert match in e.message
        assert self.kv.data == before and len(self.leaves) == size
        return e

    # Conveniences.

    def register(self, key: IdentityKey, kind: pb.IdentityKind.ValueType) -> Receipt:
        return self.send(ADMIN, build.register(key.identity_id, kind, key.public_key))

    def grant(self, grantor: IdentityKey, grantee: str, **kw: object) -> str:
        return self.send(grantor, grant_body(grantee, **kw)).statement_id  # type: ignore[arg-type]

    def approve(
        self,
        action_id: str,
        params: object = PARAMS,
        decision: pb.Approval.Decision.ValueType = pb.Approval.APPROVE,
        approver: IdentityKey = ALICE,
        agent: str = "code-agent",
    ) -> str:
        body = pb.Approval(
            action_id=action_id,
            agent_id=agent,
            parameters_digest=parameters_digest(params),
            decision=decision,
            ticket="CHG-1042",
        )
        return self.send(approver, body).statement_id

    def intent(
        self,
        agent: IdentityKey,
        grant_ids: Sequence[str],
        *,
        action_id: str = "",
        t: int = T0,
        **kw: object,
    ) -> Receipt:
        action_id = action_id or self.new_id()
        body = intent_body(agent.identity_id, grant_ids, action_id, **kw)  # type: ignore[arg-type]
        receipt = self.send(agent, body, t=t)
        receipt.action_id = action_id
        return receipt

    def outcome(self, agent: IdentityKey, intent: Receipt, **kw: object) -> Receipt:
        body = outcome_body(agent.identity_id, intent.action_id, intent.leaf_hash, **kw)  # type: ignore[arg-type]
        receipt = self.send(agent, body)
        receipt.action_id = intent.action_id
        return receipt


def populated() -> World:
    """admin; humans alice and bob; agents code-agent, sub-agent, other-agent."""
    w = World()
    for key, kind in (
        (ALICE, pb.HUMAN),
        (BOB, pb.HUMAN),
        (BOT, pb.AGENT),
        (SUB, pb.AGENT),
        (OTHER, pb.AGENT),
    ):
        w.register(key, kind)
    return w


def _header(issuer: str = "code-agent", sequence: int = 0) -> pb.Header:
    return pb.Header(
        statement_id=uuid7_at(1),
        issuer=issuer,
        session_id="s",
        sequence=sequence,
        client_time_ms=T0,
        schema_version=1,
        producer=pb.Producer(adapter="test/1", assurance=pb.SELF_ASSERTED),
    )


def base(kind: str) -> pb.Statement:
    """A well-formed statement of each kind (schema only: no history)."""
    if kind == "identity":
        return pb.Statement(
            header=_header("admin"),
            identity=build.register(
                "bob@example.com",
                pb.HUMAN,
                BOB.public_key,
                owner="admin",
                display_name="Bob",
                attributes={"team": "platform"},
            ),
        )
    if kind == "grant":
        return pb.Statement(header=_header("alice@example.com"), grant=grant_body("code-agent"))
    if kind == "approval":
        return pb.Statement(
            header=_header("bob@example.com"),
            approval=pb.Approval(
                action_id=uuid7_at(2),
                agent_id="code-agent",
                parameters_digest=parameters_digest(PARAMS),
                decision=pb.Approval.APPROVE,
                comment="ok",
            ),
        )
    if kind == "intent":
        body = intent_body("code-agent", [uuid7_at(3)], uuid7_at(2))
        body.principal_chain[:] = ["alice@example.com", "code-agent"]
        shown, shown_digest, redactions = redact_parameters(
            {**PARAMS, "token": GITHUB_TOKEN}, bytes(range(32))
        )
        body.operation.parameters_json, body.operation.parameters_digest = shown, shown_digest
        body.operation.redactions.extend(redactions)
        body.credential.CopyFrom(pb.CredentialRef(kind="oauth-token", issuer="github.com"))
        body.correlation.CopyFrom(pb.Correlation(trace_id="ab" * 16, span_id="cd" * 8))
        return pb.Statement(header=_header(), action=body)
    assert kind == "outcome"
    header = _header(sequence=1)
    header.previous_hash = b"\x02" * 32
    return pb.Statement(header=header, action=outcome_body("code-agent", uuid7_at(2), b"\x01" * 32))


KINDS = ("identity", "grant", "approval", "intent", "outcome")


def check_schema(st_: pb.Statement | bytes, key: IdentityKey = BOT) -> None:
    """decode + schema + secret guard (prepare with no key known)."""
    raw = st_ if isinstance(st_, bytes) else st_.SerializeToString()
    ingest.prepare(key.sign(raw), lambda _kid: None)


def schema_rejection(st_: pb.Statement | bytes) -> Rejection:
    with pytest.raises(Rejection) as caught:
        check_schema(st_)
    return caught.value


Mutation = Callable[[pb.Statement], object]


def scoped_world(**grant: object) -> tuple[World, str]:
    w = populated()
    return w, w.grant(ALICE, "code-agent", **grant)
