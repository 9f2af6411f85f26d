"""Checking and cosigning one checkpoint of a followed log against the witness's state
(the steps and invariants: the package docstring)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from affidavit.client.client import Client
from affidavit.client.errors import RefusedError, UnavailableError, VerificationError
from affidavit.client.verify import TrustPolicy, check_consistency, open_checkpoint
from affidavit.client.witness.config import LogConfig, WitnessConfig
from affidavit.client.witness.evidence import (
    HEADLINES,
    Evidence,
    Refusal,
    write_evidence,
)
from affidavit.client.witness.state import StateError, StateStore
from affidavit.merkle import note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.cosignature import CosignatureV1Signer, CosignatureV1Verifier
from affidavit.merkle.errors import MerkleError
from affidavit.proto import affidavit_pb2 as pb

log = logging.getLogger("affidavit.witness")


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


def _where(origin: str, size: int | None) -> str:
    return origin if size is None else f"{origin}@{size}"


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

    ``process`` handles one Checkpoint message; a Follower (witness.follow) drives it. Safe to
    call from one thread per log: everything shared is behind the per-origin flock.
    """

    def __init__(
        self,
        config: WitnessConfig,
        signer: CosignatureV1Signer,
        *,
        on_event: Callable[[WitnessEvent], None] | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.verifier: CosignatureV1Verifier = signer.verifier()
        self.store = StateStore(config.state_dir)
        self.logs = [FollowedLog(entry, config) for entry in config.logs]
        self._on_event = on_event
        self.refused = False
        self.errors = False

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

    def error(self, entry: FollowedLog, size: int | None, message: str) -> WitnessEvent:
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
                        raise Refusal("bad-signature", bad_signature)
                    cosignature = self._check_and_store(entry, received, cp, old)
                except Refusal as r:
                    refusal = self._refuse(entry, r, saved, old, received, cp)
                    return self._event(*refusal)
        except StateError as e:
            return self.error(entry, size, str(e))
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
        """Under the lock: raise Refusal, or return the cosignature note to submit having
        stored the new state (None: the checkpoint is the state's, nothing to store)."""
        if old is not None:
            if cp.size < old.size:
                raise Refusal(
                    "rollback",
                    f"the log presents a tree of size {cp.size}, smaller than the tree of size "
                    f"{old.size} this witness cosigned: it was rolled back (or forked)",
                )
            if cp.size == old.size:
                if cp.root_hash != old.root_hash:
                    raise Refusal(
                        "fork",
                        f"two different roots for tree size {cp.size}: "
                        f"{old.root_hash.hex()} (cosigned) and {cp.root_hash.hex()} (presented)",
                    )
                return None
            proof = self._consistency_proof(entry, old, cp)
            try:
                check_consistency(old, cp, proof.hashes)
            except VerificationError as e:
                raise Refusal("inconsistent", str(e), proof=proof) from None
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
            raise Refusal(
                "no-proof",
                f"the log cannot prove that its tree of size {cp.size} extends the tree of "
                f"size {old.size} this witness cosigned ({e})",
                proof_error=str(e),
            ) from None
        if (proof.first, proof.second) != (old.size, cp.size):
            raise Refusal(
                "no-proof",
                f"asked for a consistency proof from {old.size} to {cp.size}, the log sent one "
                f"from {proof.first} to {proof.second}",
                proof=proof,
            )
        return proof

    def _refuse(
        self,
        entry: FollowedLog,
        r: Refusal,
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
        self.store.block(entry.origin, f"{HEADLINES[r.problem]}: {r.reason}", path)
        size = None if cp is None else cp.size
        against = "" if old is None else f" (cosigned: {_where(entry.origin, old.size)})"
        message = (
            f"{HEADLINES[r.problem]} {_where(entry.origin, size)} from {entry.address}{against}: "
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
            return self.error(
                entry, cp.size, f"cosigned, but the log refused the cosignature: {e}{hint}"
            )
        except UnavailableError as e:
            return self.error(entry, cp.size, f"cosigned, but could not submit it: {e}")
        if not self._has_my_cosignature(entry, reply.cosigned_note, cp):
            return self.error(
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
