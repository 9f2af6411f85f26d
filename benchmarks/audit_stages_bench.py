"""bench_audit.py's stage costs: what each stage of a replay costs on one core, and the
signature's own ceiling.

The stages add up to a single-threaded replay: decode, schema + secret guard, signature
(Ed25519, statements.signing.verify), leaf hash, compact range, and admit + apply in log order
over the auditor's DictKV (records kept as objects); beside them, not in their total, admit +
apply over a store of bytes (each record written is encoded, as the server's are). The verify
ceiling is PyNaCl verifications/s on 1 and on 2 processes, the rate the audit is compared with.

Not a script: one of bench_audit.py's parts (its docstring lists them).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

from affidavit.merkle import hashing
from affidavit.merkle.compact import CompactRange
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build, ingest, schema, signing
from affidavit.statements.state import KV, DictKV, LogState
from audit_log_bench import Log

from tests.bytes_kv import BytesKV


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
