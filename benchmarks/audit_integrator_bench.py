"""bench_audit.py's integrator costs: what the server's serial path costs per entry.

The part no number of ingest workers spreads, so 1e6 / its sum caps a server's statements/s:
the statement gate's admission, state transition and search indexing over a real LevelDB, in
log order, and the batch commit (integrator_costs); then the whole of Sequencer._integrate,
which adds hashing, dedup lookups, tiles, signing and proofs (whole_integration_cost), and the
same split by stage (integration_split). Each checks that the server reaches the verdicts the
benchmark's log records.

Not a script: one of bench_audit.py's parts (its docstring lists them).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from affidavit.merkle import hashing, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.server import batch_proofs, search_index
from affidavit.server.admission import StatementGate
from affidavit.server.prepared import ServerPrepared
from affidavit.server.search_index import free_facets
from affidavit.server.sequencer import Receipt, Sequencer
from affidavit.server.storage import Batch, Storage
from affidavit.statements import ingest, schema, signing
from affidavit.statements.state import LogState, reads_named_by
from audit_log_bench import ORIGIN, Log


def server_prepared(leaves: list[bytes]) -> tuple[list[ServerPrepared], float]:
    """The entries as the integrator gets them from the ingest workers (or the verifier
    threads): decoded, their signatures' keys known, and what the server derives from each
    made (server.prepared: the free search facets and the reads it names). With the CPU
    microseconds per entry that deriving took, which is spent off the serial path."""
    decoded = [schema.decode(leaf) for leaf in leaves]
    keys = {
        signing.key_id(st.identity.public_key): st.identity.public_key
        for _, st in decoded
        if st.WhichOneof("body") == "identity"
    }
    plain = [ingest.Prepared(s, st, keys[s.key_id]) for s, st in decoded]
    began = time.thread_time()
    prepared = [
        ServerPrepared(
            p.signed,
            p.statement,
            p.verified_with,
            free_facets(p),
            reads_named_by(p.statement, p.signed.key_id),
        )
        for p in plain
    ]
    return prepared, (time.thread_time() - began) / max(1, len(leaves)) * 1e6


def integrator_costs(log: Log, sample: int, batch: int = 1000) -> dict[str, float]:
    """CPU microseconds per entry of the server's serial path for the first `sample` entries,
    decoded and signature-checked beforehand and what the server derives from them made (as
    the ingest workers hand them over; derive is what that costs them, off the serial path),
    their records read ahead (as the verifier threads do; read_ahead is what that costs them,
    also off the serial path): the statement gate's admission, state transition and search indexing,
    in log order, against the records of a real LevelDB; then the storage commit of each batch
    of `batch` (building the WriteBatch; its sync is not CPU time). CPU time of this thread:
    the integrator's own (LevelDB compacts in threads of its own, which hold no interpreter
    lock and would add noise as the database grows). The gate must give the verdicts the log
    holds."""
    leaves = log.leaves[:sample]
    prepared, derive_us = server_prepared(leaves)
    hashes = hashing.leaf_hashes(leaves)
    # the benchmark's log: all signed then
    admitted_ms = prepared[0].statement.header.client_time_ms
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
        "derive": derive_us,
    }


def whole_integration_cost(log: Log, sample: int, batch: int = 1000) -> float:
    """CPU microseconds per entry of the server's whole serial path, Sequencer._integrate, for
    the first `sample` entries (prepared and read ahead beforehand, as in integrator_costs,
    untimed) in batches of `batch`: integrator_costs' gate and commit, plus what the sequencer
    adds around them (leaf hashes, the leaf-hash index lookups, growing the tiles, signing the
    checkpoint, the receipts' inclusion proofs). No checkpoint kept outside the database: its
    writes run beside the next batch, on the publisher thread. The receipts must carry the
    verdicts the log holds."""
    return _integrations(log, sample, batch, None) / min(sample, len(log.leaves)) * 1e6


SPLIT_STAGES = ("admit", "apply", "indexing", "commit", "durable", "proofs", "signing")
"""integration_split's timed stages, in the order Sequencer._integrate runs them: the gate's
ingest.admit, LogState.apply and search_index.index_statement (once a statement), the
storage commit (building and writing the WriteBatch; its sync is not CPU time), the gate's
durable(), batch_proofs.prover and the proofs it gives (once a receipt), the checkpoint's
signature. What they leave of the whole is `other`: leaf hashing, the dedup lookups, growing
the tiles, the receipts themselves."""


def integration_split(log: Log, sample: int, batch: int = 1000) -> dict[str, float]:
    """whole_integration_cost's run again, in a fresh database, with each of SPLIT_STAGES
    timed (CPU µs per entry; each stage wrapped where Sequencer._integrate calls it, so the
    sequencer's code is the server's) and the cyclic garbage collector's passes (`gc`: time
    spent inside any stage as well, so it is not in the sum). `other` is the timed whole less
    the stages; `whole` is the timed run's: the wrappers' own cost (two CPU-clock reads a call,
    10-15 µs an entry on the 2-core machine) lands in the stages timed once a statement, so
    read whole_integration for the unwrapped figure and the split for the shares. mean_batch:
    entries a call of _integrate."""
    spent: collections.defaultdict[str, float] = collections.defaultdict(float)
    n = min(sample, len(log.leaves))
    with _timed_stages(spent):
        whole = _integrations(log, sample, batch, spent)
    split = {stage: spent[stage] / n * 1e6 for stage in SPLIT_STAGES}
    return {
        **split,
        "other": (whole - sum(spent[stage] for stage in SPLIT_STAGES)) / n * 1e6,
        "gc": spent["gc"] / n * 1e6,
        "whole": whole / n * 1e6,
        "mean_batch": n / -(-n // batch),
    }


@contextlib.contextmanager
def _timed_stages(spent: collections.defaultdict[str, float]) -> Iterator[None]:
    """Time, into spent, the stages the sequencer and the gate reach through module and class
    attributes (the commit, durable() and the signature are wrapped by _integrations), and the
    garbage collector's passes; every wrapper is removed on leaving."""
    collecting: list[float] = []

    def collector(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting.append(time.thread_time())
        elif collecting:
            spent["gc"] += time.thread_time() - collecting.pop()

    prover = batch_proofs.prover

    def timed_prover(*args: Any) -> Callable[[int], list[bytes]]:
        proof_of = _timed(spent, "proofs", prover)(*args)
        return _timed(spent, "proofs", proof_of)

    patched: list[tuple[Any, str, Any]] = [
        (ingest, "admit", _timed(spent, "admit", ingest.admit)),
        (LogState, "apply", _timed(spent, "apply", LogState.apply)),
        (search_index, "index_statement",
         _timed(spent, "indexing", search_index.index_statement)),
        (batch_proofs, "prover", timed_prover),
    ]  # fmt: skip
    kept = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
    try:
        for owner, name, wrapper in patched:
            setattr(owner, name, wrapper)
        gc.callbacks.append(collector)
        yield
    finally:
        gc.callbacks.remove(collector)
        for owner, name, original in kept:
            setattr(owner, name, original)


def _timed(
    spent: collections.defaultdict[str, float] | None, stage: str, fn: Callable[..., Any]
) -> Callable[..., Any]:
    """fn, adding its calls' CPU time of this thread to spent[stage] (fn itself when spent is
    None: nothing timed)."""
    if spent is None:
        return fn
    clock = time.thread_time

    def run(*args: Any, **kwargs: Any) -> Any:
        began = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[stage] += clock() - began

    return run


def _integrations(
    log: Log, sample: int, batch: int, spent: collections.defaultdict[str, float] | None
) -> float:
    """CPU seconds of this thread in Sequencer._integrate over the first `sample` entries in
    batches of `batch` (see whole_integration_cost); with spent, the commit, the gate's
    durable() and the signature are timed into it too. The receipts must carry the verdicts
    the log holds."""
    leaves = log.leaves[:sample]
    prepared, _ = server_prepared(leaves)
    admitted_ms = prepared[0].statement.header.client_time_ms
    signer, _ = note.generate_key(ORIGIN)
    spent_s = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-audit-sequencer-") as tmp:
        storage = Storage(Path(tmp) / "db", create=True)
        try:
            storage.set_entry_format("statements")
            empty = Checkpoint(ORIGIN, 0, hashing.EMPTY_ROOT)
            genesis = note.sign(empty.format(), signer)
            storage.commit(Batch(0, [], [], {}, genesis), None)
            storage.commit = _timed(spent, "commit", storage.commit)  # type: ignore[method-assign]
            gate = StatementGate(storage, clock=lambda: admitted_ms)
            gate.durable = _timed(spent, "durable", gate.durable)  # type: ignore[method-assign]
            sign = _timed(spent, "signing", lambda body: note.sign(body, signer))
            sequencer = Sequencer(storage, ORIGIN, sign, empty, genesis, gate=gate)
            for start in range(0, len(leaves), batch):
                end = min(start + batch, len(leaves))
                if spent is None:
                    gate.read_ahead(prepared[start:end])  # the verifier threads' part
                else:  # (read_ahead tries admission on a shared store: not this stage's)
                    before = spent.copy()
                    gate.read_ahead(prepared[start:end])
                    spent.clear()
                    spent.update(before)
                began = time.thread_time()
                done = sequencer._integrate(leaves[start:end], prepared[start:end])
                spent_s += time.thread_time() - began
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
    return spent_s
