"""The witness: follow logs, check each new checkpoint against the last one cosigned, cosign it.

For each log (address, origin, log verifier key) the witness takes every new checkpoint (from
WatchCheckpoints, by polling GetCheckpoint, or once) and:

1. verifies the log's signature and that the checkpoint's origin is the log's;
2. under an exclusive lock on the origin's lock file, reads its state — the full note of the
   last checkpoint it cosigned for that origin — and checks the new checkpoint against it: a
   tree at least as large, the same root at the same size, and a consistency proof from the
   log that verifies (RFC 9162 §2.1.4) when the tree grew. With no state it trusts on first
   use, and says so loudly;
3. cosigns (C2SP tlog-cosignature, cosignature/v1) and replaces the state with the new
   checkpoint note (the log's signature and the witness's cosignature), atomically and
   durably, still under the lock;
4. submits the cosignature with AddCosignature.

Invariants:

- The witness never releases a cosignature for a checkpoint that is not consistent with the
  state: the state is written *before* the cosignature leaves the process (as C2SP
  tlog-witness requires), and check and write happen under one flock, so neither a crash nor a
  second witness process on the same state directory can make it cosign two views of a log.
- The state of an origin only ever moves to a tree that extends it: it is never rolled back,
  and a refused checkpoint leaves it byte for byte as it was.
- A refusal (different root at the same size, smaller tree, consistency proof that fails or
  that the log cannot produce, bad log signature) writes a self-contained evidence file (JSON)
  and a block marker (``<stem>.blocked``) beside the state; while the marker exists, that
  origin is never cosigned again, even after a restart. An operator removes it after
  investigating.

Failures of the network (UNAVAILABLE, deadlines) are not evidence of anything: the witness
retries, reconnects with back-off, or (``once``) reports an error. Every event is one line on
the ``affidavit.witness`` logger, and a WitnessEvent to an optional callback.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import grpc
from affidavit.client.client import Client, Tls
from affidavit.client.errors import ClientError, RefusedError, UnavailableError, VerificationError
from affidavit.client.trust import write_atomic
from affidavit.client.verify import TrustPolicy, check_consistency, open_checkpoint
from affidavit.merkle import note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.cosignature import CosignatureV1Signer, CosignatureV1Verifier
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.keys import ALG_ED25519, parse_verifier_key
from affidavit.proto import affidavit_pb2 as pb

log = logging.getLogger("affidavit.witness")

EXIT_OK: Final = 0
"""Every checkpoint was cosigned or already cosigned (or the witness was stopped cleanly)."""
EXIT_REFUSED: Final = 1
"""A checkpoint was refused as inconsistent (evidence written), or a log is blocked by an
earlier refusal."""
EXIT_ERROR: Final = 2
"""The witness could not do its job: bad configuration or key, unreadable state, a log that
cannot be reached (``once``), or a log that refuses the cosignature. Nothing was refused."""

EVIDENCE_FORMAT: Final = "affidavit/witness-evidence/v1"
"""The ``format`` field of every evidence file."""

INITIAL_BACKOFF_S: Final = 0.25
"""First wait before reconnecting to a log; doubled per failure up to max_backoff."""


class Outcome(enum.Enum):
    """What happened to one checkpoint."""

    COSIGNED = "cosigned"
    """Checked, cosigned, state replaced, cosignature accepted by the log."""
    UNCHANGED = "unchanged"
    """The checkpoint is the one already cosigned, and the log holds the cosignature."""
    REFUSED = "refused"
    """Inconsistent with the state (or badly signed): evidence written, origin blocked."""
    BLOCKED = "blocked"
    """Not looked at: the origin is blocked by an earlier refusal."""
    ERROR = "error"
    """The witness could not finish (log unreachable, cosignature refused, bad state)."""


@dataclass(frozen=True)
class WitnessEvent:
    """One event, as logged. ``size`` is the checkpoint's tree size when it is known;
    ``previous_size`` the size of the state it was checked against (None: trust on first use);
    ``evidence`` the evidence file of a refusal."""

    outcome: Outcome
    origin: str
    address: str
    message: str
    size: int | None = None
    previous_size: int | None = None
    evidence: Path | None = None


@dataclass(frozen=True)
class LogConfig:
    """A log to witness: where it is, its origin, its Ed25519 verifier key text.

    Invariant (checked on construction): log_key is an Ed25519 note verifier key whose name is
    the origin, as a log's checkpoints are signed under their origin.
    """

    address: str
    origin: str
    log_key: str
    tls: Tls | None = None

    def __post_init__(self) -> None:
        try:
            vkey = parse_verifier_key(self.log_key)
        except MerkleError as e:
            raise ValueError(f"log key for {self.origin!r} is not a verifier key: {e}") from None
        if vkey.alg != ALG_ED25519:
            raise ValueError(f"log key {vkey.name!r} is not an Ed25519 log key")
        if vkey.name != self.origin:
            raise ValueError(
                f"log key is named {vkey.name!r}, not the origin {self.origin!r}; "
                "a log signs its checkpoints under its origin"
            )
        if not self.address:
            raise ValueError(f"no address for the log {self.origin!r}")

    @classmethod
    def from_key(cls, address: str, log_key: str, tls: Tls | None = None) -> LogConfig:
        """The log at address whose origin is its key's name (log.pub of `affidavit serve`)."""
        try:
            origin = parse_verifier_key(log_key).name
        except MerkleError as e:
            raise ValueError(f"log key is not a verifier key: {e}") from None
        return cls(address, origin, log_key, tls)


@dataclass(frozen=True)
class WitnessConfig:
    """What the witness follows, its key, and where it keeps state and evidence.

    ``key_file`` holds the witness's cosignature/v1 signer key text. ``state_dir`` holds per
    origin the last cosigned note, its lock file and any block marker; ``evidence_dir``
    (default ``state_dir/evidence``) the evidence files. ``poll_interval`` (seconds) polls
    GetCheckpoint instead of watching the WatchCheckpoints stream. ``timeout`` and ``retries``
    apply to each RPC; ``max_backoff`` caps the wait between reconnections; a watch stream is
    redialled every ``watch_redial`` seconds so a silently dead connection is noticed.

    Several entries may share an origin (mirrors of one log): they share its state.
    """

    logs: tuple[LogConfig, ...]
    key_file: Path
    state_dir: Path
    evidence_dir: Path | None = None
    poll_interval: float | None = None
    timeout: float = 30.0
    retries: int = 4
    max_backoff: float = 30.0
    watch_redial: float = 300.0

    def __post_init__(self) -> None:
        if not self.logs:
            raise ValueError("no logs to witness")
        keys: dict[str, str] = {}
        for entry in self.logs:
            if keys.setdefault(entry.origin, entry.log_key) != entry.log_key:
                raise ValueError(f"two different log keys for the origin {entry.origin!r}")
        if self.poll_interval is not None and self.poll_interval <= 0:
            raise ValueError("poll_interval must be positive")

    @property
    def evidence_path(self) -> Path:
        return self.evidence_dir if self.evidence_dir is not None else self.state_dir / "evidence"


def load_signer(key_file: Path) -> CosignatureV1Signer:
    """The witness's signer from its key file; ValueError saying what is wrong (never the key)."""
    try:
        text = key_file.read_text().strip()
    except OSError as e:
        raise ValueError(f"cannot read the witness key {key_file}: {e.strerror}") from None
    try:
        signer = note.parse_signer(text)
    except MerkleError as e:
        raise ValueError(f"{key_file} is not a signer key: {e}") from None
    if not isinstance(signer, CosignatureV1Signer):
        raise ValueError(
            f"{key_file} holds an Ed25519 note key, not a witness (cosignature/v1) key"
        )
    return signer


class StateError(ClientError):
    """The witness's own state cannot be read or does not verify: nothing can be checked."""


class StateStore:
    """Per-origin files in one directory: ``<stem>.checkpoint`` (the last cosigned note),
    ``<stem>.lock`` (flock target) and ``<stem>.blocked`` (present after a refusal).

    The stem is the origin made file-safe plus 8 hex of its SHA-256, so distinct origins never
    share files and an operator can still tell which file is which log's.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def stem(origin: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", origin)[:80]
        return f"{safe}-{hashlib.sha256(origin.encode()).hexdigest()[:8]}"

    def path(self, origin: str) -> Path:
        return self.directory / f"{self.stem(origin)}.checkpoint"

    def marker(self, origin: str) -> Path:
        return self.directory / f"{self.stem(origin)}.blocked"

    @contextlib.contextmanager
    def lock(self, origin: str) -> Iterator[None]:
        """Hold the origin's exclusive flock (blocking until any other holder lets go)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / f"{self.stem(origin)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self, origin: str) -> str | None:
        try:
            return self.path(origin).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise StateError(f"cannot read the state {self.path(origin)}: {e}") from None

    def save(self, origin: str, cosigned: str) -> None:
        write_atomic(self.path(origin), cosigned.encode("utf-8"))

    def blocked(self, origin: str) -> str | None:
        """Why the origin is blocked (the marker's text), or None."""
        try:
            return self.marker(origin).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def block(self, origin: str, reason: str, evidence: Path) -> None:
        text = (
            f"{reason}\nevidence: {evidence}\n"
            "This witness will not cosign this log while this file exists. Investigate; "
            "remove it only once the log is trustworthy again (and the state file matches it).\n"
        )
        write_atomic(self.marker(origin), text.encode("utf-8"))


class _Refusal(Exception):
    """Raised inside the lock to refuse a checkpoint; carries what the evidence needs."""

    def __init__(
        self,
        problem: str,
        reason: str,
        *,
        proof: pb.ConsistencyProof | None = None,
        proof_error: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.problem = problem
        self.reason = reason
        self.proof = proof
        self.proof_error = proof_error


_HEADLINES: Final = {
    "fork": "FORK DETECTED",
    "inconsistent": "FORK DETECTED",
    "rollback": "ROLLBACK DETECTED",
    "no-proof": "NO CONSISTENCY PROOF",
    "bad-signature": "BAD LOG SIGNATURE",
}


def _where(origin: str, size: int | None) -> str:
    return origin if size is None else f"{origin}@{size}"


def _describe(cp: Checkpoint) -> dict[str, Any]:
    return {"size": cp.size, "root_hash": cp.root_hash.hex()}


@dataclass(frozen=True)
class Evidence:
    """What a refusal keeps: the problem (a key of _HEADLINES), why, whose log and witness,
    the state it was checked against (saved note and its checkpoint), what was presented and
    the consistency proof (first, second, hashes) or the log's failure to give one."""

    problem: str
    reason: str
    origin: str
    log_key: str
    log_address: str
    witness_key: str
    saved: str | None
    old: Checkpoint | None
    received: str
    cp: Checkpoint | None
    proof: tuple[int, int, list[bytes]] | None = None
    proof_error: str | None = None


def write_evidence(store: StateStore, directory: Path, e: Evidence) -> Path:
    """Write a self-contained evidence file (JSON, EVIDENCE_FORMAT) durably; its path."""
    now = datetime.now(UTC)
    evidence: dict[str, Any] = {
        "format": EVIDENCE_FORMAT,
        "problem": e.problem,
        "reason": e.reason,
        "time": now.isoformat(timespec="seconds"),
        "unix_time": int(now.timestamp()),
        "origin": e.origin,
        "log_key": e.log_key,
        "log_address": e.log_address,
        "witness_key": e.witness_key,
        "cosigned": None
        if e.saved is None or e.old is None
        else {"note": e.saved, **_describe(e.old)},
        "presented": {"note": e.received, **(_describe(e.cp) if e.cp is not None else {})},
        "consistency_proof": None
        if e.proof is None
        else {"first": e.proof[0], "second": e.proof[1], "hashes": [h.hex() for h in e.proof[2]]},
        "proof_error": e.proof_error,
    }
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    base = f"{store.stem(e.origin)}-{stamp}-{e.problem}"
    path = directory / f"{base}.json"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{base}-{n}.json"
    write_atomic(path, (json.dumps(evidence, indent=2, ensure_ascii=False) + "\n").encode())
    return path


class FollowedLog:
    """One followed log: its config, the client that talks to it, its verifier."""

    def __init__(self, config: LogConfig, witness: WitnessConfig) -> None:
        self.config = config
        self.policy = TrustPolicy(config.log_key)
        self.verifier = self.policy.log_verifier()
        self.client = Client(
            config.address,
            self.policy,
            tls=config.tls,
            timeout=witness.timeout,
            retries=witness.retries,
        )
        self.last_unchanged: int | None = None

    @property
    def origin(self) -> str:
        return self.config.origin

    @property
    def address(self) -> str:
        return self.config.address

    def log_signed(self, text: str) -> str:
        """The note text with only the log's (first, verified) signature line."""
        body, sigs = note.parse_note(text)
        mine = [
            s for s in sigs if (s.name, s.key_hash) == (self.verifier.name, self.verifier.key_hash)
        ]
        return f"{body}\n{mine[0].line()}"


class Witness:
    """Checks and cosigns checkpoints for the logs of a WitnessConfig (see the module doc).

    ``process`` handles one Checkpoint message; ``run_once`` and ``follow`` drive it. Safe to
    call from one thread per log: everything shared is behind the per-origin flock.
    """

    def __init__(
        self,
        config: WitnessConfig,
        signer: CosignatureV1Signer,
        *,
        on_event: Callable[[WitnessEvent], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.verifier: CosignatureV1Verifier = signer.verifier()
        self.store = StateStore(config.state_dir)
        self.logs = [FollowedLog(entry, config) for entry in config.logs]
        self._on_event = on_event
        self.stop = stop if stop is not None else threading.Event()
        self._calls: set[grpc.Call] = set()
        self._calls_lock = threading.Lock()
        self.refused = False
        self.errors = False
        self.crashed = False

    def close(self) -> None:
        for entry in self.logs:
            entry.client.close()

    # Events.

    def _event(self, level: int, event: WitnessEvent) -> WitnessEvent:
        log.log(level, "%s", event.message)
        if event.outcome in (Outcome.REFUSED, Outcome.BLOCKED):
            self.refused = True
        elif event.outcome is Outcome.ERROR:
            self.errors = True
        if self._on_event is not None:
            self._on_event(event)
        return event

    def _error(self, entry: FollowedLog, size: int | None, message: str) -> WitnessEvent:
        text = f"ERROR {_where(entry.origin, size)} from {entry.address}: {message}"
        return self._event(
            logging.ERROR, WitnessEvent(Outcome.ERROR, entry.origin, entry.address, text, size)
        )

    # State.

    def check_state(self) -> None:
        """Verify every stored state with its log's key now, so a bad state stops the start."""
        for entry in self.logs:
            saved = self.store.load(entry.origin)
            if saved is not None:
                self._open_state(entry, saved)

    def _open_state(self, entry: FollowedLog, saved: str) -> Checkpoint:
        try:
            return open_checkpoint(saved, entry.policy, require_quorum=False).checkpoint
        except VerificationError as e:
            raise StateError(
                f"the state {self.store.path(entry.origin)} does not verify with the log key "
                f"configured for {entry.origin}: {e}"
            ) from None

    # One checkpoint.

    def process(self, entry: FollowedLog, message: pb.Checkpoint) -> WitnessEvent:
        """Check, cosign, store and submit one checkpoint of entry's log (see the module doc).

        Raises UnavailableError when the log cannot be reached for the consistency proof; every
        other outcome is the returned (and already logged) event. Events are emitted after the
        lock is released.
        """
        received = message.note
        try:
            cp: Checkpoint | None = open_checkpoint(
                received, entry.policy, require_quorum=False
            ).checkpoint
            bad_signature = ""
        except VerificationError as e:
            cp, bad_signature = None, str(e)
        size = None if cp is None else cp.size
        try:
            with self.store.lock(entry.origin):
                why = self.store.blocked(entry.origin)
                if why is not None:
                    return self._event(*self._blocked(entry, size, why))
                saved = self.store.load(entry.origin)
                old = None if saved is None else self._open_state(entry, saved)
                try:
                    if cp is None:
                        raise _Refusal("bad-signature", bad_signature)
                    cosignature = self._check_and_store(entry, received, cp, old)
                except _Refusal as r:
                    refusal = self._refuse(entry, r, saved, old, received, cp)
                    return self._event(*refusal)
        except StateError as e:
            return self._error(entry, size, str(e))
        assert cp is not None
        if cosignature is None:
            return self._unchanged(entry, message, cp)
        return self._submit(entry, cp, cosignature, None if old is None else old.size)

    def _blocked(self, entry: FollowedLog, size: int | None, why: str) -> tuple[int, WitnessEvent]:
        first = why.splitlines()[0] if why.strip() else "an earlier refusal"
        message = (
            f"REFUSED {_where(entry.origin, size)} from {entry.address}: this log is blocked "
            f"({first}); remove {self.store.marker(entry.origin)} only after investigating"
        )
        return logging.ERROR, WitnessEvent(
            Outcome.BLOCKED, entry.origin, entry.address, message, size
        )

    def _check_and_store(
        self, entry: FollowedLog, received: str, cp: Checkpoint, old: Checkpoint | None
    ) -> str | None:
        """Under the lock: raise _Refusal, or return the cosignature note to submit having
        stored the new state (None: the checkpoint is the state's, nothing to store)."""
        if old is not None:
            if cp.size < old.size:
                raise _Refusal(
                    "rollback",
                    f"the log presents a tree of size {cp.size}, smaller than the tree of size "
                    f"{old.size} this witness cosigned: it was rolled back (or forked)",
                )
            if cp.size == old.size:
                if cp.root_hash != old.root_hash:
                    raise _Refusal(
                        "fork",
                        f"two different roots for tree size {cp.size}: "
                        f"{old.root_hash.hex()} (cosigned) and {cp.root_hash.hex()} (presented)",
                    )
                return None
            proof = self._consistency_proof(entry, old, cp)
            try:
                check_consistency(old, cp, proof.hashes)
            except VerificationError as e:
                raise _Refusal("inconsistent", str(e), proof=proof) from None
        cosignature = note.sign(cp.format(), self.signer)
        self.store.save(entry.origin, note.merge([entry.log_signed(received), cosignature]))
        return cosignature

    def _consistency_proof(
        self, entry: FollowedLog, old: Checkpoint, cp: Checkpoint
    ) -> pb.ConsistencyProof:
        if old.size == 0:
            return pb.ConsistencyProof(first=0, second=cp.size)  # all trees extend the empty one
        try:
            proof = entry.client.call(
                entry.client.stub.GetConsistencyProof,
                pb.GetConsistencyProofRequest(first=old.size, second=cp.size),
            )
        except RefusedError as e:
            raise _Refusal(
                "no-proof",
                f"the log cannot prove that its tree of size {cp.size} extends the tree of "
                f"size {old.size} this witness cosigned ({e})",
                proof_error=str(e),
            ) from None
        if (proof.first, proof.second) != (old.size, cp.size):
            raise _Refusal(
                "no-proof",
                f"asked for a consistency proof from {old.size} to {cp.size}, the log sent one "
                f"from {proof.first} to {proof.second}",
                proof=proof,
            )
        return proof

    def _refuse(
        self,
        entry: FollowedLog,
        r: _Refusal,
        saved: str | None,
        old: Checkpoint | None,
        received: str,
        cp: Checkpoint | None,
    ) -> tuple[int, WitnessEvent]:
        """Under the lock: write the evidence and the block marker (the state is untouched);
        the event to emit once the lock is released."""
        proof = None if r.proof is None else (r.proof.first, r.proof.second, list(r.proof.hashes))
        path = write_evidence(
            self.store,
            self.config.evidence_path,
            Evidence(
                r.problem,
                r.reason,
                entry.origin,
                entry.config.log_key,
                entry.address,
                self.verifier.key_text(),
                saved,
                old,
                received,
                cp,
                proof,
                r.proof_error,
            ),
        )
        self.store.block(entry.origin, f"{_HEADLINES[r.problem]}: {r.reason}", path)
        size = None if cp is None else cp.size
        against = "" if old is None else f" (cosigned: {_where(entry.origin, old.size)})"
        message = (
            f"{_HEADLINES[r.problem]} {_where(entry.origin, size)} from {entry.address}{against}: "
            f"{r.reason}; NOT cosigning; evidence in {path}; this log stays blocked until "
            f"{self.store.marker(entry.origin)} is removed"
        )
        previous = None if old is None else old.size
        return logging.CRITICAL, WitnessEvent(
            Outcome.REFUSED, entry.origin, entry.address, message, size, previous, path
        )

    def _has_my_cosignature(self, entry: FollowedLog, cosigned: str, cp: Checkpoint) -> bool:
        try:
            opened = note.open_note(cosigned, [entry.verifier, self.verifier])
        except MerkleError:
            return False
        return (
            opened.text == cp.format()
            and opened.verified_by(self.verifier.name, self.verifier.key_hash) is not None
        )

    def _unchanged(
        self, entry: FollowedLog, message: pb.Checkpoint, cp: Checkpoint
    ) -> WitnessEvent:
        """The checkpoint is the state's: make sure the log holds our cosignature of it."""
        if message.cosigned_size == cp.size and self._has_my_cosignature(
            entry, message.cosigned_note, cp
        ):
            level = logging.DEBUG if entry.last_unchanged == cp.size else logging.INFO
            entry.last_unchanged = cp.size
            return self._event(
                level,
                WitnessEvent(
                    Outcome.UNCHANGED,
                    entry.origin,
                    entry.address,
                    f"unchanged {_where(entry.origin, cp.size)} from {entry.address}: "
                    "already cosigned",
                    cp.size,
                    cp.size,
                ),
            )
        # Cosigning the checkpoint the state already holds is always safe: re-sign and resend.
        return self._submit(entry, cp, note.sign(cp.format(), self.signer), cp.size)

    def _submit(
        self, entry: FollowedLog, cp: Checkpoint, cosignature: str, previous: int | None
    ) -> WitnessEvent:
        where = _where(entry.origin, cp.size)
        try:
            reply = entry.client.call(
                entry.client.stub.AddCosignature, pb.AddCosignatureRequest(note=cosignature)
            )
        except RefusedError as e:
            hint = ""
            if e.code == grpc.StatusCode.PERMISSION_DENIED.name:
                hint = (
                    "; the log does not trust this witness's key: its operator must add "
                    f"`serve --witness-key {self.verifier.key_text()}`"
                )
            return self._error(
                entry, cp.size, f"cosigned, but the log refused the cosignature: {e}{hint}"
            )
        except UnavailableError as e:
            return self._error(entry, cp.size, f"cosigned, but could not submit it: {e}")
        if not self._has_my_cosignature(entry, reply.cosigned_note, cp):
            return self._error(
                entry, cp.size, "the log accepted the cosignature but its reply does not carry it"
            )
        entry.last_unchanged = None
        if previous is None:
            return self._event(
                logging.WARNING,
                WitnessEvent(
                    Outcome.COSIGNED,
                    entry.origin,
                    entry.address,
                    f"TRUST ON FIRST USE: cosigned {where} from {entry.address} with no earlier "
                    f"state for this origin, so without a consistency check (root "
                    f"{cp.root_hash.hex()}); confirm it with the log's operator",
                    cp.size,
                    None,
                ),
            )
        if previous == cp.size:
            text = f"cosigned {where} from {entry.address} again (the log lacked our cosignature)"
        else:
            text = (
                f"cosigned {where} from {entry.address}: consistent with "
                f"{_where(entry.origin, previous)}"
            )
        return self._event(
            logging.INFO,
            WitnessEvent(Outcome.COSIGNED, entry.origin, entry.address, text, cp.size, previous),
        )

    # Driving.

    def _fetch_and_process(self, entry: FollowedLog) -> WitnessEvent:
        try:
            message = entry.client.call(entry.client.stub.GetCheckpoint, pb.GetCheckpointRequest())
            return self.process(entry, message)
        except (UnavailableError, RefusedError) as e:
            return self._error(entry, None, f"cannot get a checkpoint: {e}")

    def run_once(self, *, keep_going: bool) -> None:
        """Process the current checkpoint of each log once; without keep_going, stop at the
        first refusal."""
        for entry in self.logs:
            event = self._fetch_and_process(entry)
            if event.outcome in (Outcome.REFUSED, Outcome.BLOCKED) and not keep_going:
                return

    def follow(self, *, keep_going: bool) -> None:
        """Follow every log (a thread each) until ``stop`` is set, or, without keep_going,
        until a checkpoint is refused."""
        threads = [
            threading.Thread(
                target=self._follow_log,
                args=(entry, keep_going),
                name=f"witness {entry.origin} {entry.address}",
                daemon=True,
            )
            for entry in self.logs
        ]
        for t in threads:
            t.start()
        try:
            self.stop.wait()
        finally:
            self.stop.set()
            with self._calls_lock:
                for call in self._calls:
                    call.cancel()
            for t in threads:
                t.join()

    def _handle(self, entry: FollowedLog, message: pb.Checkpoint, keep_going: bool) -> None:
        event = self.process(entry, message)
        if event.outcome in (Outcome.REFUSED, Outcome.BLOCKED) and not keep_going:
            self.stop.set()

    def _follow_log(self, entry: FollowedLog, keep_going: bool) -> None:
        delay = INITIAL_BACKOFF_S
        while not self.stop.is_set():
            try:
                if self.config.poll_interval is not None:
                    message = entry.client.call(
                        entry.client.stub.GetCheckpoint, pb.GetCheckpointRequest()
                    )
                    self._handle(entry, message, keep_going)
                    delay = INITIAL_BACKOFF_S
                    self.stop.wait(self.config.poll_interval)
                    continue
                if self._watch(entry, keep_going):
                    delay = INITIAL_BACKOFF_S
                    continue  # redial after watch_redial, at once
                problem = "the watch stream ended"
            except grpc.RpcError as e:
                if self.stop.is_set():
                    return
                problem = f"the watch stream broke ({e.code().name}: {e.details()})"
            except (UnavailableError, RefusedError) as e:
                problem = str(e)
            except Exception:
                log.exception(
                    "witness: unexpected failure following %s at %s", entry.origin, entry.address
                )
                self.crashed = True
                self.stop.set()
                return
            if self.stop.is_set():
                return
            log.warning(
                "lost %s at %s: %s; retrying in %.1fs", entry.origin, entry.address, problem, delay
            )
            self.stop.wait(delay)
            delay = min(delay * 2, self.config.max_backoff)

    def _watch(self, entry: FollowedLog, keep_going: bool) -> bool:
        """Process the log's watch stream; True when it was redialled on schedule (deadline)."""
        call = entry.client.stub.WatchCheckpoints(
            pb.WatchCheckpointsRequest(), timeout=self.config.watch_redial
        )
        with self._calls_lock:
            self._calls.add(call)
        try:
            if self.stop.is_set():
                return False
            for message in call:
                self._handle(entry, message, keep_going)
                if self.stop.is_set():
                    return False
            return False
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not self.stop.is_set():
                return True
            raise
        finally:
            call.cancel()
            with self._calls_lock:
                self._calls.discard(call)


def run(
    config: WitnessConfig,
    *,
    once: bool = False,
    keep_going: bool = False,
    stop: threading.Event | None = None,
    on_event: Callable[[WitnessEvent], None] | None = None,
) -> int:
    """Run the witness; its exit status: EXIT_OK, EXIT_REFUSED or EXIT_ERROR.

    once: process each log's current checkpoint and return (without keep_going, stop at the
    first refusal). Otherwise follow the logs — WatchCheckpoints streams, or GetCheckpoint every
    config.poll_interval seconds — reconnecting with back-off, until ``stop`` is set (the
    witness sets it too when it stops by itself), Ctrl-C, or, without keep_going, a refusal.
    With keep_going a refused log is still followed and reported, never cosigned.

    Status: EXIT_REFUSED if any checkpoint was refused or a log is blocked; else EXIT_ERROR if
    the key or state is unusable, the witness crashed, or (once) any log could not be
    processed; else EXIT_OK. In follow mode, failures to reach a log or to submit a
    cosignature are logged and not reflected in the status: the witness reconnects with
    back-off, and a cosignature the log lacks is sent again with the next checkpoint or
    reconnection (or poll).
    """
    try:
        signer = load_signer(config.key_file)
    except ValueError as e:
        log.error("witness: %s", e)
        return EXIT_ERROR
    witness = Witness(config, signer, on_event=on_event, stop=stop)
    try:
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            witness.check_state()
        except (StateError, OSError) as e:
            log.error("witness: cannot start: %s", e)
            return EXIT_ERROR
        if once:
            how = "once"
        elif config.poll_interval is not None:
            how = f"polling every {config.poll_interval:g}s"
        else:
            how = "watching"
        log.info(
            "witness %s following %s (%s)",
            witness.verifier.key_text(),
            ", ".join(f"{e.origin} at {e.address}" for e in witness.logs),
            how,
        )
        if once:
            witness.run_once(keep_going=keep_going)
        else:
            try:
                witness.follow(keep_going=keep_going)
            except KeyboardInterrupt:
                log.info("witness: interrupted, stopped")
    finally:
        witness.close()
    if witness.refused:
        return EXIT_REFUSED
    if witness.crashed or (once and witness.errors):
        return EXIT_ERROR
    return EXIT_OK
