"""Every `affidavit` command, run as a user runs it: a subprocess against a real server.

Exit codes (client/cli.py): 0 done; 1 verification failed or findings; 2 usage error; 3 refused
by the log; 4 log unreachable. Every failure is one line on stderr, never a traceback; --json
output parses; -q prints only the new id; settings also come from AFFIDAVIT_* variables.

One statements log serves the module (origin example.com/cli): its admin has registered alice
(a human) and bot (her agent), and alice has granted bot pull requests and reads on acme's
repositories. Commands run in a temporary working directory that holds the public keys, the
identities' key files and the auditor token, with AFFIDAVIT_SERVER, AFFIDAVIT_LOG_KEY=@log.pub and
AFFIDAVIT_TOKEN=@auditor.token set. Forks and a tampered database get servers of their own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import plyvel
import pytest
from affidavit.client.actor import Action, Actor
from affidavit.client.cli import main
from affidavit.client.cli import options as cli_options
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import keys, note
from affidavit.merkle.cosignature import CosignatureV1Verifier
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.signing import IdentityKey
from click.testing import CliRunner

from affidavit import merkle
from tests import backends, serverproc
from tests.serverproc import AFFIDAVIT, RPC_TIMEOUT, ServerFactory, ServerProcess

scaleout = backends.scaleout

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
"""Every command this module ran as a subprocess (not counting --help)."""
JSON_PARSED: set[str] = set()
"""Every command this module ran with --json whose output parsed as JSON."""


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


# Help, completion, ids and keys: no server needed.


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


def test_help_of_every_command(tmp_path: Path) -> None:
    top = Cli(tmp_path).ok("--help").stdout
    commands = all_commands()
    assert {
        "keygen",
        "id",
        "init",
        "serve",
        "auditor-token",
        "identity",
        "identity add",
        "identity rotate",
        "identity revoke",
        "grant",
        "approve",
        "append",
        "get",
        "search",
        "prove",
        "verify",
        "witness",
        "witness serve",
        "tiles",
        "tiles export",
        "verify-proof",
        "audit",
        "export",
        "verify-bundle",
        "who-authorised",
        "completion",
    } <= set(commands)
    for name in commands:
        if " " not in name:
            assert re.search(rf"^  {re.escape(name)} ", top, re.M), name
    flat = " ".join(top.split())
    assert "Exit codes: 0 done, 1 something did not verify" in flat
    assert "5 the action is not authorised (append: recorded, but not authorised)" in flat
    assert "6 no such entry, statement or action in the log" in flat
    runner = CliRunner()
    for name, command in commands.items():
        result = runner.invoke(main, [*name.split(), "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, (name, result.output)
        assert result.output.startswith(f"Usage: main {name}") or "Usage:" in result.output
        for param in command.params:
            for var in [param.envvar] if isinstance(param.envvar, str) else param.envvar or []:
                assert var in result.output, f"`{name} --help` does not mention {var}"
            if isinstance(param, click.Option):
                assert param.help, f"`{name} {param.opts[0]}` has no help text"
    # The connection settings are environment variables of every client command.
    append_help = runner.invoke(main, ["append", "--help"]).output
    for var in ("AFFIDAVIT_SERVER", "AFFIDAVIT_LOG_KEY", "AFFIDAVIT_TOKEN", "AFFIDAVIT_KEY"):
        assert var in append_help
    # And through the installed command, the same.
    assert "AFFIDAVIT_WITNESS_KEY_FILE" in Cli(tmp_path).ok("witness", "--help").stdout


def test_completion(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    bash = cli.ok("completion", "bash").stdout
    assert "_AFFIDAVIT_COMPLETE=bash_complete" in bash and "complete -o" in bash
    runner = CliRunner()
    assert runner.invoke(main, ["completion", "zsh"]).output.startswith("#compdef affidavit")
    assert "_AFFIDAVIT_COMPLETE=fish_complete" in runner.invoke(main, ["completion", "fish"]).output
    assert "tcsh" in usage_error("completion", "tcsh")
    # The script works: bash asks the command for completions.
    script = (
        f'eval "$({AFFIDAVIT} completion bash)"\n'
        "COMP_WORDS=(affidavit identity r); COMP_CWORD=2\n"
        f"_affidavit_completion {AFFIDAVIT}\n"
        'echo "${COMPREPLY[@]}"\n'
        "COMPREPLY=(); COMP_WORDS=(affidavit verify-b); COMP_CWORD=1\n"
        f"_affidavit_completion {AFFIDAVIT}\n"
        'echo "${COMPREPLY[@]}"\n'
    )
    r = subprocess.run(
        ["bash", "-c", script],
        env=serverproc.clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["revoke rotate", "verify-bundle"]


def test_id(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    first, second = (cli.ok("id").stdout for _ in range(2))
    assert UUID7.match(first.strip()) and UUID7.match(second.strip())
    assert first != second and first.strip() < second.strip()  # time-ordered


def test_keygen(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    out = cli.ok("keygen", "dave@example.com").stdout
    key_file, pub_file = tmp_path / "dave@example.com.key", tmp_path / "dave@example.com.pub"
    key = IdentityKey.load(key_file)
    assert key.identity_id == "dave@example.com"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert base64.b64decode(pub_file.read_text().strip()) == key.public_key
    assert key.key_id in out and pub_file.read_text().strip() in out
    assert key.text().split("+", 4)[4] not in out  # never the private key
    line = cli.fails(EXIT_USAGE, "keygen", "dave@example.com")
    assert "exists" in line and IdentityKey.load(key_file).key_id == key.key_id  # untouched

    data = cli.json("keygen", "bot", "--out", "keys/bot-2.key")
    again = IdentityKey.load(tmp_path / "keys" / "bot-2.key")
    assert data == {
        "identity_id": "bot",
        "key_file": "keys/bot-2.key",
        "public_file": "keys/bot-2.pub",
        "public_key": base64.b64encode(again.public_key).decode(),
        "key_id": again.key_id,
    }

    w = cli.json("keygen", "witness.example/w9", "--witness")
    verifier = note.parse_verifier(w["public_key"])
    assert isinstance(verifier, CosignatureV1Verifier) and verifier.name == "witness.example/w9"
    signer = note.parse_signer((tmp_path / "witness.example_w9.key").read_text().strip())
    body = f"example.com/log\n1\n{base64.b64encode(bytes(32)).decode()}\n"
    assert note.open(note.sign(body, signer), [w["public_key"]]) == body
    assert "Missing argument" in usage_error("keygen")


def test_init_and_auditor_token(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    out = cli.ok("init", "--data-dir", "d", "--origin", "example.com/cli-init").stdout
    pub = (tmp_path / "d" / "log.pub").read_text().strip()
    assert pub.startswith("example.com/cli-init+") and pub in out
    assert (tmp_path / "d" / "admin.key").exists()
    r = cli("init", "--data-dir", "d", "--origin", "example.com/cli-init")
    assert r.returncode != 0 and "already holds a log" in r.stderr
    # The new log checks out (its genesis entry); damage is tested in test_storage_faults.py.
    assert "sound: 1 entries" in cli.ok("check", "--data-dir", "d").stdout

    digest = cli.ok("auditor-token", "--out", "a.token").stdout.strip()
    token = (tmp_path / "a.token").read_text().strip()
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert stat.S_IMODE((tmp_path / "a.token").stat().st_mode) == 0o600
    shown = cli.ok("auditor-token").stdout
    [token2] = re.findall(r"afv_\S+", shown)
    assert hashlib.sha256(token2.encode()).hexdigest() in shown and token2 != token
    r = cli("auditor-token", "--out", "a.token")
    assert r.returncode != 0 and "exists" in r.stderr
    assert (tmp_path / "a.token").read_text().strip() == token


def test_server_command_errors_exit_with_the_usage_code(tmp_path: Path) -> None:
    r = Cli(tmp_path)("serve", "--data-dir", "d", "--auditor-token-hash", "nothex")
    assert "64-hex" in r.stderr
    assert r.returncode == EXIT_USAGE


def test_serve_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (tmp_path / "cert.pem").write_text("not a certificate")
    for args, words in [
        (("--tls-cert", "cert.pem"), "--tls-cert and --tls-key go together"),
        (("--auditor-token-hash", "nothex"), "64-hex SHA-256"),
        (("--witness-key", "nonsense"), "not a verifier key"),
    ]:
        r = cli("serve", "--data-dir", "d", *args)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], r.stderr
    assert not (tmp_path / "d").exists()  # refused before creating anything


# Identities.


def test_identity_add_rotate_revoke(log: Log) -> None:
    cli, work = log.cli, log.work
    carol = write_identity(work, "carol")
    carol_id = cli.new_id(
        *sh("identity add carol --kind human --public-key @carol.pub --key admin.key"),
        *sh("--name Carol --attribute team=web"),
    )
    entry = cli.json("get", "--statement-id", carol_id)
    event = entry["statement"]["identity"]
    assert entry["statement"]["header"]["issuer"] == "admin"
    assert (event["identity_id"], event["display_name"]) == ("carol", "Carol")
    assert event["attributes"] == {"team": "web"}
    assert base64.b64decode(event["public_key"]) == carol.public_key

    # An agent registered with its key inline, and the admin's key from AFFIDAVIT_KEY.
    temp = write_identity(work, "temp")
    added = cli.json(
        *sh("identity add temp --kind agent --owner alice --public-key"),
        base64.b64encode(temp.public_key).decode(),
        env={"AFFIDAVIT_KEY": "admin.key"},
    )
    assert UUID7.match(added["statement_id"]) and added["duplicate"] is False
    assert added["tree_size"] > added["index"] >= 0
    assert added["verified"] == ["checkpoint signature", "inclusion proof", "consistency"]
    act = ("append", "--tool", "github.get_file", "--resource", "repo:acme/web", "--access", "read")
    no_grant = cli.json(*act, "--key", "temp.key", code=EXIT_NOT_AUTHORISED)
    assert no_grant["verdict"] == "NO_GRANT"

    write_identity(work, "temp", name="temp-2")
    rotated = cli.json(
        "identity", "rotate", "temp", "--public-key", "@temp-2.pub", "--key", "admin.key"
    )
    assert rotated["index"] > added["index"]
    line = cli.fails(EXIT_REFUSED, *act, "--key", "temp.key")
    assert "PERMISSION_DENIED" in line and "retired" in line
    assert cli(*act, "--key", "temp-2.key").returncode == EXIT_NOT_AUTHORISED
    revoked = cli.json("identity", "revoke", "temp", "--key", "admin.key")
    revoked_id = revoked["statement_id"]
    # The registry as the log's events left it.
    listed = {i["identity_id"]: i for i in cli.json("identity", "list")}
    assert {"admin", "alice", "bot", "carol", "temp"} <= set(listed)
    assert listed["admin"]["registered_at"] == 0 and listed["admin"]["kind"] == "admin"
    assert (listed["bot"]["kind"], listed["bot"]["owner"]) == ("agent", "alice")
    assert listed["temp"]["revoked_at"] == revoked["index"]
    assert listed["temp"]["rotated_at"] == [rotated["index"]]
    assert listed["temp"]["key_id"] == IdentityKey.load(work / "temp-2.key").key_id
    assert listed["carol"]["registered_by"] == "admin"
    table = cli.ok("identity", "list").stdout
    assert table.startswith("IDENTITY") and "revoked at #" in table and "key rotated at #" in table
    assert (
        cli.json("get", "--statement-id", revoked_id)["statement"]["identity"]["identity_id"]
        == "temp"
    )
    line = cli.fails(EXIT_REFUSED, *act, "--key", "temp-2.key")
    assert "revoked" in line

    # Refusals and mistakes.
    dan = write_identity(work, "dan")
    add_dan = ("identity", "add", "dan", "--kind", "human", "--public-key", "@dan.pub")
    line = cli.fails(EXIT_REFUSED, *add_dan, "--key", "alice.key")
    assert "only a registered admin may register" in line
    line = cli.fails(EXIT_USAGE, *add_dan[:-1], "!!", "--key", "admin.key")
    assert "32 bytes of base64" in line
    assert "KEY=VALUE" in cli.fails(EXIT_USAGE, *add_dan, "--attribute", "x", "--key", "admin.key")
    assert "--key" in usage_error(*add_dan)
    admin_key = str(work / "admin.key")
    assert "--kind" in usage_error(*add_dan[:4], "robot", *add_dan[5:], "--key", admin_key)
    assert dan.public_key  # never registered
    assert cli.ok("search", "--subject", "dan").stdout.strip() == "no matches"


# Grants, approvals, actions.


def test_grant(log: Log) -> None:
    cli = log.cli
    grant = sh("grant bot --tool github.* --resource repo:acme/docs --access update --ticket CHG-9")
    grant_id = cli.new_id(*grant, "--not-after", "2999-01-01T00:00:00", "--key", "alice.key")
    g = cli.json("get", "--statement-id", grant_id)["statement"]["grant"]
    assert (g["grantee"], g["tools"], g["resources"], g["access"], g["ticket"]) == (
        "bot",
        ["github.*"],
        ["repo:acme/docs"],
        ["UPDATE"],
        "CHG-9",
    )
    assert int(g["not_after_ms"]) == 32472144000000

    # An agent may not grant on its own authority...
    line = cli.fails(EXIT_REFUSED, *grant, "--key", "bot.key")
    assert "PERMISSION_DENIED" in line and "only a registered human may grant" in line
    # ...only attenuate a grant it holds, and only within it.
    write_identity(log.work, "helper")
    cli.ok(
        *sh("identity add helper --kind agent --owner alice --public-key @helper.pub"),
        *sh("--key admin.key"),
    )
    narrow = ("grant", "helper", "--resource", "repo:acme/web", "--access", "create")
    child = cli.json(
        *narrow, "--tool", "github.create_issue", "--parent", log.grant_id, "--key", "bot.key"
    )
    assert UUID7.match(child["grant_id"])
    line = cli.fails(
        EXIT_REFUSED, *narrow, "--tool", "shell.*", "--parent", log.grant_id, "--key", "bot.key"
    )
    assert "shell.*" in line
    line = cli.fails(EXIT_USAGE, *grant, "--not-before", "soon", "--key", "alice.key")
    assert "--not-before" in line and "'soon' is not a time" in line and "yesterday" in line
    # Relative times; the window must not be empty.
    relative = cli.json(*grant, "--not-before", "now", "--not-after", "+8h", "--key", "alice.key")
    window = cli.json("get", "--statement-id", relative["grant_id"])["statement"]["grant"]
    assert int(window["not_after_ms"]) - int(window["not_before_ms"]) == 8 * 3600 * 1000
    line = cli.fails(
        EXIT_USAGE,
        *grant,
        "--not-before",
        "today",
        "--not-after",
        "yesterday",
        "--key",
        "alice.key",
    )
    assert "--not-after" in line and "later than --not-before" in line
    # `grant issue NAME` is the long form (for a grantee named like a subcommand).
    long_form = cli.json("grant", "issue", *grant[1:], "--key", "alice.key")
    assert UUID7.match(long_form["grant_id"])

    # Listing: to a grantee, and under a grantor's authority.
    to_bot = cli.json("grant", "list", "--grantee", "bot")
    assert {g["grant_id"] for g in to_bot} >= {grant_id, log.grant_id, relative["grant_id"]}
    assert all(g["grantee"] == "bot" for g in to_bot)
    assert child["grant_id"] not in {g["grant_id"] for g in to_bot}
    under_alice = {g["grant_id"]: g for g in cli.json("grant", "list", "--grantor", "alice")}
    assert child["grant_id"] in under_alice  # bot's child grant is under alice's authority
    assert under_alice[child["grant_id"]]["issuer"] == "bot"
    assert under_alice[log.grant_id]["ticket"] == "CHG-1042"
    mine = cli.json("grant", "list", "--grantee", "helper", "--grantor", "alice")
    assert [g["grant_id"] for g in mine] == [child["grant_id"]]
    human = cli.ok("grant", "list", "--grantee", "helper").stdout
    assert f"grant {child['grant_id']}" in human and "bot -> helper" in human
    assert f"(under {log.grant_id})" in human and "tools github.create_issue" in human
    assert "no grants" in cli.ok("grant", "list", "--grantee", "nobody").stdout
    assert "give --grantee, --grantor or both" in cli.fails(EXIT_USAGE, "grant", "list")
    line = cli.fails(
        EXIT_REFUSED, "grant", "list", "--grantee", "bot", env={"AFFIDAVIT_TOKEN": None}
    )
    assert "--token" in line and "AFFIDAVIT_TOKEN" in line
    assert "--access" in usage_error(
        "grant", "bot", "--tool", "x", "--resource", "y", "--key", str(log.work / "alice.key")
    )


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


def test_usage_errors(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert "No such command 'nosuch'" in cli.fails(EXIT_USAGE, "nosuch")
    assert "--access" in usage_error("append", "--access", "everything")
    assert "--limit" in usage_error("search", "--limit", "0")


def test_console_refuses_a_bad_listen_address(tmp_path: Path) -> None:
    # The console's pages are tested on real processes in tests/test_console*.py.
    line = Cli(tmp_path).fails(EXIT_USAGE, "console", "--listen", "127.0.0.1:99999")
    assert "is not HOST:PORT" in line


def test_grant_that_requires_approval_and_its_revocation(log: Log) -> None:
    """A grant whose every action needs alice's approval: the agent cannot opt out with its
    own decision. Then alice withdraws the grant; only she (or an admin) may."""
    cli = log.cli
    grant = cli.json(
        *sh("grant bot --tool github.* --resource repo:acme/docs --access update"),
        *sh("--require-approval --approver alice --key alice.key"),
    )
    gid = grant["grant_id"]
    append = sh(
        "append --key bot.key --tool github.update_file --resource repo:acme/docs "
        f"--access update --grant {gid}"
    )
    unapproved = cli.json(*append, code=EXIT_NOT_AUTHORISED)
    assert (unapproved["verdict"], unapproved["verdict_reason"]) == (
        "OUT_OF_SCOPE",
        "approval-missing",
    )
    assert "PERMISSION_DENIED" in cli.fails(EXIT_REFUSED, "revoke-grant", gid, "--key", "bot.key")
    revoked = cli.json("revoke-grant", gid, "--reason", "key rotation", "--key", "alice.key")
    assert revoked["grant_id"] == gid and UUID7.match(revoked["revocation_id"])
    assert "already revoked" in cli.fails(EXIT_REFUSED, "revoke-grant", gid, "--key", "alice.key")
    after = cli.json(*append, code=EXIT_NOT_AUTHORISED)
    assert (after["verdict"], after["verdict_reason"]) == ("OUT_OF_SCOPE", "grant-revoked")


def test_adapter_commands_check_their_flags_before_starting(tmp_path: Path) -> None:
    # Their runs are tested with real frameworks in tests/test_adapter_mcp.py and _otel.py.
    cli = Cli(tmp_path)
    key = tmp_path / "agent.key"
    cli.ok("keygen", "agent", "--out", str(key))
    for command, end in (("mcp-proxy", ["--", "x"]), ("otlp-bridge", [])):
        flags = ["--log-key", "x", "--key", str(key), "--grant", "g"]
        assert "--resource" in cli.fails(EXIT_USAGE, command, *flags, "--resource", "t", *end)
        assert "--access" in cli.fails(EXIT_USAGE, command, *flags, "--access", "t=erase", *end)
    assert "--listen" in usage_error("otlp-bridge", "--listen", "host:99999", "--grant", "g")


ADAPTER_SERVERS = {"mcp-proxy", "otlp-bridge"}
"""Long-running servers: they print no result, so their --json (shared connection options)
has nothing to format."""


# Last: every command was run, and every --json parsed.


def test_every_command_and_its_json_were_exercised(request: pytest.FixtureRequest) -> None:
    ran = {item.name for item in request.session.items if item.path == request.node.path}
    defined = {name for name in vars(request.module) if name.startswith("test_")}
    if ran != defined:
        pytest.skip("only part of this module ran")
    assert leaf_commands() - EXERCISED == set()
    with_json = {n for n, c in all_commands().items() if any(p.name == "as_json" for p in c.params)}
    assert with_json - JSON_PARSED - ADAPTER_SERVERS == set()
