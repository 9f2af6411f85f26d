"""Secret-guard benchmark: what the schema walk and the guard cost per statement, beside what
decoding one costs.

Figures (median CPU microseconds per statement over several runs of a batch: process time,
so a machine shared with other work skews them less than wall time):
  decode        schema.decode of the signed statement: protobuf parsing, the floor any ingest
                pays for the statement
  text_guard    the earlier guard's design, measured here as the ceiling: every string field,
                parameters_json included, scanned once as plain text (secrets.scan), no
                parsing, no context, no decoding layers
  guard         schema._parse_parameters + _guard_secrets: the walk (unknown fields, sizes,
                enums: schema_walk), every string field, parameters parsed and walked with key
                and sibling context, split tokens, the URL and base64 layers
  guard_ratio   guard / text_guard
  check         schema.check: the guard and every schema rule of the statement's kind — the
                audit's "schema_and_secret_guard" stage (bench_audit.py), which issue 15 aims
                to bring to about 15 µs
  guard_pure_python_us, check_pure_python_us: the same with nothing compiled (
                keyword search by str.find; no C cores: schema walk, guard, canonical JSON):
                the same verdicts, only the time differs
for five statements: a typical INTENT (a dozen clean parameters), a grant, an INTENT whose
parameters carry redaction markers and base64 blobs (the decoding layers' worst case among
ordinary inputs), and the INTENTs bench_append.py and bench_audit.py sign (two and three
short parameters). See statements/README.md, "Cost".

Run: python benchmarks/bench_guard.py [--quick]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build, canonical, schema, schema_walk, secret_values, secrets
from affidavit.statements.canonical import canonical_json, shown_digest
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import redact_parameters
from affidavit.statements.signing import IdentityKey

KEY = IdentityKey.generate("bench-agent")
SIGNER = build.SessionSigner(KEY)


def emit(**line: Any) -> None:
    print(json.dumps(line), flush=True)


def median_us(fn: Callable[[], object], batch: int, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(batch):
            fn()
        times.append((time.process_time() - start) / batch * 1e6)
    return statistics.median(times)


def intent(params: dict[str, Any]) -> bytes:
    shown, digest, redactions = redact_parameters(params, b"k" * 32)
    return SIGNER.sign(
        pb.AgentAction(
            phase=pb.AgentAction.INTENT,
            action_id="bench-1",
            actor=pb.Actor(agent_id="bench-agent", model="model-x", agent_version="1.4.2"),
            grant_ids=["01929c3e-7d1a-7000-8000-000000000001"],
            authorization=pb.Authorization(decision=pb.ALLOW, policy_id="default"),
            operation=pb.Operation(
                operation_name="execute_tool",
                tool_name="github.create_pull_request",
                resource="repo:acme/web",
                access=pb.CREATE,
                parameters_json=shown,
                parameters_digest=digest,
                redactions=redactions,
            ),
            correlation=pb.Correlation(trace_id=os.urandom(16).hex(), span_id=os.urandom(8).hex()),
        )
    )


STATEMENTS = {
    "intent_typical": intent(
        {
            "repo": "acme/web",
            "base": "main",
            "head": "fix-login-redirect",
            "title": "Fix the login redirect after SSO",
            "body": "Closes #4821. The callback dropped the state parameter.",
            "draft": False,
            "labels": ["bug", "auth"],
            "reviewers": ["alice", "bob"],
            "commit": os.urandom(20).hex(),
            "request_id": "2f1c7a52-9a0e-4c53-9a56-1e2b1d1f0c11",
            "path": "src/auth/callback.py",
            "max_tokens": 4096,
        }
    ),
    "grant": SIGNER.sign(
        pb.Grant(
            grantee="bench-agent",
            tools=["github.*"],
            resources=["repo:acme/*", "secret:prod/payments/*"],
            access=[pb.CREATE, pb.READ],
            ticket="CHG-1042",
            justification="Release work for the payments team, this sprint only.",
        )
    ),
    "intent_encoded": intent(
        {
            "token": "ghp_" + "q8Zr2Lm9Xv4Tn7Kw3Hb6Jc5Fd1Sg0PyA2bC",
            "attachment": base64.b64encode(os.urandom(1500)).decode(),
            "config": base64.b64encode(b'{"region": "eu-west-1", "retries": 3}').decode(),
            "env": [{"name": "DB_PASSWORD", "value": "tangerine-walrus-9"}],
        }
    ),
}


def _intent_like(tool: str, resource: str, params: dict[str, Any]) -> bytes:
    """An INTENT shaped as the throughput benchmarks sign them: canonical parameters, no
    redactions, an actor, a grant, a trace id."""
    text = canonical_json(params)
    return SIGNER.sign(
        pb.AgentAction(
            phase=pb.AgentAction.INTENT,
            action_id=uuid7(),
            actor=pb.Actor(agent_id="bench-agent", agent_version="1.0.0", model="bench-model"),
            grant_ids=["01929c3e-7d1a-7000-8000-000000000001"],
            authorization=pb.Authorization(
                policy_id="agents", decision=pb.ALLOW, enforcement_point="bench-gateway"
            ),
            operation=pb.Operation(
                operation_name="execute_tool",
                tool_name=tool,
                resource=resource,
                access=pb.READ,
                parameters_json=text,
                parameters_digest=shown_digest(text),
            ),
            correlation=pb.Correlation(trace_id=os.urandom(16).hex()),
        )
    )


STATEMENTS["intent_bench_append"] = _intent_like(
    "bench.read_file", "repo:bench/service-3", {"path": "src/pkg/module_0_3_7.py", "ref": "main"}
)
STATEMENTS["intent_bench_audit"] = _intent_like(
    "github.create_pull_request",
    "repo:acme/svc-5",
    {"repo": "acme/svc-5", "title": "change 7-1042", "draft": True},
)


def text_guard(statement: pb.Statement) -> bool:
    """Every string field scanned as plain text: the earlier design, as a reference."""
    found = schema_walk.walk(statement, "statement")
    texts = [*found.texts, statement.action.operation.parameters_json]
    texts += (v for _, entries in found.maps for v in entries.values())
    return any(secrets.scan(text) for text in texts)


def guard(statement: pb.Statement) -> None:
    """The guard as schema.check runs it: the parameters parsed, then every field guarded."""
    text = statement.action.operation.parameters_json
    schema._guard_secrets(statement, schema._parse_parameters(text)[0])


_CORES: tuple[Any, ...] = (schema_walk, secrets, secret_values, canonical)
"""The modules with a C fast path (each a CORE attribute; None turns it off)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    batch, repeat = (200, 3) if args.quick else (2000, 7)
    for name, leaf in STATEMENTS.items():
        signed, statement = schema.decode(leaf)
        decode = median_us(partial(schema.decode, leaf), batch, repeat)
        text = median_us(partial(text_guard, statement), batch, repeat)
        guard_us = median_us(partial(guard, statement), batch, repeat)
        check = median_us(partial(schema.check, signed, statement), batch, repeat)
        cores = {m: m.CORE for m in _CORES}
        for m in _CORES:
            m.CORE = None
        pure = median_us(partial(guard, statement), batch, repeat)
        check_pure = median_us(partial(schema.check, signed, statement), batch, repeat)
        for m, core in cores.items():
            m.CORE = core
        emit(
            statement=name,
            bytes=len(leaf),
            decode_us=round(decode, 2),
            text_guard_us=round(text, 2),
            guard_us=round(guard_us, 2),
            guard_ratio=round(guard_us / text, 2),
            check_us=round(check, 2),
            guard_pure_python_us=round(pure, 2),
            check_pure_python_us=round(check_pure, 2),
            walk_core=cores[schema_walk] is not None,
            guard_core=cores[secrets] is not None,
            canonical_core=cores[canonical] is not None,
        )


if __name__ == "__main__":
    main()
