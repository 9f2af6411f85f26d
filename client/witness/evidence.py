"""Refusals and their evidence: why a checkpoint was refused, and the self-contained JSON file
kept of it (what was cosigned before, what was presented, the consistency proof or the log's
failure to give one)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from affidavit.client.trust import write_atomic
from affidavit.client.witness.state import StateStore
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.proto import affidavit_pb2 as pb

EVIDENCE_FORMAT: Final = "affidavit/witness-evidence/v1"
"""The ``format`` field of every evidence file."""


class Refusal(Exception):
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


HEADLINES: Final = {
    "fork": "FORK DETECTED",
    "inconsistent": "FORK DETECTED",
    "rollback": "ROLLBACK DETECTED",
    "no-proof": "NO CONSISTENCY PROOF",
    "bad-signature": "BAD LOG SIGNATURE",
}


def _checkpoint_fields(cp: Checkpoint) -> dict[str, Any]:
    return {"size": cp.size, "root_hash": cp.root_hash.hex()}


@dataclass(frozen=True)
class Evidence:
    """What a refusal keeps: the problem (a key of HEADLINES), why, whose log and witness,
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
        else {"note": e.saved, **_checkpoint_fields(e.old)},
        "presented": {"note": e.received, **(_checkpoint_fields(e.cp) if e.cp is not None else {})},
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
