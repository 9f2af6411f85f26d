"""Starting a server: a taken port, a bad address or an unusable directory is one clear line
and a non-zero exit, before anything is created; two servers never share a port."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import grpc
import pytest
from affidavit.server import app, config
from affidavit.server.config import ServeSettings
from affidavit.server.listen import ListenAddressError, check_free, parse_listen
from hypothesis import given
from hypothesis import strategies as st

from tests import serverproc
from tests.serverproc import ORIGIN, RPC_TIMEOUT, ServerFactory, run_cli

server_factory = serverproc.server_factory


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_second_server_on_a_taken_port_is_refused(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    first = server_factory(entry_format="statements")
    second = server_factory.create(entry_format="statements", flags=False)
    second.args += ["--data-dir", str(second.data_dir), "--origin", "example.com/other"]
    second.args += ["--listen", first.address]
    second.spawn()
    assert second.wait_exit() == 2
    line = one_line_error(second.stderr)
    assert line.startswith("affidavit: error: cannot listen on " + first.address), line
    assert "in use" in line
    assert not second.data_dir.exists()  # refused before a log was created for it
    # The first server still answers, alone, for its own log.
    assert first.checkpoint().size == 1
    assert first.running


def test_a_port_held_with_so_reuseport_is_still_taken() -> None:
    """What gRPC servers do: bind with SO_REUSEPORT. Another server's socket must still make
    the port count as taken (the probe binds without reuse)."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(OSError, match=re.escape(f"cannot listen on 127.0.0.1:{port}")):
            check_free(parse_listen(f"127.0.0.1:{port}"))
        with pytest.raises(OSError, match=re.escape("cannot listen on 0.0.0.0")):
            check_free(parse_listen(f"0.0.0.0:{port}"))


def test_grpc_itself_binds_without_port_sharing(tmp_path: Path) -> None:
    """Past the probe (a race: another server binds in between), gRPC's own bind must fail
    rather than share the port: serve() passes grpc.so_reuseport=0."""
    data_dir = tmp_path / "log"
    config.init_log(data_dir, ORIGIN, "opaque")
    with socket.socket(socket.AF_INET6) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("::", 0))
        other.listen()
        port = other.getsockname()[1]
        settings = ServeSettings(data_dir=data_dir, listen=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match="cannot listen on"):
            asyncio.run(asyncio.wait_for(app.serve(settings), RPC_TIMEOUT))


@pytest.mark.parametrize(
    ("listen", "why"),
    [
        ("0.0.0.0:99999", "ports go from 0 to 65535"),
        ("127.0.0.1:65536", "ports go from 0 to 65535"),
        ("127.0.0.1", "no port"),
        (":7420", "no host"),
        ("127.0.0.1:http", "the port is not a number"),
        ("::1:7420", "IPv6 address in brackets"),
        ("[not-v6]:7420", "not an IPv6 address"),
        ("127.0.0.1:-1", "the port is not a number"),
    ],
)
def test_serve_refuses_an_invalid_listen_address(tmp_path: Path, listen: str, why: str) -> None:
    r = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--listen", listen)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "--listen" in r.stderr and why in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


@given(port=st.integers(min_value=0, max_value=65535), v6=st.booleans())
def test_listen_addresses_in_range_parse_back(port: int, v6: bool) -> None:
    text = f"[::1]:{port}" if v6 else f"127.0.0.1:{port}"
    address = parse_listen(text)
    assert address.port == port and address.text() == text


@given(port=st.integers(min_value=65536, max_value=10**12))
def test_ports_beyond_range_never_parse(port: int) -> None:
    with pytest.raises(ListenAddressError, match="--listen"):
        parse_listen(f"0.0.0.0:{port}")


@pytest.mark.parametrize("data_dir", ["/proc/nope", "/proc/self/nope/deeper"])
def test_an_unusable_data_dir_is_one_line(data_dir: str) -> None:
    for command in ("serve", "init"):
        r = run_cli(command, "--data-dir", data_dir, "--listen", "127.0.0.1:0")
        if command == "init":
            r = run_cli(command, "--data-dir", data_dir)
        assert r.returncode == 2
        line = one_line_error(r.stderr)
        assert line.startswith(f"affidavit: error: cannot create a log in {data_dir}: "), line


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    r = run_cli("serve", "--data-dir", str(tmp_path / "file" / "log"), "--listen", "127.0.0.1:0")
    assert r.returncode == 2
    assert "Not a directory" in one_line_error(r.stderr)


def test_health_of_the_one_server_on_a_port(server_factory: ServerFactory) -> None:
    first = server_factory()
    with grpc.insecure_channel(first.address) as channel:
        assert serverproc.health_status(channel) == 1  # SERVING


def test_a_taken_or_invalid_metrics_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli(
            "serve",
            *("--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"),
            *("--metrics-listen", f"127.0.0.1:{port}"),
        )
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(r.stderr)
    r = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--metrics-listen", "x:70000")
    assert r.returncode == 2 and "--metrics-listen" in r.stderr and "65535" in r.stderr
    assert not (tmp_path / "d").exists()
