"""The statement state's layout 1 rewritten as layout 2: actions keyed by (agent, action id).

Layout 1 kept an action's INTENT under s/x/<action id> and the first REJECT of it under
s/r/<action id>. Action ids are the producer's choice, so one agent could take another's id
first and have its INTENT refused (intent-exists), and a REJECT naming one agent's action
put every agent's action of that id out of scope. Layout 2 (statements.state) keys both by
(acting agent, action id): s/x/<agent> 0x00 <action id>, s/r/<agent> 0x00 <action id>.
Nothing else changed.

The old records are rewritten once, not read in both forms: one form on disk keeps a single
key rule in statements.state (every reader, the server's read-ahead and its caches, the
auditor), where reading both would put a second lookup, and its fallback order, on every
action's admission for the life of every old log. The rewrite is derived from the records
themselves, so it needs no replay and is exact:

- an INTENT record names its issuer (the acting agent) and its action id: it moves to
  intent_key(issuer, action id). Layout 1 admitted one INTENT per action id, so no two
  records meet at one new key. A record already at its layout 2 key stays (a layout 1 key,
  s/x/<action id>, never equals s/x/<issuer> 0x00 <action id>), so the rewrite is
  idempotent whatever bytes an action id holds.
- layout 1 kept only the first REJECT of an action id, whichever agent it named; layout 2
  keeps the first REJECT of each (agent, action id). Every approval is kept (s/a/<id>) with
  its index, agent, action id and decision, so the layout 2 records are rebuilt from the
  REJECTs among them, exactly as applying the log in order would have made them, and every
  other s/r/ record is deleted.

A store applies the rewrite in one atomic write together with its layout mark
(statements.state.STATE_LAYOUT_KEY), so a crash leaves layout 1 whole (and the rewrite runs
again at the next open) or layout 2 whole (server.state_migration). An audit position file
records the layout in its format version (client.audit.position).

Verdicts: the new INTENT rule only admits more (an INTENT layout 1 refused was never an entry),
so no recorded verdict depends on it. The REJECT rule is narrower: an action layout 1 judged
out of scope (approval-rejected, executed-despite-reject) only because a human's REJECT named
another agent's action of the same id is in scope under layout 2, and an audit of such a log
reports that entry as a verdict mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.state import (
    _APPROVAL,
    _INTENT,
    _REJECTION,
    ApprovalRecord,
    IntentRecord,
    _decode,
    intent_key,
    rejection_key,
)

Scan = Callable[[bytes], Iterable[tuple[bytes, bytes]]]
"""The stored records whose keys start with a prefix: (key, value bytes) pairs."""


@dataclass
class Rewrite:
    """What turns layout 1 records into layout 2: records to put and keys to delete."""

    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: list[bytes] = field(default_factory=list)


def rewrite(scan: Scan) -> Rewrite:
    """The rewrite of the INTENT and REJECT records scan finds (empty when there are none to
    move). Reads every INTENT, REJECT and approval record once."""
    out = Rewrite()
    for key, raw in scan(_INTENT):
        intent = _decode(IntentRecord, raw)
        new = intent_key(intent.issuer, intent.action_id)
        if new != key:
            out.deletes.append(key)
            out.puts[new] = raw
    first_rejects: dict[bytes, tuple[int, str]] = {}
    for _, raw in scan(_APPROVAL):
        approval = _decode(ApprovalRecord, raw)
        if approval.decision != pb.Approval.REJECT:
            continue
        new = rejection_key(approval.agent_id, approval.action_id)
        seen = first_rejects.get(new)
        if seen is None or approval.index < seen[0]:
            first_rejects[new] = (approval.index, approval.approval_id)
    wanted = {key: approval_id.encode() for key, (_, approval_id) in first_rejects.items()}
    for key, raw in scan(_REJECTION):
        if wanted.get(key) == raw:
            del wanted[key]  # already in place
        else:
            out.deletes.append(key)
    out.puts.update(wanted)
    return out


def scan_dict(data: dict[bytes, bytes]) -> Scan:
    """A Scan over records held in a dict (an audit's replayed state), in key order."""

    def scan(prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in data if k.startswith(prefix)):
            yield key, data[key]

    return scan


def layout1_intent_issuer(get: Callable[[bytes], bytes | None], action_id: str) -> str | None:
    """The issuer of the INTENT a layout 1 store keeps for action_id (before its rewrite), or
    None when it keeps none: what an old audit position's open intents are missing."""
    raw = get(_INTENT + action_id.encode())
    return None if raw is None else _decode(IntentRecord, raw).issuer
