"""Position files: where an audit is, saved so that a later run continues from it.

A file is a magic line, a JSON header (checkpoint, next index, compact range, keys, open
intents, counts, findings) and the replayed state's records (zlib), then a SHA-256 of all of
that, so a damaged file is refused rather than trusted.

The magic line's version says the layout of the state it holds. Version 3 holds layout 2
(statements.state: an action keyed by agent and action id) and its open intents as
[agent, action id, index] triples. Versions 1 and 2 hold layout 1 and open intents keyed by
action id alone: they are read and rewritten in memory as they load
(statements.state_migration), so an audit resumes from them; saving writes version 3.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
import sys
import zlib
from array import array
from pathlib import Path

from affidavit.client.audit.replay import Findings, Replay
from affidavit.client.audit.report import Finding
from affidavit.client.trust import write_atomic
from affidavit.merkle.compact import CompactRange
from affidavit.statements import state_migration
from affidavit.statements.state import DictKV

_POSITION_MAGIC = b"affidavit-audit-position/3\n"
_POSITION_MAGIC_V2 = b"affidavit-audit-position/2\n"
_POSITION_MAGIC_V1 = b"affidavit-audit-position/1\n"
"""Version 1 held the records uncompressed (about 370 bytes an entry); it is still read."""
_POSITION_MAGICS = (_POSITION_MAGIC, _POSITION_MAGIC_V2, _POSITION_MAGIC_V1)


def save_position(path: Path, replay: Replay) -> None:
    """Write the audit's position to path, atomically (a crash leaves the old file or the new
    one), with a SHA-256 trailer so a damaged file is refused rather than trusted."""
    header = json.dumps(
        {
            "checkpoint": replay.checkpoint_note,
            "next_index": replay.next_index,
            "compact": {
                "size": replay.compact.size,
                "hashes": [h.hex() for h in replay.compact.hashes],
            },
            "keys": {k: v.hex() for k, v in replay.keys.items()},
            "open_intents": [[*action, index] for action, index in replay.open_intents.items()],
            "counts": replay.counts,
            "findings": [[f.index, f.kind, f.message] for f in replay.findings.listed],
            "finding_counts": replay.findings.counts,
            "max_findings": replay.findings.limit,
            "records": len(replay.kv.data),
        },
        separators=(",", ":"),
    ).encode()
    stored = replay.kv.encoded()
    keys, values = list(stored), list(stored.values())
    # The replayed state is JSON records keyed by ids and hashes: zlib's fastest level makes
    # it about a quarter of its size (a tenth of a second per 50,000 entries).
    records = zlib.compress(
        b"".join([_lengths(keys), _lengths(values), *keys, *values]), _POSITION_ZLIB_LEVEL
    )
    body = b"".join([_POSITION_MAGIC, struct.pack(">Q", len(header)), header, records])
    write_atomic(path, body + hashlib.sha256(body).digest())


_POSITION_ZLIB_LEVEL = 1


def _lengths(items: list[bytes]) -> bytes:
    """The length of each item, as little-endian u32s."""
    lengths = array("I", map(len, items))
    if sys.byteorder != "little":
        lengths.byteswap()
    return lengths.tobytes()


def _split(blob: bytes, at: int, lengths: array[int]) -> tuple[list[bytes], int]:
    """Consecutive pieces of blob from at, of the given lengths; and where they end."""
    ends = list(itertools.accumulate(lengths, initial=at))
    return [blob[a:b] for a, b in itertools.pairwise(ends)], ends[-1]


class PositionError(Exception):
    """A position file that cannot be resumed from: damaged, or of another format."""


def load_position(path: Path) -> Replay:
    """Read a position file written by save_position; PositionError if it cannot be used."""
    raw = path.read_bytes()
    end = len(raw) - 32
    if not raw.startswith(_POSITION_MAGICS):
        raise PositionError(f"{path} is not an affidavit audit position file")
    if hashlib.sha256(memoryview(raw)[:end]).digest() != raw[end:]:
        raise PositionError(f"{path} is damaged (its checksum does not match); delete it")
    try:
        return _parse_position(raw, end)
    except (KeyError, TypeError, ValueError, struct.error, zlib.error) as e:
        raise PositionError(f"{path} is not a position file this version reads: {e}") from None


def _parse_position(body: bytes, end: int) -> Replay:
    """The position in body[:end] (the part of a position file before its checksum)."""
    at = len(_POSITION_MAGIC)
    (length,) = struct.unpack_from(">Q", body, at)
    at += 8
    h = json.loads(body[at : at + length])
    at += length
    layout1 = not body.startswith(_POSITION_MAGIC)
    if not body.startswith(_POSITION_MAGIC_V1):
        body = zlib.decompress(body[at:end])  # versions 2 and 3: the records are compressed
        at, end = 0, len(body)
    n = h["records"]
    key_lengths, value_lengths = array("I"), array("I")
    key_lengths.frombytes(body[at : at + 4 * n])
    value_lengths.frombytes(body[at + 4 * n : at + 8 * n])
    if sys.byteorder != "little":
        key_lengths.byteswap()
        value_lengths.byteswap()
    keys, at = _split(body, at + 8 * n, key_lengths)
    values, at = _split(body, at, value_lengths)
    if at != end or len(keys) != n:
        raise ValueError("its records do not add up to its length")
    kv = DictKV()
    kv.data = dict(zip(keys, values, strict=True))
    if layout1:
        open_intents = _layout1_open_intents(kv.data, h["open_intents"])
        rewrite = state_migration.rewrite(state_migration.scan_dict(kv.data))
        for key in rewrite.deletes:
            del kv.data[key]
        kv.data.update(rewrite.puts)
    else:
        open_intents = {(agent, action): index for agent, action, index in h["open_intents"]}
    return Replay(
        checkpoint_note=h["checkpoint"],
        next_index=h["next_index"],
        compact=CompactRange(
            h["compact"]["size"], [bytes.fromhex(x) for x in h["compact"]["hashes"]]
        ),
        kv=kv,
        keys={k: bytes.fromhex(v) for k, v in h["keys"].items()},
        open_intents=open_intents,
        counts=h["counts"],
        findings=Findings(
            h["max_findings"],
            [Finding(i, k, m) for i, k, m in h["findings"]],
            h["finding_counts"],
        ),
    )


def _layout1_open_intents(
    records: dict[bytes, bytes], by_action_id: dict[str, int]
) -> dict[tuple[str, str], int]:
    """A version 1 or 2 file's open intents, keyed by action id alone, keyed by agent and
    action id: each INTENT's record (layout 1, keyed by action id) names its agent."""
    out = {}
    for action_id, index in by_action_id.items():
        agent = state_migration.layout1_intent_issuer(records.get, action_id)
        if agent is None:
            raise ValueError(f"its open intent {action_id!r} has no INTENT record")
        out[agent, action_id] = index
    return out


def saved_checkpoint(path: Path) -> str | None:
    """The checkpoint note a position file audits to (read from its header only), or None when
    there is no file yet. The whole file is checked when the audit loads it."""
    try:
        with path.open("rb") as f:
            magic = f.read(len(_POSITION_MAGIC))
            (length,) = struct.unpack(">Q", f.read(8))
            note = json.loads(f.read(length))["checkpoint"]
    except FileNotFoundError:
        return None
    except (KeyError, TypeError, ValueError, struct.error):
        magic = b""
    if magic not in _POSITION_MAGICS or not isinstance(note, str):
        raise PositionError(f"{path} is not an affidavit audit position file")
    return note


# ---------------------------------------------------------------------------------------------
# The audit.
