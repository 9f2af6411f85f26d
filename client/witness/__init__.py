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

from affidavit.client.witness.checker import FollowedLog, Outcome, Witness, WitnessEvent
from affidavit.client.witness.config import LogConfig, WitnessConfig, load_signer
from affidavit.client.witness.evidence import EVIDENCE_FORMAT, Evidence, write_evidence
from affidavit.client.witness.follow import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, Follower, run
from affidavit.client.witness.state import StateError, StateStore

__all__ = [
    "EVIDENCE_FORMAT",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_REFUSED",
    "Evidence",
    "FollowedLog",
    "Follower",
    "LogConfig",
    "Outcome",
    "StateError",
    "StateStore",
    "Witness",
    "WitnessConfig",
    "WitnessEvent",
    "load_signer",
    "run",
    "write_evidence",
]
