"""C2SP tlog-checkpoint: the note body that commits to a log's tree head.

A checkpoint body is::

    <origin>\\n
    <tree size, ASCII decimal, no leading zeros unless it is 0>\\n
    <base64 of the 32-byte RFC 6962 root hash>\\n
    [<extension line>\\n ...]

Invariant: ``parse(c.format()) == c`` for every Checkpoint ``c``, and ``parse(body).format() ==
body`` for every body ``parse`` accepts, so the bytes a log signs are exactly the bytes a
checkpoint formats to. ``parse`` is strict: it rejects anything it would not produce.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Final

from affidavit.merkle import errors

HASH_SIZE: Final = 32
MAX_TREE_SIZE: Final = 2**64 - 1

_SIZE: Final = re.compile(r"0|[1-9][0-9]{0,19}")
_ROOT: Final = re.compile(r"[A-Za-z0-9+/]{43}=")
# A checkpoint body is a note text: no ASCII control characters (newline separates lines).
_CONTROL: Final = re.compile(r"[\x00-\x1f]")


def _line_problem(line: str, what: str) -> str | None:
    if not line:
        return f"{what} is empty"
    match = _CONTROL.search(line)
    if match is not None:
        return f"{what} contains control character U+{ord(match.group()):04X}"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8"
    return None


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed tree head: origin, tree size, root hash, optional extension lines.

    Invariant (checked on construction): origin and extension lines are non-empty single lines
    without control characters; 0 <= size < 2^64; root_hash is 32 bytes.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _line_problem(self.origin, "origin")
        if problem is not None:
            raise errors.MalformedCheckpointError(problem)
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise errors.MalformedCheckpointError("tree size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise errors.MalformedCheckpointError(f"tree size {self.size} is outside 0..2^64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise errors.MalformedCheckpointError(f"root hash must be {HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise errors.MalformedCheckpointError("extensions must be a tuple of lines")
        for i, line in enumerate(self.extensions, 1):
            problem = _line_problem(line, f"extension line {i}")
            if problem is not None:
                raise errors.MalformedCheckpointError(problem)

    def format(self) -> str:
        """The checkpoint body (a note text): every line, extensions included, ends in '\\n'."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse(body: str) -> Checkpoint:
    """Parse a checkpoint body strictly; MalformedCheckpointError says what is wrong."""
    if not body.endswith("\n"):
        raise errors.MalformedCheckpointError("checkpoint body does not end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise errors.MalformedCheckpointError(
            f"checkpoint body has {len(lines)} line(s); origin, tree size and root hash are needed"
        )
    origin, size_text, root_text, *extensions = lines
    problem = _line_problem(origin, "origin")
    if problem is not None:
        raise errors.MalformedCheckpointError(problem)
    # Explicit ASCII digits: int() would also take '+1', ' 1', '1_0' and non-ASCII digits.
    if _SIZE.fullmatch(size_text) is None:
        raise errors.MalformedCheckpointError(
            "tree size must be decimal digits without leading zeros"
        )
    size = int(size_text)
    if size > MAX_TREE_SIZE:
        raise errors.MalformedCheckpointError("tree size does not fit in 64 bits")
    if _ROOT.fullmatch(root_text) is None:
        raise errors.MalformedCheckpointError(
            f"root hash must be {HASH_SIZE} bytes of padded standard base64 (44 characters)"
        )
    root = base64.b64decode(root_text, validate=True)
    # Only one spelling of each hash: the last character must leave its 2 unused bits zero.
    if base64.b64encode(root).decode("ascii") != root_text:
        raise errors.MalformedCheckpointError("root hash is not canonical base64")
    for i, line in enumerate(extensions, 1):
        problem = _line_problem(line, f"extension line {i}")
        if problem is not None:
            raise errors.MalformedCheckpointError(problem)
    return Checkpoint(origin, size, root, tuple(extensions))
