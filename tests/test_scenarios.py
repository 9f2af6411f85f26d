"""The scenarios an audit team meets, end to end against a real `affidavit serve` process.

One server (one log) serves the whole module; each scenario has its own identities. Every
scenario ends by asking the log, with the auditor token, "who authorised this?" — a Search by
grantor or approver that must find the action. Every refusal must leave the log as it was
(same checkpoint). The last test replays the whole log as an auditor would and checks that it
reaches the verdicts the server gave.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from affidavit.client.client import search_request
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, keys, note, verify_inclusion
from affidavit.proto import affidavit_pb2 as pb
from affidavit.proto import affidavit_pb2_grpc as pb_grpc
from affidavit.server.access import new_token
from affidavit.server.search import MAX_ENTRY_PAGE_BYTES
from affidavit.statements import build, ingest, secrets, signing
from affidavit.statements.canonical import canonical_json
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import parameters_digest
from affidavit.statements.signing import IdentityKey
from affidavit.statements.state import DictKV, LogState
from google.protobuf.message import Message

from tests import backends

HOUR = 3_600_000
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED

GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
"""A fake GitHub token of the real shape (split so no scanner flags this file)."""

AFFIDAVIT = Path(sys.executable).parent / "affidavit"
"""The installed console script."""
ORIGIN = "example.com/scenarios"
START_TIMEOUT = 60.0
RPC_TIMEOUT = 30.0
"""Generous: a loaded machine must not make these tests flake."""
_SERVING = re.compile(r"affidavit serving \S+ at (?P<host>\S+):(?P<port>\d+)")


@dataclass
class Log:
    """The server under test, a stub without credentials, the admin's key, an auditor token."""

    data_dir: Path
    stub: pb_grpc.LogStub
    token: str
    admin: build.SessionSigner

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.token}"),)

    def checkpoint(self) -> pb.Checkpoint:
        return self.stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT)

    def append(
        self, signer: build.SessionSigner, body: build.Body, *, statement_id: str | None = None
    ) -> pb.AppendResponse:
        leaf = signer.sign(body, statement_id=statement_id)
        size = self.checkpoint().size
        r = self.stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
        # Next in the log, or after the log's own records of refused attempts.
        assert r.index >= size and not r.duplicate
        assert r.leaf_hash == hashing.leaf_hash(leaf)
        signer.advance(leaf)
        return r

    def refuse(
        self,
        code: grpc.StatusCode,
        signer: build.SessionSigner | None = None,
        body: build.Body | None = None,
        *,
        leaf: bytes = b"",
    ) -> str:
        """Append what must be refused with code; the log must take nothing but its own record
        of the attempt (statements.refusals). The message."""
        if not leaf:
            assert signer is not None and body is not None
            leaf = signer.sign(body)
        before = self.checkpoint()
        e = status_of(self.stub.Append, pb.AppendRequest(entry=leaf))
        assert e.code() == code, e.details()
        after = self.checkpoint()
        for entry in self.entries(before.size, after.size):
            assert build.statement_of(entry.data).WhichOneof("body") == "refusal"
        return e.details() or ""

    def register(
        self, identity_id: str, kind: pb.IdentityKind.ValueType, owner: str = ""
    ) -> build.SessionSigner:
        key = IdentityKey.generate(identity_id)
        self.append(self.admin, build.register(identity_id, kind, key.public_key, owner=owner))
        return build.SessionSigner(key)

    def grant(self, grantor: build.SessionSigner, grantee: str, **fields: Any) -> str:
        gid = uuid7()
        now = build.now_ms()
        fields.setdefault("not_before_ms", now - HOUR)
        fields.setdefault("not_after_ms", now + HOUR)
        self.append(grantor, pb.Grant(grantee=grantee, **fields), statement_id=gid)
        return gid

    def search(self, **criteria: Any) -> list[pb.SearchHit]:
        """Every hit, following the pages."""
        hits: list[pb.SearchHit] = []
        start = 0
        while True:
            page = self.stub.Search(
                search_request(start_index=start, page_size=50, **criteria),
                metadata=self.auth,
                timeout=RPC_TIMEOUT,
            )
            hits += page.hits
            if not page.next_index:
                return hits
            start = page.next_index

    def indexes(self, **criteria: Any) -> list[int]:
        """The statements found (the log's records of refused attempts apart)."""
        return [h.index for h in self.search(**criteria) if h.kind != "refusal"]

    def entries(self, start: int, end: int) -> list[pb.Entry]:
        out: list[pb.Entry] = []
        while start < end:
            page = list(
                self.stub.GetEntries(
                    pb.GetEntriesRequest(start=start, end=end),
                    metadata=self.auth,
                    timeout=RPC_TIMEOUT,
                )
            )
            assert page
            out += page
            start += len(page)
        return out

    def statement(self, index: int) -> pb.Statement:
        (entry,) = self.entries(index, index + 1)
        return build.statement_of(entry.data)


def _env() -> dict[str, str]:
    """No AFFIDAVIT_* settings from outside; this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


DEPLOYMENTS = ["leveldb", "postgres+s3, two frontends"]


class _RoundRobin:
    """A Log stub whose every call goes to the next frontend in turn: on the scale-out log,
    each step of a scenario may land on a different frontend."""

    def __init__(self, stubs: list[pb_grpc.LogStub]) -> None:
        self._stubs = stubs
        self._next = 0

    def __getattr__(self, name: str) -> Any:
        stub = self._stubs[self._next % len(self._stubs)]
        self._next += 1
        return getattr(stub, name)


def _serve(
    data_dir: Path, args: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    """Start `affidavit serve`; the process and its address once it serves."""
    proc = subprocess.Popen(
        [str(AFFIDAVIT), "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def read() -> None:  # drains stderr for the server's whole life
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        assert line is not None, f"affidavit serve exited:\n{''.join(stderr)}"
        if m := _SERVING.search(line):
            return proc, f"{m['host']}:{m['port']}"


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    """One statements log for the module: `affidavit init`, then `affidavit serve` with an
    auditor token's hash, as an operator would run them. On PostgreSQL and object storage,
    two frontends serve it and the scenario's calls alternate between them."""
    data_dir = tmp_path_factory.mktemp("scenarios") / "log"
    storage: list[str] = []
    env = _env()
    if request.param != "leveldb":
        where = backends.new_scaleout(
            request.getfixturevalue("postgres"), request.getfixturevalue("objects")
        )
        storage, env = where.args(), {**env, **where.env()}
    init = subprocess.run(
        [str(AFFIDAVIT), "init", "--data-dir", str(data_dir), "--origin", ORIGIN, *storage],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    token, token_hash = new_token()
    procs: list[subprocess.Popen[str]] = []
    channels: list[grpc.Channel] = []
    try:
        for _ in range(2 if storage else 1):
            proc, address = _serve(data_dir, ["--auditor-token-hash", token_hash, *storage], env)
            procs.append(proc)
            channel = grpc.insecure_channel(address)
            channels.append(channel)
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        stubs = [pb_grpc.LogStub(c) for c in channels]
        stub = stubs[0] if len(stubs) == 1 else cast(pb_grpc.LogStub, _RoundRobin(stubs))
        admin = IdentityKey.load(data_dir / "admin.key")
        signer = build.SessionSigner(admin, session_id="scenario-admin")
        yield Log(data_dir, stub, token, signer)
    finally:
        for channel in channels:
            channel.close()
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def status_of(call: Any, request: Any, **kwargs: Any) -> grpc.RpcError:
    """Call an RPC expecting it to fail; the RpcError."""
    try:
        result = call(request, timeout=RPC_TIMEOUT, **kwargs)
        if not isinstance(result, Message):
            result = list(result)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"expected an error, got {result!r}")


def operation(
    tool: str,
    resource: str,
    access: pb.AccessKind.ValueType,
    params: object,
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


def intent(
    agent: build.SessionSigner,
    grant_ids: Sequence[str],
    op: pb.Operation,
    *,
    decision: pb.PolicyDecision.ValueType = pb.ALLOW,
    approval_id: str = "",
    action_id: str = "",
    credential: pb.CredentialRef | None = None,
    principal_chain: Sequence[str] = (),
    trace_id: str = "",
) -> pb.AgentAction:
    return pb.AgentAction(
        phase=pb.AgentAction.INTENT,
        action_id=action_id or uuid7(),
        actor=pb.Actor(agent_id=agent.key.identity_id, agent_version="1.4.2", model="m-1"),
        grant_ids=grant_ids,
        principal_chain=principal_chain,
        approval_id=approval_id,
        authorization=pb.Authorization(
            policy_id="agents", decision=decision, enforcement_point="mcp-gateway"
        ),
        credential=credential,
        operation=op,
        correlation=pb.Correlation(trace_id=trace_id),
    )


def outcome(
    of: pb.AgentAction,
    receipt: pb.AppendResponse,
    *,
    status: pb.OutcomeStatus.ValueType = pb.OK,
    effect_ref: str = "",
) -> pb.AgentAction:
    body = pb.AgentAction()
    body.CopyFrom(of)
    body.phase = pb.AgentAction.OUTCOME
    body.intent_leaf_hash = receipt.leaf_hash
    body.outcome.CopyFrom(pb.Outcome(status=status, effect_ref=effect_ref))
    return body


def verdict(r: pb.AppendResponse | pb.SearchHit) -> tuple[str, str]:
    return pb.Verdict.Name(r.verdict), r.verdict_reason


def test_code_agent_opens_a_pull_request_after_approval(log: Log) -> None:
    lead = log.register("dana@acme.example", pb.HUMAN)
    reviewer = log.register("lee@acme.example", pb.HUMAN)
    agent = log.register("code-agent@acme.example", pb.AGENT, owner="dana@acme.example")
    gid = log.grant(
        lead,
        "code-agent@acme.example",
        tools=["github.*"],
        operations=["execute_tool"],
        resources=["repo:acme/*"],
        access=[pb.READ, pb.CREATE],
        ticket="ACC-17",
        justification="repository access for the bug-fix agent",
        approval=pb.ApprovalPolicy(approvers=["lee@acme.example"]),
    )
    params = {"base": "main", "head": "fix-1", "repo": "acme/web", "title": "Fix login bug"}
    action_id = uuid7()
    approval = log.append(
        reviewer,
        pb.Approval(
            action_id=action_id,
            agent_id="code-agent@acme.example",
            parameters_digest=parameters_digest(params),
            decision=pb.Approval.APPROVE,
            ticket="ACC-17",
        ),
    )
    approval_id = log.statement(approval.index).header.statement_id
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = intent(
        agent,
        [gid],
        operation("github.create_pull_request", "repo:acme/web", pb.CREATE, params),
        decision=pb.ALLOW_IF_APPROVED,
        approval_id=approval_id,
        action_id=action_id,
        credential=pb.CredentialRef(kind="oauth-token", issuer="github.com", token_jti="jti-81"),
        principal_chain=["dana@acme.example", "code-agent@acme.example"],
        trace_id=trace,
    )
    r_intent = log.append(agent, body)
    assert verdict(r_intent) == ("IN_SCOPE", "")
    commit = "commit:9f2c1e7a4b3d5f60718293a4b5c6d7e8f9012345"
    r_outcome = log.append(agent, outcome(body, r_intent, effect_ref=commit))
    assert verdict(r_outcome) == ("IN_SCOPE", "")
    # Appending the same bytes again is idempotent: the first index, nothing new.
    size = log.checkpoint().size
    again = log.stub.Append(
        pb.AppendRequest(entry=log.entries(r_outcome.index, r_outcome.index + 1)[0].data),
        timeout=RPC_TIMEOUT,
    )
    assert (again.index, again.duplicate) == (r_outcome.index, True)
    assert log.checkpoint().size == size
    # Who authorised this? The approver and the grantor, each found by the action.
    approved = log.search(approver="lee@acme.example")
    assert [h.index for h in approved] == [approval.index, r_intent.index, r_outcome.index]
    assert approved[0].kind == "approval" and approved[0].issuer == "lee@acme.example"
    for hit in approved[1:]:
        assert hit.kind == "action" and verdict(hit) == ("IN_SCOPE", "")
    granted = log.indexes(grantor="dana@acme.example")
    assert r_intent.index in granted and r_outcome.index in granted
    assert log.indexes(trace_id=trace) == [r_intent.index, r_outcome.index]
    assert log.indexes(tool="github.create_pull_request", actor="code-agent@acme.example") == [
        r_intent.index,
        r_outcome.index,
    ]
    assert log.statement(r_outcome.index).action.outcome.effect_ref == commit


def test_incident_agent_rotates_a_credential_under_a_change_ticket(log: Log) -> None:
    oncall = log.register("oncall@acme.example", pb.HUMAN)
    agent = log.register("incident-agent@acme.example", pb.AGENT, owner="oncall@acme.example")
    gid = log.grant(
        oncall,
        "incident-agent@acme.example",
        tools=["iam.rotate_*"],
        resources=["serviceaccount:payments/*"],
        access=[pb.UPDATE],
        max_uses=1,
        ticket="CHG-2001",
        justification="leaked key in incident INC-88",
    )
    credential = pb.CredentialRef(
        kind="service-account-key", issuer="iam.acme.example", key_id="sa-payments-key-0007"
    )
    body = intent(
        agent,
        [gid],
        operation(
            "iam.rotate_key",
            "serviceaccount:payments/api",
            pb.UPDATE,
            {"account": "payments-api", "ticket": "CHG-2001"},
        ),
        credential=credential,
    )
    r_intent = log.append(agent, body)
    assert verdict(r_intent) == ("IN_SCOPE", "")
    r_outcome = log.append(agent, outcome(body, r_intent, effect_ref="key-version:8"))
    assert verdict(r_outcome) == ("IN_SCOPE", "")
    # The change ticket allowed one rotation; a second is recorded, out of scope.
    second = intent(agent, [gid], body.operation, credential=credential)
    assert verdict(log.append(agent, second)) == ("OUT_OF_SCOPE", "grant-exhausted")
    # Which actions used this service account key, and who authorised them?
    hits = log.search(key_id="sa-payments-key-0007")
    assert [h.index for h in hits][:2] == [r_intent.index, r_outcome.index]
    assert log.indexes(grantor="oncall@acme.example", verdict=pb.IN_SCOPE)[-2:] == [
        r_intent.index,
        r_outcome.index,
    ]
    grant = log.statement(log.indexes(grantor="oncall@acme.example")[0])
    assert grant.header.statement_id == gid and grant.grant.ticket == "CHG-2001"


def test_reconciliation_agent_and_its_sub_agent_under_attenuated_grants(log: Log) -> None:
    lead = log.register("finance-lead@acme.example", pb.HUMAN)
    agent = log.register("recon-agent@acme.example", pb.AGENT)
    sub = log.register("recon-sub@acme.example", pb.AGENT)
    now = build.now_ms()
    permission_set = log.grant(
        lead,
        "recon-agent@acme.example",
        tools=["ledger.*", "bank.read_*"],
        resources=["ledger:acme/**", "bank:acme/*"],
        access=[pb.READ, pb.UPDATE],
        max_uses=20,
        ticket="FIN-301",
    )
    r_own = log.append(
        agent,
        intent(
            agent,
            [permission_set],
            operation("bank.read_statement", "bank:acme/checking", pb.READ, {"month": "2026-10"}),
        ),
    )
    assert verdict(r_own) == ("IN_SCOPE", "")
    # A child grant wider than its parent is refused, and the log does not change.
    wide = pb.Grant(
        grantee="recon-sub@acme.example",
        tools=["**"],
        resources=["ledger:acme/*"],
        access=[pb.READ],
        max_uses=5,
        parent_grant_id=permission_set,
        not_before_ms=now - HOUR,
        not_after_ms=now + HOUR,
    )
    assert "widens its parent" in log.refuse(PRECONDITION, agent, wide)
    attenuated = log.grant(
        agent,
        "recon-sub@acme.example",
        tools=["ledger.read_*"],
        resources=["ledger:acme/2026/*"],
        access=[pb.READ],
        max_uses=5,
        parent_grant_id=permission_set,
        not_before_ms=now - 60_000,
        not_after_ms=now + HOUR,
    )
    chain = ["finance-lead@acme.example", "recon-agent@acme.example", "recon-sub@acme.example"]
    r_sub = log.append(
        sub,
        intent(
            sub,
            [attenuated],
            operation("ledger.read_entries", "ledger:acme/2026/q3", pb.READ, {"limit": 500}),
            principal_chain=chain,
        ),
    )
    assert verdict(r_sub) == ("IN_SCOPE", "")
    r_write = log.append(
        sub,
        intent(
            sub,
            [attenuated],
            operation("ledger.read_entries", "ledger:acme/2026/q3", pb.UPDATE, {"fix": 1}),
        ),
    )
    assert verdict(r_write) == ("OUT_OF_SCOPE", "access-not-granted")
    # Who authorised the sub-agent's read? Both grantors up the chain, the human first of all.
    assert r_sub.index in log.indexes(grantor="finance-lead@acme.example")
    assert r_sub.index in log.indexes(grantor="recon-agent@acme.example")
    assert log.indexes(actor="recon-sub@acme.example", grantor="finance-lead@acme.example") == [
        r_sub.index,
        r_write.index,
    ]


def test_out_of_scope_action_is_recorded_and_flagged(log: Log) -> None:
    ops = log.register("ops@acme.example", pb.HUMAN)
    agent = log.register("deploy-agent@acme.example", pb.AGENT)
    gid = log.grant(
        ops,
        "deploy-agent@acme.example",
        tools=["k8s.get_*"],
        resources=["k8s:staging/*"],
        access=[pb.READ],
    )
    body = intent(
        agent,
        [gid],
        operation("k8s.delete_namespace", "k8s:prod/payments", pb.DELETE, {"ns": "payments"}),
    )
    size = log.checkpoint().size
    r = log.append(agent, body)  # recorded: it is evidence
    assert r.index == size and log.checkpoint().size == size + 1
    assert verdict(r) == ("OUT_OF_SCOPE", "tool-not-granted")
    r_done = log.append(agent, outcome(body, r, effect_ref="deleted:payments"))
    assert verdict(r_done) == ("OUT_OF_SCOPE", "tool-not-granted")
    r_none = log.append(
        agent, intent(agent, [], operation("k8s.get_pods", "k8s:prod/payments", pb.READ, {}))
    )
    assert verdict(r_none) == ("NO_GRANT", "no-grant")
    flagged = log.search(verdict=pb.OUT_OF_SCOPE, actor="deploy-agent@acme.example")
    assert [(h.index, verdict(h)) for h in flagged] == [
        (r.index, ("OUT_OF_SCOPE", "tool-not-granted")),
        (r_done.index, ("OUT_OF_SCOPE", "tool-not-granted")),
    ]
    assert log.indexes(verdict=pb.NO_GRANT, actor="deploy-agent@acme.example") == [r_none.index]
    # Who authorised it? Nobody for this: the grant it claimed is ops's, and says otherwise.
    assert r.index in log.indexes(grantor="ops@acme.example", verdict=pb.OUT_OF_SCOPE)
    assert log.statement(r.index).action.operation.resource == "k8s:prod/payments"


def test_revoked_key_is_refused(log: Log) -> None:
    owner = log.register("sec@acme.example", pb.HUMAN)
    agent = log.register("legacy-agent@acme.example", pb.AGENT)
    gid = log.grant(
        owner, "legacy-agent@acme.example", tools=["s3.*"], resources=["s3:logs/*"], access=[1]
    )
    op = operation("s3.get_object", "s3:logs/app.log", pb.READ, {"key": "app.log"})
    r = log.append(agent, intent(agent, [gid], op))
    assert verdict(r) == ("IN_SCOPE", "")
    log.append(log.admin, build.revoke("legacy-agent@acme.example"))
    refused = intent(agent, [gid], op)
    message = log.refuse(DENIED, agent, refused)
    assert "legacy-agent@acme.example" in message
    # The attempt is on the log's record: by the key and identity it claimed, and why.
    deadline = time.monotonic() + 30
    while not (hits := log.search(refused=True, actor="legacy-agent@acme.example")):
        assert time.monotonic() < deadline, "the refused attempt never reached the record"
        time.sleep(0.1)
    (record,) = log.entries(hits[0].index, hits[0].index + 1)
    r_st = build.statement_of(record.data)
    assert (r_st.header.issuer, r_st.refusal.key_id, r_st.refusal.reason) == (
        "log",
        agent.key.key_id,
        "key-retired",
    )
    # The log holds the agent's actions up to its revocation, and who authorised them.
    assert log.indexes(actor="legacy-agent@acme.example") == [r.index]
    assert log.indexes(key_id=agent.key.key_id) == [r.index]
    assert log.indexes(grantor="sec@acme.example", actor="legacy-agent@acme.example") == [r.index]


def test_key_rotation_refuses_the_old_key_and_history_still_verifies(log: Log) -> None:
    owner = log.register("ci-owner@acme.example", pb.HUMAN)
    agent = log.register("ci-agent@acme.example", pb.AGENT)
    gid = log.grant(
        owner,
        "ci-agent@acme.example",
        tools=["ci.*"],
        resources=["pipeline:acme/*"],
        access=[pb.EXECUTE],
    )
    op = operation("ci.run_pipeline", "pipeline:acme/web", pb.EXECUTE, {"ref": "main"})
    old_key = agent.key
    before = [log.append(agent, intent(agent, [gid], op)) for _ in range(3)]
    new_key = IdentityKey.generate("ci-agent@acme.example")
    log.append(log.admin, build.rotate("ci-agent@acme.example", new_key.public_key))
    assert "retired" in log.refuse(DENIED, agent, intent(agent, [gid], op))
    agent.key = new_key  # the same session goes on under the new key
    after = log.append(agent, intent(agent, [gid], op))
    assert verdict(after) == ("IN_SCOPE", "")
    # History before the rotation still verifies: signatures under the old key, and inclusion
    # in the latest checkpoint, opened with the log's key.
    cp_note = log.checkpoint().note
    verifier_key = (log.data_dir / "log.pub").read_text().strip()
    cp = checkpoints.parse(note.open(cp_note, [verifier_key]))
    assert cp.size > after.index
    for r in before:
        (entry,) = log.entries(r.index, r.index + 1)
        signed = pb.SignedStatement.FromString(entry.data)
        assert signed.key_id == old_key.key_id
        assert signing.verify(signed.statement, signed.signature, old_key.public_key)
        proof = log.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(index=r.index, tree_size=cp.size), timeout=RPC_TIMEOUT
        )
        verify_inclusion(
            hashing.leaf_hash(entry.data), r.index, cp.size, proof.hashes, cp.root_hash
        )
    assert log.indexes(key_id=old_key.key_id) == [r.index for r in before]
    assert log.indexes(key_id=new_key.key_id) == [after.index]
    assert log.indexes(grantor="ci-owner@acme.example", actor="ci-agent@acme.example") == [
        *(r.index for r in before),
        after.index,
    ]


def test_secret_in_parameters_is_refused_without_echo(log: Log) -> None:
    owner = log.register("repo-owner@acme.example", pb.HUMAN)
    agent = log.register("careless-agent@acme.example", pb.AGENT)
    gid = log.grant(
        owner,
        "careless-agent@acme.example",
        tools=["github.*"],
        resources=["repo:acme/*"],
        access=[pb.READ],
    )
    params = {"repo": "acme/api", "token": GITHUB_TOKEN}
    body = intent(agent, [gid], operation("github.get_repo", "repo:acme/api", pb.READ, params))
    message = log.refuse(INVALID, agent, body)
    assert "action.operation.parameters_json" in message and "rule github-token" in message
    assert not any(GITHUB_TOKEN[i : i + 8] in message for i in range(len(GITHUB_TOKEN) - 7))
    # The same in a batch: that entry fails alone, with the same message.
    size = log.checkpoint().size
    batch = log.stub.AppendBatch(
        pb.AppendBatchRequest(entries=[agent.sign(body)]), timeout=RPC_TIMEOUT
    )
    (result,) = batch.results
    assert result.WhichOneof("result") == "error"
    assert result.error.code == INVALID.value[0] and "rule github-token" in result.error.message
    assert GITHUB_TOKEN not in result.error.message
    assert log.checkpoint().size == size
    # Redacted before signing (marker and fingerprint), the action goes in.
    text, found = secrets.redact(GITHUB_TOKEN, b"k" * 32, "token")
    body.operation.parameters_json = canonical_json({**params, "token": text})
    body.operation.redactions.add(
        path="/token", rule=found[0].rule, fingerprint=found[0].fingerprint
    )
    r = log.append(agent, body)
    assert verdict(r) == ("IN_SCOPE", "")
    assert log.indexes(grantor="repo-owner@acme.example", actor="careless-agent@acme.example") == [
        r.index
    ]
    (entry,) = log.entries(r.index, r.index + 1)
    assert GITHUB_TOKEN.encode() not in entry.data


def test_gap_or_fork_in_a_session_chain_is_refused(log: Log) -> None:
    owner = log.register("batch-owner@acme.example", pb.HUMAN)
    agent = log.register("batch-agent@acme.example", pb.AGENT)
    gid = log.grant(
        owner,
        "batch-agent@acme.example",
        tools=["db.query"],
        resources=["db:warehouse/*"],
        access=[pb.READ],
    )
    op = operation("db.query", "db:warehouse/orders", pb.READ, {"sql": "select 1"})
    first = [log.append(agent, intent(agent, [gid], op)) for _ in range(2)]
    seq, prev = agent.sequence, agent.previous_hash
    assert seq == 2
    agent.sequence = 3  # a gap
    assert "expects sequence 2" in log.refuse(PRECONDITION, agent, intent(agent, [gid], op))
    agent.sequence, agent.previous_hash = 2, first[0].leaf_hash  # a fork after the first
    assert "expects sequence 2" in log.refuse(PRECONDITION, agent, intent(agent, [gid], op))
    agent.sequence = 1  # a replay of sequence 1 with other content
    assert "expects sequence 2" in log.refuse(PRECONDITION, agent, intent(agent, [gid], op))
    agent.sequence, agent.previous_hash = seq, prev
    last = log.append(agent, intent(agent, [gid], op))
    session = log.search(session_id=agent.session_id)
    assert [h.index for h in session] == [first[0].index, first[1].index, last.index]
    # The chain an auditor can check: each previous_hash is the leaf hash before it.
    statements = [log.statement(h.index) for h in session]
    assert [s.header.sequence for s in statements] == [0, 1, 2]
    assert [s.header.previous_hash for s in statements] == [
        b"",
        *(h.leaf_hash for h in session[:2]),
    ]
    assert log.indexes(grantor="batch-owner@acme.example", session_id=agent.session_id) == [
        h.index for h in session
    ]


def test_reading_entries_and_searching_need_the_auditor_token(log: Log) -> None:
    stub = log.stub
    search = pb.SearchRequest(actor=["admin"])
    for call, request in (
        (stub.Search, search),
        (stub.GetEntries, pb.GetEntriesRequest(start=0, end=1)),
    ):
        assert status_of(call, request).code() == UNAUTHENTICATED
        wrong = (("authorization", "Bearer afv_not-the-token"),)
        e = status_of(call, request, metadata=wrong)
        assert e.code() == DENIED
        assert "afv_not-the-token" not in (e.details() or "")
        assert status_of(call, request, metadata=(("authorization", log.token),)).code() in (
            UNAUTHENTICATED,
            DENIED,
        )
    # Checkpoints and proofs stay public.
    cp = stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT)
    proof = stub.GetInclusionProof(pb.GetInclusionProofRequest(index=0), timeout=RPC_TIMEOUT)
    assert proof.tree_size == cp.size
    assert log.search(actor="admin")[0].index == 0


def test_search_with_entries_ends_a_page_before_too_many_bytes(log: Log) -> None:
    """Hits with large entries: a page stops before MAX_ENTRY_PAGE_BYTES of entries (so a
    plain gRPC client, 4 MiB at most, can take it), and the next page resumes with the rest."""
    owner = log.register("bulk-owner@acme.example", pb.HUMAN)
    agent = log.register("bulk-agent@acme.example", pb.AGENT)
    gid = log.grant(
        owner, "bulk-agent@acme.example", tools=["s3.*"], resources=["s3:bulk/*"], access=[1]
    )
    note = "the same long note " * 1600  # about 30 KB of parameters each
    count = MAX_ENTRY_PAGE_BYTES // 30_000 + 10
    for n in range(count):
        op = operation("s3.get_object", f"s3:bulk/{n}", pb.READ, {"note": note})
        log.append(agent, intent(agent, [gid], op))
    request = search_request(actor="bulk-agent@acme.example", with_entries=True)
    first = log.stub.Search(request, metadata=log.auth, timeout=RPC_TIMEOUT)
    assert 0 < len(first.hits) < count and first.next_index > first.hits[-1].index
    assert sum(len(h.entry) for h in first.hits) <= MAX_ENTRY_PAGE_BYTES
    carried = log.search(actor="bulk-agent@acme.example", with_entries=True)
    assert len(carried) == count and all(h.entry for h in carried)
    assert [h.index for h in carried] == log.indexes(actor="bulk-agent@acme.example")


def test_search_with_entries_carries_each_hits_exact_bytes(log: Log) -> None:
    """with_entries: every hit holds its entry's bytes (those GetEntries serves, hashing to the
    hit's leaf hash), pages break where they do without them; without it, no bytes."""
    plain = log.search(time_from_ms=1)  # everything
    carried = log.search(time_from_ms=1, with_entries=True)
    assert [h.index for h in carried] == [h.index for h in plain]  # after the bulk: pages
    assert all(not h.entry for h in plain)
    for hit in carried:
        assert hashing.leaf_hash(hit.entry) == hit.leaf_hash
        hit.ClearField("entry")
    assert carried == plain
    (first,) = log.entries(plain[0].index, plain[0].index + 1)
    assert log.search(time_from_ms=1, with_entries=True)[0].entry == first.data


def test_an_auditor_replaying_the_log_reaches_the_servers_verdicts(log: Log) -> None:
    """Runs last: every entry the scenarios left, replayed through the same rules."""
    size = log.checkpoint().size
    state = LogState(DictKV())
    replayed: dict[int, tuple[int, str]] = {}
    verifier_key = (log.data_dir / "log.pub").read_text().strip()
    log_key = keys.parse_verifier_key(verifier_key).public_key
    for entry in log.entries(0, size):
        prepared = ingest.prepare(entry.data, state.key)
        v = ingest.admit(prepared, state, entry.admitted_ms or None, log_key)
        state.apply(entry.index, entry.leaf_hash, prepared.statement, v)
        if v is not None:
            replayed[entry.index] = (v.verdict, v.reason)
    served = {
        h.index: (h.verdict, h.verdict_reason)
        for wanted in (pb.IN_SCOPE, pb.OUT_OF_SCOPE, pb.NO_GRANT)
        for h in log.search(verdict=wanted)
    }
    assert replayed == served
    assert len(served) >= 10
    # Several values of one criterion: any of them (OR), pages still in log order.
    flagged = log.indexes(verdict=[pb.OUT_OF_SCOPE, pb.NO_GRANT])
    assert flagged == sorted(i for i, (v, _) in served.items() if v != pb.IN_SCOPE)
    assert flagged and len(flagged) < len(served)
