"""The witness (client.witness) against real `affidavit serve` processes.

Forks are made the way an operator could: a second server on a copy of the data directory
(same log key), each then fed different entries; rollbacks by serving an older copy.
Everything waits on events or server state with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from affidavit.client import witness
from affidavit.client.client import Client
from affidavit.client.errors import RefusedError
from affidavit.client.witness import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REFUSED,
    LogConfig,
    Outcome,
    StateStore,
    WitnessConfig,
    WitnessEvent,
)
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import keys, note
from affidavit.proto import affidavit_pb2 as pb

from affidavit import merkle
from tests import serverproc
from tests.serverproc import ORIGIN, RPC_TIMEOUT, ServerFactory, ServerProcess

# The fixture, from the shared helper.
server_factory = serverproc.server_factory

DEADLINE = 30.0
"""Longest wait for anything asynchronous (generous for a loaded machine)."""

WITNESS_NAME = "witness.example/w1"


class Events:
    """Collects WitnessEvents from any thread; waits for one matching a predicate."""

    def __init__(self) -> None:
        self.events: list[WitnessEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: WitnessEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, what: str, pred: Callable[[WitnessEvent], bool]) -> WitnessEvent:
        deadline = time.monotonic() + DEADLINE
        with self._cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    messages = "\n".join(e.message for e in self.events)
                    raise AssertionError(f"no event {what} within {DEADLINE}s; got:\n{messages}")
                self._cond.wait(remaining)

    def outcomes(self) -> list[Outcome]:
        with self._cond:
            return [e.outcome for e in self.events]


class Key:
    """A witness key pair, the signer key in a file."""

    def __init__(self, directory: Path, name: str = WITNESS_NAME) -> None:
        self.signer, self.verifier = keys.generate_key(name, keys.ALG_COSIGNATURE_V1)
        directory.mkdir(parents=True, exist_ok=True)
        self.file = directory / f"{name.replace('/', '_')}.key"
        self.file.write_text(self.signer + "\n")


@pytest.fixture
def wkey(tmp_path: Path) -> Key:
    return Key(tmp_path / "keys")


def config(
    state: Path, key: Key, *servers: ServerProcess, log_key: str | None = None, **kw: object
) -> WitnessConfig:
    logs = tuple(
        LogConfig(s.address, s.origin or ORIGIN, log_key or s.verifier_key) for s in servers
    )
    return WitnessConfig(logs, key.file, state, timeout=RPC_TIMEOUT, retries=2, **kw)  # type: ignore[arg-type]


def once(cfg: WitnessConfig, *, keep_going: bool = False) -> tuple[int, Events]:
    events = Events()
    rc = witness.run(cfg, once=True, keep_going=keep_going, on_event=events)
    return rc, events


def append(server: ServerProcess, *entries: bytes) -> int:
    """Append entries; the tree size after the last."""
    r = None
    for e in entries:
        r = server.public_stub.Append(pb.AppendRequest(entry=e), timeout=RPC_TIMEOUT)
    assert r is not None
    return r.index + 1


def state_of(state: Path, origin: str = ORIGIN) -> Path:
    return StateStore(state).path(origin)


def evidence_files(state: Path) -> list[Path]:
    directory = state / "evidence"
    return sorted(directory.glob("*.json")) if directory.exists() else []


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def copy_log(server: ServerProcess, to: Path) -> Path:
    """Copy a stopped server's data directory (database and keys)."""
    assert not server.running
    shutil.copytree(server.data_dir, to)
    return to


def body(text: str) -> checkpoints.Checkpoint:
    return checkpoints.parse(note.parse_note(text)[0])


# Cosigning.


def test_cosigns_and_the_log_serves_the_cosignature(
    server_factory: ServerFactory, wkey: Key, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = server_factory("--witness-key", wkey.verifier)
    size = append(s, b"a", b"b")
    caplog.set_level(logging.INFO, logger="affidavit.witness")

    rc, events = once(config(tmp_path / "state", wkey, s))

    assert rc == EXIT_OK, [e.message for e in events.events]
    [event] = events.events
    assert (event.outcome, event.size, event.previous_size) == (Outcome.COSIGNED, size, None)
    assert any(
        r.levelno == logging.WARNING and "TRUST ON FIRST USE" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    cp = s.checkpoint()
    assert cp.cosigned_size == size
    opened = note.open_note(cp.cosigned_note, [wkey.verifier])
    witness_verifier = note.parse_verifier(wkey.verifier)
    sig = opened.verified_by(witness_verifier.name, witness_verifier.key_hash)
    assert sig is not None and sig.timestamp is not None
    assert abs(sig.timestamp - time.time()) < 300
    assert note.open(cp.cosigned_note, [s.verifier_key]) == opened.text
    assert body(cp.cosigned_note).size == size
    # The state is the full cosigned note: the log's signature and the witness's.
    saved = state_of(tmp_path / "state").read_text()
    assert note.open_note(saved, [s.verifier_key, wkey.verifier]).text == opened.text
    assert len(note.open_note(saved, [s.verifier_key, wkey.verifier]).signatures) == 2


def test_follows_growth_across_restarts(
    server_factory: ServerFactory, wkey: Key, tmp_path: Path
) -> None:
    s = server_factory("--witness-key", wkey.verifier)
    first = append(s, b"a", b"b", b"c")
    state = tmp_path / "state"
    rc, _ = once(config(state, wkey, s))
    assert rc == EXIT_OK

    # A new witness run (a restart) on the same state: checked against the stored checkpoint.
    second = append(s, b"d", b"e")
    rc, events = once(config(state, wkey, s))
    assert rc == EXIT_OK
    [event] = events.events
    assert (event.outcome, event.previous_size, event.size) == (Outcome.COSIGNED, first, second)
    assert f"consistent with {ORIGIN}@{first}" in event.message
    assert s.checkpoint().cosigned_size == second
    assert body(state_of(state).read_text()).size == second

    # Nothing new: nothing cosigned, the state file is left alone.
    before = snapshot(state_of(state))
    rc, events = once(config(state, wkey, s))
    assert rc == EXIT_OK
    assert events.outcomes() == [Outcome.UNCHANGED]
    assert snapshot(state_of(state)) == before


def test_poll_mode_follows_growth(server_factory: ServerFactory, wkey: Key, tmp_path: Path) -> None:
    s = server_factory("--witness-key", wkey.verifier)
    stop, events = threading.Event(), Events()
    cfg = config(tmp_path / "state", wkey, s, poll_interval=0.05)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(witness.run(cfg, stop=stop, on_event=events)))
    t.start()
    try:
        events.wait_for("cosigned @0", lambda e: e.outcome is Outcome.COSIGNED and e.size == 0)
        size = append(s, b"x", b"y")
        events.wait_for(
            f"cosigned @{size}", lambda e: e.outcome is Outcome.COSIGNED and e.size == size
        )
    finally:
        stop.set()
        t.join(DEADLINE)
    assert not t.is_alive() and result == [EXIT_OK]
    assert s.checkpoint().cosigned_size == size


def test_watch_reconnects_after_the_log_restarts(
    server_factory: ServerFactory,
    wkey: Key,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = server_factory("--witness-key", wkey.verifier, "--listen", f"127.0.0.1:{port}")
    stop, events = threading.Event(), Events()
    cfg = config(tmp_path / "state", wkey, s, max_backoff=0.5)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(witness.run(cfg, stop=stop, on_event=events)))
    t.start()
    try:
        size = append(s, b"a")
        events.wait_for(f"cosigned @{size}", lambda e: e.size == size)
        s.kill()  # the stream drops
        s.start()
        assert s.port == port
        size = append(s, b"b", b"c")
        event = events.wait_for(
            f"cosigned @{size}", lambda e: e.outcome is Outcome.COSIGNED and e.size == size
        )
        assert event.previous_size is not None and event.previous_size >= 1
    finally:
        stop.set()
        t.join(DEADLINE)
    assert not t.is_alive() and result == [EXIT_OK]
    assert "retrying in" in caplog.text
    assert Outcome.REFUSED not in events.outcomes()


# Refusals.


def test_fork_is_refused_with_evidence(
    server_factory: ServerFactory, wkey: Key, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = server_factory("--witness-key", wkey.verifier)
    append(a, b"common-1", b"common-2", b"common-3")
    assert a.stop() == 0
    b = server_factory.create("--witness-key", wkey.verifier, data_dir=copy_log(a, tmp_path / "b"))
    a.start()
    b.start()
    assert a.verifier_key == b.verifier_key
    assert append(a, b"a-4", b"a-5") == 5

    state = tmp_path / "state"
    rc, _ = once(config(state, wkey, a))
    assert rc == EXIT_OK
    cosigned = state_of(state).read_text()
    shutil.copytree(state, tmp_path / "state-same-size")

    # Same size, different root.
    assert append(b, b"b-4", b"b-5") == 5
    rc, events = once(config(tmp_path / "state-same-size", wkey, b))
    assert rc == EXIT_REFUSED
    [event] = events.events
    assert event.outcome is Outcome.REFUSED and event.evidence is not None
    same = json.loads(event.evidence.read_text())
    assert same["problem"] == "fork"
    assert same["cosigned"]["size"] == same["presented"]["size"] == 5
    assert same["cosigned"]["root_hash"] != same["presented"]["root_hash"]

    # A bigger tree that does not extend the cosigned one: the proof fails.
    assert append(b, b"b-6") == 6
    before = snapshot(state_of(state))
    caplog.set_level(logging.INFO, logger="affidavit.witness")
    rc, events = once(config(state, wkey, b))
    assert rc == EXIT_REFUSED
    assert snapshot(state_of(state)) == before
    [path] = evidence_files(state)
    assert events.events[0].evidence == path
    assert any(
        r.levelno >= logging.ERROR
        and "FORK DETECTED" in r.getMessage()
        and str(path) in r.getMessage()
        for r in caplog.records
    ), caplog.text

    evidence = json.loads(path.read_text())
    assert evidence["problem"] == "inconsistent"
    assert evidence["origin"] == ORIGIN and evidence["log_key"] == a.verifier_key
    assert evidence["witness_key"] == wkey.verifier
    assert evidence["reason"] and evidence["time"] and evidence["unix_time"] > 0
    # Self-contained: both notes verify under the log's key alone, and the proof fails.
    assert evidence["cosigned"]["note"] == cosigned
    old = checkpoints.parse(note.open(evidence["cosigned"]["note"], [evidence["log_key"]]))
    new = checkpoints.parse(note.open(evidence["presented"]["note"], [evidence["log_key"]]))
    assert (old.size, new.size) == (5, 6)
    proof = evidence["consistency_proof"]
    assert (proof["first"], proof["second"]) == (5, 6) and proof["hashes"]
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(
            5, 6, [bytes.fromhex(h) for h in proof["hashes"]], old.root_hash, new.root_hash
        )
    # The forked log never got a cosignature.
    assert b.checkpoint().cosigned_note == ""

    # Blocked until an operator intervenes: even the honest log is not cosigned any more.
    append(a, b"a-6")
    rc, events = once(config(state, wkey, a))
    assert rc == EXIT_REFUSED and events.outcomes() == [Outcome.BLOCKED]
    assert snapshot(state_of(state)) == before
    assert evidence_files(state) == [path]
    assert a.checkpoint().cosigned_size == 5


def test_rollback_is_refused(server_factory: ServerFactory, wkey: Key, tmp_path: Path) -> None:
    a = server_factory("--witness-key", wkey.verifier)
    append(a, b"1", b"2", b"3")
    assert a.stop() == 0
    old_dir = copy_log(a, tmp_path / "old")
    a.start()
    append(a, b"4", b"5")
    state = tmp_path / "state"
    rc, _ = once(config(state, wkey, a))
    assert rc == EXIT_OK
    assert a.stop() == 0

    old = server_factory("--witness-key", wkey.verifier, data_dir=old_dir)
    before = snapshot(state_of(state))
    rc, events = once(config(state, wkey, old))
    assert rc == EXIT_REFUSED
    [event] = events.events
    assert (event.outcome, event.size, event.previous_size) == (Outcome.REFUSED, 3, 5)
    assert "ROLLBACK DETECTED" in event.message
    assert snapshot(state_of(state)) == before
    [path] = evidence_files(state)
    evidence = json.loads(path.read_text())
    assert evidence["problem"] == "rollback"
    assert (evidence["cosigned"]["size"], evidence["presented"]["size"]) == (5, 3)
    assert note.open(evidence["presented"]["note"], [old.verifier_key])
    assert old.checkpoint().cosigned_note == ""


def test_bad_log_signature_is_refused(
    server_factory: ServerFactory, wkey: Key, tmp_path: Path
) -> None:
    s = server_factory("--witness-key", wkey.verifier)
    _, impostor = keys.generate_key(ORIGIN)  # the right name, another key
    state = tmp_path / "state"
    rc, events = once(config(state, wkey, s, log_key=impostor))
    assert rc == EXIT_REFUSED
    [event] = events.events
    assert event.outcome is Outcome.REFUSED and "BAD LOG SIGNATURE" in event.message
    assert event.evidence is not None
    evidence = json.loads(event.evidence.read_text())
    assert evidence["problem"] == "bad-signature"
    assert evidence["cosigned"] is None and evidence["log_key"] == impostor
    assert evidence["presented"]["note"] == s.checkpoint().note
    assert not state_of(state).exists()
    assert s.checkpoint().cosigned_note == ""


def test_missing_consistency_proof_is_refused(
    server_factory: ServerFactory,
    wkey: Key,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = server_factory("--witness-key", wkey.verifier)
    append(s, b"a")
    state = tmp_path / "state"
    assert once(config(state, wkey, s))[0] == EXIT_OK
    append(s, b"b")
    before = snapshot(state_of(state))

    # The log answers everything but the proof (as a log that lost part of its tree would).
    real_call = Client.call

    def call(self: Client, method: Callable[..., object], request: object, **kw: bool) -> object:
        if isinstance(request, pb.GetConsistencyProofRequest):
            raise RefusedError("INTERNAL", "tile 0/0 is missing")
        return real_call(self, method, request, **kw)

    monkeypatch.setattr(Client, "call", call)
    rc, events = once(config(state, wkey, s))
    assert rc == EXIT_REFUSED
    [event] = events.events
    assert event.outcome is Outcome.REFUSED and "NO CONSISTENCY PROOF" in event.message
    assert event.evidence is not None
    evidence = json.loads(event.evidence.read_text())
    assert evidence["problem"] == "no-proof" and evidence["consistency_proof"] is None
    assert "tile 0/0 is missing" in evidence["proof_error"]
    assert (evidence["cosigned"]["size"], evidence["presented"]["size"]) == (1, 2)
    assert snapshot(state_of(state)) == before
    assert s.checkpoint().cosigned_size == 1


def test_unknown_witness_key_is_reported(
    server_factory: ServerFactory, wkey: Key, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = Key(tmp_path / "other", "witness.example/other")
    s = server_factory("--witness-key", other.verifier)
    caplog.set_level(logging.INFO, logger="affidavit.witness")
    rc, events = once(config(tmp_path / "state", wkey, s))
    assert rc == EXIT_ERROR
    [event] = events.events
    assert event.outcome is Outcome.ERROR
    assert "PERMISSION_DENIED" in event.message and wkey.verifier in event.message
    assert any(
        r.levelno == logging.ERROR and "PERMISSION_DENIED" in r.getMessage() for r in caplog.records
    )
    assert s.checkpoint().cosigned_note == ""

    # The operator adds the witness's key: the next run delivers the cosignature it kept.
    s.args = ["--witness-key", wkey.verifier]
    s.restart()
    rc, events = once(config(tmp_path / "state", wkey, s))
    assert rc == EXIT_OK
    [event] = events.events
    assert event.outcome is Outcome.COSIGNED and "again" in event.message
    assert note.open(s.checkpoint().cosigned_note, [wkey.verifier])


def test_keep_going_never_cosigns_the_forked_log(
    server_factory: ServerFactory, wkey: Key, tmp_path: Path
) -> None:
    a = server_factory("--witness-key", wkey.verifier)
    append(a, b"1", b"2", b"3")
    assert a.stop() == 0
    b = server_factory.create("--witness-key", wkey.verifier, data_dir=copy_log(a, tmp_path / "b"))
    a.start()
    append(a, b"a-4")
    state = tmp_path / "state"
    rc, _ = once(config(state, wkey, a))
    assert rc == EXIT_OK
    assert a.stop() == 0
    b.start()
    append(b, b"b-4", b"b-5")
    c = server_factory("--witness-key", wkey.verifier, origin="example.com/other")
    before = snapshot(state_of(state))

    stop, events = threading.Event(), Events()
    cfg = config(state, wkey, b, c)
    result: list[int] = []
    t = threading.Thread(
        target=lambda: result.append(witness.run(cfg, keep_going=True, stop=stop, on_event=events))
    )
    t.start()
    try:
        events.wait_for("fork of b", lambda e: e.outcome is Outcome.REFUSED)
        events.wait_for("c cosigned", lambda e: e.origin == "example.com/other" and e.size == 0)
        # Still running: the healthy log is followed and cosigned...
        c_size = append(c, b"c-1")
        events.wait_for("c grown", lambda e: e.origin == "example.com/other" and e.size == c_size)
        # ...and the forked one is reported, never cosigned.
        size = append(b, b"b-6")
        events.wait_for("b blocked", lambda e: e.outcome is Outcome.BLOCKED and e.size == size)
        assert t.is_alive()
    finally:
        stop.set()
        t.join(DEADLINE)
    assert not t.is_alive() and result == [EXIT_REFUSED]
    assert b.checkpoint().cosigned_note == ""
    assert c.checkpoint().cosigned_size == c_size
    assert snapshot(state_of(state)) == before
    assert len(evidence_files(state)) == 1
    cosigned_b = [e for e in events.events if e.origin == ORIGIN and e.outcome is Outcome.COSIGNED]
    assert cosigned_b == []


def test_check_and_write_hold_the_lock(
    server_factory: ServerFactory, wkey: Key, tmp_path: Path
) -> None:
    s = server_factory("--witness-key", wkey.verifier)
    state = tmp_path / "state"
    state.mkdir()
    lock = state / f"{StateStore.stem(ORIGIN)}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another witness process, mid-check
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(once(config(state, wkey, s))[0]))
    try:
        t.start()
        inode = os.fstat(fd).st_ino
        deadline = time.monotonic() + DEADLINE
        # The kernel lists the witness as waiting for this lock ("->" lines in /proc/locks).
        while not any(
            "->" in line and line.split()[-3].endswith(f":{inode}")
            for line in Path("/proc/locks").read_text().splitlines()
        ):
            assert time.monotonic() < deadline, "the witness never waited for the lock"
            time.sleep(0.01)
        assert not state_of(state).exists()
    finally:
        os.close(fd)
    t.join(DEADLINE)
    assert result == [EXIT_OK]
    assert state_of(state).exists()


# Configuration and state problems: no server needed.


def test_bad_configuration(tmp_path: Path, wkey: Key) -> None:
    _, log_key = keys.generate_key(ORIGIN)
    with pytest.raises(ValueError, match="not the origin"):
        LogConfig("127.0.0.1:1", "example.com/elsewhere", log_key)
    with pytest.raises(ValueError, match="Ed25519"):
        LogConfig("127.0.0.1:1", WITNESS_NAME, wkey.verifier)
    assert LogConfig.from_key("127.0.0.1:1", log_key).origin == ORIGIN
    _, other_key = keys.generate_key(ORIGIN)
    with pytest.raises(ValueError, match="two different log keys"):
        WitnessConfig(
            (LogConfig("h:1", ORIGIN, log_key), LogConfig("h:2", ORIGIN, other_key)),
            wkey.file,
            tmp_path,
        )
    cfg = WitnessConfig((LogConfig("127.0.0.1:1", ORIGIN, log_key),), wkey.file, tmp_path / "s")

    # A log key where the witness key should be.
    log_signer, _ = keys.generate_key("some-log")
    bad = tmp_path / "bad.key"
    bad.write_text(log_signer)
    rc = witness.run(WitnessConfig(cfg.logs, bad, cfg.state_dir), once=True)
    assert rc == EXIT_ERROR

    # State that does not verify with the configured log key stops the start.
    impostor, _ = keys.generate_key(ORIGIN)
    forged = note.sign(checkpoints.Checkpoint(ORIGIN, 1, b"\0" * 32).format(), impostor)
    StateStore(cfg.state_dir).save(ORIGIN, forged)
    assert witness.run(cfg, once=True) == EXIT_ERROR
