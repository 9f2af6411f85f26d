"""`affidavit` commands that need no server, run as a user runs them (tests/cliproc.py): --help
of every command, shell completion, ids, keygen, init and auditor-token, the server commands'
and adapters' flag checks, and usage errors (exit 2, one line).
"""

from __future__ import annotations

import base64
import hashlib
import re
import stat
import subprocess
from pathlib import Path

import click
from affidavit.client.cli import main
from affidavit.merkle import note
from affidavit.merkle.cosignature import CosignatureV1Verifier
from affidavit.statements.signing import IdentityKey
from click.testing import CliRunner

from tests import serverproc
from tests.cliproc import (
    EXIT_USAGE,
    UUID7,
    Cli,
    all_commands,
    usage_error,
)
from tests.serverproc import AFFIDAVIT

# Help, completion, ids and keys: no server needed.


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


def test_usage_errors(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert "No such command 'nosuch'" in cli.fails(EXIT_USAGE, "nosuch")
    assert "--access" in usage_error("append", "--access", "everything")
    assert "--limit" in usage_error("search", "--limit", "0")


def test_console_refuses_a_bad_listen_address(tmp_path: Path) -> None:
    # The console's pages are tested on real processes in tests/test_console*.py.
    line = Cli(tmp_path).fails(EXIT_USAGE, "console", "--listen", "127.0.0.1:99999")
    assert "is not HOST:PORT" in line


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
