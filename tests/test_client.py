"""The client library (client/client.py, verify.py, trust.py, actor.py) against real servers.

The client trusts nothing: every receipt's leaf hash, checkpoint signature and inclusion proof
is checked, and every new checkpoint must extend the last one it trusted, which is kept on disk.
Rollbacks and forks are made as an operator could: a server restarted on an older copy of its
data directory; two servers on copies of one directory, fed different entries. Servers are real
`affidavit serve` processes (tests/serverproc.py); nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from affidavit.client import client as client_module
from affidavit.client.actor import Actor
from affidavit.client.client import Client, Receipt, Tls
from affidavit.client.errors import (
    NotAuthorisedError,
    NotSentError,
    RefusedError,
    UnavailableError,
    VerificationError,
)
from affidavit.client.trust import TrustStore
from affidavit.client.verify import TrustPolicy, open_checkpoint
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import keys, note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.canonical import canonical_json, commitment
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import parameters_digest
from affidavit.statements.signing import IdentityKey
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2

from affidavit import merkle
from tests import serverproc
from tests.serverproc import ORIGIN, RPC_TIMEOUT, ServerFactory, ServerProcess

server_factory = serverproc.server_factory
server = serverproc.server

GITHUB_TOKEN = "ghp_" + "Zq8xW2vB7nR4tY6uI1oP3aS5dF9gH0jK2lM4"
"""Looks like a GitHub token to the secret guard (built at run time: no literal secret)."""

ROLLBACK = r"roll(ed)? ?back"


# Helpers.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def policy_of(server: ServerProcess, *witnesses: str, quorum: int = 0) -> TrustPolicy:
    return TrustPolicy(server.verifier_key, witnesses, quorum)


def connect(server: ServerProcess, trust_dir: Path | None, **kw: Any) -> Client:
    kw.setdefault("timeout", RPC_TIMEOUT)
    return Client(server.address, policy_of(server), trust_dir=trust_dir, **kw)


def copy_data(server: ServerProcess, to: Path) -> Path:
    """A stopped server's data directory (keys and database), copied."""
    assert not server.running
    shutil.copytree(server.data_dir, to)
    return to


def saved_size(trust_dir: Path, origin: str = ORIGIN) -> int | None:
    saved = TrustStore(trust_dir).load(origin)
    return None if saved is None else int(note.parse_note(saved)[0].splitlines()[1])


class Lost(grpc.RpcError):
    """What a call whose response was lost looks like to the caller."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "connection reset (simulated)"


class Stub:
    """Stands in for a client's stub: the named methods replaced, the others passed through to
    the real one; counts the calls made."""

    def __init__(self, real: Any, **methods: Callable[..., Any]) -> None:
        self._real = real
        self._methods = methods
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = self._methods.get(name) or getattr(self._real, name)

        def call(request: Any, **kw: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(request, **kw)

        return call


def copy_of(message: Any) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


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


# The trust store.


def test_trust_store_round_trip_and_file_names(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "t")
    assert store.load("example.com/a") is None
    store.save("example.com/a", "one\n")
    store.save("example.com/b", "two\n")
    store.save("example.com/a", "three\n")
    assert (store.load("example.com/a"), store.load("example.com/b")) == ("three\n", "two\n")
    names = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert len(names) == 2 and all(n.endswith(".checkpoint") and "/" not in n for n in names)


def test_failed_write_leaves_the_old_file_and_no_litter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TrustStore(tmp_path / "t")
    store.save(ORIGIN, "old\n")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        store.save(ORIGIN, "new\n")
    monkeypatch.undo()
    assert store.load(ORIGIN) == "old\n"
    assert [p.name for p in (tmp_path / "t").iterdir()] == [store._path(ORIGIN).name]


CRASH = r"""
import os, sys
from pathlib import Path
from affidavit.client.trust import TrustStore

directory, origin, text, where = sys.argv[1:]
write, replace = os.write, os.replace
if where == "mid-write":
    def crash_write(fd, data):
        write(fd, bytes(data[: len(data) // 2]))
        os.fsync(fd)
        os._exit(9)
    os.write = crash_write
elif where == "before-rename":
    os.replace = lambda a, b: os._exit(9)
elif where == "after-rename":
    def crash_replace(a, b):
        replace(a, b)
        os._exit(9)
    os.replace = crash_replace
TrustStore(Path(directory)).save(origin, text)
"""


@pytest.mark.parametrize("where", ["mid-write", "before-rename", "after-rename"])
def test_a_crash_while_saving_leaves_old_or_new(
    server: ServerProcess, tmp_path: Path, where: str
) -> None:
    """A process killed while replacing the trusted checkpoint leaves the old file or the new
    one, whole; a temporary file it left behind is ignored by the next client."""
    trust_dir = tmp_path / "trust"
    with connect(server, trust_dir) as client:
        old = client.append_opaque(b"a").checkpoint
    new = open_checkpoint(
        server.public_stub.Append(pb.AppendRequest(entry=b"b"), timeout=RPC_TIMEOUT).checkpoint,
        policy_of(server),
    )
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, str(trust_dir), ORIGIN, new.note, where],
        env=serverproc.clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == 9, crashed.stderr
    leftovers = list(trust_dir.glob(".*.tmp"))
    expected = new if where == "after-rename" else old
    assert TrustStore(trust_dir).load(ORIGIN) == expected.note
    if where != "after-rename":
        assert len(leftovers) == 1  # the crash left its temporary file
        if where == "mid-write":
            assert 0 < len(leftovers[0].read_bytes()) < len(new.note.encode())
    # A new client reads the whole file, ignores the leftover, and carries on from it.
    with connect(server, trust_dir) as client:
        assert client.trusted is not None and client.trusted.checkpoint == expected.checkpoint
        assert client.checkpoint().checkpoint.size == 2
    assert saved_size(trust_dir) == 2


def test_a_damaged_trust_file_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    trust_dir = tmp_path / "trust"
    with connect(server, trust_dir) as client:
        client.append_opaque(b"a")
    path = TrustStore(trust_dir)._path(ORIGIN)
    path.write_text(path.read_text().replace(f"{ORIGIN}\n1\n", f"{ORIGIN}\n7\n"))
    with pytest.raises(VerificationError, match="does not verify"):
        connect(server, trust_dir)


# Rollbacks and forks.


def test_rollback_is_caught(server_factory: ServerFactory, tmp_path: Path) -> None:
    port = free_port()
    s = server_factory("--listen", f"127.0.0.1:{port}")
    trust_dir = tmp_path / "trust"
    client = connect(s, trust_dir, retries=8)
    try:
        for entry in (b"a", b"b"):
            client.append_opaque(entry)
        assert s.stop() == 0
        old = copy_data(s, tmp_path / "old")
        s.start()
        for entry in (b"c", b"d"):
            client.append_opaque(entry)
        assert saved_size(trust_dir) == 4
        assert s.stop() == 0

        # The operator restarts the log on the older copy, on the same address.
        rolled = server_factory("--listen", f"127.0.0.1:{port}", data_dir=old)
        assert rolled.checkpoint().size == 2
        with pytest.raises(VerificationError, match=ROLLBACK):
            client.checkpoint()
        with pytest.raises(VerificationError, match=ROLLBACK):
            client.append_opaque(b"e")  # the log took it; the client does not trust its answer
        assert saved_size(trust_dir) == 4  # nothing that failed was trusted
    finally:
        client.close()

    # A fresh client on the same trust directory, and a fresh process (the CLI), catch it too.
    with connect(rolled, trust_dir) as fresh, pytest.raises(VerificationError, match=ROLLBACK):
        fresh.checkpoint()
    cli = serverproc.run_cli(
        "verify",
        "--server",
        rolled.address,
        "--log-key",
        rolled.verifier_key,
        "--trust-dir",
        str(trust_dir),
    )
    assert cli.returncode == 1, cli.stderr
    assert "Traceback" not in cli.stderr
    assert "VERIFICATION FAILED" in cli.stderr and "rolled back" in cli.stderr

    # Even once the rolled-back log has grown past the trusted size, it does not extend it.
    for entry in (b"f", b"g", b"h"):
        rolled.public_stub.Append(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT)
    assert rolled.checkpoint().size == 6
    with connect(rolled, trust_dir) as fresh, pytest.raises(VerificationError, match="consistent"):
        fresh.checkpoint()
    assert saved_size(trust_dir) == 4


def test_fork_is_caught(server_factory: ServerFactory, tmp_path: Path) -> None:
    a = server_factory()
    for entry in (b"a", b"b"):
        a.public_stub.Append(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT)
    assert a.stop() == 0
    b = server_factory(data_dir=copy_data(a, tmp_path / "fork"))
    a.start()
    assert a.verifier_key == b.verifier_key  # one log, one key: two histories
    trust_dir = tmp_path / "trust"
    with connect(a, trust_dir) as client:
        on_a = client.append_opaque(b"only on a")
    with connect(b, None) as other:
        on_b = other.append_opaque(b"only on b")
    assert on_a.index == on_b.index == 2

    # Same size, different root.
    with connect(b, trust_dir) as client, pytest.raises(VerificationError, match="forked"):
        client.checkpoint()
    # Larger, but not an extension of what the client trusted.
    b.public_stub.Append(pb.AppendRequest(entry=b"more on b"), timeout=RPC_TIMEOUT)
    with connect(b, trust_dir) as client, pytest.raises(VerificationError, match="consistent"):
        client.checkpoint()
    with connect(b, trust_dir) as client, pytest.raises(VerificationError):
        client.append_opaque(b"yet more on b")
    # The client still follows the log it trusted.
    assert saved_size(trust_dir) == 3
    with connect(a, trust_dir) as client:
        assert client.append_opaque(b"more on a").index == 3
    assert saved_size(trust_dir) == 4


def test_checkpoint_signed_by_another_key_is_refused(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    real = server_factory()
    impostor = server_factory()  # a new log that took the same origin name
    assert real.origin == impostor.origin and real.verifier_key != impostor.verifier_key
    impostor.public_stub.Append(pb.AppendRequest(entry=b"x"), timeout=RPC_TIMEOUT)
    with Client(impostor.address, policy_of(real), trust_dir=tmp_path / "trust") as client:
        with pytest.raises(VerificationError, match="does not verify"):
            client.checkpoint()
        with pytest.raises(VerificationError, match="does not verify"):
            client.append_opaque(b"y")
    assert saved_size(tmp_path / "trust") is None

    # Offline: the real log's checkpoint body, signed by another key named like the log.
    body, _ = note.parse_note(real.checkpoint().note)
    signer, verifier = keys.generate_key(ORIGIN)
    assert note.parse_verifier(verifier).name == ORIGIN
    with pytest.raises(VerificationError, match="does not verify"):
        open_checkpoint(note.sign(body, signer), policy_of(real))
    # Both signatures: the log's counts, the stranger's is ignored.
    both = note.add_signatures(real.checkpoint().note, [signer])
    assert open_checkpoint(both, policy_of(real)).checkpoint.size == 0


# Witness policy.


def test_witness_quorum(server_factory: ServerFactory, tmp_path: Path) -> None:
    w_signer, w_verifier = keys.generate_key("witness.example/w1", keys.ALG_COSIGNATURE_V1)
    o_signer, o_verifier = keys.generate_key("witness.example/other", keys.ALG_COSIGNATURE_V1)
    s = server_factory("--witness-key", w_verifier, "--witness-key", o_verifier)
    trust_dir = tmp_path / "trust"
    with pytest.raises(ValueError, match="quorum 2"):
        policy_of(s, w_verifier, quorum=2)
    client = Client(s.address, policy_of(s, w_verifier, quorum=1), trust_dir=trust_dir)
    with client:
        receipt = client.append_opaque(b"a")  # the receipt verifies; its checkpoint lacks a quorum
        assert receipt.checkpoint.witnesses == ()
        with pytest.raises(VerificationError, match="no cosigned checkpoint; the policy needs 1"):
            client.checkpoint()
        assert client.trusted is None and saved_size(trust_dir) is None

        # A cosignature from a witness the client does not know is no help.
        body, _ = note.parse_note(s.checkpoint().note)
        s.public_stub.AddCosignature(
            pb.AddCosignatureRequest(note=note.sign(body, o_signer)), timeout=RPC_TIMEOUT
        )
        with pytest.raises(VerificationError, match="0 valid witness cosignature"):
            client.checkpoint()

        # The known witness cosigns: accepted, with the witness named, and trusted.
        s.public_stub.AddCosignature(
            pb.AddCosignatureRequest(note=note.sign(body, w_signer)), timeout=RPC_TIMEOUT
        )
        cp = client.checkpoint()
        assert cp.witnesses == ("witness.example/w1",) and cp.checkpoint.size == 1
        assert client.trusted == cp and saved_size(trust_dir) == 1

        # The log grows; until the new head is cosigned, the client answers with the old one.
        client.append_opaque(b"b")
        assert client.checkpoint().checkpoint.size == 1 and saved_size(trust_dir) == 1
        body, _ = note.parse_note(s.checkpoint().note)
        s.public_stub.AddCosignature(
            pb.AddCosignatureRequest(note=note.sign(body, w_signer)), timeout=RPC_TIMEOUT
        )
        assert client.checkpoint().checkpoint.size == 2 and saved_size(trust_dir) == 2


# Retries.


def test_lost_response_is_retried_and_dedups(server: ServerProcess, tmp_path: Path) -> None:
    with connect(server, tmp_path / "trust") as client:
        client.append_opaque(b"before")
        real = client.stub
        answers: list[pb.AppendResponse] = []

        def lose_first(request: pb.AppendRequest, **kw: Any) -> pb.AppendResponse:
            response: pb.AppendResponse = real.Append(request, **kw)  # the log stores it...
            answers.append(response)
            if len(answers) == 1:
                raise Lost()  # ...but the answer never arrives
            return response

        client.stub = Stub(real, Append=lose_first)  # type: ignore[assignment]
        r = client.append_opaque(b"payload")
    assert [(a.index, a.duplicate) for a in answers] == [(1, False), (1, True)]
    assert (r.index, r.duplicate) == (1, True)
    assert server.checkpoint().size == 2  # stored once


def test_same_statement_twice_is_one_entry(world: World) -> None:
    signer = build.SessionSigner(world.alice.key)
    approval = pb.Approval(
        action_id=uuid7(),
        agent_id="bot",
        parameters_digest=parameters_digest({}),
        decision=pb.Approval.APPROVE,
    )
    leaf = signer.sign(approval)
    with world.connect() as client:
        first = client.append(leaf)
        again = client.append(leaf)  # e.g. the first answer was lost and the caller retried
    assert again.index == first.index and (first.duplicate, again.duplicate) == (False, True)
    assert again.leaf_hash == first.leaf_hash
    assert again.checkpoint.checkpoint.size == first.checkpoint.checkpoint.size


@pytest.mark.parametrize("stored", [True, False], ids=["stored", "never-arrived"])
def test_a_statement_whose_answer_was_lost_is_settled_first(world: World, stored: bool) -> None:
    """After retries run out, the log may or may not hold the statement; the actor's next
    statement must still continue its session chain (the log refuses gaps and forks)."""
    with Client(
        world.server.address, world.policy, token=world.server.auditor_token, retries=0
    ) as client:
        alice = Actor(client, world.alice.key)  # a session of its own
        first = alice.approve(uuid7(), {"n": 0}, agent_id="bot")
        real = client.stub

        def lost(request: pb.AppendRequest, **kw: Any) -> pb.AppendResponse:
            if stored:
                real.Append(request, **kw)
            raise Lost()

        client.stub = Stub(real, Append=lost)  # type: ignore[assignment]
        unanswered = uuid7()
        with pytest.raises(UnavailableError):
            alice.approve(unanswered, {"n": 1}, agent_id="bot")
        client.stub = real
        # refused as a chain gap without settling
        after = alice.approve(uuid7(), {"n": 2}, agent_id="bot")
        [hit] = client.search(action_id=unanswered)
        [settled] = client.entries(hit.index, hit.index + 1)
        st = build.statement_of(after.leaf)
    assert first.receipt.index < hit.index < after.receipt.index
    assert build.statement_of(settled.data).header.sequence == 1
    assert (st.header.sequence, st.header.previous_hash) == (2, settled.leaf_hash)


def test_unavailable_is_retried_then_raised(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(client_module, "time", SimpleNamespace(sleep=waits.append))
    with connect(server, tmp_path / "trust", token=server.auditor_token) as client:
        client.append_opaque(b"a")
        assert server.stop() == 0
        with pytest.raises(UnavailableError, match=f"{server.address}: UNAVAILABLE"):
            client.append_opaque(b"b")
        assert waits == [0.1, 0.2, 0.4, 0.8]  # four retries, backing off, then the error
        with pytest.raises(UnavailableError):
            client.checkpoint()
        with pytest.raises(UnavailableError):
            next(client.entries(0, 1))  # a read stream too: unreachable, not refused
    with Client(server.address, policy_of(server), retries=0) as client:
        waits.clear()
        with pytest.raises(UnavailableError):
            client.checkpoint()
        assert waits == []


# Access.


def test_reading_entries_needs_the_auditor_token(world: World) -> None:
    s = world.server
    with Client(s.address, world.policy) as anonymous:
        assert anonymous.checkpoint().checkpoint.size > 0  # checkpoints and proofs are public
        anonymous.prove(index=0)
        with pytest.raises(RefusedError) as refused:
            next(anonymous.entries(0, 1))
        assert refused.value.code == "UNAUTHENTICATED" and "token" in refused.value.message
        with pytest.raises(RefusedError) as refused:
            next(anonymous.search(actor="alice"))
        assert refused.value.code == "UNAUTHENTICATED"
    with Client(s.address, world.policy, token="afv_not-the-token") as wrong:
        with pytest.raises(RefusedError) as refused:
            next(wrong.entries(0, 1))
        assert refused.value.code == "PERMISSION_DENIED"
        with pytest.raises(RefusedError) as refused:
            next(wrong.search(actor="alice"))
        assert refused.value.code == "PERMISSION_DENIED"
    with Client(s.address, world.policy, token=s.auditor_token) as auditor:
        [genesis] = auditor.entries(0, 1)
        assert build.statement_of(genesis.data).identity.identity_id == "admin"
        assert any(h.issuer == "alice" for h in auditor.search(actor="alice"))


# TLS.


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    cn: str,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName],
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _ca("affidavit test CA")
    _, other = _ca("some other CA")
    server_cert, server_key = _issue(
        ca_key,
        ca,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key = _issue(ca_key, ca, "auditor", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = {
        "ca.pem": ca.public_bytes(serialization.Encoding.PEM),
        "other-ca.pem": other.public_bytes(serialization.Encoding.PEM),
        "server.pem": server_cert,
        "server.key": server_key,
        "client.pem": client_cert,
        "client.key": client_key,
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return Pki(
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "client.pem",
        d / "client.key",
        d / "other-ca.pem",
    )


class TlsServer(ServerProcess):
    """A server on TLS: its health is checked over TLS (with a client certificate for mTLS)."""

    tls: Tls

    def wait_healthy(self, timeout: float = serverproc.START_TIMEOUT) -> None:
        with grpc.secure_channel(self.address, self.tls.credentials()) as channel:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            status = serverproc.health_status(channel)
        assert status == health_pb2.HealthCheckResponse.SERVING


def tls_server(factory: ServerFactory, pki: Pki, tls: Tls, *flags: str) -> TlsServer:
    s = TlsServer(
        factory.new_dir(),
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        *flags,
    )
    s.tls = tls
    factory.servers.append(s)
    s.start()
    assert ", TLS)" in s.stderr
    return s


def test_tls(server_factory: ServerFactory, pki: Pki, tmp_path: Path) -> None:
    s = tls_server(server_factory, pki, Tls(pki.ca))
    with Client(s.address, policy_of(s), tls=Tls(pki.ca), trust_dir=tmp_path / "t") as client:
        assert client.append_opaque(b"over tls").index == 0
        assert client.checkpoint().checkpoint.size == 1
    for tls in (None, Tls(pki.other_ca)):  # plain text; a CA that did not sign the server's
        with (
            Client(s.address, policy_of(s), tls=tls, retries=0) as client,
            pytest.raises(UnavailableError),
        ):
            client.checkpoint()
    # The CLI takes the same options.
    r = serverproc.run_cli(
        "verify",
        "--server",
        s.address,
        "--log-key",
        s.verifier_key,
        "--tls-ca",
        str(pki.ca),
        "--trust-dir",
        str(tmp_path / "cli"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert '"size": 1' in r.stdout


def test_mutual_tls(server_factory: ServerFactory, pki: Pki) -> None:
    mtls = Tls(pki.ca, pki.client_cert, pki.client_key)
    s = tls_server(server_factory, pki, mtls, "--tls-client-ca", str(pki.ca))
    with Client(s.address, policy_of(s), tls=mtls) as client:
        assert client.append_opaque(b"over mtls").index == 0
    no_client_cert = Client(s.address, policy_of(s), tls=Tls(pki.ca), retries=0)
    with no_client_cert, pytest.raises(UnavailableError):
        no_client_cert.checkpoint()


# An identity acting: the common flows.


@dataclass
class World:
    """A statements log: admin, alice (human), bot (an agent alice owns), alice's grant."""

    server: ServerProcess
    policy: TrustPolicy
    trust_dir: Path
    client: Client
    alice: Actor
    bot: Actor
    grant_id: str

    def connect(self) -> Client:
        return Client(
            self.server.address,
            self.policy,
            trust_dir=self.trust_dir,
            token=self.server.auditor_token,
            timeout=RPC_TIMEOUT,
        )

    def entry(self, receipt: Receipt) -> pb.Entry:
        [e] = self.client.entries(receipt.index, receipt.index + 1)
        assert e.leaf_hash == receipt.leaf_hash
        return e

    def statement(self, receipt: Receipt) -> pb.Statement:
        return build.statement_of(self.entry(receipt).data)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("world")
    factory = ServerFactory(tmp)
    try:
        s = factory(entry_format="statements")
        policy = policy_of(s)
        client = Client(
            s.address, policy, trust_dir=tmp / "trust", token=s.auditor_token, timeout=RPC_TIMEOUT
        )
        admin = Actor(client, IdentityKey.load(s.data_dir / "admin.key"))
        alice_key, bot_key = IdentityKey.generate("alice"), IdentityKey.generate("bot")
        admin.register("alice", pb.HUMAN, alice_key.public_key)
        admin.register("bot", pb.AGENT, bot_key.public_key, owner="alice")
        alice, bot = Actor(client, alice_key), Actor(client, bot_key)
        grant = alice.grant(
            "bot", tools=["github.*"], resources=["repo:acme/*"], access=[pb.CREATE, pb.READ]
        )
        with client:
            yield World(s, policy, tmp / "trust", client, alice, bot, grant.statement_id)
    finally:
        factory.cleanup()


PR = {"repo": "acme/web", "title": "Fix login redirect", "head": "fix-login"}


def test_action_records_intent_then_outcome(world: World) -> None:
    with world.bot.action(
        "github.create_pull_request", "repo:acme/web", pb.CREATE, PR, grant_ids=[world.grant_id]
    ) as act:
        assert act.intent_recorded is not None and act.outcome_recorded is None
        act.result = {"number": 42, "url": "https://github.com/acme/web/pull/42"}
        act.effect_ref = "commit:3f2a9c1e"
    intent, outcome = act.intent_recorded, act.outcome_recorded
    assert outcome is not None
    assert (
        intent.receipt.verdict == "IN_SCOPE" and outcome.receipt.index == intent.receipt.index + 1
    )

    i = world.statement(intent.receipt)
    assert i.header.issuer == "bot" and i.header.statement_id == intent.statement_id
    assert i.action.phase == pb.AgentAction.INTENT and i.action.action_id == act.action_id
    assert i.action.operation.tool_name == "github.create_pull_request"
    assert i.action.operation.parameters_digest == parameters_digest(PR)
    assert list(i.action.grant_ids) == [world.grant_id]

    o = world.statement(outcome.receipt)
    assert o.action.phase == pb.AgentAction.OUTCOME and o.action.action_id == act.action_id
    assert o.action.intent_leaf_hash == merkle.leaf_hash(intent.leaf)
    assert o.action.outcome.status == pb.OK
    assert o.action.outcome.effect_ref == "commit:3f2a9c1e"
    # A keyed commitment: the agent's opening key confirms the result; a guess without it cannot.
    opening = world.bot.result_opening(act.action_id)
    assert o.action.outcome.result_digest == commitment(opening, canonical_json(act.result))
    assert (
        o.action.outcome.result_digest
        != hashlib.sha256(canonical_json(act.result).encode()).hexdigest()
    )
    assert o.action.outcome.error_code == ""
    # One session: the OUTCOME follows the INTENT in the bot's chain.
    assert o.header.session_id == i.header.session_id
    assert o.header.sequence == i.header.sequence + 1
    assert o.header.previous_hash == merkle.leaf_hash(intent.leaf)


class ToolFailed(RuntimeError):
    pass


def test_action_that_raises_records_an_error(world: World) -> None:
    act = world.bot.action(
        "github.merge_pull_request",
        "repo:acme/web",
        pb.CREATE,
        {"n": 42},
        grant_ids=[world.grant_id],
    )
    with pytest.raises(ToolFailed, match="merge conflict"), act:
        act.result = "never recorded"
        raise ToolFailed("merge conflict")
    assert act.outcome_recorded is not None
    o = world.statement(act.outcome_recorded.receipt)
    assert o.action.phase == pb.AgentAction.OUTCOME
    assert o.action.outcome.status == pb.ERROR
    assert o.action.outcome.error_code == "ToolFailed"
    assert o.action.outcome.result_digest == ""


def test_secrets_in_parameters_are_redacted_and_the_approval_still_binds(world: World) -> None:
    params = {"repo": "acme/web", "auth": {"token": GITHUB_TOKEN}, "title": "Rotate keys"}
    action_id = uuid7()
    approval = world.alice.approve(action_id, params, agent_id="bot", ticket="CHG-7")
    with world.bot.action(
        "github.create_pull_request",
        "repo:acme/web",
        pb.CREATE,
        params,
        grant_ids=[world.grant_id],
        action_id=action_id,
        approval_id=approval.statement_id,
        decision=pb.ALLOW_IF_APPROVED,
    ) as act:
        pass
    assert act.intent_recorded is not None and act.outcome_recorded is not None
    # Approved parameters, matched by digest although the log holds only the redacted text.
    assert act.intent_recorded.receipt.verdict == "IN_SCOPE", act.intent_recorded.receipt
    entry = world.entry(act.intent_recorded.receipt)
    assert GITHUB_TOKEN.encode() not in entry.data
    assert GITHUB_TOKEN.encode() not in act.outcome_recorded.leaf
    op = build.statement_of(entry.data).action.operation
    assert "«redacted:github-token:" in op.parameters_json
    assert GITHUB_TOKEN not in op.parameters_json and "acme/web" in op.parameters_json
    assert [(r.path, r.rule) for r in op.redactions] == [("/auth/token", "github-token")]
    assert op.redactions[0].fingerprint in op.parameters_json
    assert op.parameters_digest == parameters_digest(params)

    # An approval of other parameters does not cover this action.
    other_id = uuid7()
    other = world.alice.approve(other_id, {**params, "title": "something else"}, agent_id="bot")
    unapproved = world.bot.action(
        "github.create_pull_request",
        "repo:acme/web",
        pb.CREATE,
        params,
        grant_ids=[world.grant_id],
        action_id=other_id,
        approval_id=other.statement_id,
        decision=pb.ALLOW_IF_APPROVED,
    )
    with pytest.raises(NotAuthorisedError, match="OUT_OF_SCOPE"), unapproved:
        raise AssertionError("an unapproved action must not run")
    assert unapproved.intent_recorded is not None
    assert unapproved.intent_recorded.receipt.verdict == "OUT_OF_SCOPE"


def test_enforcement_stops_what_the_log_does_not_authorise(world: World) -> None:
    ran: list[str] = []
    act = world.bot.action("shell.exec", "host:db", pb.EXECUTE, {"cmd": "ls"})  # no grant
    with pytest.raises(NotAuthorisedError) as raised, act:
        ran.append("shell.exec")
    assert ran == []
    assert (raised.value.verdict, raised.value.action_id) == ("NO_GRANT", act.action_id)
    assert raised.value.reason and raised.value.reason in str(raised.value)
    # Recorded as attempted: the INTENT, then an OUTCOME saying it was denied.
    assert act.intent_recorded is not None and act.outcome_recorded is not None
    o = world.statement(act.outcome_recorded.receipt).action
    assert o.phase == pb.AgentAction.OUTCOME and o.action_id == act.action_id
    assert (o.outcome.status, o.outcome.error_code) == (pb.DENIED, "NO_GRANT")
    assert o.intent_leaf_hash == merkle.leaf_hash(act.intent_recorded.leaf)

    # Observe-only (enforce=False): recorded with its verdict, and it runs.
    with world.bot.action(
        "github.delete_repository",
        "repo:other/x",
        pb.DELETE,
        {},
        grant_ids=[world.grant_id],
        enforce=False,
    ) as observed:
        ran.append("github.delete_repository")
    assert ran == ["github.delete_repository"]
    assert observed.intent_recorded is not None and observed.outcome_recorded is not None
    assert observed.intent_recorded.receipt.verdict == "OUT_OF_SCOPE"
    assert world.statement(observed.outcome_recorded.receipt).action.outcome.status == pb.OK


def test_a_secret_outside_the_parameters_never_leaves(world: World) -> None:
    before = world.server.checkpoint().size
    real = world.client.stub
    counting = Stub(real)
    world.client.stub = counting  # type: ignore[assignment]
    try:
        act = world.bot.action(
            "github.get_file",
            f"repo:acme/web?token={GITHUB_TOKEN}",
            pb.READ,
            {},
            grant_ids=[world.grant_id],
        )
        with pytest.raises(NotSentError) as refused, act:
            pytest.fail("the block must not run: the INTENT was refused")
    finally:
        world.client.stub = real
    assert not isinstance(refused.value, RefusedError)  # stopped here, not by the log
    assert "resource" in refused.value.message
    assert GITHUB_TOKEN not in str(refused.value)
    assert counting.calls.get("Append", 0) == 0  # never sent
    assert world.server.checkpoint().size == before
    # The session did not advance: the bot's next statement is accepted.
    with world.bot.action(
        "github.get_file", "repo:acme/web", pb.READ, {}, grant_ids=[world.grant_id]
    ) as ok:
        pass
    assert ok.outcome_recorded is not None and world.server.checkpoint().size == before + 2
