"""bench_audit.py's integrator costs: what the server's serial path costs per entry.

The part no number of ingest workers spreads, so 1e6 / its sum caps a server's statements/s:
the statement gate's admission, state transition and search indexing over a real LevelDB, in
log order, and the batch commit (integrator_costs); then the whole of Sequencer._integrate,
which adds hashing, dedup lookups, tiles, signing and proofs (whole_integration_cost). Both
check that the server reaches the verdicts the benchmark's log records.

Not a script: one of bench_audit.py's parts (its docstring lists them).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from affidavit.merkle import hashing, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.server.admission import StatementGate
from affidavit.server.prepared import ServerPrepared
from affidavit.server.search_index import free_facets
from affidavit.server.sequencer import Receipt, Sequencer
from affidavit.server.storage import Batch, Storage
from affidavit.statements import ingest, schema, signing
from affidavit.statements.state import reads_named_by
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
    leaves = log.leaves[:sample]
    prepared, _ = server_prepared(leaves)
    admitted_ms = prepared[0].statement.header.client_time_ms
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
