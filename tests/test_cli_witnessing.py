"""`affidavit verify`, `witness`, `export`, `verify-bundle` and `who-authorised` against real
servers (tests/cliproc.py's shared log and story): a witness quorum, evidence checked offline
with public keys only and failing when tampered with, who authorised an action, and a witness
refusing a fork.

Last (this module sorts last of tests/test_cli_*.py, so pytest runs it after them): every
command was run, and every --json parsed, across the CLI modules.
"""

from __future__ import annotations

import base64
import inspect
import json
import shutil
import sys
from pathlib import Path

import pytest
from affidavit.merkle import keys
from affidavit.proto import affidavit_pb2 as pb

from tests import (
    test_cli_actions,
    test_cli_auditing,
    test_cli_authority,
    test_cli_local,
    test_cli_reading,
    test_cli_settings,
)
from tests.cliproc import (
    EXERCISED,
    EXIT_NOT_AUTHORISED,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
    EXIT_VERIFY,
    JSON_PARSED,
    ORIGIN,
    Cli,
    Log,
    Story,
    all_commands,
    closed_port,
    leaf_commands,
    log,
    story,
)
from tests.serverproc import RPC_TIMEOUT, ServerFactory

__all__ = ["log", "story"]  # fixtures, used by name


# Witnessing, evidence, who authorised.


def test_verify_witness_export_and_verify_bundle(log: Log, story: Story) -> None:
    cli, work = log.cli, log.work
    quorum = ("--witness-key", "@witness-1.pub", "--quorum", "1")
    v = cli.json("verify")
    assert v["origin"] == ORIGIN and v["size"] == log.server.checkpoint().size
    assert v["witnesses"] == [] and v["previously_trusted_size"] is not None
    line = cli.fails(EXIT_VERIFY, "verify", *quorum)
    assert "VERIFICATION FAILED" in line and "no cosigned checkpoint" in line
    assert "quorum 1 is more than the 0 witnesses" in cli.fails(
        EXIT_USAGE, "verify", "--quorum", "1"
    )

    # The witness cosigns; then the quorum is met (settings from the environment too).
    r = cli.ok("witness", "--witness-key-file", "witness-1.key", "--once", "--json")
    [event] = [json.loads(line) for line in r.stdout.splitlines()]
    assert (event["outcome"], event["origin"], event["previous_size"]) == ("cosigned", ORIGIN, None)
    assert "TRUST ON FIRST USE" in r.stderr
    cosigned = event["size"]
    assert cosigned == log.server.checkpoint().cosigned_size
    v = cli.json("verify", *quorum)
    assert v["witnesses"] == ["witness-1"] and v["size"] == cosigned
    env = {"AFFIDAVIT_WITNESS_KEYS": "@witness-1.pub", "AFFIDAVIT_QUORUM": "1"}
    assert cli.json("verify", env=env)["witnesses"] == ["witness-1"]
    r = cli("witness", "--witness-key-file", "bot.key", "--once")
    assert r.returncode == 2 and "not a witness (cosignature/v1) key" in r.stderr

    # Export the evidence, and check it offline with public keys only (no server at all).
    data = cli.json("export", story.action_id, "--out", "evidence.json", *quorum)
    assert data["in_scope"] is True and data["witnesses"] == ["witness-1"]
    assert data["checkpoint_size"] == cosigned
    offline = {"AFFIDAVIT_SERVER": f"127.0.0.1:{closed_port()}", "AFFIDAVIT_TOKEN": None}
    report = cli.json("verify-bundle", "evidence.json", *quorum, env=offline)
    assert (report["action_id"], report["agent"], report["owner"]) == (
        story.action_id,
        "bot",
        "alice",
    )
    assert [(g["grantor"], g["ticket"]) for g in report["authority"]] == [("alice", "CHG-1042")]
    assert [(a["approver"], a["decision"]) for a in report["approvals"]] == [("alice", "APPROVE")]
    assert report["outcome"]["outcome"]["effect_ref"] == "commit:3f2a9c1e"
    human = cli.ok("verify-bundle", "evidence.json", *quorum, env=offline).stdout
    assert "IN SCOPE" in human and "alice" in human and "CHG-1042" in human

    # Tampering with the file, or the wrong keys, fails verification (exit 1), in one line.
    text = (work / "evidence.json").read_text()
    bundle = json.loads(text)
    leaf = bytearray(base64.b64decode(bundle["entries"][-1]["leaf"]))
    leaf[-1] ^= 1
    tampered = {
        "leaf": text.replace(bundle["entries"][-1]["leaf"], base64.b64encode(leaf).decode()),
        "index": text.replace(
            f'"index": {story.intent_index}', f'"index": {story.intent_index + 1}', 1
        ),
        "checkpoint": text.replace(f"\\n{cosigned}\\n", f"\\n{cosigned + 1}\\n", 1),
        "truncated": text[: len(text) // 2],
    }
    for what, changed in tampered.items():
        assert changed != text, what
        (work / f"tampered-{what}.json").write_text(changed)
        line = cli.fails(
            EXIT_VERIFY, "verify-bundle", f"tampered-{what}.json", *quorum, env=offline
        )
        assert line.startswith("affidavit: VERIFICATION FAILED: "), (what, line)
    _, other_log = keys.generate_key(ORIGIN)
    (work / "other-log.pub").write_text(other_log)
    line = cli.fails(
        EXIT_VERIFY, "verify-bundle", "evidence.json", "--log-key", "@other-log.pub", env=offline
    )
    assert "does not verify" in line
    _, other_witness = keys.generate_key("witness-2", keys.ALG_COSIGNATURE_V1)
    line = cli.fails(
        EXIT_VERIFY,
        "verify-bundle",
        "evidence.json",
        "--witness-key",
        other_witness,
        "--quorum",
        "1",
        env=offline,
    )
    assert "the policy needs 1" in line
    assert "--log-key" in cli.fails(
        EXIT_USAGE, "verify-bundle", "evidence.json", env={"AFFIDAVIT_LOG_KEY": None}
    )
    assert "does not exist" in cli.fails(EXIT_USAGE, "verify-bundle", "missing.json")

    # An out-of-scope action exports (it is evidence too), and its bundle says so: exit 5,
    # as who-authorised does for the same action.
    stray = cli.json("export", "--index", str(story.stray_index), "--out", "stray.json")
    assert stray["in_scope"] is False and stray["verdict"] == "OUT_OF_SCOPE"
    r = cli("verify-bundle", "stray.json", env=offline)
    assert r.returncode == EXIT_NOT_AUTHORISED and r.stderr == ""
    assert "NOT AUTHORISED (OUT_OF_SCOPE)" in r.stdout
    assert "give an ACTION_ID or --index" in cli.fails(EXIT_USAGE, "export", "--out", "x.json")
    line = cli.fails(EXIT_NOT_FOUND, "export", "nope", "--out", "x.json")
    assert "no INTENT of action nope" in line


def test_who_authorised(log: Log, story: Story) -> None:
    cli = log.cli
    human = cli.ok("who-authorised", story.action_id).stdout
    assert "IN SCOPE" in human and "'alice' (human)" in human and "CHG-1042" in human
    assert "commit:3f2a9c1e" in human
    data = cli.json("who-authorised", "--index", str(story.intent_index + 1))  # by its OUTCOME
    assert data["action_id"] == story.action_id and data["approvals"][0]["approver"] == "alice"
    assert data["authority"][0]["grant_id"] == log.grant_id
    stray = cli.json("who-authorised", story.stray_action_id, code=EXIT_NOT_AUTHORISED)
    assert stray["in_scope"] is False and stray["verdict_reason"] == "tool-not-granted"
    assert "NOT AUTHORISED" in cli("who-authorised", story.stray_action_id).stdout
    assert "give an ACTION_ID or --index" in cli.fails(EXIT_USAGE, "who-authorised")
    assert "identity event, not an agent action" in cli.fails(
        EXIT_NOT_FOUND, "who-authorised", "--index", "0"
    )
    line = cli.fails(EXIT_NOT_FOUND, "who-authorised", "0197aaaa-0000-7000-8000-000000000000")
    assert "no INTENT of action" in line
    line = cli.fails(EXIT_REFUSED, "who-authorised", story.action_id, env={"AFFIDAVIT_TOKEN": None})
    assert "UNAUTHENTICATED" in line


def test_witness_refuses_a_fork(tmp_path: Path) -> None:
    factory = ServerFactory(tmp_path / "logs")
    try:
        w_signer, w_verifier = keys.generate_key("witness-f", keys.ALG_COSIGNATURE_V1)
        (tmp_path / "w.key").write_text(w_signer + "\n")
        a = factory("--witness-key", w_verifier, origin="example.com/forked")
        for entry in (b"one", b"two"):
            a.public_stub.Append(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT)
        assert a.stop() == 0
        shutil.copytree(a.data_dir, tmp_path / "copy")
        b = factory(
            "--witness-key", w_verifier, origin="example.com/forked", data_dir=tmp_path / "copy"
        )
        a.start()
        a.public_stub.Append(pb.AppendRequest(entry=b"three on a"), timeout=RPC_TIMEOUT)
        b.public_stub.Append(pb.AppendRequest(entry=b"three on b"), timeout=RPC_TIMEOUT)

        cli = Cli(tmp_path)
        witness = ("witness", "--witness-key-file", "w.key", "--once", "--state-dir", "state")
        cli.ok(*witness, "--server", a.address, "--log-key", a.verifier_key)
        assert a.checkpoint().cosigned_size == 3
        r = cli(*witness, "--log", f"{b.address}=@{b.data_dir / 'log.pub'}", "--json")
        assert r.returncode == EXIT_VERIFY, r.stderr
        [event] = [json.loads(line) for line in r.stdout.splitlines()]
        assert (event["outcome"], event["size"], event["previous_size"]) == ("refused", 3, 3)
        assert "NOT cosigning" in r.stderr
        [evidence] = (tmp_path / "state" / "evidence").glob("*.json")
        assert event["evidence"] == str(Path("state", "evidence", evidence.name))
        proof = json.loads(evidence.read_text())
        assert proof["format"] == "affidavit/witness-evidence/v1"
        assert b.checkpoint().cosigned_size == 0  # never cosigned
        # The log stays blocked for this witness, whichever server it asks.
        r = cli(*witness, "--server", a.address, "--log-key", a.verifier_key)
        assert r.returncode == EXIT_VERIFY and "blocked" in r.stderr
        assert "ADDRESS=LOGKEY" in cli.fails(EXIT_USAGE, *witness, "--log", "no-equals-sign")
    finally:
        factory.cleanup()


ADAPTER_SERVERS = {"mcp-proxy", "otlp-bridge"}
"""Long-running servers: they print no result, so their --json (shared connection options)
has nothing to format."""


# Last: every command was run, and every --json parsed.

CLI_MODULES = (
    test_cli_actions,
    test_cli_auditing,
    test_cli_authority,
    test_cli_local,
    test_cli_reading,
    test_cli_settings,
    sys.modules[__name__],
)
"""The modules whose tests, together, run every command (tests/test_cli_answers.py runs more)."""


def test_every_command_and_its_json_were_exercised(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    before = items[: items.index(request.node)]
    paths = {Path(str(m.__file__)) for m in CLI_MODULES}
    ran = {(item.path, item.name) for item in before if item.path in paths}
    defined = {
        (Path(str(m.__file__)), name)
        for m in CLI_MODULES
        for name, value in vars(m).items()
        if name.startswith("test_") and inspect.isfunction(value) and name != request.node.name
    }
    if ran != defined:
        pytest.skip("only part of the CLI modules ran before this test")
    assert leaf_commands() - EXERCISED == set()
    with_json = {n for n, c in all_commands().items() if any(p.name == "as_json" for p in c.params)}
    assert with_json - JSON_PARSED - ADAPTER_SERVERS == set()
