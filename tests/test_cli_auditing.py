"""`affidavit audit` (and `migrate`) against real servers: the shared log's violations reported
(tests/cliproc.py), a verdict changed in the database caught, and a log moved to PostgreSQL and
object storage auditing clean.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import plyvel
from affidavit.client.actor import Action, Actor
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import keys
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.signing import IdentityKey

from tests import backends
from tests.cliproc import (
    EXIT_REFUSED,
    EXIT_USAGE,
    EXIT_VERIFY,
    PR,
    Cli,
    Log,
    Story,
    log,
    story,
)
from tests.serverproc import RPC_TIMEOUT, ServerProcess

__all__ = ["log", "story"]  # fixtures, used by name


scaleout = backends.scaleout

# Auditing.


def test_audit_reports_violations(log: Log, story: Story, tmp_path: Path) -> None:
    cli = log.cli
    r = cli("audit", "--workers", "0", "--json", "--resume", str(tmp_path / "audit.pos"))
    assert r.returncode == EXIT_VERIFY, r.stderr
    report = json.loads(r.stdout)
    found = {(f["kind"], f["index"]) for f in report["findings"]}
    assert ("out-of-scope-action", story.stray_index) in found
    assert (tmp_path / "audit.pos").exists()
    r = cli("audit")  # default workers; human report
    assert r.returncode == EXIT_VERIFY and "out-of-scope-action" in r.stdout
    assert re.search(r"audited \d+/\d+ entries", r.stderr)
    line = cli.fails(EXIT_REFUSED, "audit", "--workers", "0", env={"AFFIDAVIT_TOKEN": None})
    assert "UNAUTHENTICATED" in line
    (tmp_path / "garbage.pos").write_text("garbage")
    line = cli.fails(EXIT_USAGE, "audit", "--resume", str(tmp_path / "garbage.pos"))
    assert "not an affidavit audit position file" in line


def record_a_pull_request(server: ServerProcess) -> Action:
    """On a fresh statements log: alice (human) grants bot (agent) github.* on repo:acme/*, and
    bot records one pull request, INTENT and OUTCOME (effect commit:1)."""
    with Client(server.address, TrustPolicy(server.verifier_key), timeout=RPC_TIMEOUT) as client:
        admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
        alice, bot = IdentityKey.generate("alice"), IdentityKey.generate("bot")
        admin.register("alice", pb.HUMAN, alice.public_key)
        admin.register("bot", pb.AGENT, bot.public_key, owner="alice")
        grant = Actor(client, alice).grant(
            "bot", tools=["github.*"], resources=["repo:acme/*"], access=[pb.CREATE]
        )
        with Actor(client, bot).action(
            "github.create_pull_request",
            "repo:acme/web",
            pb.CREATE,
            PR,
            grant_ids=[grant.statement_id],
        ) as act:
            act.effect_ref = "commit:1"
    return act


def test_audit_catches_a_verdict_changed_in_the_database(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "srv", origin="example.com/audited", entry_format="statements"
    )
    try:
        server.start()
        act = record_a_pull_request(server)
        assert act.intent_recorded is not None
        at = act.intent_recorded.receipt.index
        cli = Cli(
            tmp_path, {"AFFIDAVIT_SERVER": server.address, "AFFIDAVIT_LOG_KEY": server.verifier_key}
        )
        token = ("--token", server.auditor_token)
        clean = cli.json("audit", "--workers", "0", *token)
        assert clean["findings"] == [] and clean["checkpoint"]["size"] == at + 2

        # The operator rewrites the recorded verdict: in scope becomes out of scope.
        assert server.stop() == 0
        db = plyvel.DB(str(server.data_dir / "db"))
        key = b"s/v/" + at.to_bytes(8, "big")
        record = json.loads(db.get(key))
        assert record["verdict"] == pb.IN_SCOPE
        db.put(
            key,
            json.dumps(
                {**record, "verdict": pb.OUT_OF_SCOPE, "reason": "tool-not-granted"}
            ).encode(),
        )
        db.close()
        server.start()
        cli.env["AFFIDAVIT_SERVER"] = server.address
        r = cli("audit", "--workers", "0", *token)
        assert r.returncode == EXIT_VERIFY, r.stderr
        assert "verdict-mismatch" in r.stdout and "integrity" in r.stdout
        assert cli.json("get", str(at), *token)["verdict"] == "OUT_OF_SCOPE"  # as now served
    finally:
        server.kill()


def test_migrate_to_postgres_and_object_storage_then_audit(
    tmp_path: Path, scaleout: backends.Scaleout
) -> None:
    """A LevelDB log with statements, a witness cosignature and several batches moves to
    PostgreSQL + S3: the same checkpoint, served from the new storage, audits clean."""
    w_signer, w_verifier = keys.generate_key("witness-m", keys.ALG_COSIGNATURE_V1)
    (tmp_path / "w.key").write_text(w_signer + "\n")
    server = ServerProcess(
        tmp_path / "srv",
        "--witness-key",
        w_verifier,
        origin="example.com/moved",
        entry_format="statements",
    )
    try:
        server.start()
        record_a_pull_request(server)
        cli = Cli(tmp_path, scaleout.env())
        cli.ok(
            "witness",
            "--witness-key-file",
            "w.key",
            "--once",
            "--state-dir",
            "state",
            "--server",
            server.address,
            "--log-key",
            server.verifier_key,
        )
        before = server.checkpoint()
        assert before.cosigned_size == before.size
        assert server.stop() == 0

        to = ("--to", scaleout.storage_url, "--objects", scaleout.objects_url)
        r = cli.ok("migrate", "--from", str(server.data_dir), *to)
        assert f"migrated {before.size} entries" in r.stdout, r.stdout
        assert "already holds a log" in cli.fails(
            EXIT_USAGE, "migrate", "--from", str(server.data_dir), *to
        )
        assert "no log" in cli.fails(EXIT_USAGE, "migrate", "--from", str(tmp_path), *to)

        moved = ServerProcess(
            server.data_dir,
            "--storage",
            scaleout.storage_url,
            "--objects",
            scaleout.objects_url,
            "--witness-key",
            w_verifier,
            origin=None,
            entry_format=None,
            env=scaleout.env(),
        )
        try:
            moved.start()
            now = moved.checkpoint()
            assert (now.note, now.cosigned_size) == (before.note, before.size)
            cli.env.update(
                {"AFFIDAVIT_SERVER": moved.address, "AFFIDAVIT_LOG_KEY": moved.verifier_key}
            )
            clean = cli.json("audit", "--workers", "0", "--token", moved.auditor_token)
            assert clean["findings"] == [] and clean["checkpoint"]["size"] == before.size
        finally:
            moved.kill()
    finally:
        server.kill()
