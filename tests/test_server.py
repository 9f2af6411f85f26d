"""Integration tests of affidavit.v1.Log against a real `affidavit serve` process."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import plyvel
import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.proto import affidavit_pb2 as pb
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from affidavit import merkle
from tests import backends, serverproc
from tests.serverproc import (
    ORIGIN,
    RPC_TIMEOUT,
    ServerFactory,
    ServerProcess,
    health_status,
    status_of,
)

# Fixtures, from the shared helpers.
server = serverproc.server
server_factory = serverproc.server_factory


@pytest.fixture(params=backends.DEPLOYMENTS)
def deployed_server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    """A fresh log served by a real process, on each storage deployment in turn."""
    args, env = backends.deployment(request)
    return server_factory(*args, env=env)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
NOT_FOUND = grpc.StatusCode.NOT_FOUND
MAX_ENTRY = 64  # --max-entry-bytes of the servers that test refusals


def open_checkpoint(text: str, key: str) -> Checkpoint:
    """Verify a checkpoint note with the log's key and parse its body."""
    return checkpoints.parse(note.open(text, [key]))


def check_receipt(r: pb.AppendResponse, entry: bytes, key: str) -> Checkpoint:
    """An append receipt is right: its leaf hash, its signed checkpoint, its inclusion proof."""
    assert r.leaf_hash == merkle.leaf_hash(entry)
    cp = open_checkpoint(r.checkpoint, key)
    assert cp.origin == ORIGIN
    assert cp.size > r.index
    merkle.verify_inclusion(r.leaf_hash, r.index, cp.size, list(r.inclusion_proof), cp.root_hash)
    return cp


def append(s: ServerProcess, entry: bytes) -> pb.AppendResponse:
    return s.stub.Append(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT)


def append_batch(s: ServerProcess, entries: list[bytes]) -> list[pb.AppendResult]:
    resp = s.stub.AppendBatch(pb.AppendBatchRequest(entries=entries), timeout=RPC_TIMEOUT)
    assert len(resp.results) == len(entries)
    return list(resp.results)


def inclusion(
    s: ServerProcess,
    *,
    index: int | None = None,
    leaf_hash: bytes | None = None,
    tree_size: int = 0,
) -> pb.InclusionProof:
    request = pb.GetInclusionProofRequest(tree_size=tree_size)
    if index is not None:
        request.index = index
    if leaf_hash is not None:
        request.leaf_hash = leaf_hash
    return s.stub.GetInclusionProof(request, timeout=RPC_TIMEOUT)


def consistency(s: ServerProcess, first: int, second: int) -> pb.ConsistencyProof:
    return s.stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(first=first, second=second), timeout=RPC_TIMEOUT
    )


def server_size(s: ServerProcess) -> int:
    return s.checkpoint().size


def entries_page(s: ServerProcess, start: int, end: int = 0) -> list[pb.Entry]:
    return list(s.stub.GetEntries(pb.GetEntriesRequest(start=start, end=end), timeout=RPC_TIMEOUT))


# Appends.


def test_append_returns_a_verifiable_receipt(deployed_server: ServerProcess) -> None:
    key = deployed_server.verifier_key
    assert key.startswith(ORIGIN + "+")
    assert deployed_server.logged_key == key  # the startup line names the same key
    assert deployed_server.logged_size == 0
    entries = [b"first entry", b"second entry", bytes(range(256)), b"\x00"]
    for i, entry in enumerate(entries):
        r = append(deployed_server, entry)
        assert r.index == i
        assert not r.duplicate
        cp = check_receipt(r, entry, key)
        assert cp.size == i + 1  # sequential appends: each one's own checkpoint
    latest = deployed_server.checkpoint()
    assert latest.size == len(entries)
    assert latest.root_hash == merkle.root_hash([merkle.leaf_hash(e) for e in entries])


def test_append_batch_fails_bad_entries_alone(server_factory: ServerFactory) -> None:
    s = server_factory("--max-entry-bytes", str(MAX_ENTRY))
    key = s.verifier_key
    batch = [b"good 1", b"", b"good 2", b"x" * (MAX_ENTRY + 1), b"y" * MAX_ENTRY, b"good 3"]
    results = append_batch(s, batch)
    good = {0, 2, 4, 5}
    for i, (entry, result) in enumerate(zip(batch, results, strict=True)):
        if i in good:
            assert result.WhichOneof("result") == "ok", result
            check_receipt(result.ok, entry, key)
            assert not result.ok.duplicate
        else:
            assert result.WhichOneof("result") == "error", result
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] == 3
    assert "empty" in results[1].error.message
    assert f"{MAX_ENTRY + 1} bytes" in results[3].error.message
    assert f"at most {MAX_ENTRY}" in results[3].error.message
    indexes = sorted(results[i].ok.index for i in good)
    assert indexes == [0, 1, 2, 3]
    assert server_size(s) == 4
    got = {e.index: e.data for e in s.all_entries()}
    assert got == {results[i].ok.index: batch[i] for i in good}


def test_append_stream_answers_in_order(deployed_server: ServerProcess) -> None:
    key = deployed_server.verifier_key
    entries = [f"stream entry {i}".encode() for i in range(300)]
    entries[150] = b""  # a bad one fails alone, in its place
    entries[200] = entries[10]  # a duplicate within the stream

    responses = list(
        deployed_server.stub.AppendStream(
            (pb.AppendRequest(entry=e) for e in entries), timeout=RPC_TIMEOUT
        )
    )
    assert len(responses) == len(entries)
    assert responses[150].WhichOneof("result") == "error"
    assert responses[150].error.code == 3
    assert "empty" in responses[150].error.message
    indexes = []
    for i, (entry, result) in enumerate(zip(entries, responses, strict=True)):
        if i == 150:
            continue
        assert result.WhichOneof("result") == "ok", (i, result)
        check_receipt(result.ok, entry, key)  # in order: leaf hash i is entry i's
        if i != 200:
            indexes.append(result.ok.index)
    assert responses[200].ok.duplicate
    assert responses[200].ok.index == responses[10].ok.index
    assert sorted(indexes) == list(range(298))
    stored = {e.index: e.data for e in deployed_server.all_entries()}
    assert len(stored) == 298
    for entry, result in zip(entries, responses, strict=True):
        if result.WhichOneof("result") == "ok":
            assert stored[result.ok.index] == entry


def test_long_append_stream(server: ServerProcess) -> None:
    """More entries than the server keeps in flight per stream (its window): all answered."""
    entries = [f"long stream {i}".encode() for i in range(3000)]
    responses = server.stub.AppendStream(
        (pb.AppendRequest(entry=e) for e in entries), timeout=RPC_TIMEOUT
    )
    leaves = [r.ok.leaf_hash for r in responses]
    assert leaves == [merkle.leaf_hash(e) for e in entries]
    assert server_size(server) == 3000


def test_cancelled_append_stream_leaves_the_server_well(deployed_server: ServerProcess) -> None:
    def endless() -> Iterator[pb.AppendRequest]:
        i = 0
        while True:
            yield pb.AppendRequest(entry=f"endless {i}".encode())
            i += 1

    stream = deployed_server.stub.AppendStream(endless(), timeout=RPC_TIMEOUT)
    got = [next(stream) for _ in range(50)]
    stream.cancel()
    with pytest.raises(grpc.RpcError) as info:
        for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert [r.ok.index for r in got] == list(range(50))
    assert deployed_server.channel is not None
    assert health_status(deployed_server.channel) == health_pb2.HealthCheckResponse.SERVING
    # Entries the stream had sent may still land; the log stays whole and goes on.
    r = append(deployed_server, b"after the stream")
    data = [e.data for e in deployed_server.all_entries()]
    assert data[r.index] == b"after the stream"
    rest = [d for d in data if d != b"after the stream"]
    assert rest == [f"endless {i}".encode() for i in range(len(rest))]
    assert len(rest) >= 50


def test_full_queue_asks_to_retry(server_factory: ServerFactory) -> None:
    s = server_factory("--queue-size", "2", "--batch-size", "1")
    batch = [f"crowd {i}".encode() for i in range(40)]
    results = append_batch(s, batch)
    ok = [r.ok for r in results if r.WhichOneof("result") == "ok"]
    refused = [r.error for r in results if r.WhichOneof("result") == "error"]
    assert ok and refused, results
    for e in refused:
        assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "queue is full" in e.message and "retry in" in e.message
    by_leaf = {merkle.leaf_hash(e): e for e in batch}
    for r in ok:
        check_receipt(r, by_leaf[r.leaf_hash], s.verifier_key)
    assert server_size(s) == len(ok)
    # Unary appends under the same pressure: RESOURCE_EXHAUSTED with a retry-after-ms trailer.
    calls = [
        s.stub.Append.future(pb.AppendRequest(entry=f"rush {i}".encode()), timeout=RPC_TIMEOUT)
        for i in range(40)
    ]
    refused_calls = [c for c in calls if c.exception() is not None]
    print(f"{len(refused_calls)} of {len(calls)} unary appends were asked to retry")
    for c in refused_calls:
        assert c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, c.details()
        assert ("retry-after-ms", "100") in (c.trailing_metadata() or ())
    # Retried later, everything gets in.
    for i in range(40):
        append(s, f"rush {i}".encode())
    assert server_size(s) == len(ok) + 40


def test_duplicate_append_returns_first_index(deployed_server: ServerProcess) -> None:
    key = deployed_server.verifier_key
    append(deployed_server, b"before")
    first = append(deployed_server, b"the entry")
    append(deployed_server, b"after")
    again = append(deployed_server, b"the entry")
    assert not first.duplicate
    assert again.duplicate
    assert again.index == first.index == 1
    assert again.leaf_hash == first.leaf_hash
    cp = check_receipt(again, b"the entry", key)
    assert cp.size == 3  # the duplicate did not grow the log
    assert server_size(deployed_server) == 3


def test_concurrent_duplicates_get_one_index(deployed_server: ServerProcess) -> None:
    key = deployed_server.verifier_key
    append(deployed_server, b"something else")
    n = 16
    barrier = threading.Barrier(n)
    results: list[pb.AppendResponse | BaseException] = [RuntimeError("no answer")] * n

    def appender(i: int) -> None:
        try:
            barrier.wait(timeout=RPC_TIMEOUT)
            results[i] = append(deployed_server, b"the same bytes")
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * RPC_TIMEOUT)
    receipts = [r for r in results if isinstance(r, pb.AppendResponse)]
    assert len(receipts) == n, results
    assert {r.index for r in receipts} == {1}
    assert sum(not r.duplicate for r in receipts) == 1
    for r in receipts:
        check_receipt(r, b"the same bytes", key)
    assert server_size(deployed_server) == 2


def test_duplicates_within_one_batch(deployed_server: ServerProcess) -> None:
    key = deployed_server.verifier_key
    old = append(deployed_server, b"old")
    batch = [b"a", b"b", b"a", b"old", b"a", b"c"]
    results = append_batch(deployed_server, batch)
    assert all(r.WhichOneof("result") == "ok" for r in results), results
    got = [(r.ok.index, r.ok.duplicate) for r in results]
    a, b, c = results[0].ok.index, results[1].ok.index, results[5].ok.index
    assert sorted([a, b, c]) == [1, 2, 3]
    assert got == [
        (a, False),
        (b, False),
        (a, True),
        (old.index, True),
        (a, True),
        (c, False),
    ]
    for entry, r in zip(batch, results, strict=True):
        check_receipt(r.ok, entry, key)
    assert server_size(deployed_server) == 4


# Reads.


def test_get_checkpoint(deployed_server: ServerProcess) -> None:
    key = deployed_server.verifier_key
    cp = deployed_server.checkpoint()
    body = open_checkpoint(cp.note, key)
    assert (body.origin, body.size, body.root_hash) == (ORIGIN, 0, merkle.EMPTY_ROOT)
    assert (cp.size, cp.root_hash) == (0, merkle.EMPTY_ROOT)
    assert f"\n\n\u2014 {ORIGIN} " in cp.note  # signed by the log's key name

    r = append(deployed_server, b"one")
    cp = deployed_server.checkpoint()
    assert cp.note == r.checkpoint
    body = open_checkpoint(cp.note, key)
    assert (body.size, body.root_hash) == (cp.size, cp.root_hash) == (1, r.leaf_hash)
    # Another key of the same name does not open it: the signature is really checked.
    _, other = note.generate_key(ORIGIN)
    with pytest.raises(merkle.MerkleError):
        note.open(cp.note, [other])


@dataclass
class BigLog:
    """A log grown in batches of uneven sizes (across tile boundaries), with what it said."""

    server: ServerProcess
    entries: list[bytes] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)  # one per batch, growing


BATCHES = [1, 1, 1, 5, 248, 1, 255, 1, 300, 1000, 487]  # sizes 1 2 3 8 256 257 512 513 ... 2300


@pytest.fixture(scope="module", params=backends.DEPLOYMENTS)
def big_log(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BigLog]:
    factory = ServerFactory(tmp_path_factory.mktemp("big"))
    try:
        args, env = backends.deployment(request)
        log = BigLog(factory(*args, env=env))
        key = log.server.verifier_key
        for n in BATCHES:
            batch = [f"entry {len(log.entries) + i:05d}".encode() for i in range(n)]
            results = append_batch(log.server, batch)
            for i, (entry, r) in enumerate(zip(batch, results, strict=True)):
                assert r.WhichOneof("result") == "ok", r
                assert r.ok.index == len(log.entries) + i
                if i in (0, n - 1):
                    check_receipt(r.ok, entry, key)
            log.entries += batch
            log.checkpoints.append(open_checkpoint(results[-1].ok.checkpoint, key))
            assert log.checkpoints[-1].size == len(log.entries)
        yield log
    finally:
        factory.cleanup()


def test_big_log_root(big_log: BigLog) -> None:
    leaves = [merkle.leaf_hash(e) for e in big_log.entries]
    for cp in big_log.checkpoints:
        assert cp.root_hash == merkle.root_hash(leaves[: cp.size])


@pytest.mark.parametrize("index", [0, 1, 2, 7, 255, 256, 257, 511, 512, 1000, 1812, 2299])
def test_inclusion_proofs_by_index_and_hash(big_log: BigLog, index: int) -> None:
    s = big_log.server
    leaf = merkle.leaf_hash(big_log.entries[index])
    latest = big_log.checkpoints[-1]
    for by in ({"index": index}, {"leaf_hash": leaf}):
        p = inclusion(s, **by)  # tree_size 0: the latest tree
        assert (p.index, p.tree_size, p.leaf_hash) == (index, latest.size, leaf)
        merkle.verify_inclusion(leaf, index, p.tree_size, list(p.hashes), latest.root_hash)
        for cp in big_log.checkpoints:
            if cp.size <= index:
                continue
            p = inclusion(s, tree_size=cp.size, **by)
            assert (p.index, p.tree_size, p.leaf_hash) == (index, cp.size, leaf)
            merkle.verify_inclusion(leaf, index, cp.size, list(p.hashes), cp.root_hash)
            assert list(p.hashes) == merkle.inclusion_proof(
                [merkle.leaf_hash(e) for e in big_log.entries[: cp.size]], index, cp.size
            )


def test_consistency_between_checkpoints_over_time(big_log: BigLog) -> None:
    s = big_log.server
    cps = big_log.checkpoints
    for i, old in enumerate(cps):
        for new in cps[i:]:
            p = consistency(s, old.size, new.size)
            assert (p.first, p.second) == (old.size, new.size)
            merkle.verify_consistency(
                old.size, new.size, list(p.hashes), old.root_hash, new.root_hash
            )
        p = consistency(s, old.size, 0)  # second 0: the latest tree
        assert p.second == cps[-1].size
        merkle.verify_consistency(
            old.size, p.second, list(p.hashes), old.root_hash, cps[-1].root_hash
        )
    # A proof between the wrong roots does not verify: the check above has teeth.
    p = consistency(s, cps[3].size, cps[5].size)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(
            cps[3].size, cps[5].size, list(p.hashes), cps[2].root_hash, cps[5].root_hash
        )


def test_get_entries_pages(big_log: BigLog) -> None:
    s = big_log.server
    size = len(big_log.entries)
    assert size == 2300
    got: list[pb.Entry] = []
    start = 0
    pages = []
    while start < size:
        page = entries_page(s, start, 0 if start % 2 else size)  # end 0 and explicit
        assert page, f"empty page at {start}"
        pages.append(len(page))
        got += page
        start += len(page)
    assert pages == [1000, 1000, 300]
    assert [e.index for e in got] == list(range(size))
    assert [e.data for e in got] == big_log.entries
    leaves = [e.leaf_hash for e in got]
    assert leaves == [merkle.leaf_hash(e) for e in big_log.entries]
    assert merkle.root_hash(leaves) == big_log.checkpoints[-1].root_hash

    window = entries_page(s, 250, 260)
    assert [(e.index, e.data) for e in window] == [(i, big_log.entries[i]) for i in range(250, 260)]
    tail = entries_page(s, 2299)
    assert [(e.index, e.data) for e in tail] == [(2299, big_log.entries[2299])]


# Refusals: exact status, a message a person can act on, and the log unchanged.


@dataclass
class SmallLog:
    server: ServerProcess
    entries: list[bytes]


@pytest.fixture(scope="module", params=backends.DEPLOYMENTS)
def small_log(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmallLog]:
    factory = ServerFactory(tmp_path_factory.mktemp("small"))
    try:
        args, env = backends.deployment(request)
        s = factory("--max-entry-bytes", str(MAX_ENTRY), *args, env=env)
        entries = [f"small {i}".encode() for i in range(10)]
        for r in append_batch(s, entries):
            assert r.WhichOneof("result") == "ok", r
        yield SmallLog(s, entries)
    finally:
        factory.cleanup()


UNKNOWN_HASH = merkle.leaf_hash(b"never appended")
Call = Callable[[SmallLog], object]

REFUSALS: list[tuple[str, Call, grpc.StatusCode, list[str]]] = [
    (
        "empty entry",
        lambda log: log.server.stub.Append(pb.AppendRequest(entry=b"")),
        INVALID,
        ["empty"],
    ),
    (
        "oversize entry",
        lambda log: log.server.stub.Append(pb.AppendRequest(entry=b"z" * (MAX_ENTRY + 1))),
        INVALID,
        [f"{MAX_ENTRY + 1} bytes", f"at most {MAX_ENTRY}", "--max-entry-bytes"],
    ),
    (
        "batch of 1001",
        lambda log: log.server.stub.AppendBatch(
            pb.AppendBatchRequest(entries=[f"batch {i}".encode() for i in range(1001)])
        ),
        INVALID,
        ["1001 entries", "at most 1000"],
    ),
    (
        "inclusion index == size",
        lambda log: log.server.stub.GetInclusionProof(pb.GetInclusionProofRequest(index=10)),
        OUT_OF_RANGE,
        ["entry 10", "size 10"],
    ),
    (
        "inclusion index far beyond",
        lambda log: log.server.stub.GetInclusionProof(pb.GetInclusionProofRequest(index=2**63)),
        OUT_OF_RANGE,
        [str(2**63), "size 10"],
    ),
    (
        "inclusion tree_size beyond the log",
        lambda log: log.server.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(index=0, tree_size=11)
        ),
        OUT_OF_RANGE,
        ["11", "current size 10"],
    ),
    (
        "inclusion index >= tree_size",
        lambda log: log.server.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(index=5, tree_size=5)
        ),
        OUT_OF_RANGE,
        ["entry 5", "size 5"],
    ),
    (
        "inclusion by hash of an entry beyond tree_size",
        lambda log: log.server.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(leaf_hash=merkle.leaf_hash(log.entries[7]), tree_size=5)
        ),
        OUT_OF_RANGE,
        ["entry 7", "size 5"],
    ),
    (
        "leaf hash of 31 bytes",
        lambda log: log.server.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(leaf_hash=UNKNOWN_HASH[:31])
        ),
        INVALID,
        ["31 bytes", "32"],
    ),
    (
        "leaf hash of 0 bytes",
        lambda log: log.server.stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_hash=b"")),
        INVALID,
        ["0 bytes", "32"],
    ),
    (
        "unknown leaf hash",
        lambda log: log.server.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(leaf_hash=UNKNOWN_HASH)
        ),
        NOT_FOUND,
        ["no entry", "leaf hash"],
    ),
    (
        "neither index nor leaf hash",
        lambda log: log.server.stub.GetInclusionProof(pb.GetInclusionProofRequest()),
        INVALID,
        ["index", "leaf_hash"],
    ),
    (
        "consistency first 0",
        lambda log: log.server.stub.GetConsistencyProof(
            pb.GetConsistencyProofRequest(first=0, second=5)
        ),
        INVALID,
        ["first is 0"],
    ),
    (
        "consistency first > second",
        lambda log: log.server.stub.GetConsistencyProof(
            pb.GetConsistencyProofRequest(first=6, second=5)
        ),
        INVALID,
        ["first (6)", "second (5)"],
    ),
    (
        "consistency second beyond the log",
        lambda log: log.server.stub.GetConsistencyProof(
            pb.GetConsistencyProofRequest(first=1, second=11)
        ),
        OUT_OF_RANGE,
        ["11", "current size 10"],
    ),
    (
        "entries start == end",
        lambda log: list(log.server.stub.GetEntries(pb.GetEntriesRequest(start=3, end=3))),
        OUT_OF_RANGE,
        ["start 3", "end 3"],
    ),
    (
        "entries start > end",
        lambda log: list(log.server.stub.GetEntries(pb.GetEntriesRequest(start=5, end=2))),
        OUT_OF_RANGE,
        ["start 5", "end 2"],
    ),
    (
        "entries start at the size",
        lambda log: list(log.server.stub.GetEntries(pb.GetEntriesRequest(start=10))),
        OUT_OF_RANGE,
        ["start 10", "end 10"],
    ),
    (
        "entries end beyond the log",
        lambda log: list(log.server.stub.GetEntries(pb.GetEntriesRequest(start=0, end=11))),
        OUT_OF_RANGE,
        ["11", "current size 10"],
    ),
]


@pytest.mark.parametrize(
    ("call", "code", "words"),
    [pytest.param(c, code, w, id=name) for name, c, code, w in REFUSALS],
)
def test_refusals(small_log: SmallLog, call: Call, code: grpc.StatusCode, words: list[str]) -> None:
    before = small_log.server.checkpoint()
    assert before.size == 10
    try:
        result = call(small_log)
    except grpc.RpcError as error:
        assert error.code() == code, error.details()
        message = error.details() or ""
    else:
        raise AssertionError(f"expected {code}, got {result!r}")
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "Traceback" not in message and "Exception" not in message
    after = small_log.server.checkpoint()
    assert after.note == before.note  # unchanged: same signed checkpoint
    assert [e.data for e in small_log.server.all_entries()] == small_log.entries
    # Nothing refused became an entry.
    for entry in (b"", b"z" * (MAX_ENTRY + 1), b"batch 0", b"batch 1000"):
        e = status_of(
            small_log.server.stub.GetInclusionProof,
            pb.GetInclusionProofRequest(leaf_hash=merkle.leaf_hash(entry)),
        )
        assert e.code() == NOT_FOUND


def test_refusals_on_an_empty_log(deployed_server: ServerProcess) -> None:
    before = deployed_server.checkpoint()
    e = status_of(deployed_server.stub.GetInclusionProof, pb.GetInclusionProofRequest(index=0))
    assert e.code() == OUT_OF_RANGE
    e = status_of(deployed_server.stub.GetEntries, pb.GetEntriesRequest(start=0))
    assert e.code() == OUT_OF_RANGE
    e = status_of(deployed_server.stub.GetConsistencyProof, pb.GetConsistencyProofRequest(first=1))
    assert e.code() == INVALID
    assert deployed_server.checkpoint().note == before.note


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("/affidavit.v1.Log/Append", b"\x0a\x10short"),  # length 16, 5 bytes follow
        ("/affidavit.v1.Log/AppendBatch", b"\x0a\xff\xff\xff\xff\x0f"),
        ("/affidavit.v1.Log/GetInclusionProof", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
        ("/affidavit.v1.Log/GetConsistencyProof", b"\x08"),  # varint cut off
    ],
)
def test_malformed_request_is_refused(small_log: SmallLog, method: str, raw: bytes) -> None:
    s = small_log.server
    before = s.checkpoint()
    assert s.channel is not None
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = s.channel.unary_unary(
        method, request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as info:
        call(raw, timeout=RPC_TIMEOUT)
    # The server is still healthy and the log unchanged.
    assert health_status(s.channel) == health_pb2.HealthCheckResponse.SERVING
    assert s.checkpoint().note == before.note
    assert s.running
    # A status that says the request was bad (not UNKNOWN with a Python exception's name).
    code, details = info.value.code(), info.value.details() or ""
    assert code in (INVALID, grpc.StatusCode.INTERNAL), f"{code}: {details}"
    assert "<class" not in details, details


def test_concurrent_proofs_by_leaf_hash_each_get_their_own(small_log: SmallLog) -> None:
    """Lookups by leaf hash arriving together are read together (server.leaf_lookups): every
    caller still gets its own leaf's index and proof, or NOT_FOUND for a hash not in the log."""
    s = small_log.server
    cp = s.checkpoint()
    known = [merkle.leaf_hash(e) for e in small_log.entries]
    unknown = [merkle.leaf_hash(f"never {i}".encode()) for i in range(len(known))]
    asked = [(known + unknown)[k % (2 * len(known))] for k in range(7 * 2 * len(known))]
    random.Random(5).shuffle(asked)
    calls = [
        s.stub.GetInclusionProof.future(
            pb.GetInclusionProofRequest(leaf_hash=h, tree_size=cp.size), timeout=RPC_TIMEOUT
        )
        for h in asked
    ]
    for h, call in zip(asked, calls, strict=True):
        if h in unknown:
            with pytest.raises(grpc.RpcError) as info:
                call.result()
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            continue
        proof = call.result()
        assert proof.index == known.index(h) and proof.leaf_hash == h
        merkle.verify_inclusion(h, proof.index, cp.size, list(proof.hashes), cp.root_hash)


def test_every_call_of_a_method_is_checked_alike(small_log: SmallLog) -> None:
    """The interceptor wraps each method's handler once (StrictRequests): the calls after the
    first get the same checks, a malformed one INVALID_ARGUMENT saying so, whatever came before."""
    s = small_log.server
    assert s.channel is not None
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = s.channel.unary_unary(
        "/affidavit.v1.Log/GetConsistencyProof", request_serializer=None, response_deserializer=None
    )
    good = pb.GetConsistencyProofRequest(first=1).SerializeToString()
    for raw in (b"\x08", good, b"\x08", b"\x08", good):
        if raw == good:
            assert pb.ConsistencyProof.FromString(call(raw, timeout=RPC_TIMEOUT)).first == 1
            continue
        with pytest.raises(grpc.RpcError) as info:
            call(raw, timeout=RPC_TIMEOUT)
        assert info.value.code() == INVALID, info.value
        assert "not a valid protobuf message" in (info.value.details() or "")


def test_malformed_message_in_a_stream_is_refused(small_log: SmallLog) -> None:
    s = small_log.server
    assert s.channel is not None
    call: grpc.StreamStreamMultiCallable[bytes, bytes] = s.channel.stream_stream(
        "/affidavit.v1.Log/AppendStream", request_serializer=None, response_deserializer=None
    )
    good = pb.AppendRequest(entry=b"before the bad message").SerializeToString()
    answers = []
    with pytest.raises(grpc.RpcError) as info:
        for answer in call(iter([good, b"\x0a\x10short"]), timeout=RPC_TIMEOUT):
            answers.append(pb.AppendResult.FromString(answer))
    code, details = info.value.code(), info.value.details() or ""
    assert code == INVALID, f"{code}: {details}"
    assert "not a valid protobuf message" in details
    assert all(a.HasField("ok") for a in answers)  # what was answered before it, was appended
    assert health_status(s.channel) == health_pb2.HealthCheckResponse.SERVING


# The process: restart, health, reflection, locking, startup checks.


def test_restart_keeps_everything(deployed_server: ServerProcess) -> None:
    key = deployed_server.verifier_key
    entries = [f"kept {i}".encode() for i in range(300)]
    receipts = []
    for chunk in (entries[:1], entries[1:40], entries[40:]):
        receipts += [r.ok for r in append_batch(deployed_server, chunk)]
    old_checkpoints = [open_checkpoint(r.checkpoint, key) for r in receipts]
    before = deployed_server.checkpoint()

    assert deployed_server.stop() == 0
    assert "stopped at tree size 300" in deployed_server.stderr
    deployed_server.start()
    assert deployed_server.logged_size == 300
    assert deployed_server.verifier_key == key

    after = deployed_server.checkpoint()
    assert after.note == before.note
    for entry, r in zip(entries, receipts, strict=True):
        p = inclusion(deployed_server, leaf_hash=merkle.leaf_hash(entry))
        assert p.index == r.index
        merkle.verify_inclusion(p.leaf_hash, p.index, after.size, list(p.hashes), after.root_hash)
    for cp in {c.size: c for c in old_checkpoints}.values():
        c = consistency(deployed_server, cp.size, 0)
        merkle.verify_consistency(
            cp.size, after.size, list(c.hashes), cp.root_hash, after.root_hash
        )
    # The log goes on where it stopped; a retried entry is still a duplicate.
    assert append(deployed_server, b"kept 5").index == 5
    r = append(deployed_server, b"after restart")
    assert (r.index, r.duplicate) == (300, False)
    check_receipt(r, b"after restart", key)


def test_health_and_reflection(deployed_server: ServerProcess) -> None:
    assert deployed_server.channel is not None
    for name in ("", "affidavit.v1.Log"):
        status = health_status(deployed_server.channel, name)
        assert status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.RpcError) as info:
        health_status(deployed_server.channel, "no.such.Service")
    assert info.value.code() == NOT_FOUND

    reflect: grpc.StreamStreamMultiCallable[
        reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    ] = deployed_server.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="affidavit.v1.Log"),
    ]
    listed, described = list(reflect(iter(requests), timeout=RPC_TIMEOUT))
    names = {s.name for s in listed.list_services_response.service}
    assert {"affidavit.v1.Log", "grpc.health.v1.Health"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    services = {
        f"{f.package}.{svc.name}": {m.name for m in svc.method} for f in files for svc in f.service
    }
    assert services["affidavit.v1.Log"] >= {
        "Append",
        "AppendBatch",
        "AppendStream",
        "GetCheckpoint",
        "GetInclusionProof",
        "GetConsistencyProof",
        "GetEntries",
    }


def test_entries_need_an_auditor_token(deployed_server: ServerProcess) -> None:
    r = append(deployed_server, b"secret-ish")
    public = deployed_server.public_stub
    # Checkpoints, proofs and appends need no credential...
    assert public.GetCheckpoint(pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT).size == 1
    p = public.GetInclusionProof(pb.GetInclusionProofRequest(index=0), timeout=RPC_TIMEOUT)
    assert p.leaf_hash == r.leaf_hash
    assert public.Append(pb.AppendRequest(entry=b"more"), timeout=RPC_TIMEOUT).index == 1
    # ...entry contents do.
    e = status_of(public.GetEntries, pb.GetEntriesRequest(start=0))
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "auditor token" in (e.details() or "")
    e = status_of(
        public.GetEntries,
        pb.GetEntriesRequest(start=0),
        metadata=(("authorization", "Bearer afv_not-a-token"),),
    )
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [x.data for x in deployed_server.all_entries()] == [b"secret-ish", b"more"]


def test_data_dir_in_use_is_refused(server: ServerProcess, server_factory: ServerFactory) -> None:
    append(server, b"held")
    before = server.checkpoint()
    second = server_factory.create(data_dir=server.data_dir).spawn()
    rc = second.wait_exit()
    assert rc != 0
    assert "in use" in second.stderr and "lock" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert "affidavit serving" not in second.stderr
    # The first server is unharmed.
    assert server.running
    assert server.checkpoint().note == before.note
    assert append(server, b"still appending").index == 1


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _tamper(data_dir: Path, change: Callable[[plyvel.DB], None]) -> None:
    db = plyvel.DB(str(data_dir / "db"))
    try:
        change(db)
    finally:
        db.close()


def _refused_start(s: ServerProcess) -> str:
    s.spawn()
    rc = s.wait_exit()
    assert rc != 0, s.stderr
    assert "Traceback" not in s.stderr, s.stderr
    assert "affidavit serving" not in s.stderr
    return s.stderr


def _flip_tile_byte(db: plyvel.DB) -> None:
    key = b"t/\x00" + _u64(0)
    data = bytearray(db.get(key))
    assert len(data) == 10 * 32
    data[5 * 32 + 7] ^= 0x01  # leaf hash 5
    db.put(key, bytes(data))


def _truncate_tile(db: plyvel.DB) -> None:
    key = b"t/\x00" + _u64(0)
    db.put(key, db.get(key)[: 9 * 32])


def _drop_last_entry(db: plyvel.DB) -> None:
    assert db.get(b"e/" + _u64(9)) is not None
    db.delete(b"e/" + _u64(9))


def _add_extra_entry(db: plyvel.DB) -> None:
    db.put(b"e/" + _u64(10), b"smuggled in")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        pytest.param(_flip_tile_byte, ["root", "size 10", "altered or damaged"], id="tile-bit"),
        pytest.param(_truncate_tile, ["tile", "missing or short"], id="tile-short"),
        pytest.param(_drop_last_entry, ["covers 10 entries", "9 are stored"], id="entry-gone"),
        pytest.param(_add_extra_entry, ["covers 10 entries", "11 are stored"], id="entry-extra"),
    ],
)
def test_damaged_database_is_refused_at_startup(
    server: ServerProcess, change: Callable[[plyvel.DB], None], words: list[str]
) -> None:
    entries = [f"stored {i}".encode() for i in range(10)]
    append_batch(server, entries)
    cp = server.checkpoint()
    assert server.stop() == 0
    _tamper(server.data_dir, change)
    message = _refused_start(server)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    if change is _flip_tile_byte:
        assert cp.root_hash.hex() in message  # says which root it expected


def test_forged_checkpoint_is_refused_at_startup(server: ServerProcess) -> None:
    append(server, b"one")
    assert server.stop() == 0
    # A checkpoint signed by another key of the same name.
    signer, _ = note.generate_key(ORIGIN)
    forged = note.sign(Checkpoint(ORIGIN, 1, merkle.leaf_hash(b"one")).format(), signer)
    _tamper(server.data_dir, lambda db: db.put(b"c/latest", forged.encode()))
    message = _refused_start(server)
    assert "does not verify" in message and "key" in message


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda db: db.put(b"e/" + _u64(7), b"tampered"), id="entry-altered"),
        pytest.param(lambda db: db.delete(b"e/" + _u64(5)), id="middle-entry-gone"),
    ],
)
def test_damaged_entries_are_never_served_as_genuine(
    server: ServerProcess, change: Callable[[plyvel.DB], None]
) -> None:
    """Entries altered or lost on disk (startup checks the tiles' root and the last entry's
    index): the server may refuse to start or refuse to serve them, but must not serve other
    bytes beside the genuine leaf hash, nor silently skip an index."""
    entries = [f"genuine {i}".encode() for i in range(10)]
    append_batch(server, entries)
    assert server.stop() == 0
    _tamper(server.data_dir, change)
    try:
        server.start()
    except AssertionError:
        assert server.proc is not None and server.proc.returncode not in (None, 0)
        assert "Traceback" not in server.stderr  # refused at startup, clearly: fine
        return
    try:
        served = list(server.stub.GetEntries(pb.GetEntriesRequest(start=0), timeout=RPC_TIMEOUT))
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INTERNAL), e
        return
    assert [e.index for e in served] == list(range(10)), "an index was skipped"
    for entry in served:
        assert entry.leaf_hash == merkle.leaf_hash(entry.data), (
            f"entry {entry.index} served as {entry.data!r} with another entry's leaf hash"
        )
