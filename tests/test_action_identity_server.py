"""Through the real server, on both deployments: an agent cannot take another agent's action
by its id, and a log whose statement state is in layout 1 (keyed by action id alone, as
cc86bae wrote it) opens, is rewritten once, and answers as before.

The layout 1 records are made from the server's own layout 2 records by the old key rule
(tests/layout1.py), written straight into its LevelDB or PostgreSQL while it is stopped: the
state cc86bae's server leaves for the same statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import plyvel
import psycopg
import pytest
from affidavit.client import bundle, bundleset
from affidavit.client.audit import audit
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.console import reads
from affidavit.merkle.hashing import leaf_hash
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey

from tests import backends, serverproc
from tests.layout1 import LAYOUT_MARK, as_layout1
from tests.serverproc import ServerFactory, ServerProcess
from tests.test_authority import World, approval, intent

server_factory = serverproc.server_factory

IN_SCOPE = ("IN_SCOPE", "")
STATE = b"s/"

Records = dict[bytes, bytes]


class Deployed:
    """A statements log on one deployment, and direct access to its statement state."""

    def __init__(self, request: pytest.FixtureRequest, factory: ServerFactory) -> None:
        args, env = backends.deployment(request)
        self.storage_url = args[1] if args else None
        self.server = factory(*args, env=env, entry_format="statements")
        self.world = World(self.server)
        admin = IdentityKey.load(self.server.data_dir / "admin.key")
        self.world.signers["admin"] = build.SessionSigner(admin, session_id=uuid7())

    def state(self) -> Records:
        """Every statement state record (the server stopped)."""
        if self.storage_url is None:
            with _leveldb(self.server.data_dir) as db:
                return dict(db.iterator(prefix=STATE))
        with psycopg.connect(self.storage_url) as conn:
            rows = conn.execute(
                "SELECT record_key, record_value FROM affidavit_record "
                "WHERE record_key >= %s AND record_key < %s",
                (STATE, b"s0"),
            ).fetchall()
        return {bytes(k): bytes(v) for k, v in rows}

    def replace_state(self, records: Records) -> None:
        """Make records the whole statement state (the server stopped)."""
        old = self.state()
        if self.storage_url is None:
            with _leveldb(self.server.data_dir) as db, db.write_batch(sync=True) as wb:
                for key in old:
                    wb.delete(key)
                for key, value in records.items():
                    wb.put(key, value)
            return
        with psycopg.connect(self.storage_url) as conn, conn.transaction():
            conn.execute(
                "DELETE FROM affidavit_record WHERE record_key >= %s AND record_key < %s",
                (STATE, b"s0"),
            )
            for key, value in records.items():
                conn.execute(
                    "INSERT INTO affidavit_record (record_key, record_value) VALUES (%s, %s)",
                    (key, value),
                )


@contextmanager
def _leveldb(data_dir: Path) -> Iterator[plyvel.DB]:
    db = plyvel.DB(str(data_dir / "db"))
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(params=backends.DEPLOYMENTS)
def deployed(request: pytest.FixtureRequest, server_factory: ServerFactory) -> Deployed:
    return Deployed(request, server_factory)


def _people(w: World) -> dict[str, str]:
    """alice (human) grants bot-a and bot-b (agents) the same scope: agent -> grant id."""
    w.identity("alice", pb.HUMAN)
    grants = {}
    for agent in ("bot-a", "bot-b"):
        w.identity(agent, pb.AGENT)
        grants[agent] = w.grant("alice", agent)
    return grants


def _outcome(intent_leaf: bytes) -> pb.AgentAction:
    """The OUTCOME (OK) of the INTENT in intent_leaf, by its agent."""
    action = build.statement_of(intent_leaf).action
    out = pb.AgentAction()
    out.CopyFrom(action)
    out.phase = pb.AgentAction.OUTCOME
    out.intent_leaf_hash = leaf_hash(intent_leaf)
    out.outcome.status = pb.OK
    return out


def _send_intent(w: World, agent: str, body: pb.AgentAction) -> bytes:
    """Record an INTENT, which must be in scope; its leaf."""
    leaf = w.sign(agent, body)
    r = w.server.stub.Append(pb.AppendRequest(entry=leaf), timeout=serverproc.RPC_TIMEOUT)
    w.signers[agent].advance(leaf)
    assert (pb.Verdict.Name(r.verdict), r.verdict_reason) == IN_SCOPE
    return leaf


def _audit_agrees(w: World) -> None:
    """The audit, replaying the log, reproduces every verdict: no error, and a violation at
    exactly the actions recorded out of scope."""
    server = w.server
    with _client(server) as client:
        report = audit(client)
    assert not [f for f in report.findings if f.severity == "error"], report.text()
    violations = {f.index for f in report.findings if f.severity == "violation"}
    assert violations == w.violations, report.text()


def test_an_agent_cannot_squat_another_agents_action_id(deployed: Deployed) -> None:
    """bot-b records an INTENT with the id bot-a is about to use; bot-a's is still recorded,
    each OUTCOME answers its own agent's INTENT, and bot-b cannot answer bot-a's."""
    w = deployed.world
    grants = _people(w)
    squat = _send_intent(w, "bot-b", intent("bot-b", [grants["bot-b"]], action_id="call_1"))
    mine = _send_intent(w, "bot-a", intent("bot-a", [grants["bot-a"]], action_id="call_1"))
    w.expect(
        "bot-a",
        intent("bot-a", [grants["bot-a"]], action_id="call_1"),
        grpc.StatusCode.ALREADY_EXISTS,
        attack=True,
    )
    stolen = _outcome(mine)
    stolen.actor.agent_id = "bot-b"
    w.expect("bot-b", stolen, grpc.StatusCode.FAILED_PRECONDITION, attack=True)
    w.expect("bot-a", _outcome(mine), IN_SCOPE, attack=False)
    w.expect("bot-b", _outcome(squat), IN_SCOPE, attack=False)
    _audit_agrees(w)
    # Readers that look an action up by id name the agent, or take every agent's.
    with _client(w.server) as client:
        with pytest.raises(bundle.AmbiguousActionError, match=r"2 agents .*\(bot-a, bot-b\)"):
            bundle.export(client, action_id="call_1")
        assert bundle.agents_of(client, "call_1") == ["bot-a", "bot-b"]
        for agent, leaf in (("bot-a", mine), ("bot-b", squat)):
            b = bundle.export(client, action_id="call_1", agent_id=agent)
            report = bundle.verify(b.to_json(), client.policy)
            assert report.intent.actor.agent_id == agent and report.outcome is not None
            assert report.intent_index == _index_of(b, leaf)
            actions = [build.statement_of(e.leaf) for e in b.entries]
            actors = {
                st.action.actor.agent_id for st in actions if st.WhichOneof("body") == "action"
            }
            assert actors == {agent}
        with pytest.raises(reads.AgentNeeded, match="2 agents"):
            reads.action(client, "call_1")
        view = reads.action(client, "call_1", "bot-b")
        assert {r.agent for r in view.rows if r.kind == "action"} == {"bot-b"}
        both = bundleset.verify_set(
            bundleset.export_set(client, ["call_1"]).to_json(), client.policy
        )
        assert sorted(r.intent.actor.agent_id for r in both) == ["bot-a", "bot-b"]


def _client(server: ServerProcess) -> Client:
    return Client(
        server.address, TrustPolicy(server.verifier_key), token=server.auditor_token, timeout=60
    )


def _index_of(b: bundle.Bundle, leaf: bytes) -> int:
    return next(e.index for e in b.entries if e.leaf == leaf)


def test_a_reject_names_one_agents_action(deployed: Deployed) -> None:
    w = deployed.world
    grants = _people(w)
    w.send("alice", approval("call_1", "bot-b", decision=pb.Approval.REJECT))
    w.expect(
        "bot-a", intent("bot-a", [grants["bot-a"]], action_id="call_1"), IN_SCOPE, attack=False
    )
    w.expect(
        "bot-b",
        intent("bot-b", [grants["bot-b"]], action_id="call_1"),
        ("OUT_OF_SCOPE", "approval-rejected"),
        attack=True,
    )
    _audit_agrees(w)


def _old_log(w: World) -> tuple[dict[str, str], bytes, str]:
    """Statements layout 1 could hold (one INTENT per action id): a REJECTed action, a REJECT
    of an action not recorded yet, an answered action and one still open. The grants, the
    open INTENT's leaf and the id whose REJECT (of bot-b's action) awaits its INTENT."""
    grants = _people(w)
    rejected, awaited = uuid7(), uuid7()
    w.send("alice", approval(rejected, "bot-a", decision=pb.Approval.REJECT))
    w.expect(
        "bot-a",
        intent("bot-a", [grants["bot-a"]], action_id=rejected),
        ("OUT_OF_SCOPE", "approval-rejected"),
        attack=True,
    )
    w.send("alice", approval(awaited, "bot-b", decision=pb.Approval.REJECT))
    done = _send_intent(w, "bot-a", intent("bot-a", [grants["bot-a"]], action_id="call_1"))
    w.expect("bot-a", _outcome(done), IN_SCOPE, attack=False)
    open_leaf = _send_intent(w, "bot-b", intent("bot-b", [grants["bot-b"]], action_id="call_2"))
    return grants, open_leaf, awaited


def test_a_log_in_layout1_opens_rewritten_and_answers_the_same(deployed: Deployed) -> None:
    w, server = deployed.world, deployed.server
    assert "rewriting the statement state" not in server.stderr  # a new log is only marked
    grants, open_leaf, awaited = _old_log(w)
    server.stop()
    layout2 = deployed.state()
    assert layout2[LAYOUT_MARK] == b"2"
    layout1 = as_layout1(layout2)
    assert layout1 != layout2
    deployed.replace_state(layout1)
    server.start()
    assert "rewriting the statement state to layout 2" in server.stderr
    server.stop()
    assert deployed.state() == layout2  # exactly what the new rules built
    server.start()
    assert "rewriting the statement state" not in server.stderr  # once
    # The moved INTENT is found by its agent's OUTCOME; its agent's ids are still taken; the
    # rebuilt REJECT counts for the agent it named, and only for it.
    w.expect("bot-b", _outcome(open_leaf), IN_SCOPE, attack=False)
    w.expect(
        "bot-a",
        intent("bot-a", [grants["bot-a"]], action_id="call_1"),
        grpc.StatusCode.ALREADY_EXISTS,
        attack=True,
    )
    w.expect(
        "bot-b",
        intent("bot-b", [grants["bot-b"]], action_id=awaited),
        ("OUT_OF_SCOPE", "approval-rejected"),
        attack=True,
    )
    w.expect("bot-a", intent("bot-a", [grants["bot-a"]], action_id=awaited), IN_SCOPE, attack=False)
    _audit_agrees(w)


def test_a_state_layout_this_server_does_not_read_is_refused_unchanged(
    deployed: Deployed,
) -> None:
    """A later affidavit's layout mark is not taken for layout 1 (whose rewrite would ruin it):
    the server refuses to start, names the layout, and writes nothing."""
    server = deployed.server
    server.stop()
    later = deployed.state()
    later[LAYOUT_MARK] = b"3"
    deployed.replace_state(later)
    with pytest.raises(AssertionError, match=r"exit code 2\)"):
        server.start()
    assert "the statement state is in layout '3'" in server.stderr, server.stderr
    assert deployed.state() == later
