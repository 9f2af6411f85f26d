"""The client library checks every receipt (client/client.py, verify.py): its leaf hash,
checkpoint signature, inclusion proof and consistency with the checkpoint it trusted, in one
round trip; forged receipts, a proof of another entry and entries that do not match their
hashes are refused. Servers are real `affidavit serve` processes (tests/serverproc.py).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from affidavit.client.errors import (
    VerificationError,
)
from affidavit.client.trust import TrustStore
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note
from affidavit.proto import affidavit_pb2 as pb

from affidavit import merkle
from tests import serverproc
from tests.clientworld import (
    Stub,
    connect,
    copy_of,
    saved_size,
)
from tests.serverproc import ORIGIN, RPC_TIMEOUT, ServerProcess

server_factory = serverproc.server_factory
server = serverproc.server

# The receipt, checked.


def test_receipt_is_verified_and_trust_is_kept(server: ServerProcess, tmp_path: Path) -> None:
    trust_dir = tmp_path / "trust"
    with connect(server, trust_dir) as client:
        assert client.trusted is None
        first = client.append_opaque(b"first")
        r = client.append_opaque(b"second")
    assert (first.index, r.index) == (0, 1)
    assert r.leaf_hash == merkle.leaf_hash(b"second") and not r.duplicate
    cp = r.checkpoint.checkpoint
    assert (cp.origin, cp.size) == (ORIGIN, 2)
    assert cp.root_hash == merkle.root_hash(
        [merkle.leaf_hash(b"first"), merkle.leaf_hash(b"second")]
    )
    merkle.verify_inclusion(r.leaf_hash, 1, 2, list(r.proof), cp.root_hash)
    assert note.open(r.checkpoint.note, [server.verifier_key]) == cp.format()
    # The last trusted checkpoint is on disk, and a new client starts from it.
    assert TrustStore(trust_dir).load(ORIGIN) == r.checkpoint.note
    assert (
        server.public_stub.Append(pb.AppendRequest(entry=b"third"), timeout=RPC_TIMEOUT).index == 2
    )
    with connect(server, trust_dir) as again:
        assert again.trusted is not None and again.trusted.checkpoint == cp
        latest = again.checkpoint()  # consistency 2 -> 3 proven and checked, then trusted
    assert latest.checkpoint.size == 3 and saved_size(trust_dir) == 3


def _forge_leaf_hash(r: pb.AppendResponse) -> pb.AppendResponse:
    r = copy_of(r)
    r.leaf_hash = merkle.leaf_hash(b"something else")
    return r


def _forge_index(r: pb.AppendResponse) -> pb.AppendResponse:
    r = copy_of(r)
    r.index = r.index - 1
    return r


def _forge_proof(r: pb.AppendResponse) -> pb.AppendResponse:
    r = copy_of(r)
    r.inclusion_proof[0] = bytes(32)
    return r


def _forge_signature(r: pb.AppendResponse) -> pb.AppendResponse:
    r = copy_of(r)
    body, (sig,) = note.parse_note(r.checkpoint)
    raw = bytearray(sig.key_hash + sig.signature)
    raw[-1] ^= 1
    r.checkpoint = f"{body}\n— {sig.name} {base64.b64encode(bytes(raw)).decode()}\n"
    return r


def _forge_root(r: pb.AppendResponse) -> pb.AppendResponse:
    """A checkpoint the log never signed (its body changed, the signature kept)."""
    r = copy_of(r)
    body, _ = note.parse_note(r.checkpoint)
    origin, size, root = body.splitlines()
    forged = base64.b64encode(bytes(32)).decode()
    r.checkpoint = r.checkpoint.replace(
        f"{origin}\n{size}\n{root}\n", f"{origin}\n{size}\n{forged}\n"
    )
    return r


def _forge_consistency(r: pb.AppendResponse) -> pb.AppendResponse:
    """A receipt whose consistency proof from the trusted size is not the log's."""
    r = copy_of(r)
    r.consistency_proof[0] = bytes(32)
    return r


@pytest.mark.parametrize(
    ("forge", "words"),
    [
        (_forge_leaf_hash, "leaf hash"),
        (_forge_consistency, "consistent"),
        (_forge_index, "inclusion proof"),
        (_forge_proof, "inclusion proof"),
        (_forge_signature, "does not verify"),
        (_forge_root, "does not verify"),
    ],
    ids=["leaf-hash", "index", "proof", "consistency", "signature", "checkpoint-body"],
)
def test_forged_receipts_are_refused(
    server: ServerProcess, tmp_path: Path, forge: Callable[[Any], Any], words: str
) -> None:
    with connect(server, tmp_path / "trust") as client:
        for entry in (b"a", b"b", b"c"):
            client.append_opaque(entry)
        trusted = client.trusted
        real = client.stub
        client.stub = Stub(real, Append=lambda r, **kw: forge(real.Append(r, **kw)))  # type: ignore[assignment]
        with pytest.raises(VerificationError, match=words):
            client.append_opaque(b"d")
        assert client.trusted == trusted  # nothing that failed is trusted
    assert saved_size(tmp_path / "trust") == 3


def test_an_append_is_checked_in_one_round_trip(server: ServerProcess, tmp_path: Path) -> None:
    """The receipt brings the consistency proof from the trusted size: no second RPC."""
    with connect(server, tmp_path / "trust") as client:
        client.append_opaque(b"one round trip: first")
        counted = Stub(client.stub)
        client.stub = counted  # type: ignore[assignment]
        receipts = [client.append_opaque(b"one round trip: %d" % i) for i in range(5)]
        assert counted.calls == {"Append": 5}
        assert client.trusted == receipts[-1].checkpoint
    assert saved_size(tmp_path / "trust") == receipts[-1].checkpoint.checkpoint.size


def test_a_receipt_without_a_consistency_proof_is_proven_by_asking(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A log that sends no proof beside the receipt (an older server) is asked for it."""

    def without_proof(r: pb.AppendResponse) -> pb.AppendResponse:
        r = copy_of(r)
        del r.consistency_proof[:]
        return r

    with connect(server, tmp_path / "trust") as client:
        client.append_opaque(b"older server: first")
        real = client.stub
        counted = Stub(real, Append=lambda r, **kw: without_proof(real.Append(r, **kw)))
        client.stub = counted  # type: ignore[assignment]
        receipt = client.append_opaque(b"older server: second")
        assert counted.calls == {"Append": 1, "GetConsistencyProof": 1}
        assert client.trusted == receipt.checkpoint


def test_the_log_proves_consistency_beside_a_receipt(server: ServerProcess) -> None:
    """AppendRequest.consistency_from: the proof verifies from that size to the receipt's
    checkpoint; none for 0, for the receipt's own size or beyond it."""
    stub = server.public_stub
    for i in range(3):
        stub.Append(pb.AppendRequest(entry=b"beside %d" % i), timeout=RPC_TIMEOUT)
    old = checkpoints.parse(note.open(server.checkpoint().note, [server.verifier_key]))
    size = old.size
    r = stub.Append(
        pb.AppendRequest(entry=b"beside last", consistency_from=size), timeout=RPC_TIMEOUT
    )
    new = checkpoints.parse(note.open(r.checkpoint, [server.verifier_key]))
    assert new.size == size + 1 and r.consistency_proof
    merkle.verify_consistency(
        size, new.size, list(r.consistency_proof), old.root_hash, new.root_hash
    )
    for first in (0, new.size, new.size + 5):
        again = stub.Append(
            pb.AppendRequest(entry=b"beside last", consistency_from=first), timeout=RPC_TIMEOUT
        )
        assert again.duplicate and not again.consistency_proof


def test_a_proof_of_another_entry_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    with connect(server, tmp_path / "trust") as client:
        leaves = [client.append_opaque(bytes([n])) for n in range(5)]
        proof, cp = client.prove(index=2)
        assert (proof.index, proof.leaf_hash, cp.checkpoint.size) == (2, leaves[2].leaf_hash, 5)
        proof, _ = client.prove(leaf_hash=leaves[3].leaf_hash)
        assert proof.index == 3

        # A log that answers with a valid proof of a different entry than the one asked for.
        real = client.stub

        def other_entry(request: pb.GetInclusionProofRequest, **kw: Any) -> pb.InclusionProof:
            swapped = pb.GetInclusionProofRequest(tree_size=request.tree_size)
            if request.WhichOneof("leaf") == "index":
                swapped.index = request.index + 1
            else:
                swapped.leaf_hash = leaves[0].leaf_hash
            response: pb.InclusionProof = real.GetInclusionProof(swapped, **kw)
            return response

        client.stub = Stub(real, GetInclusionProof=other_entry)  # type: ignore[assignment]
        with pytest.raises(VerificationError, match="asked for a proof of entry 2, got one of 3"):
            client.prove(index=2)
        with pytest.raises(VerificationError, match="asked for a proof of leaf"):
            client.prove(leaf_hash=leaves[3].leaf_hash)


def test_entries_are_checked_against_their_hashes(server: ServerProcess) -> None:
    with connect(server, None, token=server.auditor_token) as client:
        for n in range(3):
            client.append_opaque(b"entry %d" % n)
        assert [e.data for e in client.entries()] == [b"entry 0", b"entry 1", b"entry 2"]

        real = client.stub

        def altered(request: pb.GetEntriesRequest, **kw: Any) -> Iterator[pb.Entry]:
            for e in real.GetEntries(request, **kw):
                if e.index == 1:
                    e.data = b"entry X"
                yield e

        def nothing(request: pb.GetEntriesRequest, **kw: Any) -> Iterator[pb.Entry]:
            yield from ()

        client.stub = Stub(real, GetEntries=altered)  # type: ignore[assignment]
        with pytest.raises(VerificationError, match="entry 1 from the log is not what it claims"):
            list(client.entries())
        client.stub = Stub(real, GetEntries=nothing)  # type: ignore[assignment]
        with pytest.raises(VerificationError, match="no entries"):
            list(client.entries(0, 3))
