"""C2SP tlog-proof (c2sp.org/tlog-proof@v1): one entry's offline-verifiable proof, as text.

    c2sp.org/tlog-proof@v1\\n
    [extra <base64 opaque data>\\n]
    index <entry index, ASCII decimal, no leading zeros>\\n
    [<base64 inclusion proof hash>\\n ...]      leaf's sibling first, up to the root's child
    \\n
    <the log's checkpoint, a signed note with any cosignatures, verbatim>

Invariant: ``parse(p.format()) == p`` for every TlogProof ``p``, and ``parse(t).format() == t``
for every text ``parse`` accepts: parse is strict and rejects what format would not write.
Only syntax is checked here; verifying the checkpoint's signatures and the inclusion proof is
the reader's (client.verify.check_tlog_proof).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from affidavit.merkle import note
from affidavit.merkle.errors import MalformedNoteError, MalformedProofError
from affidavit.merkle.hashing import HASH_SIZE

HEADER: Final = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES: Final = 63
"""An inclusion proof in a tree of fewer than 2^64 entries has at most 63 hashes."""

_INDEX: Final = re.compile(r"index (0|[1-9][0-9]{0,19})")


@dataclass(frozen=True)
class TlogProof:
    """Entry index's inclusion proof in the tree of checkpoint (a signed note), plus optional
    unauthenticated extra data."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < 2**64:
            raise MalformedProofError(f"index {self.index} is outside 0..2^64-1")
        if len(self.hashes) > MAX_PROOF_HASHES:
            raise MalformedProofError(f"{len(self.hashes)} proof hashes; at most 63")
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise MalformedProofError("every proof hash is 32 bytes")
        if self.extra is not None and not self.extra:
            raise MalformedProofError("extra data, when present, is not empty")
        try:
            note.parse_note(self.checkpoint)
        except MalformedNoteError as e:
            raise MalformedProofError(f"the checkpoint is not a signed note: {e}") from None

    def format(self) -> str:
        return format_proof(self.index, self.hashes, self.checkpoint, self.extra)


def format_proof(
    index: int, hashes: Sequence[bytes], checkpoint: str, extra: bytes | None = None
) -> str:
    """The tlog-proof text of these parts, as they are (TlogProof checks them; this only
    writes, so a damaged checkpoint is written as damaged, for its reader to refuse)."""
    lines = [HEADER]
    if extra is not None:
        lines.append("extra " + base64.b64encode(extra).decode())
    lines.append(f"index {index}")
    lines += [base64.b64encode(h).decode() for h in hashes]
    return "\n".join(lines) + "\n\n" + checkpoint


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedProofError(f"{what} is not base64: {text[:60]!r}") from None
    if base64.b64encode(raw).decode() != text:
        raise MalformedProofError(f"{what} is not canonical base64: {text[:60]!r}")
    return raw


def parse(text: str) -> TlogProof:
    """The proof a tlog-proof text holds; MalformedProofError saying where it is wrong."""
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise MalformedProofError("no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise MalformedProofError(f"the first line is {lines[0][:60]!r}, not {HEADER!r}")
    at = 1
    extra = None
    if at < len(lines) and lines[at].startswith("extra "):
        extra = _b64(lines[at][len("extra ") :], "the extra data")
        at += 1
    if at >= len(lines) or (m := _INDEX.fullmatch(lines[at])) is None:
        found = lines[at][:60] if at < len(lines) else "nothing"
        raise MalformedProofError(f"expected 'index <N>' on line {at + 1}, found {found!r}")
    index = int(m.group(1))
    hashes = []
    for number, line in enumerate(lines[at + 1 :], at + 2):
        h = _b64(line, f"proof hash on line {number}")
        if len(h) != HASH_SIZE:
            raise MalformedProofError(f"proof hash on line {number} is {len(h)} bytes, not 32")
        hashes.append(h)
    return TlogProof(index, tuple(hashes), checkpoint, extra)
