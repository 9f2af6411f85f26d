"""Crash safety: an acknowledged entry survives `kill -9`, and the log stays one consistent tree.

Each round starts the server on the same data dir, runs concurrent appenders (unary Append and
AppendBatch, some re-sending entries acknowledged in earlier rounds), kills the server with
SIGKILL at a random moment, restarts it and checks everything it ever acknowledged against the
recovered log, once on the embedded LevelDB and once on PostgreSQL + S3 (tests/backends.py).
The default is bounded (3 short rounds, seconds each); AFFIDAVIT_SLOW=1 runs the
long version (10 longer rounds), marked `slow`.
AFFIDAVIT_SEED=<n> replays a run (the seed is printed on failure).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.compact import CompactRange
from affidavit.proto import affidavit_pb2 as pb
from affidavit.proto import affidavit_pb2_grpc as pb_grpc

from affidavit import merkle
from tests import backends, serverproc
from tests.serverproc import (
    RPC_TIMEOUT,
    ServerFactory,
    ServerProcess,
)

# Fixtures, from the shared helpers.
server_factory = serverproc.server_factory
scaleout = backends.scaleout

SLOW = os.environ.get("AFFIDAVIT_SLOW") == "1"
ROUNDS = 10 if SLOW else 3
MAX_LOAD_S = 8.0 if SLOW else 1.5  # longest a round runs before its kill
APPENDERS = 8 if SLOW else 6
SEED = int(os.environ.get("AFFIDAVIT_SEED", str(random.randrange(2**32))))

F = TypeVar("F", bound=Callable[..., object])


def long_version(test: F) -> F:
    """Only the long version carries the `slow` marker: the bounded one runs with everything
    else, even under -m "not slow"."""
    return pytest.mark.slow(test) if SLOW else test


# While the server is up, only these errors are acceptable (back-pressure, shutting down).
TRANSIENT = {
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
TRANSIENT_CODES = {code.value[0] for code in TRANSIENT}  # as in AppendResult.error.code


@dataclass
class Ack:
    entry: bytes
    index: int
    checkpoint: str
    proof: list[bytes]


@dataclass
class Record:
    """What the appenders were told, over all rounds."""

    acks: list[Ack] = field(default_factory=list)
    unacked: list[bytes] = field(default_factory=list)  # sent, outcome unknown
    checkpoints: list[str] = field(default_factory=list)  # notes from GetCheckpoint
    proven: int = 0  # acks whose receipt (checkpoint, inclusion proof) was checked
    parsed: dict[str, Checkpoint] = field(default_factory=dict)  # note -> its checkpoint
    proven_sizes: set[int] = field(default_factory=set)  # consistency-checked sizes
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.acks)


def appender(
    stub: pb_grpc.LogStub,
    name: str,
    rng: random.Random,
    record: Record,
    earlier: list[Ack],
    stop: threading.Event,
    alive: threading.Event,
) -> None:
    """Append until stop; record each acknowledged entry, and nothing else, as acked."""
    n = 0
    while not stop.is_set():
        batch = []
        for _ in range(1 if rng.random() < 0.5 else rng.randint(1, 20)):
            if earlier and rng.random() < 0.05:
                batch.append(rng.choice(earlier).entry)  # a retry of an old entry
            else:
                batch.append(f"{name} {n} {rng.getrandbits(64):016x}".encode())
                n += 1
        try:
            if len(batch) == 1 and rng.random() < 0.7:
                results: list[pb.AppendResponse | None] = [
                    stub.Append(pb.AppendRequest(entry=batch[0]), timeout=RPC_TIMEOUT)
                ]
            else:
                resp = stub.AppendBatch(pb.AppendBatchRequest(entries=batch), timeout=RPC_TIMEOUT)
                results = []
                for result in resp.results:
                    if result.WhichOneof("result") == "ok":
                        results.append(result.ok)
                    else:
                        results.append(None)
                        if result.error.code not in TRANSIENT_CODES:
                            with record.lock:
                                record.unexpected.append(f"batch entry refused: {result.error}")
        except grpc.RpcError as e:
            with record.lock:
                record.unacked += batch
                if alive.is_set() and e.code() not in TRANSIENT:
                    record.unexpected.append(f"{e.code()}: {e.details()}")
            if not alive.is_set():
                return
            time.sleep(0.01)
            continue
        with record.lock:
            for entry, r in zip(batch, results, strict=True):
                if r is None:
                    record.unacked.append(entry)
                else:
                    record.acks.append(Ack(entry, r.index, r.checkpoint, list(r.inclusion_proof)))


def watcher(
    stub: pb_grpc.LogStub, record: Record, stop: threading.Event, alive: threading.Event
) -> None:
    """Record the checkpoints GetCheckpoint hands out meanwhile."""
    while not stop.is_set():
        try:
            cp = stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            if not alive.is_set():
                return
            with record.lock:
                record.unexpected.append(f"GetCheckpoint: {e.code()}: {e.details()}")
            return
        with record.lock:
            record.checkpoints.append(cp.note)
        time.sleep(0.02)


def run_load(s: ServerProcess, rng: random.Random, record: Record, crash: bool) -> None:
    """Appenders against s until it is killed (crash) or stopped with SIGTERM, mid-load."""
    earlier = list(record.acks)
    stop, alive = threading.Event(), threading.Event()
    alive.set()
    channel = grpc.insecure_channel(s.address)  # its own: outlives the server's
    stub = pb_grpc.LogStub(channel)
    threads = [
        threading.Thread(
            target=appender,
            args=(
                stub,
                f"r{rng.getrandbits(32):08x}a{i}",
                random.Random(rng.random()),
                record,
                earlier,
                stop,
                alive,
            ),
            daemon=True,
        )
        for i in range(APPENDERS)
    ]
    threads.append(threading.Thread(target=watcher, args=(stub, record, stop, alive), daemon=True))
    before = record.count()
    try:
        for t in threads:
            t.start()
        # Let some appends through first, then pick a random moment.
        deadline = time.monotonic() + 60
        while record.count() < before + 10:
            assert time.monotonic() < deadline, f"no appends acknowledged: {s.stderr}"
            assert not record.unexpected, record.unexpected
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, MAX_LOAD_S))  # the random kill moment, not a sync
        alive.clear()  # from here on, errors are expected
        if crash:
            assert s.proc is not None
            s.proc.kill()  # SIGKILL while appends are in flight
            s.kill()  # reap
        else:
            rc = s.stop()
            assert rc == 0, f"SIGTERM under load: exit code {rc}\n{s.stderr}"
    finally:
        alive.clear()
        stop.set()
        for t in threads:
            t.join(timeout=2 * RPC_TIMEOUT)
        channel.close()
    assert not any(t.is_alive() for t in threads), "an appender hung"
    assert not record.unexpected, record.unexpected
    assert record.count() > before


def check_log(s: ServerProcess, record: Record, rng: random.Random) -> Checkpoint:
    """The recovered log holds every acknowledged entry where it was acknowledged, and every
    checkpoint ever handed out is a prefix of it."""
    key = s.verifier_key
    latest = s.checkpoint()
    cp = checkpoints.parse(note.open(latest.note, [key]))
    assert (cp.size, cp.root_hash) == (latest.size, latest.root_hash)

    entries = s.all_entries()
    assert [e.index for e in entries] == list(range(cp.size))
    data = [e.data for e in entries]
    leaves = [e.leaf_hash for e in entries]
    assert leaves == [merkle.leaf_hash(d) for d in data]
    assert merkle.root_hash(leaves) == cp.root_hash
    assert len(set(data)) == len(data), "an entry is in the log twice"

    def parsed(text: str) -> Checkpoint:
        if text not in record.parsed:
            record.parsed[text] = checkpoints.parse(note.open(text, [key]))
        return record.parsed[text]

    for ack in record.acks:
        assert ack.index < cp.size, f"acknowledged index {ack.index} lost (size {cp.size})"
        assert data[ack.index] == ack.entry, f"entry {ack.index} is not what was acknowledged"
    for ack in record.acks[record.proven :]:  # receipts are checked once
        old = parsed(ack.checkpoint)
        merkle.verify_inclusion(
            merkle.leaf_hash(ack.entry), ack.index, old.size, ack.proof, old.root_hash
        )
    record.proven = len(record.acks)
    for text in record.checkpoints:
        parsed(text)
    record.checkpoints.append(latest.note)  # the next round checks it too

    # Every checkpoint handed out, in any round, is a prefix of the recovered tree: its root is
    # the root of the entries up to its size, and a consistency proof from it verifies. (Proofs
    # for checkpoints new since the last check, and a sample of older ones: consistency is
    # transitive, and the recovered checkpoint of each round is itself checked the next.)
    roots: dict[int, set[bytes]] = {}
    for old in record.parsed.values():
        roots.setdefault(old.size, set()).add(old.root_hash)
    assert max(roots) <= cp.size, f"a checkpoint of size {max(roots)} was lost"
    older = sorted(record.proven_sizes)
    prove = (set(roots) - record.proven_sizes) | set(rng.sample(older, min(len(older), 20)))
    record.proven_sizes |= prove
    prefix = CompactRange()
    for size in sorted(roots):
        prefix.extend(leaves[prefix.size : size])
        assert roots[size] == {prefix.root()}, f"checkpoints of size {size} disagree with the log"
        if 0 < size < cp.size and size in prove:
            p = s.stub.GetConsistencyProof(
                pb.GetConsistencyProofRequest(first=size), timeout=RPC_TIMEOUT
            )
            assert p.second == cp.size
            merkle.verify_consistency(size, cp.size, list(p.hashes), prefix.root(), cp.root_hash)
    return cp


def retry_unacked(s: ServerProcess, record: Record, rng: random.Random) -> None:
    """Re-sending entries whose fate was unknown is safe: each ends up exactly once."""
    unacked = list(dict.fromkeys(record.unacked))
    sample = rng.sample(unacked, min(len(unacked), 200))
    record.unacked.clear()
    if not sample:
        return
    size = s.checkpoint().size
    resp = s.stub.AppendBatch(pb.AppendBatchRequest(entries=sample), timeout=RPC_TIMEOUT)
    for entry, result in zip(sample, resp.results, strict=True):
        assert result.WhichOneof("result") == "ok", result
        r = result.ok
        assert r.duplicate == (r.index < size)
        record.acks.append(Ack(entry, r.index, r.checkpoint, list(r.inclusion_proof)))


def run_rounds(
    data_dir: Path, factory: ServerFactory, rounds: int, crash: bool, deployment: Deployment
) -> None:
    rng = random.Random(SEED)
    record = Record()
    s = factory.create(*deployment.args, data_dir=data_dir, env=deployment.env)
    for _ in range(rounds):
        s.start()
        if record.acks:
            check_log(s, record, rng)  # what survived the last round
            retry_unacked(s, record, rng)
        run_load(s, rng, record, crash)
    s.start()
    check_log(s, record, rng)
    retry_unacked(s, record, rng)
    cp = check_log(s, record, rng)
    assert cp.size >= len({a.entry for a in record.acks}) > 0
    assert s.stop() == 0


@dataclass
class Deployment:
    """Where the log is stored: flags and environment for `serve`."""

    args: list[str]
    env: dict[str, str]


@pytest.fixture(params=["leveldb", "postgres+s3"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    if request.param == "leveldb":
        return Deployment([], {})
    where: backends.Scaleout = request.getfixturevalue("scaleout")
    return Deployment(where.args(), where.env())


@long_version
def test_acknowledged_entries_survive_kill_9(
    server_factory: ServerFactory, deployment: Deployment
) -> None:
    try:
        run_rounds(server_factory.new_dir(), server_factory, ROUNDS, True, deployment)
    except BaseException:
        print(f"AFFIDAVIT_SEED={SEED} replays this run")
        raise


@long_version
def test_sigterm_under_load_finishes_cleanly(
    server_factory: ServerFactory, deployment: Deployment
) -> None:
    try:
        run_rounds(server_factory.new_dir(), server_factory, 2 if SLOW else 1, False, deployment)
    except BaseException:
        print(f"AFFIDAVIT_SEED={SEED} replays this run")
        raise
