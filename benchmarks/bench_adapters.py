#!/usr/bin/env python3
"""Latency an adapter adds to one tool call: INTENT + OUTCOME, durable, over loopback.

Starts a real `affidavit serve` (every answer follows a synced LevelDB write), registers a human
and an agent under a grant, then times, in one run and interleaved call by call:
  * bare       the tool call alone (a trivial function);
  * recorded   the same call through the adapters' Recorder (what every adapter runs: redact,
               sign, append the INTENT, verify its receipt and verdict, call, sign, append the
               OUTCOME, verify), so added = recorded - bare;
  * ceiling    two raw Appends of pre-signed statements on a bare gRPC stub (no signing, no
               client checks): the durable round trips the log itself costs, measured now.
Prints one JSON object per line; the last compares the added p50 with the 5 ms goal and with
the ceiling. On a shared machine read the ratios, not the absolute figures.

    .venv/bin/python benchmarks/bench_adapters.py            # 500 calls
    .venv/bin/python benchmarks/bench_adapters.py --quick    # 50 calls
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.serverproc starts the real server

from affidavit.adapters.recording import Recorder, Target, ToolCall  # noqa: E402
from affidavit.client.actor import Actor  # noqa: E402
from affidavit.client.client import Client  # noqa: E402
from affidavit.client.verify import TrustPolicy  # noqa: E402
from affidavit.proto import affidavit_pb2 as pb  # noqa: E402
from affidavit.statements import build  # noqa: E402
from affidavit.statements.ids import uuid7  # noqa: E402
from affidavit.statements.redact import redact_parameters  # noqa: E402
from affidavit.statements.signing import IdentityKey  # noqa: E402

from tests.serverproc import RPC_TIMEOUT, ServerFactory  # noqa: E402

GOAL_MS = 5.0
TOOL = "bench.create_issue"
PARAMS = {"repo": "acme/web", "title": "Flaky login test", "labels": ["bug", "ci"]}


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "n": len(ordered),
    }


def tool(arguments: dict[str, Any]) -> dict[str, Any]:
    """The tool: trivial, so that what is timed is the recording."""
    return {"number": 42, "repo": arguments["repo"]}


def raw_intents(key: IdentityKey, grant_id: str, n: int) -> list[bytes]:
    """n INTENTs of one session, signed and chained ahead of time (untimed)."""
    signer = build.SessionSigner(key)
    redaction_key = os.urandom(32)
    text, shown, redactions = redact_parameters(PARAMS, redaction_key)
    leaves = []
    for _ in range(n):
        body = pb.AgentAction(
            phase=pb.AgentAction.INTENT,
            action_id=uuid7(),
            actor=pb.Actor(agent_id=key.identity_id),
            grant_ids=[grant_id],
            authorization=pb.Authorization(decision=pb.ALLOW),
            operation=pb.Operation(
                operation_name="execute_tool",
                tool_name=TOOL,
                resource="repo:acme/web",
                access=pb.CREATE,
                parameters_json=text,
                parameters_digest=shown,
                redactions=redactions,
            ),
        )
        leaf = signer.sign(body)
        signer.advance(leaf)
        leaves.append(leaf)
    return leaves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="50 calls")
    args = parser.parse_args(argv)
    calls = 50 if args.quick else args.calls
    emit({"machine": os.uname().nodename, "cpus": os.cpu_count(), "load": os.getloadavg()})

    with tempfile.TemporaryDirectory() as tmp:
        factory = ServerFactory(Path(tmp))
        try:
            server = factory(entry_format="statements")
            policy = TrustPolicy(server.verifier_key)
            client = Client(server.address, policy, timeout=RPC_TIMEOUT)
            admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
            human, agent, raw = (IdentityKey.generate(n) for n in ("alice", "agent", "raw"))
            admin.register("alice", pb.HUMAN, human.public_key)
            for key in (agent, raw):
                admin.register(key.identity_id, pb.AGENT, key.public_key, owner="alice")
            grants = {
                key.identity_id: Actor(client, human)
                .grant(key.identity_id, tools=[TOOL], resources=["repo:acme/*"], access=[pb.CREATE])
                .statement_id
                for key in (agent, raw)
            }
            recorder = Recorder(
                Actor(client, agent),
                grant_ids=[grants["agent"]],
                target=lambda call: Target(f"repo:{call.arguments['repo']}", pb.CREATE),
                adapter="bench",
            )
            warmup = 10  # calls of each kind made first, untimed
            leaves = raw_intents(raw, grants["raw"], 2 * (calls + warmup))

            bare: list[float] = []
            recorded: list[float] = []
            appends: list[float] = []
            for i in range(calls + warmup):
                t0 = time.perf_counter()
                tool(PARAMS)
                t1 = time.perf_counter()
                pending = recorder.intent(ToolCall(TOOL, PARAMS, call_id=f"c{i}"))
                result = tool(PARAMS)
                recorder.outcome(pending, result=result)
                t2 = time.perf_counter()
                for leaf in leaves[2 * i : 2 * i + 2]:
                    server.public_stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
                t3 = time.perf_counter()
                if i >= warmup:
                    bare.append((t1 - t0) * 1000)
                    recorded.append((t2 - t1) * 1000)
                    appends.append((t3 - t2) * 1000)
            client.close()
        finally:
            factory.cleanup()

    b, r, c = percentiles(bare), percentiles(recorded), percentiles(appends)
    emit({"figure": "tool_call_bare", **b})
    emit({"figure": "tool_call_recorded", **r})
    emit({"figure": "ceiling_two_raw_durable_appends", **c})
    added = round(r["p50_ms"] - b["p50_ms"], 3)
    emit(
        {
            "figure": "added_per_tool_call",
            "p50_ms": added,
            "goal_ms": GOAL_MS,
            "ratio_to_goal": round(added / GOAL_MS, 3),
            "ceiling_p50_ms": c["p50_ms"],
            "ratio_to_ceiling": round(added / c["p50_ms"], 3) if c["p50_ms"] else None,
            "load_after": os.getloadavg(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
