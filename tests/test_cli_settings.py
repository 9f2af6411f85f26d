"""`affidavit` settings from the environment (AFFIDAVIT_* variables, @FILE values, ./data/log.pub,
the trust directory; a flag beats its variable), and a log that cannot be reached (exit 4), on
tests/cliproc.py's shared log.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.cliproc import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ORIGIN,
    UUID7,
    Cli,
    Log,
    closed_port,
    log,
)

__all__ = ["log"]  # fixtures, used by name


# Settings, unreachable logs.


def test_settings_from_the_environment(log: Log, tmp_path: Path) -> None:
    cli = Cli(tmp_path, {"AFFIDAVIT_SERVER": log.server.address})
    # No log key anywhere: a usage error that says how to give one.
    line = cli.fails(EXIT_USAGE, "verify")
    assert "--log-key" in line and "AFFIDAVIT_LOG_KEY" in line
    # Inline, or @FILE, or ./data/log.pub by default.
    assert (
        cli.json("verify", env={"AFFIDAVIT_LOG_KEY": log.server.verifier_key})["origin"] == ORIGIN
    )
    (tmp_path / "data").mkdir()
    shutil.copy(log.work / "log.pub", tmp_path / "data" / "log.pub")
    assert cli.json("verify")["origin"] == ORIGIN
    # The trust directory: .affidavit here, or AFFIDAVIT_TRUST_DIR.
    assert len(list((tmp_path / ".affidavit").glob("*.checkpoint"))) == 1
    cli.ok("verify", env={"AFFIDAVIT_TRUST_DIR": "elsewhere"})
    assert len(list((tmp_path / "elsewhere").glob("*.checkpoint"))) == 1
    # A flag beats its variable.
    wrong = {"AFFIDAVIT_SERVER": f"127.0.0.1:{closed_port()}"}
    assert cli.json("verify", "--server", log.server.address, env=wrong)["origin"] == ORIGIN
    # The token and the signing key from the environment.
    (tmp_path / "t").write_text(log.server.auditor_token)
    assert cli.json("get", "0", env={"AFFIDAVIT_TOKEN": "@t"})["index"] == 0
    shutil.copy(log.work / "alice.key", tmp_path / "alice.key")
    approval = cli.json(
        "approve",
        "01a20000-0000-7000-8000-000000000000",
        "--agent",
        "bot",
        "--params",
        "{}",
        env={"AFFIDAVIT_KEY": "alice.key"},
    )
    assert UUID7.match(approval["approval_id"])
    assert "does not exist" in cli.fails(
        EXIT_USAGE,
        "approve",
        "x",
        "--agent",
        "bot",
        "--params",
        "{}",
        env={"AFFIDAVIT_KEY": "nope.key"},
    )


def test_unreachable_log(tmp_path: Path, log: Log) -> None:
    cli = Cli(
        tmp_path,
        {
            "AFFIDAVIT_SERVER": f"127.0.0.1:{closed_port()}",
            "AFFIDAVIT_LOG_KEY": log.server.verifier_key,
        },
    )
    for args in (
        ("verify",),
        ("get", "0", "--token", "afv_x"),  # a stream of entries, not a single call
    ):
        line = cli.fails(EXIT_UNREACHABLE, *args)
        assert "cannot reach the log" in line and "UNAVAILABLE" in line
