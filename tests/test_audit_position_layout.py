"""An audit position saved before actions were keyed by agent (format version 2, statement
state layout 1) resumes as one saved now: the same state, the same open intents, and the same
report once the log has grown.

The version 2 file is written as cc86bae's save_position wrote it (the magic line
affidavit-audit-position/2, open intents keyed by action id, the state's records in layout 1
from tests/layout1.py), from the position this version saved.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

from affidavit.client.audit import RecordedEntry, audit_entries
from affidavit.client.audit.position import _lengths, load_position
from affidavit.client.audit.replay import Replay
from affidavit.client.trust import write_atomic
from affidavit.proto import affidavit_pb2 as pb

from tests.layout1 import as_layout1
from tests.statement_world import ALICE, BOT, OTHER, World, populated
from tests.test_audit import fake_checkpoint
from tests.test_audit_resume import comparable


def _save_version2(path: Path, replay: Replay) -> None:
    """replay's position as a version 2 file (cc86bae's save_position, state in layout 1)."""
    header = json.dumps(
        {
            "checkpoint": replay.checkpoint_note,
            "next_index": replay.next_index,
            "compact": {
                "size": replay.compact.size,
                "hashes": [h.hex() for h in replay.compact.hashes],
            },
            "keys": {k: v.hex() for k, v in replay.keys.items()},
            "open_intents": {action: index for (_, action), index in replay.open_intents.items()},
            "counts": replay.counts,
            "findings": [[f.index, f.kind, f.message] for f in replay.findings.listed],
            "finding_counts": replay.findings.counts,
            "max_findings": replay.findings.limit,
            "records": len(replay.kv.data),
        },
        separators=(",", ":"),
    ).encode()
    stored = as_layout1(replay.kv.encoded())
    assert len(stored) == len(replay.kv.data)
    keys, values = list(stored), list(stored.values())
    records = zlib.compress(b"".join([_lengths(keys), _lengths(values), *keys, *values]), 1)
    magic = b"affidavit-audit-position/2\n"
    body = b"".join([magic, struct.pack(">Q", len(header)), header, records])
    write_atomic(path, body + hashlib.sha256(body).digest())


def _recorded(w: World) -> list[RecordedEntry]:
    out = []
    for i, (leaf, v) in enumerate(zip(w.leaves, w.verdicts, strict=True)):
        out.append(RecordedEntry(i, leaf, *((v.verdict, v.reason, v.admitted_ms) if v else ())))
    return out


def test_a_version2_position_resumes_as_a_version3_one(tmp_path: Path) -> None:
    w = populated()
    gid = w.grant(ALICE, "code-agent")
    other_gid = w.grant(ALICE, "other-agent")
    w.approve("call_9", decision=pb.Approval.REJECT, agent="other-agent")
    answered = w.intent(BOT, [gid], action_id="call_1")
    w.outcome(BOT, answered)
    open_one = w.intent(OTHER, [other_gid], action_id="call_2")
    w.intent(BOT, [gid], action_id="call_3")  # open until the end
    saved_at = len(w.leaves)
    # The log grows after the save: the open INTENT is answered, bot uses other's ids, and
    # other-agent's REJECTed id is used by both.
    w.outcome(OTHER, open_one)
    w.intent(BOT, [gid], action_id="call_2")
    w.intent(BOT, [gid], action_id="call_9")
    w.intent(OTHER, [other_gid], action_id="call_9")
    entries = _recorded(w)

    def source(start: int, end: int) -> list[RecordedEntry]:
        return entries[start:end]

    first = fake_checkpoint(w.leaves[:saved_at])
    new, old = tmp_path / "v3.position", tmp_path / "v2.position"
    audit_entries(source, first, resume=new, workers=0)
    _save_version2(old, load_position(new))
    assert old.read_bytes().startswith(b"affidavit-audit-position/2\n")

    loaded_old, loaded_new = load_position(old), load_position(new)
    assert loaded_old.kv.encoded() == loaded_new.kv.encoded()
    assert (
        loaded_old.open_intents
        == loaded_new.open_intents
        == {
            ("other-agent", "call_2"): open_one.index,
            ("code-agent", "call_3"): open_one.index + 1,
        }
    )

    whole = fake_checkpoint(w.leaves)
    reports: list[dict[str, Any]] = []
    for path in (old, new):
        reports.append(comparable(audit_entries(source, whole, resume=path, workers=0)))
    assert reports[0] == reports[1]
    # Every verdict reproduced; the one violation is other-agent's REJECTed action alone.
    findings = reports[0]["findings"]
    assert not [f for f in findings if f["severity"] == "error"], findings
    assert [f for f in findings if f["severity"] == "violation"] == [
        {
            "index": len(w.leaves) - 1,
            "kind": "out-of-scope-action",
            "severity": "violation",
            "message": "other-agent intent github.create_pull_request on repo:acme/web "
            "(action call_9): OUT_OF_SCOPE (approval-rejected)",
        }
    ], findings
    assert old.read_bytes().startswith(b"affidavit-audit-position/3\n")  # saved anew
