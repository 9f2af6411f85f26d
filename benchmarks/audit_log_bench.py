"""bench_audit.py's log: about N signed statements built in process with statements.build,
cached on disk, and the shapes other parts need it in.

The cast: an admin registers humans and agents, each agent under a human's grant, and four
agents delegate to sub-agents. Then INTENT/OUTCOME pairs by every actor in turn (one in 50 of
an agent's under a human's approval bound to its parameters; one action in a thousand out of
scope, which an honest log records as OUT_OF_SCOPE), built by worker processes and interleaved
in runs of 64 so that the log looks concurrent while each session stays in order. The cache
file (CACHE_MAGIC, the count, then each leaf with its recorded verdict) saves rebuilding a
large log. bench_memory.py and bench_console.py build their logs with it too.

Not a script: one of bench_audit.py's parts (its docstring lists them).
"""

from __future__ import annotations

import multiprocessing
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from affidavit.client import audit as auditor
from affidavit.client.verify import TrustPolicy, Verified, open_checkpoint
from affidavit.merkle import hashing, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.canonical import canonical_json, digest, shown_digest
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import parameters_digest
from affidavit.statements.signing import IdentityKey

ORIGIN = "bench.example/audit"
HUMANS, AGENTS, SUBS = 4, 16, 4
OUT_OF_SCOPE_EVERY = 1000
CACHE_MAGIC = b"affidavit-bench-audit-log/1\n"


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


def recorded_entries(log: Log) -> list[auditor.RecordedEntry]:
    """The log's entries as the server serves them: an action's with its admission time (here,
    its client time: the benchmark's log admitted everything as it was signed)."""
    return [
        auditor.RecordedEntry(
            i, leaf, v, r, build.statement_of(leaf).header.client_time_ms if v else 0
        )
        for i, (leaf, (v, r)) in enumerate(zip(log.leaves, log.verdicts, strict=True))
    ]


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
