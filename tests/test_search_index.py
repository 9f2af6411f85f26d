"""server.search_index's records (read by server.search), pinned byte for byte: search reads
the hit records and index keys data directories already hold, so the way they are written may
change (faster), the bytes may not."""

from __future__ import annotations

import dataclasses
import json

from affidavit.proto import affidavit_pb2 as pb
from affidavit.server import search, search_index
from affidavit.statements.ingest import Prepared
from affidavit.statements.state import (
    ApprovalRecord,
    DictKV,
    GrantRecord,
    LogState,
    VerdictRecord,
)


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _state_with_a_delegated_grant_and_an_approval() -> tuple[DictKV, LogState]:
    """human-1 grants agent-1 (ticket CHG-1), agent-1 delegates to sub-1 (no ticket); human-1
    approved the action at index 5, whose hit record holds ticket CHG-2."""
    kv = DictKV()
    state = LogState(kv)
    root = pb.Grant(grantee="agent-1", ticket="CHG-1")
    child = pb.Grant(grantee="sub-1", parent_grant_id="g-root")
    state._put(b"s/g/g-root", GrantRecord("g-root", 2, "human-1", root.SerializeToString()))
    state._put(b"s/g/g-child", GrantRecord("g-child", 3, "agent-1", child.SerializeToString()))
    state._put(b"s/a/ap-1", ApprovalRecord("ap-1", 5, "human-1", "act-1", "sha256:00", 1, "sub-1"))
    kv.put(b"x/h/" + _u64(5), json.dumps({"ticket": ["CHG-2"]}).encode())
    return kv, state


def _intent() -> Prepared:
    statement = pb.Statement(
        header=pb.Header(
            statement_id="st-7",
            issuer="sub-1",
            session_id="s1",
            sequence=3,
            client_time_ms=1000,
        ),
        action=pb.AgentAction(
            phase=pb.AgentAction.INTENT,
            action_id="act-1",
            grant_ids=["g-child"],
            approval_id="ap-1",
            credential=pb.CredentialRef(key_id="cred-key", token_jti="jti-1"),
            operation=pb.Operation(tool_name="github.create_pull_request", resource="repo:a/b"),
            correlation=pb.Correlation(trace_id="t" * 32),
        ),
    )
    return Prepared(pb.SignedStatement(key_id="kid-sub"), statement, None)


def test_an_intent_is_indexed_under_every_facet_with_its_hit_record() -> None:
    kv, state = _state_with_a_delegated_grant_and_an_approval()
    before = set(kv.data)
    verdict = VerdictRecord(pb.IN_SCOPE, "", "g-child", 1000)
    search_index.index_statement(
        kv, state, 7, b"\x07" * 32, search_index.free_facets(_intent()), verdict
    )
    written = {k: v for k, v in kv.data.items() if k not in before}
    at = b"\x00" + _u64(7)
    assert written.pop(b"x/h/" + _u64(7)) == (
        b'{"index":7,"leaf_hash":"' + b"07" * 32 + b'","statement_id":"st-7","kind":"action",'
        b'"issuer":"sub-1","client_time_ms":1000,"session":"s1","verdict":1,'
        b'"verdict_reason":"","actor":["sub-1"],"grantor":["agent-1","human-1"],'
        b'"approver":["human-1"],"key":["cred-key","jti-1","kid-sub"],"resource":["repo:a/b"],'
        b'"tool":["github.create_pull_request"],"trace":["' + b"t" * 32 + b'"],'
        b'"action":["act-1"],"subject":[],"ticket":["CHG-1","CHG-2"],"effect":[],"result":[],'
        b'"phase":1,"sequence":3}'
    )
    fields = [
        b"actor\x00sub-1",
        b"grantor\x00agent-1",
        b"grantor\x00human-1",
        b"approver\x00human-1",
        b"key\x00cred-key",
        b"key\x00jti-1",
        b"key\x00kid-sub",
        b"resource\x00repo:a/b",
        b"tool\x00github.create_pull_request",
        b"trace\x00" + b"t" * 32,
        b"action\x00act-1",
        b"ticket\x00CHG-1",
        b"ticket\x00CHG-2",
        b"session\x00s1",
        b"statement\x00st-7",
        b"verdict\x00IN_SCOPE",
    ]
    expected = {b"x/f/" + f + at: b"" for f in fields}
    expected[b"x/t/" + _u64(1000) + _u64(7)] = b""
    assert written == expected


def test_a_refusal_is_found_only_as_refused() -> None:
    statement = pb.Statement(
        header=pb.Header(statement_id="st-9", issuer="log", session_id="refusals"),
        refusal=pb.Refusal(identity_id="mallory", key_id="kid-m", reason="bad-signature"),
    )
    kv = DictKV()
    prepared = Prepared(pb.SignedStatement(key_id="kid-log"), statement, None)
    search_index.index_statement(
        kv, LogState(kv), 9, b"\x09" * 32, search_index.free_facets(prepared), None
    )
    hit = json.loads(kv.data.pop(b"x/h/" + _u64(9)))
    assert (hit["actor"], hit["key"], hit["verdict_reason"]) == (
        ["mallory"],
        ["kid-m"],
        "bad-signature",
    )
    at = b"\x00" + _u64(9)
    assert kv.data == {
        b"x/f/refused\x001" + at: b"",
        b"x/f/session\x00refusals" + at: b"",
        b"x/f/statement\x00st-9" + at: b"",
        b"x/t/" + _u64(0) + _u64(9): b"",
    }


def test_the_hit_record_holds_the_fields_of_facets_in_order() -> None:
    """search() reads a hit back as Facets(**record); the stored JSON follows Facets' order."""
    kv, state = _state_with_a_delegated_grant_and_an_approval()
    verdict = VerdictRecord(pb.IN_SCOPE, "", "g-child", 1000)
    search_index.index_statement(
        kv, state, 7, b"\x07" * 32, search_index.free_facets(_intent()), verdict
    )
    hit = json.loads(kv.data[b"x/h/" + _u64(7)])
    assert list(hit) == [f.name for f in dataclasses.fields(search.Facets)]
    assert vars(search.Facets(**hit)) == hit
