"""Entries fetched by index, each proven included in one checkpoint the client trusts.

What an investigation reads (a timeline, an identity's history, several actions' evidence) is
many scattered entries; they are read in runs of consecutive indexes and every one is checked:
its leaf hash recomputed from its bytes, and its inclusion proven at its index in the tree of
one checkpoint (the newest the client's policy accepts). Nothing unproven is returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from affidavit.client.client import Client
from affidavit.client.errors import VerificationError
from affidavit.client.verify import Verified, check_inclusion
from affidavit.proto import affidavit_pb2 as pb

from affidavit import merkle


@dataclass(frozen=True)
class ProvenEntry:
    """A leaf at index, included in the checkpoint it was proven against; verdict is what the
    log recorded at ingest (agent actions), as the log says (a replay recomputes it)."""

    index: int
    leaf: bytes
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    verdict: int
    verdict_reason: str


def _runs(indexes: list[int]) -> Iterator[tuple[int, int]]:
    """[start, end) runs of consecutive indexes, ascending."""
    start = end = -1
    for i in indexes:
        if i != end:
            if start >= 0:
                yield start, end
            start = i
        end = i + 1
    if start >= 0:
        yield start, end


def fetch_proven(client: Client, indexes: Iterable[int], verified: Verified) -> list[ProvenEntry]:
    """The entries at indexes (each below verified's size), ascending, each proven included
    in verified's tree. Raises VerificationError if the log sends anything else."""
    size = verified.checkpoint.size
    wanted = sorted(set(indexes))
    if wanted and wanted[-1] >= size:
        raise ValueError(f"entry {wanted[-1]} is beyond the checkpoint's size {size}")
    out = []
    for start, end in _runs(wanted):
        for entry in client.entries(start, end):
            proof = client.call(
                client.stub.GetInclusionProof,
                pb.GetInclusionProofRequest(index=entry.index, tree_size=size),
            )
            leaf_hash = merkle.leaf_hash(entry.data)
            if (proof.index, proof.tree_size, proof.leaf_hash) != (entry.index, size, leaf_hash):
                raise VerificationError(
                    f"the log sent a proof of another entry when asked for {entry.index}"
                )
            check_inclusion(leaf_hash, entry.index, proof.hashes, verified.checkpoint)
            out.append(
                ProvenEntry(
                    entry.index,
                    entry.data,
                    leaf_hash,
                    tuple(proof.hashes),
                    entry.verdict,
                    entry.verdict_reason,
                )
            )
    return out
