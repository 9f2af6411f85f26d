"""A full disk: appends get RESOURCE_EXHAUSTED with a message a person can act on, health
says NOT_SERVING for the Log service, reads go on, and once space is freed appends resume by
themselves (no restart) with nothing acknowledged lost and nothing half-written.

The data directory sits on a small tmpfs of its own; the tests skip where mounting one is not
permitted (mount needs root with CAP_SYS_ADMIN), saying so.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from affidavit.proto import affidavit_pb2 as pb
from grpc_health.v1 import health_pb2

from tests import serverproc
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess, health_status

server_factory = serverproc.server_factory

DISK_MIB = 48
LOG_SERVICE = "affidavit.v1.Log"
WAIT_S = 30.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            "mounting a small tmpfs is not permitted here (needs root with CAP_SYS_ADMIN): "
            + done.stderr.strip()
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all the disk's free space but about leave bytes."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                st = os.statvfs(disk)
                room = st.f_bavail * st.f_frsize - leave
                if room <= 0:
                    break
                f.write(chunk[: min(len(chunk), room)])
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def wait_health(s: ServerProcess, want: int) -> None:
    assert s.channel is not None
    deadline = time.monotonic() + WAIT_S
    while (got := health_status(s.channel, LOG_SERVICE)) != want:
        assert time.monotonic() < deadline, f"health stayed {got}: {s.stderr}"
        time.sleep(0.1)


def entries(tag: str, n: int, size: int = 4096) -> list[bytes]:
    return [f"{tag} {i} ".encode().ljust(size, b".") for i in range(n)]


def append_all(s: ServerProcess, batch: list[bytes]) -> list[pb.AppendResult]:
    r = s.stub.AppendBatch(pb.AppendBatchRequest(entries=batch), timeout=RPC_TIMEOUT)
    return list(r.results)


def check_full_then_recovered(s: ServerProcess, disk: Path, leave: int, says: str) -> None:
    acked = {}
    for r, e in zip(append_all(s, before := entries("before", 50)), before, strict=True):
        assert r.WhichOneof("result") == "ok", r
        acked[r.ok.index] = e
    filler = fill(disk, leave)
    # Appends are refused, whole, with a message that says what to do.
    refused: pb.AppendResult | None = None
    for _ in range(20):  # until the disk is met (a few batches may still fit)
        for r, e in zip(append_all(s, batch := entries("full", 100)), batch, strict=True):
            if r.WhichOneof("result") == "ok":
                acked[r.ok.index] = e
            else:
                refused = r
        if refused is not None:
            break
    assert refused is not None, "the disk never filled"
    assert refused.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], refused
    assert "full" in refused.error.message and "free" in refused.error.message, refused
    assert says in refused.error.message, refused.error.message
    wait_health(s, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert s.channel is not None  # the process is up: only the Log service is not serving
    assert health_status(s.channel, "") == health_pb2.HealthCheckResponse.SERVING
    cp = s.checkpoint()  # reads go on
    assert cp.size == max(acked) + 1
    # Space is back: appends resume without a restart.
    filler.unlink()
    wait_health(s, health_pb2.HealthCheckResponse.SERVING)
    for r, e in zip(append_all(s, after := entries("after", 20)), after, strict=True):
        assert r.WhichOneof("result") == "ok", r
        acked[r.ok.index] = e
    # Nothing acknowledged is lost, nothing half-written: the log reopens whole.
    rc = s.stop()
    assert rc == 0, s.stderr
    s.start()
    stored = s.all_entries()
    assert [x.index for x in stored] == list(range(len(stored)))
    for index, entry in acked.items():
        assert stored[index].data == entry
    assert "Traceback" not in s.all_output


def test_full_disk_below_the_reserve(small_disk: Path, server_factory: ServerFactory) -> None:
    """The usual case: the reserve (--min-free-mib) is met before LevelDB's writes fail."""
    s = server_factory("--min-free-mib", "4", data_dir=small_disk / "log")
    check_full_then_recovered(s, small_disk, leave=2 << 20, says="MiB free")


def test_full_disk_met_by_leveldb(small_disk: Path, server_factory: ServerFactory) -> None:
    """No reserve: LevelDB's own write fails on the full disk; the database is reopened (once
    there is room) before it takes another write, so the torn write is never built on."""
    s = server_factory("--min-free-mib", "0", data_dir=small_disk / "log")
    check_full_then_recovered(s, small_disk, leave=0, says="No space left on device")
