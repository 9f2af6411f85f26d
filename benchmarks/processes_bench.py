"""The processes under test in bench_append.py and their CPU: a server subprocess (`affidavit
serve` on a fresh log, or the echo server), its RSS and its log's size, and CPU time read from
/proc, per process and per thread.

A load's CPU figures come from here: a process's user + system time (/proc/<pid>/stat), each of
its threads' (/proc/<pid>/task/<tid>/stat) named by what it does from `py-spy dump` (without
py-spy the per-thread split is not printed), its child processes' (a server's ingest workers),
and the whole machine's busy time (/proc/stat), so the rest of a shared machine's work shows.
A log server also serves its Prometheus metrics on a port of its own (serve --metrics-listen),
from which Process.integrated reads how many entries it has integrated in how many batches.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from affidavit.proto import affidavit_pb2 as pb
from clients_bench import LOG

ROOT = Path(__file__).resolve().parent.parent
ECHO_SCRIPT = Path(__file__).resolve().with_name("bench_append.py")
"""The script whose hidden --echo-server flag runs the echo server (clients_bench.echo_serve)."""


def proc_cpu_s(pid: int) -> float:
    """User and system CPU seconds of process pid."""
    return _stat_cpu_s(f"/proc/{pid}/stat")


def _stat_cpu_s(path: str) -> float:
    """User and system CPU seconds from a /proc stat file (a process's or one thread's)."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_cpu_s(pid: int) -> dict[int, float]:
    """The CPU seconds of each of pid's threads, by thread id."""
    found = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found[int(task)] = _stat_cpu_s(f"/proc/{pid}/task/{task}/stat")
    return found


def thread_parts(pid: int) -> dict[int, str]:
    """pid's Python threads by thread id, named by what they do (`py-spy dump` names them;
    verify_1 counts as verify). Empty without py-spy: the split is then not printed. Threads
    it does not list run no Python: LevelDB's compaction, gRPC's event engine ("native")."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        return {}
    dump = subprocess.run(
        [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60
    ).stdout
    named = re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, re.M)
    return {int(tid): _part(name) for tid, name in named}


def _part(thread_name: str) -> str:
    """A thread's part: its name less a pool's number (verify_1: verify); MainThread: main."""
    if thread_name == "MainThread":
        return "main"
    if thread_name.endswith("(_poll_wrapper)"):
        return "grpc_poller"
    return re.sub(r"_\d+$", "", thread_name)


def children(pid: int) -> set[int]:
    """pid's child processes (a server's ingest workers)."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found |= {int(c) for c in f.read().split()}
    return found


def procs_cpu_s(pids: set[int]) -> float:
    """The CPU seconds of those of pids still running (one that ended counts no more)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += proc_cpu_s(pid)
    return total


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@dataclass(frozen=True)
class Integrated:
    """A log server's integrator so far (its affidavit_batch_entries and
    affidavit_integration_seconds histograms): entries, batches, and seconds spent integrating
    them. Two readings around a window give the mean entries a batch in it."""

    entries: float
    batches: float
    seconds: float


_TOTALS = re.compile(r"^affidavit_(batch_entries|integration_seconds)_(sum|count) (\S+)$", re.M)


class Process:
    """A server subprocess whose port is read from its output; stderr is drained to a tail.
    metrics_url: where a log server serves its Prometheus metrics (start_log_server sets it)."""

    metrics_url: str | None = None

    def __init__(
        self, argv: list[str], port_re: str, *, stream: str, env: dict[str, str] | None = None
    ) -> None:
        # The repository first on the path: the server runs this checkout's code even when the
        # editable install's package list is behind it.
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self.tail: collections.deque[str] = collections.deque(maxlen=50)
        src = self.proc.stdout if stream == "stdout" else self.proc.stderr
        assert src is not None
        found: list[int] = []
        ready = threading.Event()

        def drain(f: Any, look: bool) -> None:
            for line in f:
                self.tail.append(line.rstrip())
                if look and not found and (m := re.search(port_re, line)):
                    found.append(int(m.group(1)))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, args=(src, True), daemon=True).start()
        if stream == "stdout":
            threading.Thread(target=drain, args=(self.proc.stderr, False), daemon=True).start()
        if not ready.wait(60) or not found:
            self.stop()
            raise RuntimeError(f"{argv[0]} did not report its port:\n" + "\n".join(self.tail))
        self.port = found[0]
        self.target = f"127.0.0.1:{self.port}"

    def wait_serving(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as ch:
            stub: Any = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + 30
            while True:
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server never became SERVING:\n" + "\n".join(self.tail))
                time.sleep(0.05)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def integrated(self) -> Integrated:
        """The integrator's totals so far, from the server's /metrics."""
        assert self.metrics_url is not None, "a log server started without --metrics-listen"
        with urllib.request.urlopen(self.metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        found = {(m[1], m[2]): float(m[3]) for m in _TOTALS.finditer(text)}
        return Integrated(
            entries=found[("batch_entries", "sum")],
            batches=found[("batch_entries", "count")],
            seconds=found[("integration_seconds", "sum")],
        )

    def rss_kb(self) -> tuple[int, int]:
        return proc_status(self.pid, "VmRSS"), proc_status(self.pid, "VmHWM")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _serve_help(exe: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [exe, "serve", "--help"], capture_output=True, text=True, env=env, timeout=60
    ).stdout


def start_log_server(
    data_dir: Path,
    *,
    statements: bool = False,
    ingest_workers: int | None = None,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Process:
    """`affidavit serve` creating a log in data_dir: of opaque entries (random bytes are not
    signed statements), or with statements=True the default, checked signed statements (with
    --ingest-workers when given); extra flags and environment (the storage section's
    --storage, --objects). Its metrics are served on a port of their own (srv.metrics_url), when
    this checkout's serve has --metrics-listen."""
    exe = shutil.which("affidavit", path=str(Path(sys.executable).parent)) or shutil.which(
        "affidavit"
    )
    if exe is None:
        raise RuntimeError("the `affidavit` command is not installed in this environment")
    argv = [exe, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *(extra or [])]
    serve_help = _serve_help(exe)
    if not statements and "--entry-format" in serve_help:
        argv += ["--entry-format", "opaque"]
    if "--metrics-listen" in serve_help:
        argv += ["--metrics-listen", "127.0.0.1:0"]
    if ingest_workers is not None:
        argv += ["--ingest-workers", str(ingest_workers)]
    srv = Process(argv, r" at 127\.0\.0\.1:(\d+),", stream="stderr", env=env)
    srv.wait_serving()
    # Logged before the gRPC port's line, so it is in the tail by now.
    for line in list(srv.tail):
        if m := re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", line):
            srv.metrics_url = m.group(1)
    return srv


def start_echo_server() -> Process:
    return Process(
        [sys.executable, str(ECHO_SCRIPT), "--echo-server"],
        r"^PORT (\d+)",
        stream="stdout",
    )


def tree_size(target: str) -> int:
    """The size of the log served at target (its latest checkpoint's)."""
    with grpc.insecure_channel(target) as ch:
        get = ch.unary_unary(
            LOG + "GetCheckpoint",
            request_serializer=pb.GetCheckpointRequest.SerializeToString,
            response_deserializer=pb.Checkpoint.FromString,
        )
        return int(get(pb.GetCheckpointRequest(), timeout=10).size)
