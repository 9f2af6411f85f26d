"""Statement state in layout 1, as affidavit up to cc86bae wrote it, built from layout 2.

Layout 1 (cc86bae's statements.state) kept an INTENT under b"s/x/" + action id and the
statement id of the first REJECT of an action id, whichever agent it named, under
b"s/r/" + action id; every other record is the same in both layouts, and layout 1 has no
layout mark (b"s/m/layout"). Written from that description (not with
statements.state_migration, which it checks), for a state with one INTENT per action id —
the only states layout 1 could hold.
"""

from __future__ import annotations

import json

from affidavit.proto import affidavit_pb2 as pb

INTENT, REJECTION, APPROVAL, LAYOUT_MARK = b"s/x/", b"s/r/", b"s/a/", b"s/m/layout"


def as_layout1(records: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """records (encoded layout 2 state, or a store's derived records) in layout 1."""
    out = {k: v for k, v in records.items() if not k.startswith((INTENT, REJECTION, LAYOUT_MARK))}
    for key, value in records.items():
        if key.startswith(INTENT):
            old = INTENT + json.loads(value)["action_id"].encode()
            assert old not in out, "layout 1 holds one INTENT per action id"
            out[old] = value
    first: dict[str, tuple[int, str]] = {}
    for key, value in records.items():
        if key.startswith(APPROVAL):
            approval = json.loads(value)
            if approval["decision"] != pb.Approval.REJECT:
                continue
            seen = first.get(approval["action_id"])
            if seen is None or approval["index"] < seen[0]:
                first[approval["action_id"]] = (approval["index"], approval["approval_id"])
    for action_id, (_, approval_id) in first.items():
        out[REJECTION + action_id.encode()] = approval_id.encode()
    return out
