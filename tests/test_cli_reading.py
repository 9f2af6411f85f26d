"""`affidavit get`, `prove`, `verify-proof`, `tiles export`, `search`, `timeline`, `identity
history`, `session` and `export --format ocsf` against a real server (tests/cliproc.py's shared
log and story): the commands that read the log. Entries as verified, and refused when the proof
does not cover them; inclusion proofs (also from the tiles alone, and as c2sp tlog-proofs);
search filters, pages, tickets, effects and result digests; the investigation commands; and the
auditor token they need.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from affidavit.client.actor import Actor
from affidavit.client.cli import main
from affidavit.client.cli import options as cli_options
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.signing import IdentityKey
from click.testing import CliRunner

from affidavit import merkle
from tests.cliproc import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    EXIT_VERIFY,
    ORIGIN,
    UUID7,
    Log,
    Story,
    closed_port,
    log,
    sh,
    story,
    usage_error,
)

__all__ = ["log", "story"]  # fixtures, used by name


# Reading and proving.


def test_get(log: Log, story: Story) -> None:
    cli = log.cli
    entry = cli.json("get", str(story.intent_index))
    assert entry["index"] == story.intent_index
    assert entry["statement"]["action"]["action_id"] == story.action_id
    assert (entry["verdict"], entry["key_id"]) == (
        "IN_SCOPE",
        IdentityKey.load(log.work / "bot.key").key_id,
    )
    human = cli.ok("get", "--statement-id", story.approval_id).stdout
    assert story.action_id in human and "CHG-1042" in human
    assert "beyond the log" in cli.fails(EXIT_NOT_FOUND, "get", "100000")
    assert "no such statement" in cli.fails(EXIT_NOT_FOUND, "get", "--statement-id", "nope")
    assert "give an INDEX" in cli.fails(EXIT_USAGE, "get")
    # Reading entries needs the auditor token; from AFFIDAVIT_TOKEN=@file or --token.
    line = cli.fails(EXIT_REFUSED, "get", "0", env={"AFFIDAVIT_TOKEN": None})
    assert "UNAUTHENTICATED" in line and "auditor token" in line
    line = cli.fails(EXIT_REFUSED, "get", "0", "--token", "afv_wrong")
    assert "PERMISSION_DENIED" in line
    token = (log.work / "auditor.token").read_text().strip()
    assert cli.json("get", "0", "--token", token, env={"AFFIDAVIT_TOKEN": None})["index"] == 0


def test_get_refuses_an_entry_the_proof_does_not_cover(
    log: Log, story: Story, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log serving other bytes at an index (hashed consistently with themselves) than the
    leaf it proves there: `get` must not show them as verified."""
    forged = IdentityKey.generate("bot").sign(b"not what the log holds")

    class Lying(Client):
        def entries(self, start: int = 0, end: int = 0) -> Iterator[pb.Entry]:
            for e in super().entries(start, end):
                e.data, e.leaf_hash = forged, merkle.leaf_hash(forged)
                yield e

    monkeypatch.setattr(cli_options, "Client", Lying)
    args = [
        "get",
        str(story.intent_index),
        "--server",
        log.server.address,
        "--log-key",
        log.server.verifier_key,
        "--token",
        log.server.auditor_token,
        "--trust-dir",
        str(tmp_path / "trust"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_VERIFY, result.output
    assert "VERIFICATION FAILED" in result.output and "proves leaf" in result.output
    monkeypatch.undo()
    assert CliRunner().invoke(main, args).exit_code == EXIT_OK


def test_search(log: Log, story: Story) -> None:
    cli = log.cli
    found = cli.json("search", "--grantor", "alice")
    assert found["more"] is False and found["next_after"] is None
    hits = found["hits"]
    assert {h["index"] for h in hits} >= {story.intent_index, story.stray_index}
    # One encoding: integers are JSON numbers, hashes lowercase hex.
    assert all(isinstance(h["index"], int) and isinstance(h["client_time_ms"], int) for h in hits)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h["leaf_hash"]) for h in hits)
    out_of_scope = cli.json("search", "--verdict", "out-of-scope")["hits"]
    assert story.stray_index in {h["index"] for h in out_of_scope}
    assert story.intent_index not in {h["index"] for h in out_of_scope}
    either = cli.json("search", "--verdict", "out-of-scope", "--verdict", "in-scope")["hits"]
    assert {story.stray_index, story.intent_index} <= {h["index"] for h in either}
    human = cli.ok("search", "--action-id", story.action_id).stdout.splitlines()
    assert human[0].split() == [
        *("INDEX", "TIME", "(UTC)", "KIND", "ISSUER", "ACTION", "ID", "PHASE", "TOOL"),
        *("RESOURCE", "VERDICT"),
    ]
    assert len(human) == 4 and all(story.action_id in row for row in human[1:])
    intent_row = next(r for r in human if r.split()[0] == str(story.intent_index))
    for cell in ("INTENT", "github.create_pull_request", "repo:acme/web", "IN_SCOPE"):
        assert cell in intent_row
    assert cli.ok("search", "--tool", "no.such.tool").stdout.strip() == "no matches"
    window = ("--from", "2000-01-01", "--to", "2000-01-02")
    assert cli.json("search", "--actor", "bot", *window)["hits"] == []
    line = cli.fails(EXIT_USAGE, "search", "--from", "someday")
    assert "--from" in line and "'someday' is not a time" in line
    # Relative times: what bot did since yesterday includes the story.
    since = cli.json("search", "--actor", "bot", "--from", "yesterday")["hits"]
    assert story.intent_index in {h["index"] for h in since}
    assert cli.json("search", "--actor", "bot", "--from", "+1d")["hits"] == []
    assert "UNAUTHENTICATED" in cli.fails(
        EXIT_REFUSED, "search", "--actor", "bot", env={"AFFIDAVIT_TOKEN": None}
    )


def test_search_pages(log: Log, story: Story) -> None:
    """--limit pages through log order; each page says whether more exist and where to resume."""
    cli = log.cli
    everything = [h["index"] for h in cli.json("search", "--actor", "bot")["hits"]]
    assert len(everything) >= 3
    seen: list[int] = []
    after: list[str] = []
    while True:
        page = cli.json("search", "--actor", "bot", "--limit", "2", *after)
        seen += [h["index"] for h in page["hits"]]
        human = cli.ok("search", "--actor", "bot", "--limit", "2", *after).stdout.splitlines()
        if not page["more"]:
            assert not human[-1].startswith("more results exist")
            break
        assert page["next_after"] == page["hits"][-1]["index"]
        assert human[-1] == f"more results exist: repeat with --after {page['next_after']}"
        after = ["--after", str(page["next_after"])]
    assert seen == everything


def test_search_by_ticket_effect_and_result(log: Log, story: Story) -> None:
    cli = log.cli
    ticket = {h["index"]: h for h in cli.json("search", "--ticket", "CHG-1042")["hits"]}
    kinds = {h["kind"] for h in ticket.values()}
    assert kinds == {"grant", "approval", "action"}
    assert {story.intent_index, story.stray_index} <= set(ticket)  # actions under the grant
    [outcome] = cli.json("search", "--effect-ref", "commit:3f2a9c1e")["hits"]
    assert (outcome["action_id"], outcome["phase"]) == (story.action_id, "OUTCOME")
    assert outcome["statement_id"] == story.outcome_id
    # A result digest, recorded through the library (Action.result).
    with Client(log.server.address, TrustPolicy(log.server.verifier_key)) as client:
        bot = Actor(client, IdentityKey.load(log.work / "bot.key"))
        with bot.action(
            "github.get_repo", "repo:acme/api", pb.READ, {}, grant_ids=[log.grant_id]
        ) as act:
            act.result = {"stars": 3}
    assert act.outcome_recorded is not None
    digest = build.statement_of(act.outcome_recorded.leaf).action.outcome.result_digest
    [hit] = cli.json("search", "--result-digest", digest, "--result-digest", "0" * 64)["hits"]
    assert hit["index"] == act.outcome_recorded.receipt.index
    assert cli.json("search", "--ticket", "CHG-9999")["hits"] == []


def test_investigation_commands(log: Log, story: Story) -> None:
    """timeline, identity history, session open / close and export --format ocsf as a user runs
    them (their scenarios: tests/test_investigation.py, test_bundleset.py, test_ocsf.py)."""
    cli = log.cli
    tl = cli.json("timeline", "--actor", "bot")
    assert {story.intent_index, story.stray_index} <= {r["index"] for r in tl["statements"]}
    assert tl["findings"] == 0
    history = cli.json("identity", "history", "bot")
    assert history["owner"] == "alice" and history["keys"][0]["valid_until_index"] is None
    session = cli.json("session", "open", "--key", "bot.key", "--purpose", "CHG-1042")
    sid = session["session_id"]
    assert UUID7.match(sid)
    closed = cli.json("session", "close", sid, "--key", "bot.key")
    assert closed["statements_before_close"] == 1
    assert cli.json("timeline", "--session", sid)["sessions"][0]["complete"] is True
    lines = cli.ok("export", "--format", "ocsf", "--session", sid).stdout.splitlines()
    assert [json.loads(line)["api"]["operation"] for line in lines] == [
        "session.open",
        "session.close",
    ]


def test_prove(log: Log, story: Story) -> None:
    cli = log.cli
    p = cli.json("prove", str(story.intent_index))
    assert p["index"] == story.intent_index and p["tree_size"] > p["index"]
    merkle.verify_inclusion(
        bytes.fromhex(p["leaf_hash"]),
        p["index"],
        p["tree_size"],
        [bytes.fromhex(h) for h in p["proof"]],
        bytes.fromhex(p["root_hash"]),
    )
    assert note.open(p["checkpoint"], [log.server.verifier_key]).startswith(f"{ORIGIN}\n")
    by_hash = cli.json("prove", "--leaf-hash", p["leaf_hash"])
    assert by_hash["index"] == story.intent_index
    human = cli.ok("prove", "0").stdout
    assert "entry 0" in human and "verified" in human
    assert "not in the tree" in cli.fails(EXIT_NOT_FOUND, "prove", "100000")
    assert "leaf hash" in cli.fails(EXIT_NOT_FOUND, "prove", "--leaf-hash", "00" * 32)
    assert "give an INDEX or --leaf-hash" in usage_error("prove")
    assert "give an INDEX or --leaf-hash" in usage_error("prove", "1", "--leaf-hash", "00")
    assert "hex" in cli.fails(EXIT_USAGE, "prove", "--leaf-hash", "zz")


def test_tiles_and_tlog_proofs(log: Log, story: Story) -> None:
    cli, work = log.cli, log.work
    tiles = ("--tiles", log.server.http_url)
    offline = {"AFFIDAVIT_SERVER": f"127.0.0.1:{closed_port()}"}
    v = cli.json("verify", *tiles, env=offline)
    assert v["size"] == log.server.checkpoint().size
    p = cli.json("prove", str(story.intent_index), *tiles, env=offline)
    assert p["proof"] == cli.json("prove", str(story.intent_index))["proof"]
    text = cli.ok("prove", str(story.intent_index), "--format", "tlog-proof").stdout
    assert text.startswith(f"c2sp.org/tlog-proof@v1\nindex {story.intent_index}\n")
    (work / "intent.tlog-proof").write_text(text)
    (work / "intent.leaf").write_bytes(log.server.all_entries()[story.intent_index].data)
    checked = cli.json("verify-proof", "intent.tlog-proof", "--entry", "@intent.leaf", env=offline)
    assert checked["index"] == story.intent_index and checked["witnesses"] == []
    line = cli.fails(EXIT_VERIFY, "verify-proof", "intent.tlog-proof", "--entry", "other")
    assert "VERIFICATION FAILED" in line
    assert "not a tlog-proof" in cli.fails(
        EXIT_VERIFY, "verify-proof", "intent.leaf", "--entry", "@intent.leaf"
    )
    exported = cli.json("tiles", "export", "published", *tiles, "--entries")
    assert exported["size"] == v["size"] and exported["bundles"] == 1
    assert (work / "published" / "checkpoint").exists()
    r = cli("tiles", "export", "again", *tiles, "--entries", env={"AFFIDAVIT_TOKEN": None})
    assert r.returncode == EXIT_REFUSED and "auditor token" in r.stderr
    assert not (work / "again" / "checkpoint").exists()
    # The witness server refuses a key that is not a witness's, saying so.
    assert "not a witness (cosignature/v1) key" in cli.fails(
        EXIT_USAGE, *sh("witness serve --witness-key-file bot.key --log @log.pub --listen :0")
    )
