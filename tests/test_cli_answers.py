"""What the CLI answers, and with which exit code, when the answer is not plain success:
recorded but not authorised, not found, not sent, refused by the log; errors as JSON with
--json; an OUTCOME recorded from another directory than its INTENT's.

Uses the shared log of tests/cliproc.py (alice granted bot github.* on repo:acme/*).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cliproc import (
    EXIT_NOT_AUTHORISED,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    GITHUB_TOKEN,
    Cli,
    Log,
    closed_port,
    log,
    sh,
)

__all__ = ["log"]  # the module-scoped fixture, shared with this module


def json_error(cli: Cli, code: int, *args: str, **kw: object) -> dict[str, object]:
    """Run a --json command expecting exit `code`; its error, one JSON line on stderr."""
    r = cli(*args, "--json", **kw)  # type: ignore[arg-type]
    assert r.returncode == code, (args, r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    error: dict[str, object] = json.loads(lines[0])["error"]
    assert error["exit_code"] == code and isinstance(error["message"], str)
    return error


def test_outcome_recorded_from_another_directory(log: Log, tmp_path: Path) -> None:
    cli = log.cli
    intent = cli.json(
        *sh("append --key bot.key --tool github.create_issue --resource repo:acme/web"),
        *("--access", "create", "--grant", log.grant_id),
    )
    action_id = intent["action_id"]
    # Elsewhere: no .affidavit/intents here, only the agent's key and the log's public key.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("bot.key", "alice.key", "log.pub", "auditor.token"):
        shutil.copy(log.work / name, elsewhere / name)
    other = Cli(elsewhere, log.cli.env)
    outcome = other.json(
        *sh(f"append --key bot.key --outcome {action_id} --status ok --effect-ref issue:9")
    )
    assert outcome["action_id"] == action_id and outcome["verdict"] == "IN_SCOPE"
    recorded = other.json("get", str(outcome["index"]))["statement"]["action"]
    assert recorded["phase"] == "OUTCOME"
    intent_leaf_hash = bytes.fromhex(intent["leaf_hash"])
    assert bytes.fromhex(recorded["intent_leaf_hash"]) == intent_leaf_hash  # hashes: hex

    # Fetching needs the auditor token, and the INTENT must be the signer's own.
    second = cli.json(
        *sh("append --key bot.key --tool github.create_issue --resource repo:acme/web"),
        *("--access", "create", "--grant", log.grant_id),
    )["action_id"]
    line = other.fails(
        EXIT_USAGE, "append", "--key", "bot.key", "--outcome", second, env={"AFFIDAVIT_TOKEN": None}
    )
    assert "was not recorded from here" in line and "--token" in line and "AFFIDAVIT_TOKEN" in line
    # An action is its agent's action id: alice has no INTENT by bot's id.
    line = other.fails(EXIT_NOT_FOUND, "append", "--key", "alice.key", "--outcome", second)
    assert f"no INTENT of alice's action {second}" in line
    line = other.fails(
        EXIT_NOT_FOUND, "append", "--key", "bot.key", "--outcome", "0197aaaa-0000-7000-8000-0"
    )
    assert "no INTENT of bot's action" in line


def test_recorded_but_not_authorised(log: Log) -> None:
    r = log.cli(*sh("append --key bot.key --tool shell.exec --resource host:x --access execute"))
    assert r.returncode == EXIT_NOT_AUTHORISED
    assert "recorded at index" in r.stdout  # it is on the record: the evidence stands
    assert r.stderr.strip().startswith("affidavit: recorded, but NOT AUTHORISED")
    assert "NO_GRANT" in r.stderr


def test_errors_are_json_with_json(log: Log, tmp_path: Path) -> None:
    cli = log.cli
    error = json_error(cli, EXIT_NOT_FOUND, "get", "--statement-id", "nope")
    assert error["kind"] == "not-found"
    error = json_error(cli, EXIT_NOT_FOUND, "prove", "100000")
    assert (error["kind"], error["status"]) == ("not-found", "OUT_OF_RANGE")
    error = json_error(cli, EXIT_REFUSED, "get", "0", env={"AFFIDAVIT_TOKEN": None})
    assert (error["kind"], error["status"]) == ("refused", "UNAUTHENTICATED")
    act = sh("append --key bot.key --tool github.get_file --access read")
    error = json_error(cli, EXIT_USAGE, *act, "--resource", f"repo:acme/web?t={GITHUB_TOKEN}")
    assert error["kind"] == "usage" and "before sending" in str(error["message"])
    assert GITHUB_TOKEN not in json.dumps(error)
    # What click itself rejects, and what a command rejects as usage.
    error = json_error(cli, EXIT_USAGE, "append", "--access", "everything")
    assert "--access" in str(error["message"])
    error = json_error(cli, EXIT_USAGE, "get")
    assert "give an INDEX" in str(error["message"])
    unreachable = Cli(
        tmp_path,
        {"AFFIDAVIT_SERVER": f"127.0.0.1:{closed_port()}", "AFFIDAVIT_LOG_KEY": "@log.pub"},
    )
    shutil.copy(log.work / "log.pub", tmp_path / "log.pub")
    assert json_error(unreachable, EXIT_UNREACHABLE, "verify")["kind"] == "unreachable"


def test_not_found_and_times_alike_in_every_command(log: Log, tmp_path: Path) -> None:
    """The investigation commands main gained answer as the others do: what is not in the log
    exits 6, and every time option takes the same forms and names itself when it cannot."""
    error = json_error(log.cli, EXIT_NOT_FOUND, "identity", "history", "nobody")
    assert "nobody" in str(error["message"])
    out = str(tmp_path / "none.json")
    error = json_error(log.cli, EXIT_NOT_FOUND, "export", "--session", "no-such", "--out", out)
    assert "no actions match" in str(error["message"])
    assert not Path(out).exists()
    assert log.cli.json("timeline", "--actor", "bot", "--since", "yesterday", "--until", "+1h")
    for args in (("timeline", "--actor", "bot"), ("export", "--actor", "bot", "--out", out)):
        line = log.cli.fails(EXIT_USAGE, *args, "--since", "soonish")
        assert "--since" in line and "yesterday" in line
