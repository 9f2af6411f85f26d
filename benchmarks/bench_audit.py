#!/usr/bin/env python3
"""Audit throughput: a full replay of a log of signed statements, with its ceilings.

Builds a log of N signed statements in process with statements.build (an admin registering
humans and agents, humans granting, agents delegating to sub-agents, approvals, INTENT/OUTCOME
pairs, one action in a thousand out of scope), caches it on disk, and measures in the same run:

- the Ed25519 verify ceiling: PyNaCl verifications/s on 1 and on 2 processes;
- what each stage of a replay costs on one core (decode, schema + secret guard, signature,
  admit + apply, leaf hash + compact range) on a sample: where the time goes (admit + apply
  over the auditor's DictKV, which keeps records as objects; beside it, not in the total,
  admit_and_apply_bytes_store: the same over a store of bytes, encoding each record written,
  as the server does);
- what the server's serial path costs per entry on the same sample (the statement gate's
  admit + apply + search indexing over a real LevelDB, and the batch commit; then the whole of
  Sequencer._integrate, which adds hashing, dedup lookups, tiles, signing and proofs): the part
  no number of ingest workers spreads, so 1e6 / its sum caps a server's statements/s;
- client.audit.audit_entries over the in-memory log (no network): entries/s, median of runs,
  with 2 worker processes and in one process; with workers, the CPU per entry of the serial
  process (decode again, admit + apply in log order, compact range, verdict comparison) and of
  the workers (decode, schema + guard, signature, leaf hash), the workers' start-up, and the
  model they give: the serial process alone caps the rate at 1 / main, N workers at
  N / workers, C cores at C / (main + workers); N workers on C cores reach the least of the
  three. On 2 cores the CPU budget is the
  wall (2026-12-05, load 10-16: main 46 µs, workers 85 µs + 0.34 s of start-up, 2 / 131 µs ≈
  15,300/s, i.e. s / total = 0.36 of verify on 2 processes); from 3 cores the serial process
  is, at about 21,500/s (benchmarks/README.md, "Audit replay");
- writing and reading the audit's position file for the whole log;
- the network path on a real `affidavit serve` (a smaller log appended with AppendBatch):
  GetEntries read rate alone, and client.audit.audit through a Client.

Prints one JSON object per line.

    .venv/bin/python benchmarks/bench_audit.py                      # 200,000 entries
    .venv/bin/python benchmarks/bench_audit.py --entries 1000000    # the target's log size
    .venv/bin/python benchmarks/bench_audit.py --quick              # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from affidavit.client import audit as auditor  # noqa: E402
from affidavit.client.audit.pool import Pool  # noqa: E402
from affidavit.client.client import Client  # noqa: E402
from affidavit.client.verify import TrustPolicy, Verified, open_checkpoint  # noqa: E402
from affidavit.merkle import hashing, note  # noqa: E402
from affidavit.merkle.checkpoint import Checkpoint  # noqa: E402
from affidavit.merkle.compact import CompactRange  # noqa: E402
from affidavit.proto import affidavit_pb2 as pb  # noqa: E402
from affidavit.proto import affidavit_pb2_grpc as pb_grpc  # noqa: E402
from affidavit.server.admission import StatementGate  # noqa: E402
from affidavit.server.sequencer import Receipt, Sequencer  # noqa: E402
from affidavit.server.storage import Batch, Storage  # noqa: E402
from affidavit.statements import build, ingest, schema, signing  # noqa: E402
from affidavit.statements.canonical import canonical_json, digest, shown_digest  # noqa: E402
from affidavit.statements.ids import uuid7  # noqa: E402
from affidavit.statements.redact import parameters_digest  # noqa: E402
from affidavit.statements.signing import IdentityKey  # noqa: E402
from affidavit.statements.state import KV, DictKV, LogState  # noqa: E402

from tests.bytes_kv import BytesKV  # noqa: E402

TARGET = 50_000
"""Entries/s verified, for a 1M-entry log on this 2-core machine (the project's target)."""
ORIGIN = "bench.example/audit"
HUMANS, AGENTS, SUBS = 4, 16, 4
OUT_OF_SCOPE_EVERY = 1000
CACHE_MAGIC = b"affidavit-bench-audit-log/1\n"


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def note_(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Building a log in process.
# --------------------------------------------------------------------------------------------


@dataclass
class Log:
    """Leaves in log order and the verdict an honest log records for each."""

    leaves: list[bytes]
    verdicts: list[tuple[int, str]]
    prefix: int = 0
    """How many leaves set the cast up (identities, grants); actions follow."""


@dataclass
class Cast:
    """Who is in the log: identity seeds and each actor's grant."""

    seeds: dict[str, bytes]
    grants: dict[str, str]


def setup(admin: IdentityKey, genesis: bool, time_ms: int) -> tuple[Log, Cast]:
    """Identities and grants: what every action relies on."""
    keys = {f"human-{i}": IdentityKey.generate(f"human-{i}") for i in range(HUMANS)}
    keys |= {f"agent-{i}": IdentityKey.generate(f"agent-{i}") for i in range(AGENTS)}
    keys |= {f"sub-{i}": IdentityKey.generate(f"sub-{i}") for i in range(SUBS)}
    log = Log([], [])
    signers: dict[str, build.SessionSigner] = {}

    def put(who: IdentityKey, body: build.Body) -> str:
        s = signers.setdefault(who.identity_id, build.SessionSigner(who))
        statement_id = uuid7()
        leaf = s.sign(body, statement_id=statement_id, time_ms=time_ms)
        s.advance(leaf)
        log.leaves.append(leaf)
        log.verdicts.append((0, ""))
        return statement_id

    if genesis:
        put(admin, build.register(admin.identity_id, pb.ADMIN, admin.public_key))
    for identity, key in keys.items():
        kind = pb.HUMAN if identity.startswith("human") else pb.AGENT
        put(admin, build.register(identity, kind, key.public_key, owner=admin.identity_id))
    grants: dict[str, str] = {}
    for i in range(AGENTS):
        grants[f"agent-{i}"] = put(
            keys[f"human-{i % HUMANS}"],
            pb.Grant(
                grantee=f"agent-{i}",
                tools=["github.*", "jira.*"],
                resources=["repo:acme/*", "ticket:OPS-*"],
                access=[pb.CREATE, pb.UPDATE, pb.READ],
                ticket="CHG-1",
                justification="quarterly maintenance",
            ),
        )
    for i in range(SUBS):
        grants[f"sub-{i}"] = put(
            keys[f"agent-{i}"],
            pb.Grant(
                grantee=f"sub-{i}",
                tools=["github.*"],
                resources=["repo:acme/web*"],
                access=[pb.CREATE],
                parent_grant_id=grants[f"agent-{i}"],
            ),
        )
    return log, Cast({k: v.seed for k, v in keys.items()}, grants)


def actions(job: tuple[Cast, int, int, int, int]) -> Log:
    """pairs INTENT/OUTCOME pairs by every actor in turn, with approvals; a worker's share.
    Each identity spreads its statements over `sessions` sessions, round-robin."""
    cast, time_ms, pairs, salt, sessions = job
    keys = {k: IdentityKey(k, s) for k, s in cast.seeds.items()}
    signers = {(k, i): build.SessionSigner(key) for k, key in keys.items() for i in range(sessions)}
    actors = sorted(cast.grants)
    log = Log([], [])
    session = 0

    def put(who: str, body: build.Body, verdict: tuple[int, str] = (0, "")) -> bytes:
        s = signers[who, session]
        leaf = s.sign(body, time_ms=time_ms)
        s.advance(leaf)
        log.leaves.append(leaf)
        log.verdicts.append(verdict)
        return leaf

    for n in range(pairs):
        who = actors[n % len(actors)]
        session = n // len(actors) % sessions
        sub = who.startswith("sub")
        bad = n % OUT_OF_SCOPE_EVERY == OUT_OF_SCOPE_EVERY - 1
        resource = (
            "repo:other/x"
            if bad
            else f"repo:acme/web-{n % 7}"
            if sub
            else f"repo:acme/svc-{n % 13}"
        )
        params = {"repo": resource[5:], "title": f"change {salt}-{n}", "draft": n % 2 == 0}
        action_id = uuid7()
        approval_id = ""
        approve = not sub and n % 50 == 0
        if approve:
            human = f"human-{int(who.split('-')[1]) % HUMANS}"
            leaf = put(
                human,
                pb.Approval(
                    action_id=action_id,
                    agent_id=who,
                    parameters_digest=parameters_digest(params),
                    decision=pb.Approval.APPROVE,
                    ticket="CHG-2",
                ),
            )
            approval_id = build.statement_of(leaf).header.statement_id
        verdict = (pb.OUT_OF_SCOPE, "resource-not-granted") if bad else (pb.IN_SCOPE, "")
        text = canonical_json(params)
        intent = pb.AgentAction(
            phase=pb.AgentAction.INTENT,
            action_id=action_id,
            actor=pb.Actor(agent_id=who, agent_version="1.4.2", model="model-x", framework="bench"),
            grant_ids=[cast.grants[who]],
            approval_id=approval_id,
            authorization=pb.Authorization(
                decision=pb.ALLOW_IF_APPROVED if approve else pb.ALLOW, policy_id="bench"
            ),
            operation=pb.Operation(
                operation_name="execute_tool",
                tool_name="github.create_pull_request",
                tool_call_id=f"call-{salt}-{n}",
                resource=resource,
                access=pb.CREATE,
                parameters_json=text,
                parameters_digest=shown_digest(text),
            ),
            correlation=pb.Correlation(trace_id=f"{n:032x}", span_id=f"{n:016x}"),
        )
        intent_leaf = put(who, intent, verdict)
        outcome = pb.AgentAction()
        outcome.CopyFrom(intent)
        outcome.phase = pb.AgentAction.OUTCOME
        outcome.intent_leaf_hash = hashing.leaf_hash(intent_leaf)
        outcome.authorization.Clear()
        outcome.outcome.CopyFrom(
            pb.Outcome(status=pb.OK, result_digest=digest(f"pr-{n}"), effect_ref=f"commit:{n:040x}")
        )
        put(who, outcome, verdict)
    return log


def build_log(
    entries: int, *, admin: IdentityKey | None = None, procs: int = 2, sessions: int = 1
) -> Log:
    """About `entries` statements (a new log with its genesis when admin is None, else
    statements following the genesis an existing log's admin wrote), client time now; each
    actor's statements spread over `sessions` sessions per worker process."""
    time_ms = build.now_ms()
    log, cast = setup(admin or IdentityKey.generate("admin"), admin is None, time_ms)
    per_pair = 2 + 1 / 50 * (AGENTS / (AGENTS + SUBS))
    pairs = max(procs, round((entries - len(log.leaves) - (admin is not None)) / per_pair))
    shares = [pairs // procs + (i < pairs % procs) for i in range(procs)]
    jobs = [(cast, time_ms, share, salt, sessions) for salt, share in enumerate(shares)]
    if procs == 1:
        parts = [actions(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            parts = pool.map(actions, jobs)
    # Interleave the shares in runs of 64: sessions stay in order, the log looks concurrent.
    log.prefix = len(log.leaves)
    cursors = [0] * len(parts)
    while any(c < len(p.leaves) for c, p in zip(cursors, parts, strict=True)):
        for i, part in enumerate(parts):
            log.leaves += part.leaves[cursors[i] : cursors[i] + 64]
            log.verdicts += part.verdicts[cursors[i] : cursors[i] + 64]
            cursors[i] += 64
    return log


def save_log(path: Path, log: Log) -> None:
    out = [CACHE_MAGIC, struct.pack(">Q", len(log.leaves))]
    for leaf, (verdict, reason) in zip(log.leaves, log.verdicts, strict=True):
        r = reason.encode()
        out += [struct.pack(">IBH", len(leaf), verdict, len(r)), leaf, r]
    path.write_bytes(b"".join(out))


def load_log(path: Path) -> Log:
    raw = memoryview(path.read_bytes())
    assert bytes(raw[: len(CACHE_MAGIC)]) == CACHE_MAGIC
    at = len(CACHE_MAGIC)
    (count,) = struct.unpack_from(">Q", raw, at)
    at += 8
    log = Log([], [])
    head = struct.Struct(">IBH")
    for _ in range(count):
        size, verdict, rlen = head.unpack_from(raw, at)
        at += head.size
        log.leaves.append(bytes(raw[at : at + size]))
        at += size
        log.verdicts.append((verdict, bytes(raw[at : at + rlen]).decode()))
        at += rlen
    return log


def cached_log(entries: int, cache_dir: Path) -> tuple[Log, float | None]:
    """The in-memory log of about `entries` (built and cached on first use); build seconds."""
    path = cache_dir / f"affidavit-bench-audit-{entries}.bin"
    if path.exists():
        return load_log(path), None
    began = time.perf_counter()
    log = build_log(entries)
    seconds = time.perf_counter() - began
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_log(path, log)
    return log, seconds


def signed_checkpoint(leaves: list[bytes]) -> Verified:
    """A checkpoint of the leaves, signed by a fresh log key and verified as a client would."""
    signer, verifier = note.generate_key(ORIGIN)
    root = hashing.root_hash(hashing.leaf_hashes(leaves))
    text = note.sign(Checkpoint(ORIGIN, len(leaves), root).format(), signer)
    return open_checkpoint(text, TrustPolicy(verifier))


# --------------------------------------------------------------------------------------------
# Ceilings and stage costs.
# --------------------------------------------------------------------------------------------


def _verify_loop(args: tuple[bytes, bytes, bytes, float]) -> float:
    statement, signature, public_key, seconds = args
    n, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        for _ in range(200):
            signing.verify(statement, signature, public_key)
        n += 200
    return n / elapsed


def verify_ceiling(log: Log, seconds: float) -> dict[int, float]:
    """Ed25519 verifications/s through statements.signing.verify, on 1 and 2 processes."""
    signed = pb.SignedStatement.FromString(log.leaves[-1])
    public_key = {
        signing.key_id(k): k
        for k in (build.statement_of(leaf).identity.public_key for leaf in log.leaves[:64])
        if k
    }[signed.key_id]
    job = (signed.statement, signed.signature, public_key, seconds)
    out = {1: _verify_loop(job)}
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_verify_loop, [(*job[:3], 0.2)] * 2)  # warm the workers up
        out[2] = sum(pool.map(_verify_loop, [job] * 2))
    return out


def stage_costs(log: Log, sample: int) -> dict[str, float]:
    """CPU microseconds per entry of each stage of a replay, on one core, over the first
    `sample` entries (each stage on its own, so they add up to a single-threaded replay).
    Process time, not wall time: on a machine shared with other work it is the figure that
    stays put."""
    leaves = log.leaves[:sample]
    n = len(leaves)
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        began = time.process_time()
        result = fn()
        out[name] = (time.process_time() - began) / n * 1e6
        return result

    decoded = timed("decode", lambda: [schema.decode(leaf) for leaf in leaves])

    def check() -> None:
        for s, st in decoded:
            schema.check(s, st)

    timed("schema_and_secret_guard", check)
    keys: dict[str, bytes] = {}
    for _, st in decoded:
        if st.WhichOneof("body") == "identity":
            keys[signing.key_id(st.identity.public_key)] = st.identity.public_key
    timed(
        "signature",
        lambda: [signing.verify(s.statement, s.signature, keys[s.key_id]) for s, _ in decoded],
    )
    hashes = timed("leaf_hash", lambda: hashing.leaf_hashes(leaves))
    timed("compact_range", lambda: CompactRange().extend(hashes))
    timed("admit_and_apply", lambda: _admit_apply(decoded, hashes, keys, DictKV()))
    return out


def _admit_apply(
    decoded: list[tuple[pb.SignedStatement, pb.Statement]],
    hashes: list[bytes],
    keys: dict[str, bytes],
    kv: KV,
) -> None:
    """Admit and apply the statements in order over a LogState on kv (the auditor's DictKV
    keeps records as objects; a store of bytes has them encoded, as the server's do)."""
    state = LogState(kv)
    for i, ((s, st), h) in enumerate(zip(decoded, hashes, strict=True)):
        verdict = ingest.admit(
            ingest.Prepared(s, st, keys[s.key_id]), state, st.header.client_time_ms
        )
        state.apply(i, h, st, verdict)


def admit_apply_over_bytes(log: Log, sample: int) -> float:
    """CPU microseconds per entry of admit + apply as stage_costs measures it, over a store of
    bytes (the server's form of the stage: every record written is encoded)."""
    decoded = [schema.decode(leaf) for leaf in log.leaves[:sample]]
    keys = {
        signing.key_id(st.identity.public_key): st.identity.public_key
        for _, st in decoded
        if st.WhichOneof("body") == "identity"
    }
    hashes = hashing.leaf_hashes(log.leaves[:sample])
    began = time.process_time()
    _admit_apply(decoded, hashes, keys, BytesKV())
    return (time.process_time() - began) / len(decoded) * 1e6


def integrator_costs(log: Log, sample: int, batch: int = 1000) -> dict[str, float]:
    """CPU microseconds per entry of the server's serial path for the first `sample` entries,
    decoded and signature-checked beforehand (as the ingest workers hand them over), their
    records read ahead (as the verifier threads do; read_ahead is what that costs them, off
    the serial path): the statement gate's admission, state transition and search indexing,
    in log order, against the records of a real LevelDB; then the storage commit of each batch
    of `batch` (building the WriteBatch; its sync is not CPU time). CPU time of this thread:
    the integrator's own (LevelDB compacts in threads of its own, which hold no interpreter
    lock and would add noise as the database grows). The gate must give the verdicts the log
    holds."""
    leaves = log.leaves[:sample]
    decoded = [schema.decode(leaf) for leaf in leaves]
    keys = {
        signing.key_id(st.identity.public_key): st.identity.public_key
        for _, st in decoded
        if st.WhichOneof("body") == "identity"
    }
    prepared = [ingest.Prepared(s, st, keys[s.key_id]) for s, st in decoded]
    hashes = hashing.leaf_hashes(leaves)
    admitted_ms = decoded[0][1].header.client_time_ms  # the benchmark's log: all signed then
    gate_s = commit_s = ahead_s = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-audit-gate-") as tmp:
        storage = Storage(Path(tmp) / "db", create=True)
        try:
            storage.set_entry_format("statements")
            gate = StatementGate(storage, clock=lambda: admitted_ms)
            previous = None
            for start in range(0, len(leaves), batch):
                end = min(start + batch, len(leaves))
                began = time.thread_time()
                gate.read_ahead(prepared[start:end])  # the verifier threads' part
                ahead_s += time.thread_time() - began
                began = time.thread_time()
                gate.begin()
                verdicts = [
                    gate.admit(leaves[i], prepared[i], hashes[i], i) for i in range(start, end)
                ]
                admitted = time.thread_time()
                note = f"bench checkpoint {end}"
                writes = gate.writes()
                storage.commit(
                    Batch(start, leaves[start:end], hashes[start:end], {}, note, writes), previous
                )
                gate.durable()
                previous = note
                gate_s += admitted - began
                commit_s += time.thread_time() - admitted
                if verdicts != log.verdicts[start:end]:
                    raise SystemExit(
                        f"the gate's verdicts differ from the log's in [{start}, {end})"
                    )
        finally:
            storage.close()
    n = len(leaves)
    return {
        "admit_apply_index": gate_s / n * 1e6,
        "commit": commit_s / n * 1e6,
        "read_ahead": ahead_s / n * 1e6,
    }


def whole_integration_cost(log: Log, sample: int, batch: int = 1000) -> float:
    """CPU microseconds per entry of the server's whole serial path, Sequencer._integrate, for
    the first `sample` entries (prepared and read ahead beforehand, as in integrator_costs,
    untimed) in batches of `batch`: integrator_costs' gate and commit, plus what the sequencer
    adds around them (leaf hashes, the leaf-hash index lookups, growing the tiles, signing the
    checkpoint, the receipts' inclusion proofs). No checkpoint kept outside the database: its
    writes run beside the next batch, on the publisher thread. The receipts must carry the
    verdicts the log holds."""
    leaves = log.leaves[:sample]
    decoded = [schema.decode(leaf) for leaf in leaves]
    keys = {
        signing.key_id(st.identity.public_key): st.identity.public_key
        for _, st in decoded
        if st.WhichOneof("body") == "identity"
    }
    prepared = [ingest.Prepared(s, st, keys[s.key_id]) for s, st in decoded]
    admitted_ms = decoded[0][1].header.client_time_ms
    signer, _ = note.generate_key(ORIGIN)
    spent = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-audit-sequencer-") as tmp:
        storage = Storage(Path(tmp) / "db", create=True)
        try:
            storage.set_entry_format("statements")
            empty = Checkpoint(ORIGIN, 0, hashing.EMPTY_ROOT)
            genesis = note.sign(empty.format(), signer)
            storage.commit(Batch(0, [], [], {}, genesis), None)
            gate = StatementGate(storage, clock=lambda: admitted_ms)
            sequencer = Sequencer(
                storage, ORIGIN, lambda body: note.sign(body, signer), empty, genesis, gate=gate
            )
            for start in range(0, len(leaves), batch):
                end = min(start + batch, len(leaves))
                gate.read_ahead(prepared[start:end])  # the verifier threads' part
                began = time.thread_time()
                done = sequencer._integrate(leaves[start:end], prepared[start:end])
                spent += time.thread_time() - began
                got = [
                    (o.verdict, o.verdict_reason) if isinstance(o, Receipt) else o
                    for o in done.outcomes
                ]
                if got != log.verdicts[start:end]:
                    raise SystemExit(
                        f"the sequencer's verdicts differ from the log's in [{start}, {end})"
                    )
        finally:
            storage.close()
    return spent / len(leaves) * 1e6


# --------------------------------------------------------------------------------------------
# The audit, in memory and over the network.
# --------------------------------------------------------------------------------------------


def recorded_entries(log: Log) -> list[auditor.RecordedEntry]:
    """The log's entries as the server serves them: an action's with its admission time (here,
    its client time: the benchmark's log admitted everything as it was signed)."""
    return [
        auditor.RecordedEntry(
            i, leaf, v, r, build.statement_of(leaf).header.client_time_ms if v else 0
        )
        for i, (leaf, (v, r)) in enumerate(zip(log.leaves, log.verdicts, strict=True))
    ]


def check_report(report: auditor.Report, log: Log) -> None:
    """The benchmark's log is honest: only its planted out-of-scope actions may be found."""
    bad = sum(1 for v, _ in log.verdicts if v == pb.OUT_OF_SCOPE) // 2
    expected = {"out-of-scope-action": bad} if bad else {}
    if not report.root_ok or report.finding_counts != expected:
        raise SystemExit(f"unexpected audit result: {json.dumps(report.to_json())[:2000]}")


def position_file_cost(log: Log, cp: Verified, tmp: Path) -> dict[str, float]:
    """An audit saving its position as by default (every 30 s and at the end), timing each
    save; then loading the final position once."""
    path = tmp / "audit.pos"
    saves: list[float] = []
    save = auditor.save_position

    def timed_save(path: Path, replay: Any) -> None:
        began = time.perf_counter()
        save(path, replay)
        saves.append(time.perf_counter() - began)

    entries = recorded_entries(log)
    auditor.save_position = timed_save
    try:
        report = auditor.audit_entries(lambda s, e: entries[s:e], cp, resume=path)
    finally:
        auditor.save_position = save
    check_report(report, log)
    began = time.perf_counter()
    replay = auditor.load_position(path)
    load = time.perf_counter() - began
    return {
        "bytes": path.stat().st_size,
        "records": len(replay.kv.data),
        "audit_per_s": round(report.rate),
        "audit_s": round(report.elapsed, 1),
        "saves": len(saves),
        "saving_s": round(sum(saves), 2),
        "last_save_s": round(saves[-1], 2),
        "load_s": round(load, 2),
    }


def waves(leaves: list[bytes], size: int) -> list[list[bytes]]:
    """The leaves as batches whose entries depend on none in the same batch (one statement per
    session, an approval apart from its action), so the log is the same whatever order a
    server sequences a batch in (the server at commit e3673c4 sequenced each entry of a batch
    as soon as its own checks finished, which could reorder a session's statements)."""
    last: dict[object, int] = {}
    levels: list[list[bytes]] = []
    for leaf in leaves:
        st = build.statement_of(leaf)
        keys: list[object] = [(st.header.issuer, st.header.session_id)]
        body = st.WhichOneof("body")
        if body == "approval":
            keys.append(st.approval.action_id)
        elif body == "action":
            keys.append(st.action.action_id)
        level = 1 + max(last.get(k, -1) for k in keys)
        for k in keys:
            last[k] = level
        if level == len(levels):
            levels.append([])
        levels[level].append(leaf)
    return [level[i : i + size] for level in levels for i in range(0, len(level), size)]


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


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--entries", type=int, default=200_000, help="log size (200,000)")
    p.add_argument("--runs", type=int, default=3, help="audit runs; figures are medians (3)")
    p.add_argument("--workers", type=int, default=2, help="audit worker processes (2)")
    p.add_argument("--inline-runs", type=int, default=None, help="runs in one process (--runs)")
    p.add_argument("--sample", type=int, default=20_000, help="entries for stage costs (20,000)")
    p.add_argument("--network-entries", type=int, default=20_000, help="0 skips (20,000)")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument(
        "--only",
        choices=["in-memory", "position", "network"],
        help="only the in-memory audit (e.g. under py-spy), the position file, or the network",
    )
    p.add_argument("--quick", action="store_true", help="20,000 entries, 1 run, 5,000 network")
    args = p.parse_args(argv)
    if args.quick:
        args.entries, args.runs, args.network_entries = 20_000, 1, 5_000
        args.sample = min(args.sample, 5_000)
    emit(
        {
            "figure": "machine",
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0],
            "hash_backend": hashing.backend(),
        }
    )
    if args.only == "network":
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
            emit({"figure": "network", **network(args.network_entries, Path(tmp))})
        return 0
    note_(f"building (or loading) a log of {args.entries} entries")
    log, build_seconds = cached_log(args.entries, args.cache_dir)
    emit(
        {
            "figure": "log",
            "entries": len(log.leaves),
            "mean_entry_bytes": round(sum(map(len, log.leaves)) / len(log.leaves)),
            "build_s": None if build_seconds is None else round(build_seconds, 1),
            "cached": build_seconds is None,
        }
    )
    cp = signed_checkpoint(log.leaves)
    if args.only == "position":
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
            emit({"figure": "position_file", **position_file_cost(log, cp, Path(tmp))})
        return 0
    ceiling = None
    if args.only is None:
        ceiling = ceilings(log, args.sample)
    inline_runs = args.runs if args.inline_runs is None else args.inline_runs
    for workers, runs in ((args.workers, args.runs), (0, inline_runs)):
        if runs:
            emit(in_memory_figure(log, cp, workers, runs, ceiling))
    if args.only == "in-memory":
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        note_("position file: audit with a final save, then load and save again")
        emit({"figure": "position_file", **position_file_cost(log, cp, Path(tmp))})
        if args.network_entries:
            note_(f"network: append {args.network_entries} entries to a real server, then audit")
            emit({"figure": "network", **network(args.network_entries, Path(tmp))})
    return 0


def ceilings(log: Log, sample: int) -> float:
    """Emit the verify ceiling and the stage costs; the 2-process verify rate."""
    ceiling = verify_ceiling(log, 2.0)
    emit(
        {
            "figure": "verify_ceiling",
            "per_s_1_process": round(ceiling[1]),
            "per_s_2_processes": round(ceiling[2]),
        }
    )
    costs = stage_costs(log, sample)
    total = sum(costs.values())
    emit(
        {
            "figure": "stage_cost_us_per_entry",
            "sample": min(sample, len(log.leaves)),
            **{k: round(v, 1) for k, v in costs.items()},
            "total": round(total, 1),
            "single_core_ceiling_per_s": round(1e6 / total),
            "two_core_ceiling_per_s": round(2e6 / total),
            "serial_admit_apply_ceiling_per_s": round(1e6 / costs["admit_and_apply"]),
            # Not in the total: the same stage with records encoded as the server writes them.
            "admit_and_apply_bytes_store": round(admit_apply_over_bytes(log, sample), 1),
        }
    )
    gate = integrator_costs(log, sample)
    whole = whole_integration_cost(log, sample)
    emit(
        {
            "figure": "integrator_cost_us_per_entry",
            "sample": min(sample, len(log.leaves)),
            **{k: round(v, 1) for k, v in gate.items()},
            "serial_ceiling_per_s": round(1e6 / (gate["admit_apply_index"] + gate["commit"])),
            "whole_integration": round(whole, 1),
            "whole_serial_ceiling_per_s": round(1e6 / whole),
        }
    )
    return ceiling[2]


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process, and of its children that have ended (the audit's workers are
    joined when it returns)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def worker_start_cpu(workers: int) -> float:
    """CPU seconds for the audit's worker processes to start (interpreter, imports), answer one
    empty job and stop: what an audit pays once, whatever the log's size."""
    began = cpu_seconds()[1]
    pool = Pool(workers)
    try:
        for ticket in [pool.submit([], []) for _ in range(workers)]:
            pool.collect(ticket)
    finally:
        pool.close()
    return cpu_seconds()[1] - began


def in_memory_figure(
    log: Log, cp: Verified, workers: int, runs: int, verify_2p: float | None
) -> dict[str, Any]:
    """The audit's rate (median of runs), and its CPU time per entry, workers included: on a
    machine shared with other work, the figure that says what the audit costs (C free cores
    reach at most C / cpu_us_per_entry). With workers, the CPU is split between this process
    (the serial replay: decoding, admission in log order, bookkeeping) and the workers
    (prepare: decode, schema, guard, signature; the leaf hash), and the model is printed: this
    process alone caps the rate at 1 / main_cpu (Amdahl's serial part), N workers at
    N / workers_cpu, and C cores at C / (main_cpu + workers_cpu); N workers on C cores reach
    the least of the three. The workers' start-up is paid once per audit, and is left out of
    the per-entry figures of the model (it is in cpu_us_per_entry)."""
    entries = recorded_entries(log)
    rates, cpu, main, side = [], [], [], []
    for run in range(runs):
        note_(f"audit in memory, {workers} worker(s), run {run + 1}/{runs}")
        own, children = cpu_seconds()
        report = auditor.audit_entries(lambda s, e: entries[s:e], cp, workers=workers)
        own_after, children_after = cpu_seconds()
        n = report.entries
        main.append((own_after - own) / n * 1e6)
        side.append((children_after - children) / n * 1e6)
        cpu.append(main[-1] + side[-1])
        check_report(report, log)
        rates.append(report.rate)
    median = statistics.median(rates)
    row: dict[str, Any] = {
        "figure": "audit_in_memory",
        "entries": report.entries,
        "workers": workers,
        "per_s": round(median),
        "runs_per_s": [round(r) for r in rates],
        "cpu_us_per_entry": round(statistics.median(cpu), 1),
        "ratio_to_target": round(median / TARGET, 3),
        "findings": report.finding_counts,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if workers:
        start = worker_start_cpu(workers)
        main_us = statistics.median(main)
        workers_us = statistics.median(side) - start / report.entries * 1e6
        row["main_cpu_us_per_entry"] = round(main_us, 1)
        row["workers_cpu_us_per_entry"] = round(statistics.median(side), 1)
        row["workers_start_cpu_s"] = round(start, 3)
        row["model_per_s"] = {
            "serial_cap": round(1e6 / main_us),
            "workers_cap": round(workers * 1e6 / workers_us),
            **{
                f"{c}_cores": round(
                    min(1e6 / main_us, workers * 1e6 / workers_us, c * 1e6 / (main_us + workers_us))
                )
                for c in (2, 4, 8)
            },
        }
    if verify_2p is not None:
        row["ratio_to_verify_2_processes"] = round(median / verify_2p, 3)
    return row


if __name__ == "__main__":
    sys.exit(main())
