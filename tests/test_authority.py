"""Authority that cannot be talked around: the attacks of issue 9, against a real log.

Every statement here is built and signed by hand, as an attacker with a real key would (no
friendly client in the way), and sent to a real `affidavit serve`. Each case is an attack and
its honest twin; the table says what the log must do with each — record it with a verdict, or
refuse it with a status — and the last test replays the whole log with the auditor and checks
that every recorded attack is reported as a violation, and nothing honest is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from affidavit.client.audit import RecordedEntry, audit, audit_entries
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import hashing
from affidavit.proto import affidavit_pb2 as pb
from affidavit.server.refusals import MAX_DISTINCT
from affidavit.statements import build
from affidavit.statements.canonical import canonical_json
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import parameters_digest
from affidavit.statements.signing import IdentityKey

from tests.serverproc import RPC_TIMEOUT, ServerProcess
from tests.test_audit import fake_checkpoint

WINDOW_S = 1.0
"""The server's refusal window: short, so the counted remainder reaches the record quickly."""
MINUTE = 60_000
HOUR = 60 * MINUTE
PARAMS = {"repo": "acme/web", "title": "Fix login"}

Expect = tuple[str, str] | grpc.StatusCode
"""What the log must do with a statement: record it with (verdict, reason), or refuse it."""


@dataclass
class World:
    """One real log; statements signed by hand and appended raw."""

    server: ServerProcess
    signers: dict[str, build.SessionSigner] = field(default_factory=dict)
    violations: set[int] = field(default_factory=set)  # indexes the audit must report
    honest: set[int] = field(default_factory=set)  # recorded indexes it must not
    # Refused well-formed statements, which the log must put on its record: leaf hash ->
    # (claimed key id, claimed issuer).
    refused: dict[bytes, tuple[str, str]] = field(default_factory=dict)

    def key(self, identity_id: str) -> IdentityKey:
        return self.signers[identity_id].key

    def identity(
        self, identity_id: str, kind: pb.IdentityKind.ValueType, *, roles: str = ""
    ) -> None:
        key = IdentityKey.generate(identity_id)
        attributes = {"roles": roles} if roles else None
        body = build.register(identity_id, kind, key.public_key, attributes=attributes)
        self.send("admin", body)
        self.signers[identity_id] = build.SessionSigner(key, session_id=uuid7())

    def sign(self, who: str, body: build.Body, *, time_ms: int | None = None) -> bytes:
        return self.signers[who].sign(body, time_ms=time_ms)

    def send(self, who: str, body: build.Body) -> str:
        """Append an honest statement; its statement id."""
        leaf = self.sign(who, body)
        self.server.stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
        self.signers[who].advance(leaf)
        return build.statement_of(leaf).header.statement_id

    def expect(
        self, who: str, body: build.Body, expected: Expect, *, attack: bool, time_ms: int = 0
    ) -> str:
        """Send body; the log must record it with the expected verdict or refuse it with the
        expected status (and change nothing). The statement id."""
        leaf = self.sign(who, body, time_ms=time_ms or None)
        statement_id = build.statement_of(leaf).header.statement_id
        before = self.server.checkpoint().size
        try:
            r = self.server.stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            assert isinstance(expected, grpc.StatusCode), (expected, e.details())
            assert e.code() == expected, e.details()
            # Nothing changed but the log's own refusal records (written after callers are
            # answered, so an earlier attempt's record may land now too).
            after = self.server.checkpoint().size
            added = self.server.all_entries(before, after) if after > before else []
            assert all(build.statement_of(x.data).WhichOneof("body") == "refusal" for x in added)
            if expected != grpc.StatusCode.INVALID_ARGUMENT:  # malformed claims nothing
                self.refused[hashing.leaf_hash(leaf)] = (self.key(who).key_id, who)
            return statement_id
        assert not isinstance(expected, grpc.StatusCode), f"admitted, {expected} expected"
        self.signers[who].advance(leaf)
        got = (pb.Verdict.Name(r.verdict), r.verdict_reason)
        assert got == expected
        if isinstance(body, pb.AgentAction):
            (self.violations if attack else self.honest).add(r.index)
        return statement_id

    def grant(self, grantor: str, grantee: str, **fields: object) -> str:
        now = build.now_ms()
        g = pb.Grant(
            grantee=grantee,
            tools=["github.*"],
            resources=["repo:acme/*"],
            access=[pb.CREATE],
            not_before_ms=now - HOUR,
            not_after_ms=now + HOUR,
        )
        for name, value in fields.items():
            if isinstance(value, list):
                del getattr(g, name)[:]
                getattr(g, name).extend(value)
            elif isinstance(value, pb.ApprovalPolicy):
                g.approval.CopyFrom(value)
            else:
                setattr(g, name, value)
        return self.send(grantor, g)


def intent(
    agent: str,
    grant_ids: list[str],
    *,
    action_id: str = "",
    tool: str = "github.create_pull_request",
    resource: str = "repo:acme/web",
    params: object = PARAMS,
    decision: pb.PolicyDecision.ValueType = pb.ALLOW,
    approval_id: str = "",
    principal_chain: tuple[str, ...] = (),
    scopes_granted: tuple[str, ...] = (),
) -> pb.AgentAction:
    return pb.AgentAction(
        phase=pb.AgentAction.INTENT,
        action_id=action_id or uuid7(),
        actor=pb.Actor(agent_id=agent),
        grant_ids=grant_ids,
        approval_id=approval_id,
        principal_chain=principal_chain,
        authorization=pb.Authorization(decision=decision, scopes_granted=scopes_granted),
        operation=pb.Operation(
            operation_name="execute_tool",
            tool_name=tool,
            resource=resource,
            access=pb.CREATE,
            parameters_json=canonical_json(params),
            parameters_digest=parameters_digest(params),
        ),
    )


def approval(
    action_id: str,
    agent: str,
    params: object = PARAMS,
    decision: pb.Approval.Decision.ValueType = pb.Approval.APPROVE,
) -> pb.Approval:
    return pb.Approval(
        action_id=action_id,
        agent_id=agent,
        parameters_digest=parameters_digest(params),
        decision=decision,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = ServerProcess(
        tmp_path_factory.mktemp("authority") / "log",
        "--refusal-window",
        str(WINDOW_S),
        entry_format="statements",
    )
    server.start()
    try:
        w = World(server)
        admin = IdentityKey.load(server.data_dir / "admin.key")
        w.signers["admin"] = build.SessionSigner(admin, session_id=uuid7())
        yield w
    finally:
        server.kill()


# The cases: each an attack and its honest twin. Identities are per case.


def case_reject_is_ignored(w: World) -> None:
    """1. alice REJECTs the action; the agent records it with decision ALLOW."""
    w.identity("alice-1", pb.HUMAN)
    w.identity("bot-1", pb.AGENT)
    gid = w.grant("alice-1", "bot-1")
    rejected = uuid7()
    w.send("alice-1", approval(rejected, "bot-1", decision=pb.Approval.REJECT))
    body = intent("bot-1", [gid], action_id=rejected)
    w.expect("bot-1", body, ("OUT_OF_SCOPE", "approval-rejected"), attack=True)
    w.expect("bot-1", intent("bot-1", [gid]), ("IN_SCOPE", ""), attack=False)


def case_grant_requires_approval(w: World) -> None:
    """1. The grant requires approval; the agent's own decision (ALLOW) cannot lower that."""
    w.identity("alice-1b", pb.HUMAN)
    w.identity("bot-1b", pb.AGENT)
    policy = pb.ApprovalPolicy(access=[pb.CREATE])
    gid = w.grant("alice-1b", "bot-1b", approval=policy)
    body = intent("bot-1b", [gid])
    w.expect("bot-1b", body, ("OUT_OF_SCOPE", "approval-missing"), attack=True)
    approved = uuid7()
    ap = w.send("alice-1b", approval(approved, "bot-1b"))
    honest = intent("bot-1b", [gid], action_id=approved, approval_id=ap)
    w.expect("bot-1b", honest, ("IN_SCOPE", ""), attack=False)


def case_fake_redaction(w: World) -> None:
    """2. A fake redaction, so that parameters nobody approved show as approved."""
    w.identity("alice-2", pb.HUMAN)
    w.identity("bot-2", pb.AGENT)
    gid = w.grant("alice-2", "bot-2", approval=pb.ApprovalPolicy(all_actions=True))
    action_id = uuid7()
    ap = w.send("alice-2", approval(action_id, "bot-2"))
    body = intent("bot-2", [gid], action_id=action_id, approval_id=ap)
    body.operation.parameters_json = canonical_json({**PARAMS, "title": "Drop prod"})
    body.operation.redactions.add(path="/password", rule="password", fingerprint="00000000")
    w.expect("bot-2", body, grpc.StatusCode.INVALID_ARGUMENT, attack=True)
    honest = intent("bot-2", [gid], action_id=action_id, approval_id=ap)
    w.expect("bot-2", honest, ("IN_SCOPE", ""), attack=False)


def case_scope_patterns(w: World) -> None:
    """3. Names built to slip through a glob: refused as names, or outside the pattern."""
    w.identity("alice-3", pb.HUMAN)
    w.identity("bot-3", pb.AGENT)
    gid = w.grant("alice-3", "bot-3")
    for resource in ("repo:acme/../evilcorp/secrets", "repo:acme/x\nrepo:evilcorp/y"):
        body = intent("bot-3", [gid], resource=resource)
        w.expect("bot-3", body, grpc.StatusCode.INVALID_ARGUMENT, attack=True)
    body = intent("bot-3", [gid], tool="github.x;shell.exec")
    w.expect("bot-3", body, grpc.StatusCode.INVALID_ARGUMENT, attack=True)
    deeper = intent("bot-3", [gid], resource="repo:acme/web/../../evilcorp")
    w.expect("bot-3", deeper, grpc.StatusCode.INVALID_ARGUMENT, attack=True)
    nested = intent("bot-3", [gid], resource="repo:evilcorp/secrets")
    w.expect("bot-3", nested, ("OUT_OF_SCOPE", "resource-not-granted"), attack=True)
    w.expect("bot-3", intent("bot-3", [gid]), ("IN_SCOPE", ""), attack=False)


def case_approvals_float_free(w: World) -> None:
    """4. Any human's approval under alice's grant; agent A's approval used by agent B."""
    w.identity("alice-4", pb.HUMAN)
    w.identity("mallory-4", pb.HUMAN)
    w.identity("carol-4", pb.HUMAN, roles="release-manager, oncall")
    w.identity("bot-4", pb.AGENT)
    w.identity("bot-4b", pb.AGENT)
    policy = pb.ApprovalPolicy(all_actions=True, roles=["release-manager"])
    gid = w.grant("alice-4", "bot-4", approval=policy)
    gid_b = w.grant("alice-4", "bot-4b", approval=policy)

    def approved_by(who: str, agent: str) -> tuple[str, str]:
        action_id = uuid7()
        return action_id, w.send(who, approval(action_id, agent))

    action_id, ap = approved_by("mallory-4", "bot-4")
    body = intent("bot-4", [gid], action_id=action_id, approval_id=ap)
    w.expect("bot-4", body, ("OUT_OF_SCOPE", "approver-not-valid"), attack=True)
    action_id, ap = approved_by("carol-4", "bot-4")
    stolen = intent("bot-4b", [gid_b], action_id=action_id, approval_id=ap)
    w.expect("bot-4b", stolen, ("OUT_OF_SCOPE", "approval-mismatch"), attack=True)
    action_id, ap = approved_by("carol-4", "bot-4")  # a role the grant names
    honest = intent("bot-4", [gid], action_id=action_id, approval_id=ap)
    w.expect("bot-4", honest, ("IN_SCOPE", ""), attack=False)


def case_backdating(w: World) -> None:
    """5. An expired grant revived by a client time inside the 5-minute skew."""
    w.identity("alice-5", pb.HUMAN)
    w.identity("bot-5", pb.AGENT)
    now = build.now_ms()
    expired = w.grant("alice-5", "bot-5", not_after_ms=now - MINUTE)
    body = intent("bot-5", [expired])
    w.expect(
        "bot-5", body, ("OUT_OF_SCOPE", "grant-expired"), attack=True, time_ms=now - 2 * MINUTE
    )
    starting = w.grant("alice-5", "bot-5", not_before_ms=now - MINUTE)
    body = intent("bot-5", [starting])
    w.expect(
        "bot-5", body, ("OUT_OF_SCOPE", "window-straddle"), attack=True, time_ms=now - 2 * MINUTE
    )
    w.expect("bot-5", intent("bot-5", [starting]), ("IN_SCOPE", ""), attack=False)


def case_claims_beside_facts(w: World) -> None:
    """6. A forged principal chain and self-granted scopes."""
    w.identity("alice-6", pb.HUMAN)
    w.identity("bot-6", pb.AGENT)
    gid = w.grant("alice-6", "bot-6")
    forged = intent("bot-6", [gid], principal_chain=("mallory", "ceo", "bot-6"))
    w.expect("bot-6", forged, grpc.StatusCode.FAILED_PRECONDITION, attack=True)
    scopes = intent("bot-6", [gid], scopes_granted=("admin:*",))
    w.expect("bot-6", scopes, grpc.StatusCode.INVALID_ARGUMENT, attack=True)
    honest = intent("bot-6", [gid], principal_chain=("alice-6", "bot-6"))
    w.expect("bot-6", honest, ("IN_SCOPE", ""), attack=False)


def case_grant_revocation(w: World) -> None:
    """7. One grant withdrawn: by its grantor (or an admin) only, from its index on."""
    w.identity("alice-7", pb.HUMAN)
    w.identity("mallory-7", pb.HUMAN)
    w.identity("bot-7", pb.AGENT)
    gid = w.grant("alice-7", "bot-7")
    w.expect("bot-7", intent("bot-7", [gid]), ("IN_SCOPE", ""), attack=False)
    revoke = pb.GrantRevocation(grant_id=gid, reason="key stolen")
    w.expect("mallory-7", revoke, grpc.StatusCode.PERMISSION_DENIED, attack=True)
    w.expect("bot-7", revoke, grpc.StatusCode.PERMISSION_DENIED, attack=True)
    w.expect("alice-7", revoke, ("VERDICT_UNSPECIFIED", ""), attack=False)
    w.expect("bot-7", intent("bot-7", [gid]), ("OUT_OF_SCOPE", "grant-revoked"), attack=True)
    child = pb.Grant(
        grantee="bot-7", tools=["github.*"], resources=["repo:acme/*"], access=[pb.CREATE]
    )
    child.parent_grant_id = gid
    w.expect("bot-7", child, grpc.StatusCode.FAILED_PRECONDITION, attack=True)
    admin_revoked = w.grant("alice-7", "bot-7")
    w.expect(
        "admin",
        pb.GrantRevocation(grant_id=admin_revoked),
        ("VERDICT_UNSPECIFIED", ""),
        attack=False,
    )


CASES: list[Callable[[World], None]] = [
    case_reject_is_ignored,
    case_grant_requires_approval,
    case_fake_redaction,
    case_scope_patterns,
    case_approvals_float_free,
    case_backdating,
    case_claims_beside_facts,
    case_grant_revocation,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_attack_and_honest_twin(world: World, case: Callable[[World], None]) -> None:
    case(world)


def touched_windows(began: float) -> int:
    """How many refusal windows attempts made since began (monotonic) can have fallen in:
    windows close on the log's own timer, so a loaded machine may spread a loop over several,
    and each window is bounded on its own."""
    return int((time.monotonic() - began) / WINDOW_S) + 2


def refusal_records(world: World) -> list[pb.Refusal]:
    """Every refusal the log has recorded, once the last window has closed."""
    time.sleep(2 * WINDOW_S)
    hits = world.server.stub.Search(
        pb.SearchRequest(refused=True), metadata=world.server.auditor_metadata, timeout=RPC_TIMEOUT
    ).hits
    out = []
    for hit in hits:
        (entry,) = world.server.all_entries(hit.index, hit.index + 1)
        st = build.statement_of(entry.data)
        assert (hit.kind, st.header.issuer, hit.verdict_reason) == (
            "refusal",
            "log",
            st.refusal.reason,
        )
        out.append(st.refusal)
    return out


def test_every_refused_attempt_is_on_the_record(world: World) -> None:
    """Runs after the cases: each refused, well-formed attack is in a record signed by the log,
    with the key and identity it claimed and a reason code, and none of its other bytes."""
    assert world.refused
    records = refusal_records(world)
    by_hash = {r.leaf_hash: r for r in records if r.count == 1}
    for leaf_hash, (key_id, who) in world.refused.items():
        r = by_hash.get(leaf_hash)
        assert r is not None, f"no record of the refusal of {who}'s statement"
        assert (r.key_id, r.identity_id) == (key_id, who)
        assert r.reason and r.source.startswith("ipv") and r.first_ms <= r.last_ms
    # The forged chain's invented principals appear nowhere in the log's record.
    for r in records:
        assert b"ceo" not in r.SerializeToString()


def test_a_flood_of_refused_attempts_costs_the_log_a_bounded_number_of_entries(
    world: World,
) -> None:
    """A stolen, revoked key used again and again: every use counted, few entries written."""
    w = world
    w.identity("thief-9", pb.AGENT)
    stolen = w.key("thief-9")
    w.send("admin", build.revoke("thief-9"))
    before = len(refusal_records(w))
    size = w.server.checkpoint().size
    uses = 40
    began = time.monotonic()
    for n in range(uses):
        signer = build.SessionSigner(stolen, session_id=uuid7())  # a fresh session each time
        leaf = signer.sign(intent("thief-9", [], params={"n": n}))
        with pytest.raises(grpc.RpcError) as caught:
            w.server.stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    windows = touched_windows(began)
    records = refusal_records(w)[before:]
    assert sum(r.count for r in records) == uses
    assert {(r.key_id, r.identity_id, r.reason) for r in records} == {
        (stolen.key_id, "thief-9", "key-retired")
    }
    # One entry at once and one aggregate per window the attempts fell in.
    assert len(records) <= 2 * windows
    assert w.server.checkpoint().size - size == len(records)
    # Keys nobody registered, a new one each time: the first few on the record one by one,
    # the rest in one aggregate per source, every attempt counted.
    before += len(records)
    began = time.monotonic()
    for n in range(30):
        stranger = IdentityKey.generate(f"stranger-{n}")
        leaf = build.SessionSigner(stranger).sign(intent(f"stranger-{n}", []))
        with pytest.raises(grpc.RpcError) as caught:
            w.server.stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    windows = touched_windows(began)
    records = refusal_records(w)[before:]
    assert sum(r.count for r in records) == 30
    assert {r.reason for r in records} == {"key-unknown"}
    assert len(records) <= 2 * MAX_DISTINCT * windows
    if windows <= 3:  # at most 8 a window one by one: the rest went into aggregates
        assert len(records) < 30 and any(r.count > 1 for r in records)
    assert all(r.identity_id == "" for r in records if r.count > 1)  # aggregates claim no one


def test_the_audit_reports_every_recorded_attack_as_a_violation(world: World) -> None:
    """Runs last: the auditor, replaying with the same rules, sees what the server saw."""
    assert world.violations and world.honest
    with Client(
        world.server.address,
        TrustPolicy(world.server.verifier_key),
        token=world.server.auditor_token,
        timeout=60,
    ) as client:
        report = audit(client)
    by_index = {f.index: f for f in report.findings if f.kind != "missing-outcome"}
    assert set(by_index) == world.violations, report.text()
    assert all(by_index[i].severity == "violation" for i in world.violations)
    assert not [f for f in report.findings if f.severity == "error"], report.text()


def test_an_audit_of_a_log_written_under_the_old_rules_reports_every_case() -> None:
    """A log whose server took each attack as the old rules did (IN_SCOPE, no refusal): the
    auditor, replaying with today's rules, fails every one of them."""
    t = build.now_ms()
    leaves: list[bytes] = []
    recorded: list[RecordedEntry] = []
    keys = {n: IdentityKey.generate(n) for n in ("admin", "alice", "mallory", "bot", "bot-b")}

    def put(who: str, body: build.Body, verdict: int = 0, time_ms: int = t) -> str:
        """Each statement in a session of its own: a refused one breaks no chain."""
        leaf = build.SessionSigner(keys[who]).sign(body, time_ms=time_ms)
        recorded.append(RecordedEntry(len(leaves), leaf, verdict, "", t if verdict else 0))
        leaves.append(leaf)
        return build.statement_of(leaf).header.statement_id

    put("admin", build.register("admin", pb.ADMIN, keys["admin"].public_key))
    for name, kind in (("alice", pb.HUMAN), ("mallory", pb.HUMAN), ("bot", pb.AGENT)):
        put("admin", build.register(name, kind, keys[name].public_key))
    put("admin", build.register("bot-b", pb.AGENT, keys["bot-b"].public_key))
    grant = pb.Grant(grantee="bot", tools=["github.*"], resources=["repo:acme/*"])
    grant.access.append(pb.CREATE)
    grant.not_after_ms = t + HOUR
    gid = put("alice", grant)
    expired = pb.Grant()
    expired.CopyFrom(grant)
    expired.not_after_ms = t - MINUTE
    expired_id = put("alice", expired, time_ms=t - 2 * MINUTE)
    attacks: dict[str, int] = {}

    def attack(name: str, who: str, body: build.Body, time_ms: int = t) -> None:
        attacks[name] = len(leaves)
        put(who, body, pb.IN_SCOPE, time_ms)

    # 1. A REJECT the old rules ignored.
    rejected = uuid7()
    put("alice", approval(rejected, "bot", decision=pb.Approval.REJECT))
    attack("reject-ignored", "bot", intent("bot", [gid], action_id=rejected))
    # 2. A fake redaction showing parameters nobody approved.
    shown = intent("bot", [gid])
    shown.operation.parameters_json = canonical_json({"title": "Drop prod"})
    shown.operation.redactions.add(path="/password", rule="password", fingerprint="00000000")
    attack("fake-redaction", "bot", shown)
    # 3. A resource that climbs out of its pattern.
    attack("dot-dot", "bot", intent("bot", [gid], resource="repo:acme/../evilcorp/secrets"))
    # 4. mallory's approval under alice's grant; and one for bot used by bot-b.
    floating = uuid7()
    ap = put("mallory", approval(floating, "bot"))
    body = intent("bot", [gid], action_id=floating, decision=pb.ALLOW_IF_APPROVED, approval_id=ap)
    attack("any-human-approves", "bot", body)
    # 5. A backdated claim inside an expired window.
    attack("backdated", "bot", intent("bot", [expired_id]), time_ms=t - 2 * MINUTE)
    # 6. A forged principal chain.
    chain = ("mallory", "ceo", "bot")
    attack("forged-chain", "bot", intent("bot", [gid], principal_chain=chain))

    report = audit_entries(lambda s, e: recorded[s:e], fake_checkpoint(leaves))
    assert not report.ok
    failing = {f.index: f for f in report.findings if f.severity in ("error", "violation")}
    missed = {name for name, index in attacks.items() if index not in failing}
    assert not missed, report.text()
