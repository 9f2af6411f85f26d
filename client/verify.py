"""Checking what a log says: checkpoint signatures and witness quorum, proofs, consistency.

A client trusts a checkpoint only with the log's valid signature and, when it has a witness
policy, at least quorum valid cosignatures from witnesses it knows. Every failure is a
VerificationError saying what failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from affidavit.client.errors import VerificationError
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note, tlogproof
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.cosignature import CosignatureV1Verifier
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.keys import Verifier
from affidavit.merkle.tlogproof import TlogProof

from affidavit import merkle


@dataclass(frozen=True)
class TrustPolicy:
    """The log's verifier key, the witnesses known, and how many must cosign."""

    log_key: str
    witness_keys: tuple[str, ...] = ()
    quorum: int = 0

    def __post_init__(self) -> None:
        if self.quorum > len(self.witness_keys):
            raise ValueError(
                f"quorum {self.quorum} is more than the {len(self.witness_keys)} witnesses known"
            )

    def log_verifier(self) -> Verifier:
        return note.parse_verifier(self.log_key)

    def witness_verifiers(self) -> list[Verifier]:
        verifiers = [note.parse_verifier(k) for k in self.witness_keys]
        for v in verifiers:
            if not isinstance(v, CosignatureV1Verifier):
                raise ValueError(f"witness key {v.name!r} is not a cosignature/v1 key")
        return verifiers


@dataclass(frozen=True)
class Verified:
    """A checkpoint that passed the policy, with its note and the witnesses that cosigned it."""

    checkpoint: Checkpoint
    note: str
    witnesses: tuple[str, ...]


def open_checkpoint(text: str, policy: TrustPolicy, *, require_quorum: bool = True) -> Verified:
    """Verify a checkpoint note: the log's signature, then (if required) the witness quorum."""
    log = policy.log_verifier()
    witnesses = policy.witness_verifiers()
    try:
        opened = note.open_note(text, [log, *witnesses])
    except MerkleError as e:
        raise VerificationError(f"checkpoint note does not verify: {e}") from None
    if opened.verified_by(log.name, log.key_hash) is None:
        raise VerificationError(f"checkpoint note is not signed by the log {log.name!r}")
    try:
        cp = checkpoints.parse(opened.text)
    except MerkleError as e:
        raise VerificationError(f"checkpoint body is malformed: {e}") from None
    if cp.origin != log.name:
        raise VerificationError(
            f"checkpoint origin {cp.origin!r} is not the log's name {log.name!r}"
        )
    cosigners = tuple(
        s.name for s in opened.signatures if not (s.name == log.name and s.key_hash == log.key_hash)
    )
    if require_quorum and len(cosigners) < policy.quorum:
        raise VerificationError(
            f"checkpoint of size {cp.size} has {len(cosigners)} valid witness cosignature(s); "
            f"the policy needs {policy.quorum}"
        )
    return Verified(cp, text, cosigners)


def check_inclusion(leaf_hash: bytes, index: int, proof: Sequence[bytes], cp: Checkpoint) -> None:
    try:
        merkle.verify_inclusion(leaf_hash, index, cp.size, list(proof), cp.root_hash)
    except merkle.ProofError as e:
        raise VerificationError(
            f"inclusion proof of entry {index} in checkpoint {cp.size}: {e}"
        ) from None


def check_consistency(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """new must extend old: a smaller tree, a different root at the same size or a failing proof
    is a VerificationError (a rollback or a fork)."""
    if new.size < old.size:
        raise VerificationError(
            f"the log went back from size {old.size} to {new.size}: a rollback (or a fork)"
        )
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            raise VerificationError(f"two different roots for size {old.size}: the log forked")
        return
    if old.size == 0:
        return  # every tree extends the empty one
    try:
        merkle.verify_consistency(old.size, new.size, list(proof), old.root_hash, new.root_hash)
    except merkle.ProofError as e:
        raise VerificationError(
            f"checkpoint {new.size} is not consistent with the trusted checkpoint {old.size}: {e}"
        ) from None


def check_tlog_proof(
    text: str | bytes, entry: bytes, policy: TrustPolicy
) -> tuple[TlogProof, Verified]:
    """Check a c2sp.org/tlog-proof offline: its checkpoint passes the policy (log signature and
    witness quorum) and proves entry at its index. VerificationError saying what failed."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationError("not a tlog-proof: the file is not UTF-8 text") from None
    try:
        proof = tlogproof.parse(text)
    except MerkleError as e:
        raise VerificationError(f"not a tlog-proof: {e}") from None
    cp = open_checkpoint(proof.checkpoint, policy)
    check_inclusion(merkle.leaf_hash(entry), proof.index, proof.hashes, cp.checkpoint)
    return proof, cp
