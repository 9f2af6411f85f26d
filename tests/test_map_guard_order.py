"""The secret guard's verdict on a string map must not depend on the order protobuf happens to
iterate it in.

The guard joins a map's short values in iteration order to find a token split across them
(secret_values.py). protobuf (upb) iterates a map in an order seeded per process, so a token
split across two ``identity.attributes`` values is found in some processes and not in others:
the log and an auditor replaying it can disagree, and a secret can be appended when the ingest
process happens to read the pieces the other way round. Found while reviewing the guard change
(7bebee6..main); the older guard behaves the same.

The test builds statements whose attributes carry the two pieces under different key names, so
that in this process some iterate the first piece first and some the second: each must be
refused.
"""

from __future__ import annotations

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import schema
from affidavit.statements.errors import Rejection

from tests.statement_world import GITHUB_TOKEN, base


def _verdict(statement: pb.Statement) -> str:
    try:
        schema._guard_secrets(statement, None)
    except Rejection as e:
        return str(e.message)
    return "accepted"


def test_a_token_split_across_attributes_is_refused_whatever_the_map_order() -> None:
    head, tail = GITHUB_TOKEN[:20], GITHUB_TOKEN[20:]
    seen: dict[bool, str] = {}
    for n in range(40):
        st = base("identity")
        st.identity.attributes.clear()
        st.identity.attributes[f"part{n}a"] = head
        st.identity.attributes[f"part{n}b"] = tail
        st = pb.Statement.FromString(st.SerializeToString())  # as the log reads it
        order = [st.identity.attributes[k] for k in st.identity.attributes]
        seen.setdefault(order == [head, tail], _verdict(st))
    assert set(seen) == {True, False}, "every pair iterated the same way: rerun"
    assert seen[True] != "accepted"
    assert seen[False] != "accepted", "refused only when the map iterates the pieces in order"
