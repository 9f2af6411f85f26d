"""A log and an audit position written by affidavit cc86bae (statement state layout 1,
position format 2: tests/vectors/make_layout1_log.py made tests/vectors/layout1-log.tar.gz)
open with this version and answer the same: served from LevelDB, and moved to PostgreSQL + S3 by
`affidavit migrate`.

Its one action judged differently is the documented one (statements.state_migration): bot-a's
INTENT "call_3" was OUT_OF_SCOPE approval-rejected under cc86bae only because alice's REJECT
named bot-b's action "call_3"; replayed now it is in scope, and the audit says so.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import grpc
from affidavit.client.audit import Report, audit
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey

from tests import backends
from tests.serverproc import RPC_TIMEOUT, ServerProcess, run_cli
from tests.test_audit_resume import comparable
from tests.test_authority import intent

scaleout = backends.scaleout

FIXTURE = Path(__file__).parent / "vectors" / "layout1-log.tar.gz"


def _unpacked(tmp_path: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "layout1-log"


def _audit(server: ServerProcess, resume: Path | None = None) -> Report:
    policy = TrustPolicy(server.verifier_key)
    with Client(server.address, policy, token=server.auditor_token, timeout=60) as client:
        return audit(client, resume=resume, workers=0)


def _index_of(server: ServerProcess, agent: str, action_id: str) -> int:
    for entry in server.all_entries():
        st = build.statement_of(entry.data)
        a = st.action
        is_intent = st.WhichOneof("body") == "action" and a.phase == pb.AgentAction.INTENT
        if is_intent and (a.actor.agent_id, a.action_id) == (agent, action_id):
            return entry.index
    raise AssertionError(f"no INTENT of {agent}'s {action_id}")


def _answers_as_before(server: ServerProcess, log: Path) -> None:
    """The audit of the whole log, from scratch and resumed from cc86bae's position; and what
    the rewritten state admits."""
    fresh = _audit(server)
    position = log / "resumed.position"
    shutil.copy(log / "audit.position", position)
    resumed = _audit(server, position)
    assert comparable(resumed) == comparable(fresh)
    by_kind = {(f.kind, f.index) for f in fresh.findings}
    assert by_kind == {
        ("out-of-scope-action", _index_of(server, "bot-a", "rejected-1")),
        ("verdict-mismatch", _index_of(server, "bot-a", "call_3")),
        ("missing-outcome", _index_of(server, "bot-a", "rejected-1")),
        ("missing-outcome", _index_of(server, "bot-a", "call_3")),
    }, fresh.text()
    mismatch = next(f for f in fresh.findings if f.kind == "verdict-mismatch")
    assert "OUT_OF_SCOPE (approval-rejected)" in mismatch.message, mismatch.message

    keys = {n: IdentityKey.load(log / "keys" / f"{n}.key") for n in ("alice", "bot-a", "bot-b")}
    # The fixture's own grants ran for an hour from when it was made; alice grants each agent
    # the same scope again, valid now, so what follows tests the layout and not the clock.
    grants = {agent: _grant_now(server, keys["alice"], agent) for agent in ("bot-a", "bot-b")}

    def send(agent: str, action_id: str) -> tuple[str, str] | grpc.StatusCode:
        leaf = build.SessionSigner(keys[agent], session_id=uuid7()).sign(
            intent(agent, [grants[agent]], action_id=action_id)
        )
        try:
            r = server.stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            return e.code()
        return pb.Verdict.Name(r.verdict), r.verdict_reason

    exists = grpc.StatusCode.ALREADY_EXISTS
    assert send("bot-a", "call_1") == send("bot-b", "call_2") == exists  # kept, moved
    assert send("bot-b", "awaited-2") == ("OUT_OF_SCOPE", "approval-rejected")  # rebuilt
    assert send("bot-a", "awaited-2") == ("IN_SCOPE", "")  # another agent's action
    assert send("bot-a", "call_2") == ("IN_SCOPE", "")  # no longer squatted by bot-b's


def _grant_now(server: ServerProcess, grantor: IdentityKey, grantee: str) -> str:
    """grantor's grant to grantee of the fixture's scope (github.* on repo:acme/*, create),
    valid from a minute ago for an hour; its statement id."""
    now = build.now_ms()
    grant = pb.Grant(
        grantee=grantee,
        tools=["github.*"],
        resources=["repo:acme/*"],
        access=[pb.CREATE],
        not_before_ms=now - 60_000,
        not_after_ms=now + 3_600_000,
    )
    leaf = build.SessionSigner(grantor, session_id=uuid7()).sign(grant)
    server.stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
    return build.statement_of(leaf).header.statement_id


def test_a_cc86bae_leveldb_log_opens_rewritten_and_answers_the_same(tmp_path: Path) -> None:
    log = _unpacked(tmp_path)
    server = ServerProcess(log / "data", entry_format="statements")
    try:
        server.start()
        assert "rewriting the statement state to layout 2" in server.stderr
        _answers_as_before(server, log)
    finally:
        server.kill()


def test_a_cc86bae_leveldb_log_migrated_to_postgres_answers_the_same(
    tmp_path: Path, scaleout: backends.Scaleout
) -> None:
    log = _unpacked(tmp_path)
    to = ("--to", scaleout.storage_url, "--objects", scaleout.objects_url)
    r = run_cli("migrate", "--from", str(log / "data"), *to, env=scaleout.env())
    assert r.returncode == 0, r.stderr
    server = ServerProcess(log / "data", *scaleout.args(), entry_format=None, env=scaleout.env())
    try:
        server.start()
        assert "rewriting the statement state" not in server.stderr  # migrate moved layout 2
        _answers_as_before(server, log)
    finally:
        server.kill()
