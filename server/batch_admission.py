"""Which entries of a batch join the log, and what the log's gate says of each.

The integrator hands a batch here with the log's size and, for each entry, the index its leaf
hash already has in the log (or None). An entry already in the log, or earlier in the batch,
is a duplicate: it is answered with its first copy's index and verdict and admitted no second
time. Every other entry is judged by the gate (when the log has one) at the index it would
take; a refused entry takes none. Invariant: the entries that join are numbered size, size + 1,
... in batch order, and the gate then holds exactly their effects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from affidavit.server.errors import unexpected_failure
from affidavit.statements.errors import Rejection


class Gate(Protocol):
    """What an entry must pass to be appended, judged in log order by the integrator.

    begin() opens a batch; admit() checks one entry against the log so far plus the batch's
    admitted entries, raising Rejection or returning its (verdict, reason); writes() gives the
    key/values the batch adds, committed with it; durable() says that commit is done (not
    called when a batch commits nothing); known() gives an entry's stored verdict.
    """

    def begin(self) -> None: ...

    def admit(
        self, entry: bytes, prepared: object, leaf_hash: bytes, index: int
    ) -> tuple[int, str]: ...

    def writes(self) -> Mapping[bytes, bytes]: ...

    def durable(self) -> None: ...

    def known(self, index: int) -> tuple[int, str]: ...

    def forget(self) -> None:
        """The log grew by another frontend's hand while no batch was open: drop every
        cached record (the next batch's reset() reads what it needs)."""
        ...

    def reset(self, prepared: Sequence[object]) -> None:
        """The log grew by another frontend's hand: forget every cached record (and read
        ahead those admitting prepared, the batch to come, will need)."""
        ...


Placed = tuple[int, bool, tuple[int, str]]
"""Where an entry is (its index, whether a duplicate) and its (verdict, reason)."""


@dataclass
class Admitted:
    """A batch judged: per entry its place or refusal, and the entries joining the log (with
    their leaf hashes), in order."""

    outcomes: list[Placed | Rejection] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)


def admit_batch(
    entries: Sequence[bytes],
    prepared: Sequence[object],
    leaf_hashes: Sequence[bytes],
    stored: Sequence[int | None],
    size: int,
    gate: Gate | None,
) -> Admitted:
    """Judge a batch for a log of size whose stored indexes of leaf_hashes are stored."""
    if gate is not None:
        gate.begin()
    first_seen: dict[bytes, tuple[int, tuple[int, str]]] = {}
    joined_prepared: list[object] = []
    out = Admitted()
    for entry, prep, leaf_hash, index_stored in zip(
        entries, prepared, leaf_hashes, stored, strict=True
    ):
        seen = first_seen.get(leaf_hash)
        if seen is None and index_stored is not None:
            seen = index_stored, gate.known(index_stored) if gate is not None else (0, "")
        if seen is not None:
            out.outcomes.append((seen[0], True, seen[1]))
            continue
        index = size + len(out.entries)
        try:
            judged = (0, "") if gate is None else gate.admit(entry, prep, leaf_hash, index)
        except Rejection as e:
            out.outcomes.append(e)
            continue
        except Exception as e:
            # This entry alone fails. The gate may hold part of its effects: the batch's state
            # starts over from the entries admitted before it.
            out.outcomes.append(unexpected_failure(e))
            assert gate is not None
            gate.begin()
            for k, again in enumerate(zip(out.entries, joined_prepared, out.hashes, strict=True)):
                gate.admit(again[0], again[1], again[2], size + k)
            continue
        first_seen[leaf_hash] = index, judged
        out.entries.append(entry)
        out.hashes.append(leaf_hash)
        joined_prepared.append(prep)
        out.outcomes.append((index, False, judged))
    return out
