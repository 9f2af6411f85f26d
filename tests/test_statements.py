"""Unit tests of the statement rules (statements.schema, state, scope, ingest), without a server.

Every test drives the one ingest path the server and the auditor use — prepare(), admit(), then
LogState.apply() — over an in-memory DictKV, with fixed keys, statement ids and client times, so
a run is repeatable. A refused statement must leave the state byte-for-byte as it was.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from affidavit.merkle.hashing import leaf_hash
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build, ingest, schema_walk
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


# Identities and keys.


def test_genesis_admin_registers_itself_only_on_an_empty_state() -> None:
    w = World(genesis=False)
    # On an empty state a self-signed REGISTER of anything but an admin is refused.
    w.refuse(
        UNAUTHENTICATED, BOT, build.register("code-agent", pb.AGENT, BOT.public_key), match="key"
    )
    # So is an admin registering an identity other than the signer.
    w.refuse(UNAUTHENTICATED, ADMIN, build.register("root", pb.ADMIN, ident("root").public_key))
    r = w.send(ADMIN, build.register("admin", pb.ADMIN, ADMIN.public_key))
    assert r.index == 0 and r.verdict is None
    assert w.state.has_admin()
    assert w.state.identity("admin") is not None
    # A second self-registration (another admin) is refused: its key is not registered.
    root = ident("root")
    root_signer = build.SessionSigner(root, session_id="root")
    leaf = root_signer.sign(
        build.register("root", pb.ADMIN, root.public_key), statement_id=w.new_id(), time_ms=T0
    )
    w.refuse(UNAUTHENTICATED, None, leaf=leaf, match=root.key_id)


def test_registration_by_a_non_admin_is_denied() -> None:
    w = populated()
    e = w.refuse(DENIED, ALICE, build.register("mallory", pb.HUMAN, ident("mallory").public_key))
    assert "admin" in e.message
    w.refuse(DENIED, BOT, build.revoke("alice@example.com"))


def test_identity_events_need_a_fresh_identity_and_key() -> None:
    w = populated()
    w.refuse(EXISTS, ADMIN, build.register("code-agent", pb.AGENT, ident("x").public_key))
    w.refuse(EXISTS, ADMIN, build.register("twin", pb.AGENT, BOT.public_key))
    w.refuse(PRECONDITION, ADMIN, build.rotate("nobody", ident("nobody").public_key))
    w.refuse(EXISTS, ADMIN, build.rotate("code-agent", SUB.public_key))


def test_unknown_key_is_unauthenticated() -> None:
    w = populated()
    stranger = ident("code-agent", generation=9)  # claims to be the agent, with another key
    e = w.refuse(UNAUTHENTICATED, stranger, grant_body("sub-agent"))
    assert stranger.key_id in e.message and "not registered" in e.message


@pytest.mark.parametrize("part", ["signature", "statement"])
def test_bad_signature_is_unauthenticated(part: str) -> None:
    w = populated()
    signed = pb.SignedStatement.FromString(w.sign(ALICE, grant_body("code-agent")))
    if part == "signature":
        signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    else:  # alter the statement after signing: re-encode it with another grantee
        st = pb.Statement.FromString(signed.statement)
        st.grant.grantee = "sub-agent"
        signed.statement = st.SerializeToString()
    e = w.refuse(UNAUTHENTICATED, None, leaf=signed.SerializeToString(), match="signature")
    assert ALICE.key_id in e.message
    # Also when prepare() did not know the key yet and admit() is the first to check it.
    prepared = ingest.prepare(signed.SerializeToString(), lambda _kid: None)
    assert prepared.verified_with is None
    with pytest.raises(Rejection) as caught:
        ingest.admit(prepared, w.state, T0)
    assert caught.value.code == UNAUTHENTICATED


def test_a_key_of_another_identity_is_denied() -> None:
    w = populated()
    # BOT's registered key, but the header says the issuer is alice.
    body = grant_body("code-agent")
    header = pb.Header(
        statement_id=w.new_id(),
        issuer="alice@example.com",
        session_id="s",
        client_time_ms=T0,
        schema_version=1,
        producer=pb.Producer(adapter="test/1", assurance=pb.SELF_ASSERTED),
    )
    leaf = BOT.sign(pb.Statement(header=header, grant=body).SerializeToString())
    e = w.refuse(DENIED, None, leaf=leaf)
    assert "code-agent" in e.message and "alice@example.com" in e.message


def test_revoked_identity_is_refused() -> None:
    w = populated()
    gid = w.grant(ALICE, "code-agent")
    w.intent(BOT, [gid])
    w.send(ADMIN, build.revoke("code-agent"))
    e = w.refuse(DENIED, BOT, intent_body("code-agent", [gid], w.new_id()))
    assert "code-agent" in e.message
    w.refuse(PRECONDITION, ADMIN, build.revoke("code-agent"), match="revoked")
    w.refuse(
        EXISTS, ADMIN, build.register("code-agent", pb.AGENT, ident("code-agent", 1).public_key)
    )
    # A revoked grantee cannot be granted to.
    w.refuse(PRECONDITION, ALICE, grant_body("code-agent"), match="grantee")


def test_rotated_key_old_refused_new_accepted_history_replays() -> None:
    w = populated()
    before = w.grant(ALICE, "code-agent")
    w.intent(BOT, [before])
    new = ident("alice@example.com", generation=1)
    w.send(ADMIN, build.rotate("alice@example.com", new.public_key))
    e = w.refuse(DENIED, ALICE, grant_body("code-agent"), match="retired")
    assert ALICE.key_id in e.message
    after = w.grant(new, "code-agent")  # same session chain, new key
    assert w.intent(BOT, [before]).name == ("IN_SCOPE", "")
    assert w.intent(BOT, [after]).name == ("IN_SCOPE", "")
    assert w.state.identity("alice@example.com").key_id == new.key_id  # type: ignore[union-attr]
    old = w.state.key(ALICE.key_id)
    assert old is not None and old.retired_at is not None
    # An auditor replaying the log in order admits every statement, those signed with the old
    # key included, and reaches the same state.
    replay = World(genesis=False)
    for leaf in w.leaves:
        replay.append(leaf)
    assert replay.kv.data == w.kv.data


# Session chains.


def test_session_chain_starts_at_zero_with_no_previous_hash() -> None:
    w = populated()
    signer = w.signer(ALICE)
    assert signer.sequence == 0
    w.grant(ALICE, "code-agent")
    head = w.state.session("alice@example.com", "session-alice@example.com")
    assert head is not None and head.next_sequence == 1
    assert head.last_leaf_hash == leaf_hash(w.leaves[-1])
    # A new session of the same issuer starts at 0 again, independently.
    other = build.SessionSigner(ALICE, session_id="second")
    leaf = other.sign(grant_body("code-agent"), statement_id=w.new_id(), time_ms=T0)
    w.append(leaf)
    # Sequence 0 in a session that has begun is a replay.
    leaf = build.SessionSigner(ALICE, session_id="second").sign(
        grant_body("code-agent"), statement_id=w.new_id(), time_ms=T0
    )
    w.refuse(PRECONDITION, None, leaf=leaf, match="expects sequence 1")


@pytest.mark.parametrize("fault", ["gap", "replay", "fork", "no-previous"])
def test_session_chain_gap_replay_fork_refused(fault: str) -> None:
    w = populated()
    w.grant(ALICE, "code-agent")
    w.grant(ALICE, "code-agent")
    signer = w.signer(ALICE)
    assert signer.sequence == 2
    good_previous = signer.previous_hash
    if fault == "gap":
        signer.sequence = 3
    elif fault == "replay":  # sequence 1 again, after its own previous hash
        signer.sequence, signer.previous_hash = 1, leaf_hash(w.leaves[-2])
    elif fault == "fork":  # the right sequence after another statement
        signer.previous_hash = leaf_hash(w.leaves[-2])
    else:  # the right sequence, the previous hash of some other leaf
        signer.previous_hash = hashlib.sha256(b"elsewhere").digest()
    e = w.refuse(PRECONDITION, ALICE, grant_body("code-agent"))
    assert "expects sequence 2" in e.message and good_previous.hex() in e.message
    signer.sequence, signer.previous_hash = 2, good_previous
    w.grant(ALICE, "code-agent")


def test_statement_id_reuse_already_exists() -> None:
    w = populated()
    gid = w.grant(ALICE, "code-agent")
    e = w.refuse(EXISTS, ALICE, grant_body("sub-agent"), statement_id=gid)
    assert gid in e.message
    # Reuse across issuers too.
    w.refuse(EXISTS, BOT, intent_body("code-agent", [gid], w.new_id()), statement_id=gid)


def test_client_time_far_from_the_log_clock_is_refused_at_ingest() -> None:
    w = populated()
    leaf = w.sign(ALICE, grant_body("code-agent"), t=T0)
    prepared = ingest.prepare(leaf, w.state.key)
    with pytest.raises(Rejection) as caught:
        ingest.admit(prepared, w.state, T0 + ingest.MAX_CLOCK_SKEW_MS + 1)
    assert caught.value.code == PRECONDITION and "client_time_ms" in caught.value.message
    assert ingest.admit(prepared, w.state, T0 + ingest.MAX_CLOCK_SKEW_MS) is None


# Schema.


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


@pytest.mark.parametrize("kind", KINDS)
def test_base_statements_are_well_formed(kind: str) -> None:
    check_schema(base(kind))


Mutation = Callable[[pb.Statement], object]

REQUIRED: list[tuple[str, str, Mutation]] = [
    ("grant", "header", lambda s: s.ClearField("header")),
    ("grant", "header.statement_id", lambda s: s.header.ClearField("statement_id")),
    ("grant", "header.statement_id", lambda s: setattr(s.header, "statement_id", "not-a-uuid")),
    ("grant", "header.issuer", lambda s: s.header.ClearField("issuer")),
    ("grant", "header.session_id", lambda s: s.header.ClearField("session_id")),
    ("grant", "header.previous_hash", lambda s: setattr(s.header, "sequence", 1)),
    ("grant", "header.previous_hash", lambda s: setattr(s.header, "previous_hash", b"\x01" * 32)),
    ("grant", "header.client_time_ms", lambda s: s.header.ClearField("client_time_ms")),
    ("grant", "header.schema_version", lambda s: s.header.ClearField("schema_version")),
    ("grant", "header.producer.adapter", lambda s: s.header.producer.ClearField("adapter")),
    ("grant", "header.producer.assurance", lambda s: s.header.producer.ClearField("assurance")),
    ("grant", "body", lambda s: s.ClearField("grant")),
    ("identity", "identity.op", lambda s: s.identity.ClearField("op")),
    ("identity", "identity.identity_id", lambda s: s.identity.ClearField("identity_id")),
    ("identity", "identity.kind", lambda s: s.identity.ClearField("kind")),
    ("identity", "identity.public_key", lambda s: s.identity.ClearField("public_key")),
    ("grant", "grant.grantee", lambda s: s.grant.ClearField("grantee")),
    ("grant", "grant.tools", lambda s: s.grant.ClearField("tools")),
    ("grant", "grant.resources", lambda s: s.grant.ClearField("resources")),
    ("grant", "grant.access", lambda s: s.grant.ClearField("access")),
    ("approval", "approval.action_id", lambda s: s.approval.ClearField("action_id")),
    (
        "approval",
        "approval.parameters_digest",
        lambda s: s.approval.ClearField("parameters_digest"),
    ),
    ("approval", "approval.decision", lambda s: s.approval.ClearField("decision")),
    ("intent", "action.phase", lambda s: s.action.ClearField("phase")),
    ("intent", "action.action_id", lambda s: s.action.ClearField("action_id")),
    ("intent", "action.actor.agent_id", lambda s: s.action.actor.ClearField("agent_id")),
    (
        "intent",
        "action.operation.tool_name",
        lambda s: s.action.operation.ClearField("tool_name"),
    ),
    ("intent", "action.operation.resource", lambda s: s.action.operation.ClearField("resource")),
    ("intent", "action.operation.access", lambda s: s.action.operation.ClearField("access")),
    (
        "intent",
        "action.operation.parameters_digest",
        lambda s: s.action.operation.ClearField("parameters_digest"),
    ),
    (
        "intent",
        "action.authorization.decision",
        lambda s: s.action.authorization.ClearField("decision"),
    ),
    ("outcome", "action.intent_leaf_hash", lambda s: s.action.ClearField("intent_leaf_hash")),
    ("outcome", "action.outcome.status", lambda s: s.action.outcome.ClearField("status")),
]


@pytest.mark.parametrize(
    ("kind", "field", "mutate"), REQUIRED, ids=[f"{k}:{f}" for k, f, _ in REQUIRED]
)
def test_missing_required_field_is_invalid_naming_it(
    kind: str, field: str, mutate: Mutation
) -> None:
    st_ = base(kind)
    mutate(st_)
    e = schema_rejection(st_)
    assert e.code == INVALID
    assert field in e.message


def test_envelope_key_id_must_be_hex() -> None:
    signed = pb.SignedStatement.FromString(BOT.sign(base("grant").SerializeToString()))
    signed.key_id = signed.key_id.upper()
    with pytest.raises(Rejection) as caught:
        ingest.prepare(signed.SerializeToString(), lambda _kid: None)
    assert caught.value.code == INVALID and "key_id" in caught.value.message


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


UNKNOWN = _varint(99 << 3) + _varint(1)
"""An unknown field: number 99, varint 1."""


def test_unknown_protobuf_fields_are_refused_wherever_they_are() -> None:
    st_ = base("intent")
    # In the statement itself.
    e = schema_rejection(st_.SerializeToString() + UNKNOWN)
    assert e.code == INVALID and e.message.startswith("statement has fields")
    # In the header.
    without_header = pb.Statement()
    without_header.CopyFrom(st_)
    without_header.ClearField("header")
    raw = _field(1, st_.header.SerializeToString() + UNKNOWN) + without_header.SerializeToString()
    e = schema_rejection(raw)
    assert e.code == INVALID and e.message.startswith("header has fields")
    # Deep inside the action.
    action = pb.AgentAction()
    action.CopyFrom(st_.action)
    action.ClearField("operation")
    action_raw = action.SerializeToString() + _field(
        10, st_.action.operation.SerializeToString() + UNKNOWN
    )
    raw = _field(1, st_.header.SerializeToString()) + _field(13, action_raw)
    e = schema_rejection(raw)
    assert e.code == INVALID and e.message.startswith("action.operation has fields")
    # In the signed envelope.
    leaf = BOT.sign(st_.SerializeToString()) + UNKNOWN
    with pytest.raises(Rejection) as caught:
        ingest.prepare(leaf, lambda _kid: None)
    assert caught.value.code == INVALID and "signed_statement" in caught.value.message
    # And bytes that are no protobuf at all.
    with pytest.raises(Rejection) as caught:
        ingest.prepare(b"\xff\xff\xff", lambda _kid: None)
    assert caught.value.code == INVALID


UNDEFINED_ENUMS: list[tuple[str, str, Mutation]] = [
    ("identity", "identity.op", lambda s: setattr(s.identity, "op", 7)),
    ("identity", "identity.kind", lambda s: setattr(s.identity, "kind", 42)),
    ("approval", "approval.decision", lambda s: setattr(s.approval, "decision", 9)),
    ("intent", "action.phase", lambda s: setattr(s.action, "phase", 5)),
    ("intent", "action.operation.access", lambda s: setattr(s.action.operation, "access", 77)),
    ("grant", "grant.access[2]", lambda s: s.grant.access.append(pb.AccessKind.ValueType(66))),
    ("grant", "header.producer.assurance", lambda s: setattr(s.header.producer, "assurance", 8)),
]


@pytest.mark.parametrize(
    ("kind", "field", "mutate"), UNDEFINED_ENUMS, ids=[f for _, f, _ in UNDEFINED_ENUMS]
)
def test_undefined_enum_values_are_refused(kind: str, field: str, mutate: Mutation) -> None:
    """proto3 enums are open: a value the schema does not define survives decoding, and the rules
    would read it as something else (an op 7 acted as a REVOKE, an approval decision 9 as an
    approval). Nothing may hide in a leaf that a reader of the schema cannot see."""
    st_ = base(kind)
    mutate(st_)
    e = schema_rejection(st_)
    assert e.code == INVALID and field in e.message


OVERSIZE: list[tuple[str, str, Mutation]] = [
    (
        "grant",
        "header.producer.adapter is 1025 characters",
        lambda s: setattr(s.header.producer, "adapter", "a" * 1025),
    ),
    (
        "grant",
        "grant.justification is 4097 characters",
        lambda s: setattr(s.grant, "justification", "j" * 4097),
    ),
    (
        "intent",
        "action.operation.parameters_json is",
        lambda s: setattr(
            s.action.operation, "parameters_json", canonical_json({"x": "p" * 33_000})
        ),
    ),
    ("grant", "grant.tools has 65 items", lambda s: s.grant.tools.extend(["t"] * 64)),
    (
        "intent",
        "action.principal_chain[1] is 1025 characters",
        lambda s: s.action.principal_chain.__setitem__(1, "x" * 1025),
    ),
    (
        "identity",
        "identity.attributes has 33 entries",
        lambda s: s.identity.attributes.update({f"k{i}": "v" for i in range(32)}),
    ),
    (
        "identity",
        "identity.attributes['team'] is 2000 characters",
        lambda s: s.identity.attributes.update({"team": "v" * 2000}),
    ),
    (
        "identity",
        "identity.attributes.key is 2000 characters",
        lambda s: s.identity.attributes.update({"k" * 2000: "v"}),
    ),
    (
        "outcome",
        "action.intent_leaf_hash is 1025 bytes",
        lambda s: setattr(s.action, "intent_leaf_hash", b"h" * 1025),
    ),
]


@pytest.mark.parametrize(
    ("kind", "message", "mutate"), OVERSIZE, ids=[m.split(" ")[0] for _, m, _ in OVERSIZE]
)
def test_oversize_strings_and_lists_are_refused(kind: str, message: str, mutate: Mutation) -> None:
    st_ = base(kind)
    mutate(st_)
    e = schema_rejection(st_)
    assert e.code == INVALID and message in e.message


def test_sizes_at_the_limits_are_accepted() -> None:
    st_ = base("grant")
    st_.header.producer.adapter = "a" * schema_walk.MAX_STRING
    st_.grant.justification = "j" * schema_walk.LONG_STRINGS["justification"]
    st_.grant.tools.extend(["t"] * (schema_walk.MAX_REPEATED - 1))
    check_schema(st_)
    st_ = base("identity")
    st_.identity.attributes.update(
        {f"k{i}": "v" * 100 for i in range(schema_walk.MAX_ATTRIBUTES - 1)}
    )
    check_schema(st_)


@pytest.mark.parametrize(
    "text",
    [
        '{"title":"x","branch":"y"}',  # keys not sorted
        '{"branch": "y"}',  # spaces
        '{"a":1,"a":2}',  # duplicate key
        '{"a":NaN}',  # not JSON numbers
        "not json",
        '{"a":"\\u00e9"}',  # escaped where canonical JSON writes UTF-8
    ],
)
def test_non_canonical_parameters_json_is_refused(text: str) -> None:
    st_ = base("intent")
    st_.action.operation.ClearField("redactions")
    st_.action.operation.parameters_json = text
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.parameters_json" in e.message


def test_parameters_json_must_match_its_digest() -> None:
    """The digest (what an approval binds) and the parameters an auditor reads must agree."""
    st_ = base("intent")
    st_.action.operation.ClearField("redactions")
    st_.action.operation.parameters_json = canonical_json({**PARAMS, "branch": "main"})
    st_.action.operation.parameters_digest = parameters_digest(PARAMS)
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.parameters_digest" in e.message
    st_.action.operation.parameters_json = canonical_json(PARAMS)
    check_schema(st_)
    check_schema(base("intent"))
    st_.action.operation.ClearField("parameters_json")
    e = schema_rejection(st_)
    assert "action.operation.parameters_json must be set" in e.message


def test_a_fake_redaction_does_not_skip_the_digest_check() -> None:
    """Issue 9 item 2: listing a Redaction once let any digest stand beside any parameters, so
    unapproved parameters appeared approved. The digest is checked whatever redactions say."""
    st_ = base("intent")
    op = st_.action.operation
    approved = op.parameters_digest
    op.parameters_json = canonical_json({**PARAMS, "branch": "main", "token": "«redacted»"})
    assert op.parameters_digest == approved and len(op.redactions) == 1
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.parameters_digest" in e.message


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("unlisted marker", lambda op: op.ClearField("redactions")),
        ("listed twice", lambda op: op.redactions.append(op.redactions[0])),
        ("wrong path", lambda op: setattr(op.redactions[0], "path", "/branch")),
        ("wrong rule", lambda op: setattr(op.redactions[0], "rule", "jwt")),
        ("wrong fingerprint", lambda op: setattr(op.redactions[0], "fingerprint", "00000000")),
    ],
)
def test_redactions_list_exactly_the_markers_shown(
    name: str, mutate: Callable[[pb.Operation], None]
) -> None:
    st_ = base("intent")
    mutate(st_.action.operation)
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.redactions" in e.message, name


def test_the_digest_is_the_same_for_every_producer_and_confirms_no_guess() -> None:
    """The approving human and the agent redact the same real parameters under different
    fingerprint keys, and get one digest; it is the digest of the text shown, so no guess of
    the redacted value changes it."""
    real = {**PARAMS, "token": GITHUB_TOKEN}
    human = redact_parameters(real, b"h" * 32)
    agent = redact_parameters(real, b"a" * 32)
    assert human[0] != agent[0] and human[1] == agent[1] == parameters_digest(real)
    other = redact_parameters({**PARAMS, "token": "ghp_" + GITHUB_TOKEN[:3:-1]}, b"a" * 32)
    assert other[1] == agent[1]  # the secret's value is not in the digest at all
    assert parameters_digest({**PARAMS, "title": "Other"}) != agent[1]  # everything shown is
    for guess in (real, canonical_json(real), GITHUB_TOKEN):
        raw = canonical_json(guess).encode() if isinstance(guess, dict) else guess.encode()
        assert hashlib.sha256(raw).hexdigest() != agent[1]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[" * 3000 + "]" * 3000, "nests deeper than 32"),
        ('{"a":' * 40 + "1" + "}" * 40, "nests deeper than 32"),
        ('{"n":9007199254740993}', "not canonicalizable"),
        ('{"n":NaN}', "not JSON"),
        ('{"s":"\\ud800"}', "not canonicalizable"),
    ],
)
def test_parameters_json_beyond_bounds_is_refused_naming_the_field(text: str, says: str) -> None:
    st_ = base("intent")
    st_.action.operation.ClearField("redactions")
    st_.action.operation.parameters_json = text
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.parameters_json" in e.message
    assert says in e.message, e.message


SECRET_PLACES: list[tuple[str, str, Mutation]] = [
    (
        "grant",
        "header.producer.adapter",
        lambda s: setattr(s.header.producer, "adapter", GITHUB_TOKEN),
    ),
    (
        "identity",
        "identity.display_name",
        lambda s: setattr(s.identity, "display_name", f"bob {GITHUB_TOKEN}"),
    ),
    (
        "identity",
        "identity.attributes['note']",
        lambda s: s.identity.attributes.update({"note": f"token {GITHUB_TOKEN}"}),
    ),
    (
        "grant",
        "grant.justification",
        lambda s: setattr(s.grant, "justification", f"use {GITHUB_TOKEN} for this"),
    ),
    ("grant", "grant.ticket", lambda s: setattr(s.grant, "ticket", GITHUB_TOKEN)),
    ("grant", "grant.resources[1]", lambda s: s.grant.resources.append(f"repo:{GITHUB_TOKEN}")),
    ("approval", "approval.comment", lambda s: setattr(s.approval, "comment", GITHUB_TOKEN)),
    (
        "intent",
        "action.operation.parameters_json",
        lambda s: setattr(
            s.action.operation, "parameters_json", canonical_json({"token": GITHUB_TOKEN})
        ),
    ),
    ("intent", "action.actor.model", lambda s: setattr(s.action.actor, "model", GITHUB_TOKEN)),
    ("intent", "action.principal_chain[1]", lambda s: s.action.principal_chain.append("x")),
    (
        "intent",
        "action.credential.issuer",
        lambda s: setattr(s.action.credential, "issuer", GITHUB_TOKEN),
    ),
    (
        "intent",
        "action.authorization.scopes_granted[0]",
        lambda s: s.action.authorization.scopes_granted.append(GITHUB_TOKEN),
    ),
    (
        "intent",
        "action.operation.redactions[0].path",
        lambda s: setattr(s.action.operation.redactions[0], "path", GITHUB_TOKEN),
    ),
    (
        "outcome",
        "action.outcome.effect_ref",
        lambda s: setattr(s.action.outcome, "effect_ref", GITHUB_TOKEN),
    ),
    (
        "outcome",
        "action.correlation.parent_action_id",
        lambda s: setattr(s.action.correlation, "parent_action_id", GITHUB_TOKEN),
    ),
]


def _shows_secret(message: str, secret: str) -> bool:
    """Whether any 8 consecutive characters of the secret appear in the message."""
    return any(secret[i : i + 8] in message for i in range(len(secret) - 7))


@pytest.mark.parametrize(
    ("kind", "path", "mutate"), SECRET_PLACES, ids=[p for _, p, _ in SECRET_PLACES]
)
def test_secret_in_any_string_field_is_refused_without_echo(
    kind: str, path: str, mutate: Mutation
) -> None:
    st_ = base(kind)
    mutate(st_)
    if path == "action.principal_chain[1]":  # the second element, not the first
        st_.action.principal_chain[1] = f"agent {GITHUB_TOKEN}"
    e = schema_rejection(st_)
    assert e.code == INVALID
    assert f"{path} holds what looks like a secret (rule github-token)" in e.message
    assert not _shows_secret(e.message, GITHUB_TOKEN)


def test_secret_in_a_map_value_is_judged_by_its_key() -> None:
    """A map's key names what its value is: {"db_password": "hunter2xyz!"} is a password, as
    the secret guard's `name` argument says, though the value alone looks like a word."""
    st_ = base("identity")
    st_.identity.attributes["db_password"] = PASSWORD
    e = schema_rejection(st_)
    assert e.code == INVALID
    assert "identity.attributes['db_password']" in e.message and "secret-assignment" in e.message
    assert PASSWORD not in e.message and not _shows_secret(e.message, PASSWORD)
    # In parameters the JSON text carries the key, and the guard sees it there already.
    st_ = base("intent")
    st_.action.operation.parameters_json = canonical_json({"password": PASSWORD})
    e = schema_rejection(st_)
    assert "parameters_json" in e.message and "secret-assignment" in e.message
    assert not _shows_secret(e.message, PASSWORD)
    # Benign look-alikes in the same places pass.
    st_ = base("identity")
    st_.identity.attributes.update(
        {"key_id": "0123456789abcdef0123456789abcdef", "commit": "9f2c1e7a" * 5}
    )
    check_schema(st_)


# Scope verdicts.


def scoped_world(**grant: object) -> tuple[World, str]:
    w = populated()
    return w, w.grant(ALICE, "code-agent", **grant)


def test_in_scope_when_tool_resource_access_match() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    assert r.name == ("IN_SCOPE", "")
    assert r.verdict == VerdictRecord(pb.IN_SCOPE, "", gid, T0)
    assert w.state.verdict(r.index) == r.verdict
    assert w.state.grant_uses(gid) == 1
    out = w.outcome(BOT, r)
    assert out.name == ("IN_SCOPE", "")
    assert w.state.grant_uses(gid) == 1  # an outcome is not another use
    # The first grant in scope is the one recorded, whatever precedes it.
    other = w.grant(ALICE, "code-agent", tools=["jira.*"])
    r = w.intent(BOT, [other, uuid7_at(999), gid])
    assert r.verdict == VerdictRecord(pb.IN_SCOPE, "", gid, T0)


OUT_OF_SCOPE: list[tuple[str, dict[str, object]]] = [
    ("tool-not-granted", {"op": operation(tool="shell.exec")}),
    ("operation-not-granted", {"op": operation(operation_name="chat")}),
    ("resource-not-granted", {"op": operation(resource="repo:other/web")}),
    ("access-not-granted", {"op": operation(access=pb.DELETE)}),
    ("grant-expired", {"t": T0 + HOUR}),
    ("grant-not-yet-valid", {"t": T0 - HOUR - 1}),
]


@pytest.mark.parametrize(("reason", "action"), OUT_OF_SCOPE, ids=[r for r, _ in OUT_OF_SCOPE])
def test_out_of_scope_reasons(reason: str, action: dict[str, object]) -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid], **action)  # type: ignore[arg-type]
    assert r.name == ("OUT_OF_SCOPE", reason)
    assert w.state.verdict(r.index) == r.verdict
    assert w.state.grant_uses(gid) == 0  # an action out of scope uses nothing up
    # The boundaries themselves are inside.
    if reason == "grant-expired":
        assert w.intent(BOT, [gid], t=T0 + HOUR - 1).name == ("IN_SCOPE", "")
    if reason == "grant-not-yet-valid":
        assert w.intent(BOT, [gid], t=T0 - HOUR).name == ("IN_SCOPE", "")


def test_not_grantee() -> None:
    w, gid = scoped_world()
    assert w.intent(OTHER, [gid]).name == ("OUT_OF_SCOPE", "not-grantee")


def test_grant_exhausted_after_max_uses_in_scope_intents() -> None:
    w, gid = scoped_world(max_uses=2)
    assert w.intent(BOT, [gid]).name == ("IN_SCOPE", "")
    # Intents out of scope do not use the grant up.
    assert w.intent(BOT, [gid], op=operation(tool="shell.exec")).name[0] == "OUT_OF_SCOPE"
    assert w.intent(BOT, [gid]).name == ("IN_SCOPE", "")
    assert w.state.grant_uses(gid) == 2
    assert w.intent(BOT, [gid]).name == ("OUT_OF_SCOPE", "grant-exhausted")
    assert w.state.grant_uses(gid) == 2


def test_denied_intent_uses_nothing() -> None:
    """An intent its policy denied will not run: in scope or not, it uses no grant."""
    w, gid = scoped_world(max_uses=1)
    assert w.intent(BOT, [gid], decision=pb.DENY).name == ("IN_SCOPE", "")
    assert w.state.grant_uses(gid) == 0
    assert w.intent(BOT, [gid]).name == ("IN_SCOPE", "")
    assert w.state.grant_uses(gid) == 1


def test_grantor_revoked() -> None:
    w, gid = scoped_world()
    assert w.intent(BOT, [gid]).name == ("IN_SCOPE", "")
    w.send(ADMIN, build.revoke("alice@example.com"))
    assert w.intent(BOT, [gid]).name == ("OUT_OF_SCOPE", "grantor-revoked")


def test_chain_not_rooted_in_human() -> None:
    """Admission never lets an agent grant without a parent; scope still refuses such a root,
    should one be in a state (defence in depth). The statement is applied directly."""
    w = populated()
    body = grant_body("sub-agent")
    w.refuse(DENIED, BOT, body, match="human")
    leaf = w.sign(BOT, body)
    st_ = build.statement_of(leaf)
    w.state.apply(len(w.leaves), leaf_hash(leaf), st_, None)
    assert w.intent(SUB, [st_.header.statement_id]).name == (
        "OUT_OF_SCOPE",
        "chain-not-rooted-in-human",
    )


def test_no_grant() -> None:
    w, gid = scoped_world()
    assert w.intent(BOT, []).name == ("NO_GRANT", "no-grant")
    assert w.intent(BOT, [uuid7_at(999)]).name == ("NO_GRANT", "unknown-grant")
    # A known grant's reason wins over unknown ones.
    r = w.intent(BOT, [uuid7_at(999), gid], op=operation(tool="shell.exec"))
    assert r.name == ("OUT_OF_SCOPE", "tool-not-granted")


APPROVAL_CASES = [
    ("approval-missing", "none"),
    ("approval-missing", "unknown"),
    ("approval-mismatch", "digest"),
    ("approval-mismatch", "action"),
    ("approval-rejected", "reject"),
    ("approver-not-valid", "revoked"),
    ("", "approve"),
    ("", "edit"),
]


@pytest.mark.parametrize(("reason", "case"), APPROVAL_CASES, ids=[c for _, c in APPROVAL_CASES])
def test_allow_if_approved(reason: str, case: str) -> None:
    w, gid = scoped_world()
    action_id = w.new_id()
    params: object = PARAMS
    approval_id = ""
    if case == "unknown":
        approval_id = uuid7_at(999)
    elif case == "digest":
        approval_id = w.approve(action_id, {**PARAMS, "branch": "main"})
    elif case == "action":
        approval_id = w.approve(w.new_id())
    elif case == "reject":
        approval_id = w.approve(action_id, decision=pb.Approval.REJECT)
    elif case == "revoked":
        gid = w.grant(ALICE, "code-agent", approval=pb.ApprovalPolicy(approvers=[BOB.identity_id]))
        approval_id = w.approve(action_id, approver=BOB)
        w.send(ADMIN, build.revoke("bob@example.com"))
    elif case == "approve":
        approval_id = w.approve(action_id)
    elif case == "edit":  # approved with edited parameters: the action carries the edited ones
        params = {**PARAMS, "title": "Fix bug (reviewed)"}
        approval_id = w.approve(action_id, params, decision=pb.Approval.EDIT)
    elif case != "none":
        raise AssertionError(case)
    r = w.intent(
        BOT,
        [gid],
        action_id=action_id,
        decision=pb.ALLOW_IF_APPROVED,
        approval_id=approval_id,
        op=operation(params=params),
    )
    expected = ("OUT_OF_SCOPE", reason) if reason else ("IN_SCOPE", "")
    assert r.name == expected


def test_approval_only_by_a_human() -> None:
    w, _ = scoped_world()
    body = pb.Approval(
        action_id=w.new_id(),
        agent_id="code-agent",
        parameters_digest=parameters_digest(PARAMS),
        decision=pb.Approval.APPROVE,
    )
    w.refuse(DENIED, BOT, body, match="human")


def test_outcome_differs_from_intent() -> None:
    cases: list[pb.Operation] = [
        operation(resource="repo:acme/api"),
        operation(tool="github.merge_pull_request"),
        operation(params={**PARAMS, "branch": "main"}),
        operation(access=pb.READ),
        operation(operation_name="create_agent"),
    ]
    for op in cases:
        w, gid = scoped_world()
        r = w.intent(BOT, [gid])
        out = w.outcome(BOT, r, op=op)
        assert out.name == ("OUT_OF_SCOPE", "outcome-differs-from-intent"), op
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    assert w.outcome(BOT, r).name == ("IN_SCOPE", "")


def test_executed_despite_deny() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid], decision=pb.DENY)
    assert w.outcome(BOT, r).name == ("OUT_OF_SCOPE", "executed-despite-deny")
    r = w.intent(BOT, [gid], decision=pb.DENY)
    assert w.outcome(BOT, r, status=pb.DENIED).name[0] != "OUT_OF_SCOPE"


def test_outcome_inherits_an_out_of_scope_intent() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid], op=operation(tool="shell.exec"))
    out = w.outcome(BOT, r, op=operation(tool="shell.exec"))
    assert out.name == ("OUT_OF_SCOPE", "tool-not-granted")


# Outcomes and intents.


def test_outcome_without_intent_is_refused() -> None:
    w, _ = scoped_world()
    body = outcome_body("code-agent", w.new_id(), b"\x01" * 32)
    w.refuse(PRECONDITION, BOT, body, match="no INTENT")


def test_outcome_with_the_wrong_intent_hash_is_refused() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    body = outcome_body("code-agent", r.action_id, leaf_hash(w.leaves[0]))
    w.refuse(PRECONDITION, BOT, body, match="intent_leaf_hash")


def test_outcome_by_another_agent_is_denied() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    body = outcome_body("other-agent", r.action_id, r.leaf_hash)
    w.refuse(DENIED, OTHER, body, match="code-agent")


def test_second_outcome_and_second_intent_are_refused() -> None:
    w, gid = scoped_world()
    r = w.intent(BOT, [gid])
    w.outcome(BOT, r)
    w.refuse(EXISTS, BOT, outcome_body("code-agent", r.action_id, r.leaf_hash), match="OUTCOME")
    w.refuse(EXISTS, BOT, intent_body("code-agent", [gid], r.action_id), match="INTENT")


def test_actions_only_by_the_agent_they_name() -> None:
    w, gid = scoped_world()
    w.refuse(DENIED, ALICE, intent_body("alice@example.com", [gid], w.new_id()), match="agent")
    w.refuse(DENIED, BOT, intent_body("other-agent", [gid], w.new_id()), match="agent_id")


# Delegation.


def test_agent_attenuates_a_grant_it_holds() -> None:
    w, parent = scoped_world(max_uses=5)
    child = w.grant(
        BOT,
        "sub-agent",
        parent=parent,
        tools=["github.create_pull_request"],
        resources=["repo:acme/web"],
        access=[pb.CREATE],
        not_before=T0 - 60_000,
        not_after=T0 + 60_000,
        max_uses=2,
    )
    r = w.intent(SUB, [child])
    assert r.verdict == VerdictRecord(pb.IN_SCOPE, "", child, T0)
    # The child's own limits bind the sub-agent.
    assert w.intent(SUB, [child], op=operation(access=pb.READ)).name == (
        "OUT_OF_SCOPE",
        "access-not-granted",
    )
    assert w.intent(SUB, [child], t=T0 + 60_000).name == ("OUT_OF_SCOPE", "grant-expired")
    # The sub-agent cannot act under its parent's grant, which it does not hold.
    assert w.intent(SUB, [parent]).name == ("OUT_OF_SCOPE", "not-grantee")
    # Revoking the delegating agent cuts the sub-agent off.
    w.send(ADMIN, build.revoke("code-agent"))
    assert w.intent(SUB, [child]).name == ("OUT_OF_SCOPE", "grantor-revoked")


def test_an_expired_parent_takes_its_children_with_it() -> None:
    w, parent = scoped_world(not_after=T0 + 10)
    child = w.grant(BOT, "sub-agent", parent=parent, not_after=T0 + 10)
    assert w.intent(SUB, [child], t=T0 + 5).name == ("IN_SCOPE", "")
    assert w.intent(SUB, [child], t=T0 + 10).name == ("OUT_OF_SCOPE", "grant-expired")


WIDENINGS: list[tuple[str, dict[str, object], dict[str, object]]] = [
    ("tool", {}, {"tools": ["shell.*"]}),
    ("tool-glob", {}, {"tools": ["git*"]}),
    ("resource", {}, {"resources": ["repo:*"]}),
    ("resource-sibling", {}, {"resources": ["repo:acme/web", "repo:other/web"]}),
    ("operation", {}, {"operations": ["*"]}),
    ("operation-dropped", {}, {"operations": []}),
    ("access", {}, {"access": [pb.READ, pb.DELETE]}),
    ("starts-earlier", {}, {"not_before": T0 - 2 * HOUR}),
    ("no-start", {}, {"not_before": 0}),
    ("ends-later", {}, {"not_after": T0 + 2 * HOUR}),
    ("no-end", {}, {"not_after": 0}),
    ("more-uses", {"max_uses": 3}, {"max_uses": 4}),
    ("unlimited-uses", {"max_uses": 3}, {"max_uses": 0}),
]


@pytest.mark.parametrize(("case", "parent", "child"), WIDENINGS, ids=[c for c, _, _ in WIDENINGS])
def test_a_child_grant_that_widens_its_parent_is_refused(
    case: str, parent: dict[str, object], child: dict[str, object]
) -> None:
    w, parent_id = scoped_world(**parent)
    fields = {"max_uses": parent.get("max_uses", 0), **child}
    body = grant_body("sub-agent", parent=parent_id, **fields)  # type: ignore[arg-type]
    w.refuse(PRECONDITION, BOT, body, match="widens its parent")


def test_a_child_grant_within_its_parent_is_admitted() -> None:
    w, parent = scoped_world(max_uses=3)
    for child in (
        {"max_uses": 3},
        {"max_uses": 1, "tools": ["github.create_*"], "resources": ["repo:acme/web*"]},
        {"max_uses": 1, "tools": ["github.create_pull_request", "github.get_?"]},
        {"max_uses": 2, "access": [pb.READ], "operations": ["execute_tool"]},
    ):
        w.grant(BOT, "sub-agent", parent=parent, **child)


def test_agent_grants_need_a_parent_it_holds() -> None:
    w, parent = scoped_world()
    w.refuse(DENIED, BOT, grant_body("sub-agent"), match="parent grant")
    w.refuse(DENIED, OTHER, grant_body("sub-agent", parent=parent), match="does not hold")
    w.refuse(
        PRECONDITION, BOT, grant_body("sub-agent", parent=uuid7_at(999)), match="not in the log"
    )


def test_uses_of_a_child_grant_count_against_its_parent() -> None:
    """A one-off approval (max_uses 1) held by an agent must stay one-off: the agent cannot
    multiply it by delegating it, to sub-agents or to itself, once per child grant."""
    w, parent = scoped_world(max_uses=1)
    first = w.grant(BOT, "sub-agent", parent=parent, max_uses=1)
    second = w.grant(BOT, "sub-agent", parent=parent, max_uses=1)
    to_itself = w.grant(BOT, "code-agent", parent=parent, max_uses=1)
    assert w.intent(SUB, [first]).name == ("IN_SCOPE", "")
    assert w.state.grant_uses(parent) == 1
    assert w.intent(SUB, [second]).name == ("OUT_OF_SCOPE", "grant-exhausted")
    assert w.intent(BOT, [to_itself]).name == ("OUT_OF_SCOPE", "grant-exhausted")
    assert w.intent(BOT, [parent]).name == ("OUT_OF_SCOPE", "grant-exhausted")


# Determinism.


def story() -> World:
    """A history touching every rule: delegation, approval, rotation, revocation, refusals."""
    w, parent = scoped_world(max_uses=10)
    child = w.grant(BOT, "sub-agent", parent=parent, max_uses=3, tools=["github.create_*"])
    action_id = w.new_id()
    approval = w.approve(action_id)
    r = w.intent(
        BOT, [parent], action_id=action_id, decision=pb.ALLOW_IF_APPROVED, approval_id=approval
    )
    w.outcome(BOT, r)
    w.intent(SUB, [child])
    w.intent(SUB, [child], op=operation(resource="repo:other/x"))
    w.refuse(PRECONDITION, BOT, grant_body("sub-agent", parent=parent, tools=["*"]))
    w.send(ADMIN, build.rotate("alice@example.com", ident("alice@example.com", 1).public_key))
    w.refuse(DENIED, ALICE, grant_body("code-agent"))
    w.intent(BOT, [parent], decision=pb.DENY)
    w.send(ADMIN, build.revoke("code-agent"))
    w.intent(SUB, [child])
    w.intent(OTHER, [])
    return w


def test_replay_gives_byte_identical_state_and_verdicts() -> None:
    original = story()
    assert len(original.leaves) > 15
    for _ in range(2):
        replay = World(genesis=False)
        for leaf in original.leaves:
            replay.append(leaf)
        assert replay.verdicts == original.verdicts
        assert replay.kv.data == original.kv.data
    # Two independent runs of the same story (same keys, ids, times) give the same log.
    again = story()
    assert again.leaves == original.leaves and again.kv.data == original.kv.data


def test_only_the_log_signs_its_refusal_records() -> None:
    """A Refusal verifies with the log's key alone; an identity cannot write one, and a
    checker that does not know the log's key admits none."""
    w = populated()
    log = IdentityKey("log", b"\x07" * 32)
    body = pb.Refusal(
        leaf_hash=b"\x01" * 32, reason="key-unknown", count=1, first_ms=T0, last_ms=T0
    )
    leaf = build.SessionSigner(log).sign(body, statement_id=w.new_id(), time_ms=T0)
    prepared = ingest.prepare(leaf, w.state.key)
    for wrong in (None, ALICE.public_key):
        with pytest.raises(Rejection) as caught:
            ingest.admit(prepared, w.state, T0, wrong)
        assert caught.value.code == UNAUTHENTICATED
    assert ingest.admit(prepared, w.state, T0, log.public_key) is None
    forged = build.SessionSigner(IdentityKey("log", ALICE.seed)).sign(body, time_ms=T0)
    with pytest.raises(Rejection):
        ingest.admit(ingest.prepare(forged, w.state.key), w.state, T0, log.public_key)
    as_alice = w.sign(ALICE, body)
    with pytest.raises(Rejection) as caught:
        ingest.admit(ingest.prepare(as_alice, w.state.key), w.state, T0, log.public_key)
    assert caught.value.code == DENIED
