"""bench_audit.py's network path: a real `affidavit serve` on loopback.

A fresh log (its cast appended one by one, then its actions in AppendBatch requests of 1,000
built by audit_log_bench.waves) is read back with GetEntries, then audited through a Client with
2 workers and in one process. start_server is also how bench_memory.py and bench_console.py
start theirs.

Not a script: one of bench_audit.py's parts (its docstring lists them).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from affidavit.client import audit as auditor
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.proto import affidavit_pb2 as pb
from affidavit.proto import affidavit_pb2_grpc as pb_grpc
from affidavit.statements.signing import IdentityKey
from audit_log_bench import ORIGIN, build_log, waves

ROOT = Path(__file__).resolve().parent.parent

_SERVING = re.compile(r"at 127\.0\.0\.1:(\d+),")


def start_server(data_dir: Path, token_hash: str) -> tuple[subprocess.Popen[str], int]:
    affidavit = Path(sys.executable).parent / "affidavit"
    proc = subprocess.Popen(
        [
            str(affidavit),
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--origin",
            ORIGIN,
            "--auditor-token-hash",
            token_hash,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:
        m = _SERVING.search(line)
        if m:
            # Read what it says from now on (refusals are logged): a full pipe would stop it.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(m.group(1))
        said.append(line)
    raise SystemExit(f"affidavit serve exited ({proc.wait()}) before serving: {''.join(said)}")


def network(entries: int, tmp: Path) -> dict[str, Any]:
    """Append a fresh log to a real server, then read it and audit it through a Client."""
    import grpc

    token = "bench-" + hashlib.sha256(os.urandom(16)).hexdigest()
    data_dir = tmp / "server"
    proc, port = start_server(data_dir, hashlib.sha256(token.encode()).hexdigest())
    try:
        admin = IdentityKey.load(data_dir / "admin.key")
        log = build_log(entries, admin=admin, sessions=64)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.LogStub(channel)
        for leaf in log.leaves[: log.prefix]:  # identities and grants, one after another
            stub.Append(pb.AppendRequest(entry=leaf), timeout=600)
        batches = waves(log.leaves[log.prefix :], 1000)
        began = time.perf_counter()
        for batch in batches:
            response = stub.AppendBatch(pb.AppendBatchRequest(entries=batch), timeout=600)
            failed = [r.error.message for r in response.results if r.WhichOneof("result") != "ok"]
            if failed:
                raise SystemExit(f"append refused: {failed[0]}")
        append_rate = (len(log.leaves) - log.prefix) / (time.perf_counter() - began)
        channel.close()
        policy = TrustPolicy((data_dir / "log.pub").read_text().strip())
        with Client(f"127.0.0.1:{port}", policy, token=token, timeout=600) as client:
            size = client.checkpoint().checkpoint.size
            began = time.perf_counter()
            read = sum(1 for _ in client.entries(0, size))
            read_rate = read / (time.perf_counter() - began)
            rates = []
            for workers in (2, 0):
                report = auditor.audit(client, workers=workers)
                if not report.root_ok or report.entries != size:
                    raise SystemExit(f"network audit failed: {report.text()[:2000]}")
                rates.append(report.rate)
        return {
            "entries": size,
            "append_batch_per_s": round(append_rate),
            "get_entries_per_s": round(read_rate),
            "audit_per_s_2_workers": round(rates[0]),
            "audit_per_s_inline": round(rates[1]),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
