#!/usr/bin/env python3
"""Console page times on a log of signed statements, beside the floors measured in the same run.

Builds a log of N statements with bench_audit's generator (humans granting, agents acting,
approvals, INTENT/OUTCOME pairs, one in a thousand out of scope), appends it to a real
`affidavit serve`, starts a real `affidavit console`, logs in, and times (keep-alive HTTP on
loopback, so the figure is the console's own time plus well under a millisecond):

- the HTTP floor: GET of the console's stylesheet (aiohttp serving a static file);
- the data floor of a 1,000-row search: the Search RPC for 1,000 hits with their entries'
  bytes (what the page reads), before anything is decoded or rendered;
- the action page (an action's evidence exported and verified, then rendered), first render
  per action: each sample is a different action;
- a 1,000-row search page.

Goal: both pages under 300 ms at p50. Prints one JSON object per line.

    .venv/bin/python benchmarks/bench_console.py                  # 100,000 statements
    .venv/bin/python benchmarks/bench_console.py --entries 10000  # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import http.cookiejar
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from affidavit.client.client import Client  # noqa: E402
from affidavit.client.verify import TrustPolicy  # noqa: E402
from affidavit.proto import affidavit_pb2 as pb  # noqa: E402
from affidavit.statements import build  # noqa: E402
from affidavit.statements.signing import IdentityKey  # noqa: E402
from audit_log_bench import build_log, waves  # noqa: E402
from audit_network_bench import start_server  # noqa: E402

GOAL_MS = 300.0
_CONSOLE = re.compile(r"affidavit console at (http://\S+?)/console/ ")


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def timed(samples: list[float], fn: Any) -> Any:
    began = time.perf_counter()
    out = fn()
    samples.append((time.perf_counter() - began) * 1000)
    return out


def summary(name: str, samples: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "figure": name,
        "runs": len(samples),
        "p50_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
        **extra,
    }


def start_console(server: str) -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).parent / "affidavit"
    proc = subprocess.Popen(
        [str(exe), "console", "--server", server, "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        m = _CONSOLE.search(line)
        if m:
            return proc, m.group(1)
    raise SystemExit(f"affidavit console exited ({proc.wait()}) before serving")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="statements in the log")
    parser.add_argument("--runs", type=int, default=20, help="samples of each page")
    args = parser.parse_args(argv)

    token = "bench-" + hashlib.sha256(os.urandom(16)).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "log"
        server, port = start_server(data_dir, hashlib.sha256(token.encode()).hexdigest())
        console = None
        try:
            admin = IdentityKey.load(data_dir / "admin.key")
            began = time.perf_counter()
            log = build_log(args.entries, admin=admin, sessions=64)
            address = f"127.0.0.1:{port}"
            policy = TrustPolicy((data_dir / "log.pub").read_text().strip())
            with Client(address, policy, token=token, timeout=600) as client:
                for leaf in log.leaves[: log.prefix]:
                    client.call(client.stub.Append, pb.AppendRequest(entry=leaf))
                for batch in waves(log.leaves[log.prefix :], 1000):
                    client.call(client.stub.AppendBatch, pb.AppendBatchRequest(entries=batch))
                size = client.checkpoint().checkpoint.size
                emit({"log": size, "built_and_appended_s": round(time.perf_counter() - began, 1)})

                # The floor of a 1,000-row search page: the Search RPC alone, before any entry
                # is read or anything rendered.
                floor: list[float] = []
                request = pb.SearchRequest(verdict=[pb.IN_SCOPE], page_size=1000, with_entries=True)
                for _ in range(args.runs):
                    timed(floor, lambda: client.call(client.stub.Search, request))
                emit(summary("search_1000_rpc_floor", floor))
            actions = sorted(
                {
                    build.statement_of(leaf).action.action_id
                    for leaf in log.leaves[log.prefix :]
                    if build.statement_of(leaf).WhichOneof("body") == "action"
                }
            )

            console, base = start_console(address)
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            form = {"token": token, "log_key": policy.log_key, "witness_keys": "", "quorum": "0"}
            with opener.open(
                f"{base}/console/login", urllib.parse.urlencode(form).encode(), timeout=600
            ) as r:
                assert r.url.endswith("/console/"), r.url

            def get(path: str) -> bytes:
                with opener.open(f"{base}/console{path}", timeout=600) as r:
                    body: bytes = r.read()
                    return body

            static: list[float] = []
            for _ in range(args.runs):
                timed(static, lambda: get("/static/console.css"))
            emit(summary("http_floor_static", static))
            pages: list[float] = []
            step = max(1, len(actions) // args.runs)
            for action_id in actions[::step][: args.runs]:
                body = timed(pages, lambda a=action_id: get(f"/action/{a}"))
                assert b'id="evidence"' in body
            emit(summary("action_page", pages, goal_ms=GOAL_MS))
            searches: list[float] = []
            for _ in range(args.runs):
                body = timed(searches, lambda: get("/search?verdict=in-scope&page_size=1000"))
                assert body.count(b"<tr data-leaf-hash") == 1000
            emit(
                summary(
                    "search_page_1000_rows",
                    searches,
                    goal_ms=GOAL_MS,
                    ratio_to_rpc_floor=round(
                        statistics.median(searches) / statistics.median(floor), 2
                    ),
                )
            )
        finally:
            for proc in (console, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
