"""What the client trusts and keeps (client/trust.py, verify.py): the trust store on disk (its
files, a failed write, a crash while saving, a damaged file), and every new checkpoint must
extend the last one trusted. Rollbacks and forks are made as an operator could: a server
restarted on an older copy of its data directory; two servers on copies of one directory, fed
different entries. A checkpoint signed by another key is refused, and a witness quorum is
enforced. Servers are real `affidavit serve` processes; nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from affidavit.client.client import Client
from affidavit.client.errors import (
    VerificationError,
)
from affidavit.client.trust import TrustStore
from affidavit.client.verify import open_checkpoint
from affidavit.merkle import keys, note
from affidavit.proto import affidavit_pb2 as pb

from tests import serverproc
from tests.clientworld import (
    ROLLBACK,
    connect,
    copy_data,
    free_port,
    policy_of,
    saved_size,
)
from tests.serverproc import ORIGIN, RPC_TIMEOUT, ServerFactory, ServerProcess

server_factory = serverproc.server_factory
server = serverproc.server

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
