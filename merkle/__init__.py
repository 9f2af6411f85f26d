"""merkle: RFC 6962 / RFC 9162 Merkle trees and C2SP signed notes — a pure library, no I/O.

The public surface the server, the client and outside checkers use:

    leaf_hash(entry)                     node_hash(left, right)          root_hash(leaf_hashes)
    inclusion_proof(leaf_hashes, index, size)
    consistency_proof(leaf_hashes, old_size, new_size)
    verify_inclusion(leaf_hash, index, size, proof, root)               -> None or ProofError
    verify_consistency(old_size, new_size, proof, old_root, new_root)   -> None or ProofError
    backend()                            "c" or "python"

Proofs are lists of 32-byte hashes ordered from the leaf up. Signed notes are in merkle.note,
checkpoints in merkle.checkpoint, witness cosignatures in merkle.cosignature, tiles in
merkle.tiles, compact ranges in merkle.compact.
"""

from affidavit.merkle.errors import MerkleError, ProofError
from affidavit.merkle.hashing import EMPTY_ROOT, HASH_SIZE, backend, leaf_hash, node_hash, root_hash
from affidavit.merkle.proofs import (
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleError",
    "ProofError",
    "backend",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]
