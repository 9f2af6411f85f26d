"""Running `affidavit` as a user runs it (Cli: a subprocess, settings from AFFIDAVIT_*
variables), and the statements log the CLI tests share, one per test module.

Exit codes (client/cli/): 0 done; 1 verification failed or findings; 2 usage error; 3 refused
by the log; 4 log unreachable; 5 recorded but not authorised; 6 not found. Every failure is one
line on stderr, never a traceback (Cli checks); --json output parses; -q prints only the new id.
Cli records every command run (EXERCISED) and every --json that parsed (JSON_PARSED), for
tests/test_cli_witnessing.py's last test.

The shared log (origin example.com/cli): its admin has registered alice (a human) and bot (her
agent), and alice has granted bot pull requests and reads on acme's repositories. Commands run
in a temporary working directory that holds the public keys, the identities' key files and the
auditor token, with AFFIDAVIT_SERVER, AFFIDAVIT_LOG_KEY=@log.pub and AFFIDAVIT_TOKEN=@auditor.token
set. The story: alice approves bot's pull request; bot records its intent and outcome; then bot
strays out of scope.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from affidavit.client.actor import Actor
from affidavit.client.cli import main
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import keys
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.signing import IdentityKey
from click.testing import CliRunner

from tests import serverproc
from tests.serverproc import AFFIDAVIT, RPC_TIMEOUT, ServerProcess

ORIGIN = "example.com/cli"
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
GITHUB_TOKEN = "ghp_" + "Zq8xW2vB7nR4tY6uI1oP3aS5dF9gH0jK2lM4"
PR = {"repo": "acme/web", "title": "Fix login redirect", "head": "fix-login", "base": "main"}

EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_NOT_AUTHORISED, EXIT_NOT_FOUND = 5, 6


# Running the command.


def command_name(args: tuple[str, ...]) -> str:
    """The command args run: "identity add", "tiles export", "witness serve", or "verify"."""
    if args[0] == "grant" and args[1:2] != ("list",):  # `grant GRANTEE` is `grant issue GRANTEE`
        return "grant issue"
    return " ".join(args[:2]) if " ".join(args[:2]) in all_commands() else args[0]


EXERCISED: set[str] = set()
"""Every command a Cli ran as a subprocess in this test run (not counting --help)."""
JSON_PARSED: set[str] = set()
"""Every command a Cli ran with --json in this test run whose output parsed as JSON."""


@dataclass
class Cli:
    """Runs `affidavit` in cwd with env (on top of the environment without AFFIDAVIT_*)."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str | None] | None = None,
        cwd: Path | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        merged = {**self.env, **(env or {})}
        environment = serverproc.clean_env({k: v for k, v in merged.items() if v is not None})
        r = subprocess.run(
            [str(AFFIDAVIT), *args],
            cwd=cwd or self.cwd,
            env=environment,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in r.stderr, f"affidavit {' '.join(args)}:\n{r.stderr}"
        if "--help" not in args:
            EXERCISED.add(command_name(args))
            answered = (EXIT_OK, EXIT_VERIFY, EXIT_NOT_AUTHORISED)
            if "--json" in args and r.returncode in answered and r.stdout.strip():
                if args[0] == "witness":  # one JSON document per event
                    for line in r.stdout.splitlines():
                        json.loads(line)
                else:
                    json.loads(r.stdout)
                JSON_PARSED.add(command_name(args))
        return r

    def ok(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        r = self(*args, **kw)
        assert r.returncode == EXIT_OK, f"affidavit {' '.join(args)}: {r.returncode}\n{r.stderr}"
        return r

    def json(self, *args: str, code: int = EXIT_OK, **kw: Any) -> Any:
        """The JSON a command prints with --json, expecting exit code `code`."""
        r = self(*args, "--json", **kw)
        assert r.returncode == code, f"affidavit {' '.join(args)}: {r.returncode}\n{r.stderr}"
        return json.loads(r.stdout)

    def new_id(self, *args: str, **kw: Any) -> str:
        """Run with -q: the output is the new id alone."""
        out = self.ok(*args, "-q", **kw).stdout
        assert UUID7.match(out.rstrip("\n")) and out.count("\n") == 1, out
        return out.strip()

    def fails(self, code: int, *args: str, **kw: Any) -> str:
        """Run expecting exit code `code`; the one-line error it printed."""
        r = self(*args, **kw)
        assert r.returncode == code, f"affidavit {' '.join(args)}: {r.returncode}\n{r.stderr}"
        assert r.stdout == "", r.stdout
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        if code == EXIT_USAGE and lines and lines[0].startswith("Usage:"):
            # click's own usage error: Usage, Try ... --help, then Error: (maybe several lines)
            [error] = [n for n, line in enumerate(lines) if line.startswith("Error: ")]
            return " ".join(lines[error:])
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("affidavit: "), lines[0]
        return lines[0]


def usage_error(*args: str) -> str:
    """Run a command line that click itself rejects, in this process (no server, no
    subprocess needed: the parsing is the same); its Error: text, on one line."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == EXIT_USAGE, (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return " ".join(result.output.split("Error: ", 1)[1].split())


def sh(command: str) -> list[str]:
    """A command line's words, split as a shell would (to keep long ones readable)."""
    return shlex.split(command)


def write_identity(directory: Path, identity_id: str, name: str | None = None) -> IdentityKey:
    """NAME.key (mode 0600) and NAME.pub, as `affidavit keygen` writes them."""
    key = IdentityKey.generate(identity_id)
    stem = name or identity_id
    (directory / f"{stem}.key").write_text(key.text() + "\n")
    (directory / f"{stem}.key").chmod(0o600)
    (directory / f"{stem}.pub").write_text(base64.b64encode(key.public_key).decode() + "\n")
    return key


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# The shared log.


@dataclass
class Log:
    server: ServerProcess
    cli: Cli
    work: Path
    grant_id: str
    witness_verifier: str


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    tmp = tmp_path_factory.mktemp("cli")
    work = tmp / "work"
    work.mkdir()
    w_signer, w_verifier = keys.generate_key("witness-1", keys.ALG_COSIGNATURE_V1)
    (work / "witness-1.key").write_text(w_signer + "\n")
    (work / "witness-1.pub").write_text(w_verifier + "\n")
    server = ServerProcess(
        tmp / "srv",
        *("--witness-key", w_verifier, "--http-listen", "127.0.0.1:0"),
        origin=ORIGIN,
        entry_format="statements",
    )
    try:
        server.start()
        EXERCISED.add("serve")  # `affidavit serve`, run by tests/serverproc.py
        shutil.copy(server.data_dir / "log.pub", work / "log.pub")
        shutil.copy(server.data_dir / "admin.key", work / "admin.key")
        (work / "auditor.token").write_text(server.auditor_token + "\n")
        alice, bot = write_identity(work, "alice"), write_identity(work, "bot")
        policy = TrustPolicy(server.verifier_key)
        with Client(server.address, policy, timeout=RPC_TIMEOUT) as client:
            admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
            admin.register("alice", pb.HUMAN, alice.public_key, display_name="Alice")
            admin.register("bot", pb.AGENT, bot.public_key, owner="alice")
            grant = Actor(client, alice).grant(
                "bot",
                tools=["github.*"],
                resources=["repo:acme/*"],
                access=[pb.CREATE, pb.READ],
                ticket="CHG-1042",
            )
        env = {
            "AFFIDAVIT_SERVER": server.address,
            "AFFIDAVIT_LOG_KEY": "@log.pub",
            "AFFIDAVIT_TOKEN": "@auditor.token",
        }
        yield Log(server, Cli(work, env), work, grant.statement_id, w_verifier)
    finally:
        server.kill()


@dataclass
class Story:
    """Alice approves bot's pull request; bot records its intent and outcome; then bot
    strays out of scope."""

    action_id: str
    approval_id: str
    intent_index: int
    outcome_id: str
    stray_action_id: str
    stray_index: int


@pytest.fixture(scope="module")
def story(log: Log) -> Story:
    cli = log.cli
    (log.work / "pr.json").write_text(json.dumps(PR))
    action_id = cli.ok("id").stdout.strip()
    approval_id = cli.new_id(
        *sh(f"approve {action_id} --agent bot --params @pr.json --ticket CHG-1042 --key alice.key"),
        *("--comment", "ok to open"),
    )
    intent = cli.json(
        *sh(
            f"append --key bot.key --action-id {action_id} --tool github.create_pull_request "
            f"--resource repo:acme/web --access create --params @pr.json --grant {log.grant_id} "
            f"--decision allow-if-approved --approval {approval_id} "
            "--trace-id 4bf92f3577b34da6a3ce929d0e0e4736"
        )
    )
    assert intent["action_id"] == action_id
    assert (intent["verdict"], intent["duplicate"]) == ("IN_SCOPE", False)
    assert intent["tree_size"] == intent["index"] + 1
    outcome_id = cli.new_id(
        *sh(f"append --key bot.key --outcome {action_id} --status ok --effect-ref commit:3f2a9c1e")
    )
    r = cli(
        *sh("append --key bot.key --tool shell.exec --resource host:prod-db --access execute"),
        *("--grant", log.grant_id, "--json"),
    )
    assert r.returncode == EXIT_NOT_AUTHORISED, r.stderr  # recorded, but not authorised
    stray = json.loads(r.stdout)
    assert (stray["verdict"], stray["verdict_reason"]) == ("OUT_OF_SCOPE", "tool-not-granted")
    error = json.loads(r.stderr)["error"]
    assert (error["kind"], error["exit_code"], error["verdict"]) == (
        "not-authorised",
        EXIT_NOT_AUTHORISED,
        "OUT_OF_SCOPE",
    )
    return Story(
        action_id, approval_id, intent["index"], outcome_id, stray["action_id"], stray["index"]
    )


def all_commands() -> dict[str, click.Command]:
    """Every command, by its full name ("identity add"), groups included."""
    ctx = click.Context(main)
    found: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: list[str]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            found[" ".join([*prefix, name])] = command
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])

    walk(main, [])
    return found


def leaf_commands() -> set[str]:
    return {n for n, c in all_commands().items() if not isinstance(c, click.Group)}
