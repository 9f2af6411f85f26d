"""`serve --ingest-workers N`: the history-free checks in worker processes change nothing.

Directly: IngestWorkers.prepare gives, entry for entry, what statements.ingest.prepare gives in
this process (the same statement and verified key, or the same refusal: code, message, reason).
On a real server: a batch of many sessions under shared grants, with refused statements mixed
in, gets the same answers with workers and without, and an audit of each log (a serial replay)
reproduces every recorded verdict.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from affidavit.client.audit import audit
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.merkle.hashing import leaf_hash
from affidavit.proto import affidavit_pb2 as pb
from affidavit.server import prepared as server_prepared
from affidavit.server.ingest_workers import INLINE_BELOW, IngestWorkers
from affidavit.server.prepared import ServerPrepared
from affidavit.statements import build, ingest
from affidavit.statements.canonical import canonical_json, shown_digest
from affidavit.statements.errors import Rejection
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey
from affidavit.statements.state import DictKV, LogState

from tests.processes import alive, children, wait_gone
from tests.serverproc import ServerFactory, ServerProcess, server_factory

__all__ = ["server_factory"]

GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
"""A fake GitHub token of the real shape (split so no scanner flags this file)."""
SESSIONS = 8


def key(name: str) -> IdentityKey:
    return IdentityKey(name, hashlib.sha256(f"seed:{name}".encode()).digest())


ALICE, BOT, BOT2, STRANGER = key("alice"), key("bot"), key("bot-2"), key("stranger")


def intent(agent: str, grant_id: str, n: int, resource: str = "repo:acme/web") -> pb.AgentAction:
    params = {"repo": resource[5:], "title": f"change {n}", "draft": n % 2 == 0}
    if resource == "repo:leak":
        params = {"note": f"token {GITHUB_TOKEN}"}
    text = canonical_json(params)
    return pb.AgentAction(
        phase=pb.AgentAction.INTENT,
        action_id=uuid7(),
        actor=pb.Actor(agent_id=agent),
        grant_ids=[grant_id],
        authorization=pb.Authorization(decision=pb.ALLOW, policy_id="test"),
        operation=pb.Operation(
            tool_name="github.create_pull_request",
            resource=resource,
            access=pb.CREATE,
            parameters_json=text,
            parameters_digest=shown_digest(text),
        ),
    )


def batch(grants: dict[str, str]) -> list[bytes]:
    """INTENTs by two agents under their grants, each in SESSIONS sessions in turn (a
    session's statements in order within the batch), one in ten out of scope; and refused
    ones mixed in: a tampered signature, a secret in the parameters, an unregistered key,
    bytes that are no statement, a session statement out of its chain."""
    signers = {
        (k.identity_id, s): build.SessionSigner(k, session_id=f"s{s}")
        for k in (BOT, BOT2)
        for s in range(SESSIONS)
    }
    out: list[bytes] = []
    for n in range(48):
        who = (BOT, BOT2)[n % 2]
        signer = signers[who.identity_id, n // 2 % SESSIONS]
        resource = "repo:other/x" if n % 10 == 9 else f"repo:acme/svc-{n % 5}"
        if n == 13:
            resource = "repo:leak"
        leaf = signer.sign(intent(who.identity_id, grants[who.identity_id], n, resource))
        if n == 21:
            signed = pb.SignedStatement.FromString(leaf)
            signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
            out.append(signed.SerializeToString())
            continue
        out.append(leaf)
        if n != 13:
            signer.advance(leaf)
    stranger = build.SessionSigner(STRANGER)
    out.insert(5, stranger.sign(intent("stranger", grants["bot"], 99)))
    out.insert(30, b"\x0a\x03not a statement")
    skipped = signers["bot", 0]
    gap = build.SessionSigner(BOT, skipped.session_id, sequence=40, previous_hash=b"\x01" * 32)
    out.append(gap.sign(intent("bot", grants["bot"], 100)))
    return out


def setup_leaves(admin: IdentityKey, genesis: bool) -> tuple[list[bytes], dict[str, str]]:
    """(Genesis,) alice (human), the two agents; alice grants each agent repo:acme/*."""
    signer = build.SessionSigner(admin)
    leaves: list[bytes] = []

    def put(s: build.SessionSigner, body: build.Body) -> str:
        leaf = s.sign(body)
        s.advance(leaf)
        leaves.append(leaf)
        return build.statement_of(leaf).header.statement_id

    if genesis:
        put(signer, build.register(admin.identity_id, pb.ADMIN, admin.public_key))
    put(signer, build.register("alice", pb.HUMAN, ALICE.public_key, owner=admin.identity_id))
    for agent in (BOT, BOT2):
        put(signer, build.register(agent.identity_id, pb.AGENT, agent.public_key, owner="alice"))
    granter = build.SessionSigner(ALICE)
    grants = {
        agent.identity_id: put(
            granter,
            pb.Grant(
                grantee=agent.identity_id,
                tools=["github.*"],
                resources=["repo:acme/*"],
                access=[pb.CREATE],
            ),
        )
        for agent in (BOT, BOT2)
    }
    return leaves, grants


@pytest.fixture(scope="module")
def workers() -> Iterator[IngestWorkers]:
    pool = IngestWorkers(2)
    try:
        yield pool
    finally:
        pool.close()


def _outcome(p: ingest.Prepared | Rejection) -> object:
    if isinstance(p, Rejection):
        return (p.code, p.message, p.reason)
    assert isinstance(p, ServerPrepared)  # with what the server derives, made by the worker
    return (p.signed, p.statement, p.verified_with, p.facets, p.reads)


def test_workers_prepare_what_this_process_prepares(workers: IngestWorkers) -> None:
    state = LogState(DictKV())
    setup, grants = setup_leaves(key("admin"), genesis=True)
    for i, leaf in enumerate(setup):
        p = ingest.prepare(leaf, state.key)
        state.apply(i, leaf_hash(leaf), p.statement, ingest.admit(p, state, build.now_ms()))
    entries = batch(grants)
    assert len(entries) >= INLINE_BELOW  # the workers' path, not the inline one
    pooled = workers.prepare(entries, state.key)
    here: list[ingest.Prepared | Rejection] = []
    for entry in entries:
        try:
            here.append(server_prepared.prepare(entry, state.key))
        except Rejection as e:
            here.append(e)
    assert [_outcome(p) for p in pooled] == [_outcome(p) for p in here]
    refused = {p.reason or p.code for p in pooled if isinstance(p, Rejection)}
    assert refused == {"bad-signature", "INVALID_ARGUMENT"}  # the key-unknown is admit's
    assert sum(1 for p in pooled if isinstance(p, ingest.Prepared) and p.verified_with) == 47
    # A small request is prepared in the caller's thread, with the same answers.
    assert [_outcome(p) for p in workers.prepare(entries[:3], state.key)] == [
        _outcome(p) for p in here[:3]
    ]


def _ingest_workers_of(pid: int) -> set[int]:
    """The running ingest worker processes started by pid."""
    return {
        child
        for child in children(pid)
        if alive(child) and b"ingest_worker" in Path(f"/proc/{child}/cmdline").read_bytes()
    }


def test_a_worker_that_dies_is_noticed_and_replaced(
    workers: IngestWorkers, caplog: pytest.LogCaptureFixture
) -> None:
    state = LogState(DictKV())
    setup, grants = setup_leaves(key("admin"), genesis=True)
    for i, leaf in enumerate(setup):
        p = ingest.prepare(leaf, state.key)
        state.apply(i, leaf_hash(leaf), p.statement, ingest.admit(p, state, build.now_ms()))
    entries = batch(grants)
    expected = [_outcome(p) for p in workers.prepare(entries, state.key)]
    killed = _ingest_workers_of(os.getpid())
    assert killed  # the run above went to a worker
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert not wait_gone(killed)
    # The run handed to a dead worker is answered all the same (prepared in this process),
    # and the next ones by a new worker in its place.
    with caplog.at_level(logging.WARNING, logger="affidavit.server"):
        for _ in range(workers.workers + 1):
            assert [_outcome(p) for p in workers.prepare(entries, state.key)] == expected
    assert "an ingest worker process died" in caplog.text
    replaced = _ingest_workers_of(os.getpid())
    assert replaced and not replaced & killed


def _run(server: ServerProcess) -> list[tuple[str, int, str]]:
    """Set the cast up, send the batch in one AppendBatch, audit the log; the answers."""
    admin = IdentityKey.load(server.data_dir / "admin.key")
    setup, grants = setup_leaves(admin, genesis=False)
    for leaf in setup:
        server.stub.Append(pb.AppendRequest(entry=leaf), timeout=60)
    response = server.stub.AppendBatch(pb.AppendBatchRequest(entries=batch(grants)), timeout=120)
    answers: list[tuple[str, int, str]] = []
    for r in response.results:
        if r.WhichOneof("result") == "ok":
            answers.append(("ok", r.ok.verdict, r.ok.verdict_reason))
        else:
            answers.append((str(r.error.code), 0, ""))
    policy = TrustPolicy(server.verifier_key)
    with Client(server.address, policy, token=server.auditor_token, timeout=60) as client:
        report = audit(client, workers=0)
    # What a serial replay finds: the out-of-scope intents, and none has an outcome yet;
    # every recorded verdict is the one it computes.
    assert report.root_ok
    assert report.finding_counts == {"out-of-scope-action": 4, "missing-outcome": 46}
    return answers


def test_a_server_with_workers_answers_as_one_without(server_factory: ServerFactory) -> None:
    server = server_factory("--ingest-workers", "2", entry_format="statements")
    with_workers = _run(server)
    # Its workers end with it, even when it is killed and cannot tell them.
    assert server.proc is not None
    workers = children(server.proc.pid)
    assert len(workers) >= 2
    server.kill()
    assert not wait_gone(workers)
    without = _run(server_factory("--ingest-workers", "0", entry_format="statements"))
    assert with_workers == without
    assert sum(a[0] == "ok" for a in with_workers) == 46
    assert sum(a[1] == pb.OUT_OF_SCOPE for a in with_workers) == 4
