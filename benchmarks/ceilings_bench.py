"""In-process ceilings of bench_append.py, measured in the same run as the loads they bound:
LevelDB synced writes (a WriteBatch of 1,000 1 KiB entries, one run at a time, measured right
before each AppendBatch run; the same in a load's own shape, batches of the entries its
integrator's batches held; and single puts), proof generation
from a stopped server's stored tiles, and Ed25519 signature checks (statements.signing.verify)
on one and two threads over a statement like the statements load's.
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from affidavit.proto import affidavit_pb2 as pb
from clients_bench import ENTRY_SIZE, signed_requests
from loads_bench import emit

LEVELDB_BATCH = 1000
"""Entries in each synced WriteBatch of the LevelDB ceiling (the server's largest batch)."""


def _values(count: int = LEVELDB_BATCH) -> list[bytes]:
    rng = random.Random(5)
    return [rng.randbytes(ENTRY_SIZE) for _ in range(count)]


def leveldb_batch_run(args: argparse.Namespace, batch: int = LEVELDB_BATCH) -> float:
    """One run of the LevelDB sync-batch ceiling: entries/s of synced WriteBatches of `batch`
    1 KiB entries (1,000: the server's largest batch; a load's entries_per_batch: that load's
    shape) for --duration seconds, on a fresh database removed afterwards (its compactions end
    before this returns, so none of its work spills into the load it bounds). Measured right
    before or after a run of that load, so both see the same neighbours."""
    import plyvel

    values = _values(max(1, batch))
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="bench-leveldb-") as d:
        db = plyvel.DB(d, create_if_missing=True)
        try:
            n = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.duration:
                with db.write_batch(sync=True) as wb:
                    for v in values:
                        wb.put(b"e/" + n.to_bytes(8, "big"), v)
                        n += 1
            return n / (time.perf_counter() - t0)
        finally:
            db.close()


def leveldb_put_ceiling(args: argparse.Namespace) -> float:
    """Synced single puts/s of 1 KiB entries (median of --runs runs), printed as one line."""
    import plyvel

    values = _values()
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="bench-leveldb-") as d:
        db = plyvel.DB(d, create_if_missing=True)
        try:
            put_rates = []
            n = 0
            for _ in range(args.runs):
                count = 0
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < args.duration:
                    db.put(b"p/" + n.to_bytes(8, "big"), values[n % LEVELDB_BATCH], sync=True)
                    n += 1
                    count += 1
                put_rates.append(count / (time.perf_counter() - t0))
        finally:
            db.close()
    rate = statistics.median(put_rates)
    emit(
        {
            "bench": "leveldb_put_sync",
            "entry_bytes": ENTRY_SIZE,
            "puts_per_s": round(rate),
            "puts_per_s_each": [round(x) for x in put_rates],
            "runs": args.runs,
        }
    )
    return rate


def in_process_proofs(args: argparse.Namespace, db_path: Path) -> dict[str, float]:
    """Proofs from the stopped server's LevelDB, as the service makes them: a reader per call
    over the log's one TileCache when this tree has it (else straight over storage)."""
    from affidavit.merkle import compact, proofs, tiles
    from affidavit.server.storage import Storage

    # A leaf's node: (0, index); trees before nodes were plain tuples made them with Node.
    node_type: Any = compact.Node
    leaf_node = (lambda i: (0, i)) if node_type == tuple[int, int] else (lambda i: node_type(0, i))

    storage = Storage(db_path)
    try:
        text = storage.checkpoint()
        assert text is not None
        body = text.split("\n")
        size, root = int(body[1]), base64.b64decode(body[2])
        cache_type = getattr(tiles, "TileCache", None)
        source = storage.read_tiles if cache_type is None else cache_type(storage.read_tiles)
        rng = random.Random(11)
        # One sanity check that the proofs are the right ones (the figure means nothing otherwise).
        i = rng.randrange(size)
        reader = tiles.TileHashReader(size, source)
        leaf = reader.read_hashes([leaf_node(i)])[0]
        verified = True
        try:
            proofs.verify_inclusion(leaf, i, size, proofs.prove_inclusion(i, size, reader), root)
        except Exception:  # any failure: the figure below is flagged, not trusted
            verified = False
        out = {}
        for what in ("inclusion", "consistency"):
            rates = []
            for _ in range(args.runs):
                count = 0
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < args.duration:
                    for _ in range(100):
                        reader = tiles.TileHashReader(size, source)
                        if what == "inclusion":
                            index = rng.randrange(size)
                            reader.read_hashes([leaf_node(index)])
                            proofs.prove_inclusion(index, size, reader)
                        else:
                            proofs.prove_consistency(rng.randrange(1, size + 1), size, reader)
                    count += 100
                rates.append(count / (time.perf_counter() - t0))
            out[what] = statistics.median(rates)
            emit(
                {
                    "bench": f"proof_{what}_in_process",
                    "tree_size": size,
                    "proofs_per_s": round(out[what]),
                    "proofs_per_s_each": [round(x) for x in rates],
                    "verified": verified,
                    "tile_cache": cache_type is not None,
                    "runs": args.runs,
                }
            )
        return out
    finally:
        storage.close()


def _sample_statement() -> tuple[bytes, bytes, bytes]:
    """(statement bytes, signature, public key) of one agent action like the load's."""
    job = {"agent_key": "", "grant_id": "01900000-0000-7000-8000-000000000000", "callers": 1,
           "batch": 1, "requests": 1}  # fmt: skip
    from affidavit.statements.signing import IdentityKey

    key = IdentityKey.generate("sample-agent@bench.example")
    job["agent_key"] = key.text()
    leaf = pb.AppendBatchRequest.FromString(signed_requests(job)[0][0]).entries[0]
    signed = pb.SignedStatement.FromString(leaf)
    return signed.statement, signed.signature, key.public_key


def ed25519_run(threads: int, duration: float) -> float:
    """One run: signature checks/s of statements.signing.verify (PyNaCl, libsodium: the
    server's one verification path) on a statement like the load's, on threads threads at once
    for duration seconds. statements_bench measures it right before each run of its load."""
    from affidavit.statements.signing import verify

    statement, signature, public_key = _sample_statement()
    assert verify(statement, signature, public_key)

    def spin(counts: list[int], at: int, until: float) -> None:
        n = 0
        while time.perf_counter() < until:
            for _ in range(50):
                verify(statement, signature, public_key)
            n += 50
        counts[at] = n

    counts = [0] * threads
    until = time.perf_counter() + duration
    t0 = time.perf_counter()
    workers = [threading.Thread(target=spin, args=(counts, i, until)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - t0)


def ed25519_ceiling(args: argparse.Namespace) -> dict[str, float]:
    """ed25519_run on one thread and on two, --runs times each; the medians, printed."""
    statement, _, _ = _sample_statement()
    out: dict[str, float] = {}
    for threads in (1, 2):
        rates = [ed25519_run(threads, args.duration) for _ in range(args.runs)]
        out[f"threads{threads}"] = statistics.median(rates)
        emit(
            {
                "bench": "ed25519_verify",
                "threads": threads,
                "statement_bytes": len(statement),
                "verifies_per_s": round(out[f"threads{threads}"]),
                "verifies_per_s_each": [round(x) for x in rates],
                "runs": args.runs,
                "via": "statements.signing.verify (PyNaCl crypto_sign_open)",
            }
        )
    return out
