"""The auditor (client.audit) against real `affidavit serve` processes.

A clean log, built with the client's own flows (identities, a grant and its delegation, an
approval, actions in scope), audits clean with the right counts and root. Violations the log
recorded are findings; a verdict altered in the server's LevelDB is caught; entries that do not
hash to the checkpoint, that the log's own rules refuse, or that are missing are caught (fed
from a fake source, since an honest server cannot produce them). A resumed audit reaches the
same report as one run, and worker processes reach the same report as a single process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel
import pytest
from affidavit.client import audit as auditor
from affidavit.client.actor import Actor, Recorded
from affidavit.client.audit import Progress, RecordedEntry, Report, audit, audit_entries
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy, Verified, open_checkpoint
from affidavit.merkle import hashing, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import ingest
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey

from tests.serverproc import ServerProcess

FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01


# ---------------------------------------------------------------------------------------------
# Logs.
# ---------------------------------------------------------------------------------------------


@dataclass
class Cast:
    """A log's actors and the grant its agent holds."""

    admin: Actor
    alice: Actor
    bot: Actor
    grant: Recorded


def connect(server: ServerProcess) -> Client:
    return Client(
        server.address,
        TrustPolicy(server.verifier_key),
        token=server.auditor_token,
        timeout=60,
    )


def cast(client: Client, data_dir: Path) -> Cast:
    """admin registers alice (human) and bot (agent); alice grants bot repo:acme/*."""
    admin = Actor(client, IdentityKey.load(data_dir / "admin.key"))
    alice_key, bot_key = IdentityKey.generate("alice"), IdentityKey.generate("bot")
    admin.register("alice", pb.HUMAN, alice_key.public_key, owner="admin")
    admin.register("bot", pb.AGENT, bot_key.public_key, owner="alice")
    alice, bot = Actor(client, alice_key), Actor(client, bot_key)
    grant = alice.grant(
        "bot",
        tools=["github.*"],
        resources=["repo:acme/*"],
        access=[pb.CREATE, pb.UPDATE],
        not_after_ms=FAR_FUTURE_MS,
        ticket="CHG-1",
    )
    return Cast(admin, alice, bot, grant)


def pull_request(agent: Actor, grant_id: str, n: int, **kwargs: Any) -> None:
    """One in-scope action, INTENT and OUTCOME."""
    params = {"repo": "acme/web", "title": f"change {n}"}
    with agent.action(
        "github.create_pull_request",
        "repo:acme/web",
        pb.CREATE,
        params,
        grant_ids=[grant_id],
        **kwargs,
    ) as act:
        act.result = {"pr": n}
        act.effect_ref = f"commit:{n:040x}"


@dataclass
class CleanLog:
    server: ServerProcess
    client: Client
    checkpoint: Verified
    entries: list[RecordedEntry]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CleanLog]:
    """A log with nothing to find: identities, a grant and its attenuated delegation to a
    sub-agent, an approval bound to the parameters of the action it approves, and actions in
    scope by the agent and the sub-agent."""
    server = ServerProcess(tmp_path_factory.mktemp("audit") / "log", entry_format="statements")
    server.start()
    client = connect(server)
    try:
        c = cast(client, server.data_dir)
        sub_key = IdentityKey.generate("sub")
        c.admin.register("sub", pb.AGENT, sub_key.public_key, owner="alice")
        sub = Actor(client, sub_key)
        delegated = c.bot.grant(
            "sub",
            tools=["github.create_pull_request"],
            resources=["repo:acme/web"],
            access=[pb.CREATE],
            not_after_ms=FAR_FUTURE_MS,
            parent_grant_id=c.grant.statement_id,
        )
        action_id = uuid7()
        params = {"repo": "acme/web", "title": "change 0"}
        approval = c.alice.approve(action_id, params, agent_id="bot", ticket="CHG-2")
        pull_request(
            c.bot,
            c.grant.statement_id,
            0,
            action_id=action_id,
            approval_id=approval.statement_id,
            decision=pb.ALLOW_IF_APPROVED,
        )
        pull_request(sub, delegated.statement_id, 1)
        for n in range(2, 6):
            pull_request(c.bot, c.grant.statement_id, n)
        checkpoint = client.checkpoint()
        entries = [
            RecordedEntry(e.index, e.data, e.verdict, e.verdict_reason, e.admitted_ms)
            for e in client.entries(0, checkpoint.checkpoint.size)
        ]
        yield CleanLog(server, client, checkpoint, entries)
    finally:
        client.close()
        server.kill()


def comparable(report: Report) -> dict[str, Any]:
    """A report without what depends on how it was run (timing, where it resumed)."""
    data = report.to_json()
    for key in ("elapsed_s", "rate", "resumed_from"):
        del data[key]
    return data


def fake_checkpoint(leaves: list[bytes], root: bytes | None = None) -> Verified:
    """A checkpoint of the leaves (or claiming root), signed by a fresh log key."""
    signer, verifier = note.generate_key("example.com/fake")
    root = root if root is not None else hashing.root_hash(hashing.leaf_hashes(leaves))
    text = note.sign(Checkpoint("example.com/fake", len(leaves), root).format(), signer)
    return open_checkpoint(text, TrustPolicy(verifier))


def of_kind(report: Report, kind: str) -> list[auditor.Finding]:
    return [f for f in report.findings if f.kind == kind]


def source_of(entries: list[RecordedEntry]) -> auditor.EntrySource:
    def source(start: int, end: int) -> list[RecordedEntry]:
        return entries[start:end]

    return source


# ---------------------------------------------------------------------------------------------
# Clean logs.
# ---------------------------------------------------------------------------------------------


def test_clean_log_audits_clean(clean: CleanLog) -> None:
    seen: list[Progress] = []
    report = audit(clean.client, progress=seen.append)
    size = clean.checkpoint.checkpoint.size
    assert report.ok and report.root_ok, report.text()
    assert report.findings == [] and report.finding_counts == {}
    assert (report.size, report.entries, report.root) == (
        size,
        size,
        clean.checkpoint.checkpoint.root_hash,
    )
    # genesis + alice, bot, sub; the grant and its delegation; one approval; 6 actions.
    assert report.counts == {
        "identity": 4,
        "grant": 2,
        "grant_revocation": 0,
        "refusal": 0,
        "approval": 1,
        "intent": 6,
        "outcome": 6,
        "in_scope": 12,
        "out_of_scope": 0,
        "no_grant": 0,
    }
    kinds = ("identity", "grant", "approval", "intent", "outcome")
    assert sum(report.counts[k] for k in kinds) == size
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] and data["root"] == clean.checkpoint.checkpoint.root_hash.hex()
    assert report.text().endswith("result: OK")
    # Progress: called, monotonic, ending at the checkpoint's size with nothing left.
    assert seen and seen[-1].done == seen[-1].total == size and seen[-1].eta in (0.0, None)
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_workers_reach_the_same_report(clean: CleanLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes (small chunks: keys registered in one chunk sign the next, prepared by
    the other worker) and a single process give the same report."""
    monkeypatch.setattr(auditor, "CHUNK", 3)
    verified_here: list[str] = []
    verify = ingest._verify

    def counted(signed: pb.SignedStatement, public_key: bytes) -> None:
        verified_here.append(signed.key_id)
        verify(signed, public_key)

    monkeypatch.setattr(ingest, "_verify", counted)
    source = source_of(clean.entries)
    inline = audit_entries(source, clean.checkpoint, workers=0)
    assert inline.ok, inline.text()
    assert len(verified_here) == len(clean.entries)  # one process: every signature here
    verified_here.clear()
    pooled = audit_entries(source, clean.checkpoint, workers=2)
    assert comparable(pooled) == comparable(inline)
    assert verified_here == []  # every signature verified by a worker, none again here


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_reaches_the_same_report(
    clean: CleanLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(auditor, "CHUNK", 3)
    whole = audit(clean.client, workers=workers)
    position = tmp_path / "audit.pos"

    class Interrupted(Exception):
        pass

    def stop_after_three(progress: Progress) -> None:
        if progress.done >= 9:
            raise Interrupted

    with pytest.raises(Interrupted):
        audit(
            clean.client,
            resume=position,
            progress=stop_after_three,
            save_every=0,
            workers=workers,
        )
    resumed = audit(clean.client, resume=position, workers=workers)
    assert resumed.resumed_from == 9
    assert comparable(resumed) == comparable(whole)
    again = audit(clean.client, resume=position)  # a finished position: the same report
    assert again.resumed_from == whole.size
    assert comparable(again) == comparable(whole)


def test_position_file_is_checked(clean: CleanLog, tmp_path: Path) -> None:
    position = tmp_path / "audit.pos"
    source = source_of(clean.entries)
    audit_entries(source, clean.checkpoint, resume=position)
    other = fake_checkpoint([e.data for e in clean.entries])
    with pytest.raises(auditor.PositionError, match=r"is an audit of example\.com/test, not"):
        audit_entries(source, other, resume=position)
    raw = bytearray(position.read_bytes())
    raw[len(raw) // 2] ^= 1
    position.write_bytes(bytes(raw))
    with pytest.raises(auditor.PositionError, match="damaged"):
        audit_entries(source, clean.checkpoint, resume=position)
    position.write_bytes(b"something else")
    with pytest.raises(auditor.PositionError, match="not an affidavit audit position"):
        audit(clean.client, resume=position)


# ---------------------------------------------------------------------------------------------
# What a dishonest log would serve (a fake source: an honest server cannot produce these).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_root_mismatch(clean: CleanLog, workers: int) -> None:
    """In one process and with workers (which hash the leaves there)."""
    leaves = [e.data for e in clean.entries]
    wrong = fake_checkpoint(leaves, root=hashing.leaf_hash(b"another history"))
    report = audit_entries(source_of(clean.entries), wrong, workers=workers)
    assert report.finding_counts == {"root-mismatch": 1}
    (finding,) = report.findings
    assert (finding.index, finding.severity) == (None, "error")
    assert not report.ok and not report.root_ok
    assert "integrity" in report.text()


@pytest.mark.parametrize("workers", [0, 2])
def test_statement_the_rules_refuse(clean: CleanLog, workers: int) -> None:
    """A log that accepted a statement whose signature does not verify."""
    entries = list(clean.entries)
    last = entries[-1]
    signed = pb.SignedStatement.FromString(last.data)
    signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    entries[-1] = RecordedEntry(
        last.index, signed.SerializeToString(), last.verdict, last.verdict_reason
    )
    checkpoint = fake_checkpoint([e.data for e in entries])
    report = audit_entries(source_of(entries), checkpoint, workers=workers)
    assert report.root_ok
    (first,) = of_kind(report, "invalid-statement")
    assert (first.index, first.kind, first.severity) == (last.index, "invalid-statement", "error")
    assert "signature does not verify" in first.message
    # The refused OUTCOME leaves its INTENT open.
    assert report.finding_counts == {"invalid-statement": 1, "missing-outcome": 1}


def test_missing_and_misplaced_entries(clean: CleanLog) -> None:
    cp = clean.checkpoint
    short = audit_entries(source_of(clean.entries[:-1]), cp)  # the last OUTCOME is missing
    assert short.finding_counts == {"entries-mismatch": 1, "missing-outcome": 1}
    assert [f.index for f in of_kind(short, "entries-mismatch")] == [len(clean.entries) - 1]
    swapped = list(clean.entries)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    report = audit_entries(source_of(swapped), cp)
    assert [f.index for f in of_kind(report, "entries-mismatch")] == [4]
    assert not report.ok


def test_findings_beyond_the_limit_are_counted(clean: CleanLog) -> None:
    entries = [
        RecordedEntry(e.index, e.data, pb.NO_GRANT, "no-grant", e.admitted_ms)
        for e in clean.entries
    ]
    report = audit_entries(source_of(entries), clean.checkpoint, max_findings=5)
    assert report.finding_counts == {"verdict-mismatch": len(entries)}
    assert len(report.findings) == 5 and report.findings_not_listed == len(entries) - 5


# ---------------------------------------------------------------------------------------------
# Recorded violations, and a verdict altered in the server's store.
# ---------------------------------------------------------------------------------------------


def test_violations_then_tampered_verdict(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "log", entry_format="statements").start()
    try:
        with connect(server) as client:
            c = cast(client, server.data_dir)
            grant_id = c.grant.statement_id
            pull_request(c.bot, grant_id, 1)
            with c.bot.action(
                "github.delete_repository",
                "repo:other/x",
                pb.DELETE,
                {},
                grant_ids=[grant_id],
                enforce=False,  # observe-only: the violation runs and is recorded
            ) as outside:
                pass
            with c.bot.action(
                "shell.exec", "host:db", pb.EXECUTE, {"cmd": "ls"}, enforce=False
            ) as no_grant:
                pass
            with c.bot.action(
                "github.merge",
                "repo:acme/web",
                pb.UPDATE,
                {},
                grant_ids=[grant_id],
                decision=pb.DENY,
            ) as denied:
                pass  # the policy said no, and it ran anyway: the OUTCOME is the violation
            # An INTENT (under no grant) whose OUTCOME never comes.
            pending = c.bot.action(
                "github.comment", "repo:acme/web", pb.UPDATE, {"n": 1}, enforce=False
            )
            pending.__enter__()
            report = audit(client)
        assert outside.intent_recorded and no_grant.intent_recorded and denied.outcome_recorded
        assert pending.intent_recorded
        at = outside.intent_recorded.receipt.index
        found = {(f.kind, f.index) for f in report.findings}
        assert found == {
            ("out-of-scope-action", at),
            ("no-grant-action", no_grant.intent_recorded.receipt.index),
            ("no-grant-action", pending.intent_recorded.receipt.index),
            ("out-of-scope-action", denied.outcome_recorded.receipt.index),
            ("missing-outcome", pending.intent_recorded.receipt.index),
        }
        assert not report.ok and report.severity_counts() == {
            "error": 0,
            "violation": 4,
            "info": 1,
        }
        assert "executed-despite-deny" in str(report.to_json())

        # The operator hides the violation: the stored verdict of its INTENT becomes IN_SCOPE.
        assert server.stop() == 0
        db = plyvel.DB(str(server.data_dir / "db"))
        key = b"s/v/" + at.to_bytes(8, "big")
        record = json.loads(db.get(key))
        assert record["verdict"] == pb.OUT_OF_SCOPE
        forged = {**record, "verdict": pb.IN_SCOPE, "reason": "", "grant_id": grant_id}
        db.put(key, json.dumps(forged).encode())
        db.close()
        server.start()
        with connect(server) as client:
            served = next(iter(client.entries(at, at + 1)))
            assert served.verdict == pb.IN_SCOPE  # the log now claims it was in scope
            tampered = audit(client)
        mismatch = [f for f in tampered.findings if f.kind == "verdict-mismatch"]
        assert [(f.index, f.severity) for f in mismatch] == [(at, "error")]
        assert "recorded IN_SCOPE" in mismatch[0].message
        assert "OUT_OF_SCOPE (resource-not-granted)" in mismatch[0].message
        # The recomputed verdict still reports the violation itself.
        assert ("out-of-scope-action", at) in {(f.kind, f.index) for f in tampered.findings}
        assert "integrity" in tampered.text()
    finally:
        server.kill()
