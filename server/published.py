"""Which checkpoint the log publishes (GET /checkpoint, GetCheckpoint's cosigned fields).

With a witness quorum K > 0, the log publishes the newest checkpoint that carries at least K
valid cosignatures from distinct witnesses it trusts; until one exists, the latest checkpoint
as signed. With K = 0, the latest checkpoint, with whatever cosignatures it has gathered.

Invariant: the published size never goes down, and a published note always carries the log's
signature (every note stored at w/<size> starts from the log's own note).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from affidavit.merkle import note
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.keys import Verifier
from affidavit.server.logstore import LogStore
from affidavit.server.sequencer import Sequencer


def count_cosigners(text: str, witnesses: Sequence[Verifier]) -> int:
    """How many distinct trusted witnesses validly cosigned the note (0 if none, or if any
    line from a trusted key fails to verify)."""
    if not witnesses:
        return 0
    try:
        opened = note.open_note(text, list(witnesses))
    except MerkleError:
        return 0
    return len({(s.name, s.key_hash) for s in opened.signatures})


class Published:
    """The log's published checkpoint, from its storage and sequencer (see module doc)."""

    def __init__(
        self,
        storage: LogStore,
        sequencer: Sequencer,
        witnesses: Sequence[Verifier],
        quorum: int,
    ) -> None:
        if quorum > len(witnesses):
            raise ValueError(f"witness quorum {quorum} is more than the {len(witnesses)} trusted")
        self._storage = storage
        self._sequencer = sequencer
        self.witnesses = list(witnesses)
        self.quorum = quorum
        self._quorate: tuple[int, str] | None = None
        self._lock = threading.Lock()
        stored = storage.cosigned()
        if quorum and stored is not None and count_cosigners(stored[1], self.witnesses) >= quorum:
            self._quorate = stored

    def cosigned(self) -> tuple[int, str] | None:
        """The newest cosigned checkpoint clients should trust: with a quorum, the newest one
        meeting it; without, the newest with any cosignature."""
        return self._quorate if self.quorum else self._storage.cosigned()

    def note(self) -> str:
        """The checkpoint note GET /checkpoint serves."""
        if self._quorate is not None:
            return self._quorate[1]
        latest = self._sequencer.note
        if self.quorum == 0:
            cosigned = self._storage.cosigned_at(self._sequencer.checkpoint.size)
            if cosigned is not None:
                return note.merge([latest, cosigned])
        return latest

    def add(self, size: int, issued: str, cosignatures: str) -> str:
        """Store verified cosignatures (a note of the checkpoint's text carrying them) of the
        checkpoint of size the log issued as the note issued, merged with those stored before,
        durably; returns the merged note. Safe from any thread: one merge at a time."""
        with self._lock:
            merged = note.merge([self._storage.cosigned_at(size) or issued, cosignatures])
            self._storage.put_cosigned(size, merged)
            newer = self._quorate is None or size > self._quorate[0]
            if self.quorum and newer and count_cosigners(merged, self.witnesses) >= self.quorum:
                self._quorate = (size, merged)
            return merged
