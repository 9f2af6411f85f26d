"""Investigation commands on a real server: timeline, identity history, and the gaps they show.

One statements log serves the module: an admin registers alice (human) and bot (agent); alice
grants bot pull requests on acme's repositories; bot works in one session under one trace
(a pull request it finishes, a second one whose OUTCOME never comes, a stray out of scope),
then has its key rotated and is revoked. A second server gets its search index tampered with,
to show that the timeline reports a session's missing statement as a gap.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel
import pytest
from affidavit.client.actor import Actor
from affidavit.client.client import Client
from affidavit.client.errors import RefusedError
from affidavit.client.proven import ProvenEntry
from affidavit.client.timeline import Event, Gap, check_chain
from affidavit.client.verify import TrustPolicy
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.signing import IdentityKey
from hypothesis import given
from hypothesis import strategies as st

from affidavit import merkle
from tests import serverproc
from tests.serverproc import RPC_TIMEOUT, ServerProcess

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
EXIT_OK, EXIT_FINDINGS, EXIT_NOT_FOUND = 0, 1, 6


@dataclass
class Log:
    server: ServerProcess
    work: Path
    session: str
    done_action: str
    unanswered_action: str
    stray_index: int
    rotated_at: int
    revoked_at: int
    session_indexes: list[int]

    def run(
        self, *args: str, server: ServerProcess | None = None
    ) -> subprocess.CompletedProcess[str]:
        s = server or self.server
        env = {
            "AFFIDAVIT_SERVER": s.address,
            "AFFIDAVIT_LOG_KEY": s.verifier_key,
            "AFFIDAVIT_TOKEN": s.auditor_token,
        }
        r = subprocess.run(
            [str(serverproc.AFFIDAVIT), *args],
            cwd=self.work,
            env=serverproc.clean_env(env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in r.stderr, r.stderr
        return r

    def json(self, *args: str, code: int = EXIT_OK, server: ServerProcess | None = None) -> Any:
        r = self.run(*args, "--json", server=server)
        assert r.returncode == code, r.stderr
        return json.loads(r.stdout)


def _populate(server: ServerProcess) -> dict[str, Any]:
    policy = TrustPolicy(server.verifier_key)
    alice, bot = IdentityKey.generate("alice"), IdentityKey.generate("bot")
    with Client(server.address, policy, timeout=RPC_TIMEOUT) as client:
        admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
        admin.register("alice", pb.HUMAN, alice.public_key)
        admin.register("bot", pb.AGENT, bot.public_key, owner="alice")
        grant = (
            Actor(client, alice)
            .grant("bot", tools=["github.*"], resources=["repo:acme/*"], access=[pb.CREATE])
            .statement_id
        )
        agent = Actor(client, bot)
        indexes = []
        with agent.action(
            "github.create_pull_request",
            "repo:acme/web",
            pb.CREATE,
            {"n": 1},
            grant_ids=[grant],
            trace_id=TRACE,
        ) as done:
            done.effect_ref = "commit:1"
        assert done.intent_recorded and done.outcome_recorded
        indexes += [done.intent_recorded.receipt.index, done.outcome_recorded.receipt.index]
        unanswered = agent.action(
            "github.create_pull_request",
            "repo:acme/api",
            pb.CREATE,
            {"n": 2},
            grant_ids=[grant],
            trace_id=TRACE,
        )
        indexes.append(agent.submit(unanswered.intent).receipt.index)
        stray = agent.submit(
            agent.action("shell.exec", "host:db", pb.EXECUTE, {}, grant_ids=[grant]).intent
        )
        indexes.append(stray.receipt.index)
        rotated = admin.rotate("bot", IdentityKey.generate("bot").public_key).receipt.index
        revoked = admin.revoke("bot").receipt.index
    return {
        "session": agent.signer.session_id,
        "done_action": done.action_id,
        "unanswered_action": unanswered.action_id,
        "stray_index": stray.receipt.index,
        "rotated_at": rotated,
        "revoked_at": revoked,
        "session_indexes": indexes,
    }


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    tmp = tmp_path_factory.mktemp("investigation")
    server = ServerProcess(
        tmp / "srv", origin="example.com/investigation", entry_format="statements"
    )
    try:
        server.start()
        yield Log(server, tmp, **_populate(server))
    finally:
        server.kill()


def test_timeline_of_a_session(log: Log) -> None:
    tl = log.json("timeline", "--session", log.session)
    rows = tl["statements"]
    assert [r["index"] for r in rows] == log.session_indexes
    assert [r["sequence"] for r in rows] == [0, 1, 2, 3]
    assert [r["what"] for r in rows] == ["INTENT", "OUTCOME", "INTENT", "INTENT"]
    assert (
        rows[0]["tool"] == "github.create_pull_request" and rows[0]["resource"] == "repo:acme/web"
    )
    assert rows[1]["effect"] == "OK commit:1"
    assert rows[3]["verdict"] == "OUT_OF_SCOPE" and rows[3]["verdict_reason"] == "tool-not-granted"
    assert tl["gaps"] == [] and tl["broken_links"] == [] and tl["findings"] == 0
    unanswered = {u["action_id"] for u in tl["intents_without_outcome"]}
    assert log.unanswered_action in unanswered and log.done_action not in unanswered
    text = log.run("timeline", "--session", log.session)
    assert text.returncode == EXIT_OK, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"timeline of session {log.session}: 4 statement(s)")
    assert lines[1].split()[:4] == ["INDEX", "TIME", "(UTC)", "ISSUER"]
    assert any(
        line.startswith(f"INTENT without an OUTCOME: action {log.unanswered_action}")
        for line in lines
    )


def test_timeline_of_a_trace_and_of_an_actor_in_a_window(log: Log) -> None:
    trace = log.json("timeline", "--trace", TRACE)["statements"]
    assert [r["index"] for r in trace] == log.session_indexes[:3]  # the stray is not traced
    everything = log.json("timeline", "--actor", "bot")["statements"]
    assert [r["index"] for r in everything] == log.session_indexes
    times = [r["client_time_ms"] for r in everything]
    since, until = str(times[1]), str(times[2] + 1)
    window = log.json("timeline", "--actor", "bot", "--since", since, "--until", until)
    assert [r["index"] for r in window["statements"]] == [
        r["index"] for r in everything if times[1] <= r["client_time_ms"] <= times[2]
    ]
    assert window["gaps"] == []  # the chain is whole; the window only shows part of it
    admin = log.json("timeline", "--actor", "admin")["statements"]
    assert [r["what"] for r in admin][-2:] == ["identity ROTATE_KEY bot", "identity REVOKE bot"]


def test_timeline_usage(log: Log) -> None:
    r = log.run("timeline")
    assert r.returncode == 2 and "--session, --trace or --actor" in r.stderr
    r = log.run("timeline", "--session", "a", "--actor", "b")
    assert r.returncode == 2
    empty = log.json("timeline", "--session", "no-such-session")
    assert empty["statements"] == [] and empty["findings"] == 0


def test_identity_history(log: Log) -> None:
    h = log.json("identity", "history", "bot")
    assert (h["kind"], h["owner"], h["revoked_at"]) == ("agent", "alice", log.revoked_at)
    first, second = h["keys"]
    assert first["valid_until_index"] == second["valid_from_index"] == log.rotated_at
    assert (first["ended_by"], second["ended_by"]) == ("rotation", "revocation")
    assert second["valid_until_index"] == log.revoked_at
    assert first["valid_from_index"] < first["valid_until_index"]
    assert [e["op"] for e in h["events"]] == ["REGISTER", "ROTATE_KEY", "REVOKE"]
    assert {e["signed_by"] for e in h["events"]} == {"admin"}
    text = log.run("identity", "history", "bot").stdout
    assert "identity bot (agent), revoked, owner alice" in text and "rotation" in text
    alice = log.json("identity", "history", "alice")
    assert [k["ended_by"] for k in alice["keys"]] == [""] and alice["revoked_at"] is None
    r = log.run("identity", "history", "nobody")
    assert r.returncode == EXIT_NOT_FOUND and "not registered" in r.stderr


def test_a_statement_the_search_hides_is_reported_as_a_gap(tmp_path: Path) -> None:
    """The operator removes one statement of a session from the search index: the timeline
    still reads the session's chain and reports the missing sequence number (exit 1)."""
    server = ServerProcess(tmp_path / "srv", origin="example.com/gap", entry_format="statements")
    try:
        server.start()
        story = _populate(server)
        work = tmp_path / "work"
        work.mkdir()
        log = Log(server, work, **story)
        assert log.json("timeline", "--session", log.session)["findings"] == 0
        hidden = log.session_indexes[1]  # sequence 1: the first action's OUTCOME
        assert server.stop() == 0
        db = plyvel.DB(str(server.data_dir / "db"))
        removed = [
            k for k, _ in db.iterator(prefix=b"x/f/") if k.endswith(hidden.to_bytes(8, "big"))
        ]
        assert removed
        for key in removed:
            db.delete(key)
        db.close()
        server.start()
        tl = log.json("timeline", "--session", log.session, code=EXIT_FINDINGS)
        assert [r["index"] for r in tl["statements"]] == [
            i for i in log.session_indexes if i != hidden
        ]
        assert tl["gaps"] == [
            {
                "issuer": "bot",
                "session_id": log.session,
                "first_sequence": 1,
                "last_sequence": 1,
                "before_index": log.session_indexes[2],
            }
        ]
        text = log.run("timeline", "--session", log.session)
        assert text.returncode == EXIT_FINDINGS
        assert f"--- GAP: sequence 1 of session {log.session} of bot" in text.stdout
        assert "FINDINGS: 1 gap(s)" in text.stdout
    finally:
        server.kill()


# The chain check itself, over generated chains.


def _chain(length: int) -> list[Event]:
    key = IdentityKey.generate("bot")
    signer = build.SessionSigner(key, session_id="s")
    events = []
    for n in range(length):
        leaf = signer.sign(pb.Approval(action_id="a", parameters_digest="0" * 64))
        signer.advance(leaf)
        entry = ProvenEntry(100 + n, leaf, merkle.leaf_hash(leaf), (), 0, "")
        events.append(Event(entry, build.statement_of(leaf), key.key_id))
    return events


@given(st.integers(1, 12).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_check_chain_reports_exactly_the_missing_runs(case: tuple[int, set[int]]) -> None:
    length, missing = case
    events = [e for e in _chain(length) if e.statement.header.sequence not in missing]
    gaps, broken = check_chain(events)
    assert broken == []
    reported = {s for g in gaps for s in range(g.first, g.last + 1)}
    last_present = max((e.statement.header.sequence for e in events), default=-1)
    assert reported == {s for s in missing if s < last_present}  # a tail is not knowable
    for g in gaps:
        assert isinstance(g, Gap) and g.before_index == 100 + g.last + 1


def test_check_chain_reports_a_fork_and_a_broken_link() -> None:
    events = _chain(3)
    other = _chain(3)  # another chain's statement 1: its previous_hash is not ours
    gaps, broken = check_chain([events[0], other[1], events[2]])
    assert gaps == [] and [b.sequence for b in broken] == [1, 2]
    gaps, broken = check_chain([*events, other[1]])
    assert gaps == [] and [b.sequence for b in broken] == [1]


# Sessions that prove completeness.


def test_a_session_opened_closed_and_then_appended_to(tmp_path: Path) -> None:
    """Open a session, record into it over several CLI calls, close it: the timeline says it is
    complete; appending after the close is refused (by the CLI, and by the log for anyone who
    builds the statement by hand); an OPEN that is not the first statement is refused."""
    server = ServerProcess(
        tmp_path / "srv", origin="example.com/sessions", entry_format="statements"
    )
    try:
        server.start()
        work = tmp_path / "work"
        work.mkdir()
        carol = IdentityKey.generate("carol")
        (work / "carol.key").write_text(carol.text() + "\n")
        policy = TrustPolicy(server.verifier_key)
        with Client(server.address, policy, timeout=RPC_TIMEOUT) as client:
            admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
            admin.register("alice", pb.HUMAN, IdentityKey.generate("alice").public_key)
            admin.register("carol", pb.AGENT, carol.public_key, owner="alice")
        log = Log(server, work, "", "", "", 0, 0, 0, [])
        key = ("--key", "carol.key")
        opened = log.json("session", "open", *key, "--purpose", "CHG-7 rollout")
        session = opened["session_id"]
        assert (work / "carol.key.sessions" / f"{session}.json").exists()
        act = (
            "append",
            *key,
            "--session",
            session,
            "--tool",
            "github.merge",
            "--resource",
            "repo:acme/web",
            "--access",
            "update",
            "--span-id",
            "00f067aa0ba902b7",
            "--tool-server",
            "mcp://github.example",
            "--credential-kind",
            "oauth-token",
            "--credential-issuer",
            "https://idp.example",
            "--credential-key-id",
            "jti-1",
        )
        # carol holds no grant: each is recorded, but not authorised (exit 5).
        first = log.json(*act, code=5)
        outcome = ("append", *key, "--session", session, "--outcome", first["action_id"])
        log.json(*outcome, code=5)
        second = log.json(*act, "--parent-action", first["action_id"], code=5)
        closed = log.json("session", "close", session, *key)
        assert closed["statements_before_close"] == 4  # OPEN, INTENT, OUTCOME, INTENT

        tl = log.json("timeline", "--session", session)
        assert [r["what"] for r in tl["statements"]] == [
            "session OPEN",
            "INTENT",
            "OUTCOME",
            "INTENT",
            "session CLOSE",
        ]
        assert [r["sequence"] for r in tl["statements"]] == [0, 1, 2, 3, 4]
        [status] = tl["sessions"]
        assert status["complete"] and status["opened"] and status["statements"] == 5
        assert [u["action_id"] for u in tl["intents_without_outcome"]] == [second["action_id"]]
        intent = tl["statements"][1]["statement"]["action"]
        assert intent["correlation"]["span_id"] == "00f067aa0ba902b7"
        assert intent["operation"]["tool_server"] == "mcp://github.example"
        assert intent["credential"] == {
            "kind": "oauth-token",
            "issuer": "https://idp.example",
            "key_id": "jti-1",
        }
        later = tl["statements"][3]["statement"]["action"]
        assert later["correlation"]["parent_action_id"] == first["action_id"]
        assert "COMPLETE" in log.run("timeline", "--session", session).stdout

        # Appending after the close: the CLI refuses from its state file...
        r = log.run(*act)
        assert r.returncode == 2 and "closed" in r.stderr
        # ...and the log refuses whoever signs the next statement of the session by hand.
        token = server.auditor_token
        with Client(server.address, policy, token=token, timeout=RPC_TIMEOUT) as client:
            last = client.entries(tl["statements"][-1]["index"], tl["statements"][-1]["index"] + 1)
            signer = build.SessionSigner(carol, session_id=session, sequence=5)
            signer.previous_hash = merkle.leaf_hash(next(last).data)
            late = signer.sign(pb.SessionEvent(op=pb.SessionEvent.CLOSE))
            with pytest.raises(RefusedError) as refused:
                client.append(late)
            assert refused.value.code == "FAILED_PRECONDITION"
            assert "closed at index" in refused.value.message
            # An OPEN must be a session's first statement.
            other = build.SessionSigner(carol, session_id="s2")
            opening = other.sign(pb.SessionEvent(op=pb.SessionEvent.OPEN))
            client.append(opening)
            other.advance(opening)
            with pytest.raises(RefusedError) as reopened:
                client.append(other.sign(pb.SessionEvent(op=pb.SessionEvent.OPEN)))
            assert "first statement" in reopened.value.message
        # A session never opened is not complete, whatever it holds.
        assert log.json("timeline", "--actor", "carol")["findings"] == 0
        r = log.run("session", "close", "no-such-session", *key)
        assert r.returncode == 2 and "session open" in r.stderr
        # An OPEN the log refuses (an identity it does not know) leaves no session behind.
        (work / "mallory.key").write_text(IdentityKey.generate("mallory").text() + "\n")
        r = log.run("session", "open", "--key", "mallory.key", "--session-id", "m1")
        assert r.returncode == 3 and "not registered" in r.stderr
        assert not (work / "mallory.key.sessions" / "m1.json").exists()
    finally:
        server.kill()
