"""The server's commands as a user runs them: `affidavit init`, `affidavit serve`, --version."""

from __future__ import annotations

import re
import signal
import socket
import stat
from importlib.metadata import version
from pathlib import Path

import grpc
import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import keys, note
from affidavit.proto import affidavit_pb2 as pb

from tests import serverproc
from tests.serverproc import (
    ORIGIN,
    RPC_TIMEOUT,
    ServerFactory,
    ServerProcess,
    run_cli,
)

# Fixtures, from the shared helper.
server_factory = serverproc.server_factory

ENV_VARS = [
    "AFFIDAVIT_DATA_DIR",
    "AFFIDAVIT_ORIGIN",
    "AFFIDAVIT_LISTEN",
    "AFFIDAVIT_MAX_ENTRY_BYTES",
    "AFFIDAVIT_BATCH_SIZE",
    "AFFIDAVIT_BATCH_WAIT_MS",
    "AFFIDAVIT_QUEUE_SIZE",
    "AFFIDAVIT_ENTRY_FORMAT",
    "AFFIDAVIT_ADMIN_ID",
    "AFFIDAVIT_AUDITOR_TOKEN_HASHES",
]


def one_line_error(stderr: str) -> str:
    """A refusal is one clear line on stderr, not a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def secret_parts(data_dir: Path) -> list[str]:
    """The private keys' texts and base64 material (what must never be printed)."""
    out = []
    for name in ("log.key", "admin.key"):
        if (data_dir / name).exists():
            text = (data_dir / name).read_text().strip()
            assert text.startswith("PRIVATE+KEY+")
            out += [text, text.split("+", 4)[4]]  # PRIVATE+KEY+<name>+<hash>+<base64 seed>
    assert out
    return out


def test_init_creates_the_log(tmp_path: Path) -> None:
    d = tmp_path / "log"
    r = run_cli(
        "init", "--data-dir", str(d), "--origin", "example.com/cli", "--entry-format", "opaque"
    )
    assert r.returncode == 0, r.stderr
    pub = (d / "log.pub").read_text()
    assert pub.endswith("\n") and pub.count("\n") == 1
    pub = pub.strip()
    assert pub.startswith("example.com/cli+")
    assert pub in r.stdout  # the verifier key is shown, to share
    assert mode(d / "log.key") == 0o600
    assert not mode(d / "log.pub") & 0o022  # nobody else may swap the public key
    assert (d / "db" / "CURRENT").exists()
    signer = keys.parse_signer_key((d / "log.key").read_text().strip())
    assert signer.name == "example.com/cli"
    assert signer.verifier_key().text() == pub
    for secret in secret_parts(d):
        assert secret not in r.stdout + r.stderr
    assert "PRIVATE" not in r.stdout + r.stderr
    assert not (d / "admin.key").exists()  # an opaque log has no admins


def test_init_statements_log_registers_an_admin(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    d = tmp_path / "log"
    r = run_cli("init", "--data-dir", str(d), "--origin", "example.com/cli", "--admin-id", "root")
    assert r.returncode == 0, r.stderr
    assert mode(d / "log.key") == mode(d / "admin.key") == 0o600
    admin = keys.parse_signer_key((d / "admin.key").read_text().strip())
    assert admin.name == "root"
    assert str(d / "admin.key") in r.stdout
    for secret in secret_parts(d):
        assert secret not in r.stdout + r.stderr
    # The genesis entry is in the log, under a checkpoint signed by the log key.
    s = server_factory.create(data_dir=d, entry_format=None).start()
    assert s.logged_size == 1
    cp = checkpoints.parse(note.open(s.checkpoint().note, [s.verifier_key]))
    assert (cp.origin, cp.size) == ("example.com/cli", 1)
    (genesis,) = s.all_entries()
    assert admin.public_key in genesis.data  # it registers the admin's key


def test_init_key_is_private_whatever_the_umask(tmp_path: Path) -> None:
    d = tmp_path / "log"
    r = run_cli("init", "--data-dir", str(d), "--origin", "example.com/cli", umask=0)
    assert r.returncode == 0, r.stderr
    assert mode(d / "log.key") == mode(d / "admin.key") == 0o600


def test_init_refuses_an_existing_log(tmp_path: Path) -> None:
    d = tmp_path / "log"
    assert run_cli("init", "--data-dir", str(d), "--origin", "example.com/one").returncode == 0
    key = (d / "log.key").read_text()
    pub = (d / "log.pub").read_text()
    r = run_cli("init", "--data-dir", str(d), "--origin", "example.com/two")
    assert r.returncode != 0
    line = one_line_error(r.stderr)
    assert "already holds a log" in line and str(d) in line
    assert (d / "log.key").read_text() == key  # untouched
    assert (d / "log.pub").read_text() == pub


def test_init_refuses_a_half_made_log(tmp_path: Path) -> None:
    d = tmp_path / "log"
    (d / "db").mkdir(parents=True)
    r = run_cli("init", "--data-dir", str(d), "--origin", "example.com/one")
    assert r.returncode != 0
    assert "already holds a log" in one_line_error(r.stderr)
    assert not (d / "log.key").exists()


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("example.com/a+b", "'+'"),
        ("example.com/a b", "white space"),
        ("example.com/a\tb", "white space"),
        ("", "empty"),
    ],
)
def test_init_refuses_a_bad_origin(tmp_path: Path, origin: str, problem: str) -> None:
    d = tmp_path / "log"
    r = run_cli("init", "--data-dir", str(d), "--origin", origin)
    assert r.returncode != 0
    line = one_line_error(r.stderr)
    assert problem in line, line
    assert not d.exists()  # nothing half made


def test_serve_refuses_a_bad_origin_on_first_run(tmp_path: Path) -> None:
    d = tmp_path / "log"
    r = run_cli("serve", "--data-dir", str(d), "--listen", "127.0.0.1:0", "--origin", "a b")
    assert r.returncode != 0
    assert "white space" in one_line_error(r.stderr)
    assert not (d / "log.key").exists()


def test_help_mentions_the_environment_variables() -> None:
    r = run_cli("serve", "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    for var in ENV_VARS:
        assert var in r.stdout, var
    r = run_cli("init", "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    for var in ("AFFIDAVIT_DATA_DIR", "AFFIDAVIT_ORIGIN"):
        assert var in r.stdout, var
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    assert "init" in r.stdout and "serve" in r.stdout


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"affidavit, version {version('affidavit')}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version("affidavit"))


def test_settings_from_environment(tmp_path: Path, server_factory: ServerFactory) -> None:
    d = tmp_path / "from-env"
    s = server_factory.create(
        flags=False,
        env={
            "AFFIDAVIT_DATA_DIR": str(d),
            "AFFIDAVIT_LISTEN": "127.0.0.1:0",
            "AFFIDAVIT_ORIGIN": "example.org/from-env",
            "AFFIDAVIT_MAX_ENTRY_BYTES": "10",
            "AFFIDAVIT_ENTRY_FORMAT": "opaque",
        },
        data_dir=d,
    ).start()
    assert s.verifier_key.startswith("example.org/from-env+")
    assert "affidavit serving example.org/from-env at 127.0.0.1:" in s.stderr
    assert "opaque entries" in s.stderr
    cp = checkpoints.parse(note.open(s.checkpoint().note, [s.verifier_key]))
    assert cp.origin == "example.org/from-env"
    assert s.stub.Append(pb.AppendRequest(entry=b"0123456789"), timeout=RPC_TIMEOUT).index == 0
    with pytest.raises(grpc.RpcError) as e:
        s.stub.Append(pb.AppendRequest(entry=b"0123456789!"), timeout=RPC_TIMEOUT)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 10" in (e.value.details() or "")


def test_flags_override_environment(server_factory: ServerFactory) -> None:
    s = server_factory(origin="example.org/flag", env={"AFFIDAVIT_ORIGIN": "example.org/env"})
    assert s.verifier_key.startswith("example.org/flag+")


def test_data_dir_default_is_relative_to_cwd(tmp_path: Path, server_factory: ServerFactory) -> None:
    s = server_factory.create(
        "--listen", "127.0.0.1:0", flags=False, cwd=tmp_path, data_dir=tmp_path / "data"
    ).start()
    assert (tmp_path / "data" / "log.key").exists()
    assert (tmp_path / "data" / "admin.key").exists()  # statements by default: a genesis admin
    assert s.checkpoint().size == 1


def test_private_key_never_printed(tmp_path: Path, server_factory: ServerFactory) -> None:
    d = tmp_path / "log"
    init = run_cli("init", "--data-dir", str(d), "--origin", ORIGIN)  # with an admin key
    assert init.returncode == 0, init.stderr
    s = server_factory.create(data_dir=d, entry_format=None).start()
    s.all_entries()
    for entry in (b"", b"not a statement"):
        with pytest.raises(grpc.RpcError):
            s.stub.Append(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT)
    second = server_factory.create(data_dir=d).spawn()  # refused: the dir is in use
    assert second.wait_exit() != 0
    assert s.stop() == 0
    s.start()  # and once more, on restart
    assert s.stop() == 0
    output = init.stdout + init.stderr + s.all_output + second.all_output
    assert "affidavit serving" in output and "in use" in output  # we did look at real output
    for secret in secret_parts(d):
        assert secret not in output
    assert "PRIVATE+KEY" not in output


def test_serve_refuses_a_key_others_can_read(server_factory: ServerFactory) -> None:
    s = server_factory()
    assert s.stop() == 0
    (s.data_dir / "log.key").chmod(0o644)
    s.spawn()
    assert s.wait_exit() != 0
    line = one_line_error(s.stderr)
    assert "chmod 600" in line and "log.key" in line
    for secret in secret_parts(s.data_dir):
        assert secret not in s.all_output


def test_serve_refuses_a_malformed_key_without_showing_it(server_factory: ServerFactory) -> None:
    s = server_factory()
    assert s.stop() == 0
    key_file = s.data_dir / "log.key"
    text = key_file.read_text().strip()
    *head, material = text.split("+", 4)  # PRIVATE+KEY+<name>+<hash>+<base64 seed>
    prefix = "+".join(head)
    # The same material under a wrong key hash: malformed, and the message must not echo it.
    bad = prefix[: -len("00000000")] + "00000000+" + material
    key_file.write_text(bad + "\n")
    s.spawn()
    assert s.wait_exit() != 0
    line = one_line_error(s.stderr)
    assert "log.key" in line
    assert material not in s.all_output
    assert "PRIVATE+KEY" not in s.all_output


def test_serve_reports_a_busy_port(tmp_path: Path, server_factory: ServerFactory) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = server_factory.create("--listen", f"127.0.0.1:{port}", flags=False)
        s.args += ["--data-dir", str(s.data_dir), "--origin", ORIGIN]
        s.spawn()
        assert s.wait_exit() != 0
    stderr = s.stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("affidavit: error:")]
    assert len(errors) == 1, stderr
    assert f"127.0.0.1:{port}" in errors[0]


def test_serve_stops_cleanly_on_sigint(server_factory: ServerFactory) -> None:
    s: ServerProcess = server_factory()
    s.stub.Append(pb.AppendRequest(entry=b"x"), timeout=RPC_TIMEOUT)
    assert s.proc is not None
    s.proc.send_signal(signal.SIGINT)  # as Ctrl-C
    assert s.wait_exit() == 0
    assert "stopped at tree size 1" in s.stderr


def test_origin_is_fixed_when_the_log_is_created(server_factory: ServerFactory) -> None:
    s = server_factory()
    first = s.checkpoint().note
    assert s.stop() == 0
    s.origin = "example.org/another-name"  # ignored: the log already exists
    s.start()
    assert s.checkpoint().note == first
    assert f"affidavit serving {ORIGIN} at" in s.stderr
