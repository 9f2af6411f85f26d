"""`affidavit approve` and `append` against a real server (tests/cliproc.py's shared log and
story): approvals bound to parameters, INTENT and OUTCOME as the log holds them, the mistakes
they refuse, and secrets redacted from the parameters or refused before anything is sent.
"""

from __future__ import annotations

import json

from tests.cliproc import (
    EXIT_NOT_AUTHORISED,
    EXIT_REFUSED,
    EXIT_USAGE,
    GITHUB_TOKEN,
    Log,
    Story,
    log,
    sh,
    story,
)

__all__ = ["log", "story"]  # fixtures, used by name


def test_approve_and_append(log: Log, story: Story) -> None:
    cli = log.cli
    # The story's statements, as the log holds them.
    [approval, intent, outcome] = cli.json("get", "--action-id", story.action_id)
    assert approval["statement"]["header"]["statement_id"] == story.approval_id
    a = approval["statement"]["approval"]
    assert (a["action_id"], a["ticket"], a["decision"]) == (story.action_id, "CHG-1042", "APPROVE")
    i = intent["statement"]["action"]
    assert intent["index"] == story.intent_index and intent["verdict"] == "IN_SCOPE"
    assert (i["phase"], i["approval_id"], i["grant_ids"]) == (
        "INTENT",
        story.approval_id,
        [log.grant_id],
    )
    assert i["operation"]["parameters_digest"] == a["parameters_digest"]
    assert i["correlation"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    o = outcome["statement"]["action"]
    assert outcome["statement"]["header"]["statement_id"] == story.outcome_id
    assert (o["phase"], o["outcome"]["status"], o["outcome"]["effect_ref"]) == (
        "OUTCOME",
        "OK",
        "commit:3f2a9c1e",
    )
    assert o["intent_leaf_hash"] == intent["leaf_hash"]  # hashes: hex everywhere

    # The INTENT is kept until its OUTCOME is recorded, then gone: a second OUTCOME (its
    # INTENT fetched from the log) is refused by the log.
    line = cli.fails(EXIT_REFUSED, "append", "--key", "bot.key", "--outcome", story.action_id)
    assert "already has an OUTCOME" in line
    line = cli.fails(
        EXIT_USAGE,
        "append",
        "--key",
        "bot.key",
        "--outcome",
        story.action_id,
        env={"AFFIDAVIT_TOKEN": None},
    )
    assert "was not recorded from here" in line and "AFFIDAVIT_TOKEN" in line
    line = cli.fails(EXIT_USAGE, "append", "--key", "bot.key", "--tool", "github.x")
    assert "an INTENT needs --tool, --resource and --access" in line

    # Approval parameters from standard input; a rejection; malformed JSON.
    action_id = cli.ok("id").stdout.strip()
    rejected = cli.json(
        *sh(f"approve {action_id} --agent bot --params - --decision reject --key alice.key"),
        stdin='{"repo": "acme/web"}',
    )
    r = cli.json("get", "--statement-id", rejected["approval_id"])["statement"]["approval"]
    assert r["decision"] == "REJECT"
    line = cli.fails(
        EXIT_USAGE, "approve", "x", "--agent", "bot", "--params", "{bad", "--key", "alice.key"
    )
    assert "--params is not valid JSON" in line and "line 1, column 2" in line
    (log.work / "bad.json").write_text('{"a": 1,}')
    line = cli.fails(
        EXIT_USAGE, "approve", "x", "--agent", "bot", "--params", "@bad.json", "--key", "alice.key"
    )
    assert "--params (from bad.json) is not valid JSON" in line
    # A key file of the wrong kind says which file, and what kind of key was expected.
    for wrong, what in [
        ("alice.pub", "is a public key"),
        ("witness-1.key", "is a witness key"),
        ("log.pub", "is a verifier key"),
        ("pr.json", "is not a key"),
    ]:
        line = cli.fails(
            EXIT_USAGE, "approve", "x", "--agent", "bot", "--params", "{}", "--key", wrong
        )
        assert f"--key {wrong} {what}" in line and "affidavit keygen ID" in line, line
    # Humans approve; agents do not.
    line = cli.fails(
        EXIT_REFUSED,
        "approve",
        story.action_id,
        "--agent",
        "bot",
        "--params",
        "@pr.json",
        "--key",
        "bot.key",
    )
    assert "PERMISSION_DENIED" in line


def test_secrets_are_redacted_or_refused(log: Log) -> None:
    cli = log.cli
    before = log.server.checkpoint().size
    params = json.dumps({"repo": "acme/web", "token": GITHUB_TOKEN})
    act = ("append", "--key", "bot.key", "--tool", "github.get_file", "--access", "read")
    r = cli(*act, "--resource", "repo:acme/web", "--params", params, "--json")
    assert r.returncode == EXIT_NOT_AUTHORISED, r.stderr  # bot has no grant for reads here
    recorded = json.loads(r.stdout)
    entry = cli.ok("get", str(recorded["index"]))
    assert GITHUB_TOKEN not in r.stdout + r.stderr + entry.stdout
    op = json.loads(entry.stdout)["statement"]["action"]["operation"]
    assert "«redacted:github-token:" in op["parameters_json"]
    assert [x["path"] for x in op["redactions"]] == ["/token"]
    # A secret where nothing is redacted is refused here, before it is sent.
    line = cli.fails(EXIT_USAGE, *act, "--resource", f"repo:acme/web?t={GITHUB_TOKEN}")
    assert "not sent" in line and "before sending" in line and "refused by the log" not in line
    assert "resource" in line and GITHUB_TOKEN not in line
    assert log.server.checkpoint().size == before + 1
