"""Run the real `affidavit serve` as a subprocess, for integration tests.

    from tests import serverproc
    server = serverproc.server                  # the fixtures, into the test module
    server_factory = serverproc.server_factory

    def test_something(server):            # a fresh log in a temp dir, serving, healthy
        r = server.stub.Append(pb.AppendRequest(entry=b"x"))
        server.stop()                       # SIGTERM; returns the exit code
        server.start()                      # again, on the same data dir (new port)

    def test_other(server_factory):         # custom flags / env / data dir
        s = server_factory("--max-entry-bytes", "16")

The server's stderr (and stdout) are read in threads and kept whole (`server.stderr`), so
tests can assert on what it logged, and failures show it. Every process a fixture starts is
killed at teardown, whatever the test did.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
from affidavit.proto import affidavit_pb2 as pb
from affidavit.proto import affidavit_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2

AFFIDAVIT = Path(sys.executable).parent / "affidavit"
"""The installed console script (the CLI has no `python -m` entry point)."""

ORIGIN = "example.com/test"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
RPC_TIMEOUT = 30.0
"""Generous: a loaded 2-core machine must not make these tests flake."""


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the auditor token) to every call on a channel."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = list(metadata)

    def _add(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *self._metadata],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._add(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._add(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: grpc.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return continuation(self._add(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: grpc.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return continuation(self._add(client_call_details), request_iterator)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


_SERVING = re.compile(
    r"affidavit serving (?P<origin>\S+) at (?P<host>\S+):(?P<port>\d+), "
    r"tree size (?P<size>\d+), log key (?P<key>\S+)"
)

_HTTP = re.compile(r"affidavit HTTP at (?P<host>\S+):(?P<port>\d+)")


ROOT = Path(__file__).resolve().parent.parent


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any AFFIDAVIT_* setting, plus extra.

    The checkout comes first on PYTHONPATH, so the server runs this tree's code even when a
    package was added since the (editable) install.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    umask: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `affidavit ARGS...` to completion, capturing text stdout and stderr; under umask
    when given (set by a shell that then execs it: a preexec_fn is unsafe in this threaded
    process)."""
    command = [str(AFFIDAVIT), *args]
    if umask is not None:
        command = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *command]
    return subprocess.run(
        command,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def health_status(channel: grpc.Channel, service: str = "", timeout: float = RPC_TIMEOUT) -> int:
    """grpc.health.v1 Check: the ServingStatus number (raises grpc.RpcError on failure)."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    response: health_pb2.HealthCheckResponse = check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout
    )
    return response.status


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds


class ServerProcess:
    """One `affidavit serve` process on data_dir (restartable on the same dir).

    args are extra flags for `serve`; env extra environment variables. Unless flags=False it
    is given --data-dir, --listen 127.0.0.1:0, --origin, --entry-format (opaque by default:
    entries are any bytes; "statements" for signed statements) and an auditor token's hash;
    with flags=False none of them (for testing the AFFIDAVIT_* variables).

    `stub` sends the auditor token with every call (it may read entries); `public_stub`
    sends none, as a witness or an appender would.
    """

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        origin: str | None = ORIGIN,
        entry_format: str | None = "opaque",
        env: Mapping[str, str] | None = None,
        flags: bool = True,
        cwd: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.origin = origin
        self.entry_format = entry_format
        self.env = dict(env or {})
        self.flags = flags
        self.cwd = cwd
        self.auditor_token = "afv_" + secrets.token_urlsafe(32)
        self.auditor_metadata = (("authorization", f"Bearer {self.auditor_token}"),)
        self.proc: subprocess.Popen[str] | None = None
        self.channel: grpc.Channel | None = None
        self._public_stub: pb_grpc.LogStub | None = None
        self._stub: pb_grpc.LogStub | None = None
        self.port: int | None = None
        self.http_port: int | None = None
        """The HTTP face's port, when started with --http-listen."""
        self.logged_key: str | None = None
        self.logged_size: int | None = None
        self._lines: list[str] = []
        self._out: list[str] = []
        self._all_lines: list[str] = []  # every run's stderr, for "never printed" checks
        self._all_out: list[str] = []
        self._cond = threading.Condition()
        self._readers: list[threading.Thread] = []

    # Output.

    @property
    def stderr(self) -> str:
        """Everything the current (or last) run wrote to stderr so far."""
        with self._cond:
            return "".join(self._lines)

    @property
    def stdout(self) -> str:
        with self._cond:
            return "".join(self._out)

    @property
    def all_output(self) -> str:
        """stdout and stderr of every run of this server object."""
        with self._cond:
            return "".join(self._all_out) + "".join(self._all_lines)

    def _read(self, stream: IO[str], lines: list[str], all_lines: list[str]) -> None:
        for line in stream:
            with self._cond:
                lines.append(line)
                all_lines.append(line)
                if lines is self._lines and self.http_port is None:
                    h = _HTTP.search(line)
                    if h is not None:
                        self.http_port = int(h["port"])
                if lines is self._lines and self.port is None:
                    m = _SERVING.search(line)
                    if m is not None:
                        self.port = int(m["port"])
                        self.logged_key = m["key"]
                        self.logged_size = int(m["size"])
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _describe(self) -> str:
        rc = None if self.proc is None else self.proc.poll()
        return f"(exit code {rc}); server stderr:\n{self.stderr}\nserver stdout:\n{self.stdout}"

    # Life cycle.

    @property
    def verifier_key(self) -> str:
        """The log's verifier key text, from DATA_DIR/log.pub."""
        return (self.data_dir / "log.pub").read_text().strip()

    @property
    def address(self) -> str:
        assert self.port is not None, "server not started"
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """http://127.0.0.1:<http port> (no trailing slash)."""
        assert self.http_port is not None, "not started with --http-listen"
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def stub(self) -> pb_grpc.LogStub:
        """The Log service, calls carrying the auditor token."""
        assert self._stub is not None, "server not started"
        return self._stub

    @property
    def public_stub(self) -> pb_grpc.LogStub:
        """The Log service, calls without credentials."""
        assert self._public_stub is not None, "server not started"
        return self._public_stub

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [str(AFFIDAVIT), "serve"]
        if self.flags:
            cmd += ["--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0"]
            if self.origin is not None:
                cmd += ["--origin", self.origin]
            if self.entry_format is not None:
                cmd += ["--entry-format", self.entry_format]
            token_hash = hashlib.sha256(self.auditor_token.encode()).hexdigest()
            cmd += ["--auditor-token-hash", token_hash]
        return cmd + self.args

    def spawn(self) -> ServerProcess:
        """Start the process without waiting for it to serve (see start, wait_exit)."""
        assert not self.running, "already running"
        self.close_channel()
        with self._cond:
            self._lines, self._out = [], []
            self.port = self.http_port = self.logged_key = self.logged_size = None
        self.proc = subprocess.Popen(
            self.command(),
            env=clean_env(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self._readers = [
            threading.Thread(
                target=self._read, args=(s, lines, all_lines), daemon=True, name="serverproc-io"
            )
            for s, lines, all_lines in (
                (self.proc.stderr, self._lines, self._all_lines),
                (self.proc.stdout, self._out, self._all_out),
            )
        ]
        for t in self._readers:
            t.start()
        return self

    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """Start and wait until it logs its port and the health service says SERVING."""
        self.spawn()
        deadline = _deadline(timeout)
        with self._cond:
            while self.port is None:
                if self.proc is not None and self.proc.poll() is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
        if self.port is None:
            self.kill()
            raise AssertionError(
                f"affidavit serve did not report its port within {timeout:.0f}s " + self._describe()
            )
        self.channel = grpc.insecure_channel(self.address)
        self._public_stub = pb_grpc.LogStub(self.channel)
        authorised = grpc.intercept_channel(self.channel, _Metadata(self.auditor_metadata))
        self._stub = pb_grpc.LogStub(authorised)
        self.wait_healthy(deadline - time.monotonic())
        return self

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        assert self.channel is not None
        channel = self.channel
        deadline = _deadline(max(timeout, 1.0))
        last: object = None
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"affidavit serve exited while starting {self._describe()}")
            try:
                status = health_status(
                    channel, "", timeout=max(0.1, min(5.0, deadline - time.monotonic()))
                )
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as e:
                last = f"{e.code()}: {e.details()}"
            time.sleep(0.05)
        self.kill()
        raise AssertionError(
            f"affidavit serve at {self.address} not SERVING within {timeout:.0f}s "
            f"(last health answer: {last}) {self._describe()}"
        )

    def _join_readers(self) -> None:
        for t in self._readers:
            t.join(timeout=10)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to end by itself; its exit code."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"affidavit serve did not exit within {timeout:.0f}s {self._describe()}"
            ) from None
        self._join_readers()
        self.close_channel()
        return rc

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait for a clean exit; returns the exit code."""
        assert self.proc is not None, "never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL (a crash), and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        self._join_readers()
        self.close_channel()

    def restart(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """Stop cleanly (asserting exit code 0) if running, then start on the same dir."""
        if self.running:
            rc = self.stop()
            assert rc == 0, f"affidavit serve exited with {rc} on SIGTERM {self._describe()}"
        return self.start(timeout)

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = None
        self._stub = self._public_stub = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # Conveniences for tests.

    def checkpoint(self) -> pb.Checkpoint:
        return self.stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT)

    def all_entries(self, start: int = 0, end: int = 0) -> list[pb.Entry]:
        """Every entry in [start, end) (end 0: the current size), following the server's pages."""
        if end == 0:
            end = self.checkpoint().size
        out: list[pb.Entry] = []
        while start < end:
            page = list(
                self.stub.GetEntries(
                    pb.GetEntriesRequest(start=start, end=end), timeout=RPC_TIMEOUT
                )
            )
            assert page, f"GetEntries({start}, {end}) returned nothing"
            out += page
            start += len(page)
        return out


class ServerFactory:
    """Starts servers on fresh temp data dirs (or a given one); kills them all at teardown."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._count = 0
        self.servers: list[ServerProcess] = []

    def new_dir(self) -> Path:
        self._count += 1
        return self._tmp / f"log{self._count}"

    def create(self, *args: str, data_dir: Path | None = None, **kwargs: object) -> ServerProcess:
        """A ServerProcess, not started."""
        s = ServerProcess(data_dir or self.new_dir(), *args, **kwargs)  # type: ignore[arg-type]
        self.servers.append(s)
        return s

    def __call__(self, *args: str, data_dir: Path | None = None, **kwargs: object) -> ServerProcess:
        """A started, healthy ServerProcess."""
        return self.create(*args, data_dir=data_dir, **kwargs).start()

    def cleanup(self) -> None:
        """Kill every server started (each one, even if killing another fails)."""
        failures = []
        for s in self.servers:
            try:
                s.kill()
            except Exception as e:
                failures.append(e)
        if failures:
            raise failures[0]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    """A fresh log (origin example.com/test) served by a real process, healthy."""
    return server_factory()


def status_of(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    """Call an RPC expecting it to fail; the RpcError (fails the test if it succeeds)."""
    try:
        result = call(*args, timeout=RPC_TIMEOUT, **kwargs)  # type: ignore[operator]
        if isinstance(result, Iterator):
            result = list(result)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"expected an error, got {result!r}")


__all__: Sequence[str] = (
    "AFFIDAVIT",
    "ORIGIN",
    "RPC_TIMEOUT",
    "ServerFactory",
    "ServerProcess",
    "clean_env",
    "run_cli",
    "server",
    "server_factory",
    "status_of",
)
