"""AppendStream's batching and limits, against a real server: entries of a stream are
integrated in groups (never one batch per entry), streams share batches, and what the append
queue has no room for is refused entry by entry, in place, while the stream goes on."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note
from affidavit.proto import affidavit_pb2 as pb

from affidavit import merkle
from tests import serverproc
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess

server_factory = serverproc.server_factory

BATCH_WAIT_MS = "50"
"""The servers here hold a batch open this long for more entries: each batch then gathers
whatever the streams sent meanwhile, so the number of batches says whether a stream's
entries were submitted together or one at a time (one at a time would take 50 ms an entry)."""


def checkpoint_size(s: ServerProcess, result: pb.AppendResult) -> int:
    """The size of the checkpoint a receipt carries (verified with the log's key): entries
    answered with the same checkpoint were integrated in the same batch."""
    assert result.WhichOneof("result") == "ok", result
    return checkpoints.parse(note.open(result.ok.checkpoint, [s.verifier_key])).size


def test_a_stream_is_integrated_in_groups(server_factory: ServerFactory) -> None:
    s = server_factory("--batch-wait-ms", BATCH_WAIT_MS)
    entries = [f"grouped {i}".encode() for i in range(500)]
    results = list(
        s.stub.AppendStream((pb.AppendRequest(entry=e) for e in entries), timeout=RPC_TIMEOUT)
    )
    assert [r.ok.leaf_hash for r in results] == [merkle.leaf_hash(e) for e in entries]
    batches = {checkpoint_size(s, r) for r in results}
    assert len(batches) <= len(entries) // 10, sorted(batches)


def test_concurrent_streams_share_batches(server_factory: ServerFactory) -> None:
    s = server_factory("--batch-wait-ms", BATCH_WAIT_MS)
    both_open = threading.Barrier(2, timeout=RPC_TIMEOUT)
    answers: dict[str, list[pb.AppendResult]] = {}

    def requests(name: str) -> Iterator[pb.AppendRequest]:
        both_open.wait()  # both streams are being read before either sends
        for i in range(200):
            yield pb.AppendRequest(entry=f"{name} {i}".encode())

    def stream(name: str) -> None:
        answers[name] = list(s.stub.AppendStream(requests(name), timeout=RPC_TIMEOUT))

    threads = [threading.Thread(target=stream, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        leaves = [r.ok.leaf_hash for r in answers[name]]
        assert leaves == [merkle.leaf_hash(f"{name} {i}".encode()) for i in range(200)]
    shared = {checkpoint_size(s, r) for r in answers["a"]} & {
        checkpoint_size(s, r) for r in answers["b"]
    }
    assert shared, "no batch held entries of both streams"


def test_a_full_queue_refuses_entries_in_place(server_factory: ServerFactory) -> None:
    """Entries beyond the append queue's room get RESOURCE_EXHAUSTED each, in their place;
    the others are appended and answered; the stream ends cleanly."""
    s = server_factory("--batch-wait-ms", "200", "--queue-size", "10")
    entries = [f"crowded {i}".encode() for i in range(100)]
    results = list(
        s.stub.AppendStream((pb.AppendRequest(entry=e) for e in entries), timeout=RPC_TIMEOUT)
    )
    assert len(results) == len(entries)
    kinds = [r.WhichOneof("result") for r in results]
    assert "ok" in kinds
    refused = [r for r in results if r.WhichOneof("result") == "error"]
    assert refused, "a queue of 10 took a stream of 100 sent within one 200 ms batch"
    for r in refused:
        assert r.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], r
        assert "append queue is full" in r.error.message
    stored = {e.index: e.data for e in s.all_entries()}
    appended = [(entries[i], r.ok) for i, r in enumerate(results) if kinds[i] == "ok"]
    assert len(stored) == len(appended)
    for entry, ok in appended:
        assert ok.leaf_hash == merkle.leaf_hash(entry)
        assert stored[ok.index] == entry
