"""server.search_index writes a statement's search records in two halves (its free facets, made
where it is prepared, and what the log adds in the integrator): on generated statements of
every kind, with grant chains, approvals and verdicts, the records are byte for byte those of
one dict in Facets' order encoded by json, as the index wrote them before the split (the
reference below is that earlier code), whether the facets came with the prepared statement or
are made at indexing."""

from __future__ import annotations

import json
from typing import Any

from affidavit.proto import affidavit_pb2 as pb
from affidavit.server import search_index
from affidavit.statements.ingest import Prepared
from affidavit.statements.scope import MAX_CHAIN
from affidavit.statements.state import (
    KV,
    ApprovalRecord,
    DictKV,
    GrantRecord,
    LogState,
    VerdictRecord,
)
from hypothesis import given, settings
from hypothesis import strategies as st

_LISTS = search_index.LISTS
_REFUSAL_LISTS = tuple(n for n in _LISTS if n not in ("actor", "key"))


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _ref_values(found: list[str]) -> list[str]:
    return sorted({v for v in found if v})


def _ref_chain(state: LogState, grant_id: str) -> list[GrantRecord]:
    out = []
    for _ in range(MAX_CHAIN):
        record = state.grant(grant_id)
        if record is None:
            break
        out.append(record)
        grant_id = record.decoded().parent_grant_id
        if not grant_id:
            break
    return out


def _reference(
    kv: KV, state: LogState, index: int, leaf: bytes, p: Prepared, verdict: VerdictRecord | None
) -> dict[bytes, bytes]:
    """The records as the index wrote them before the split (one dict, json.dumps)."""
    s = p.statement
    h = s.header
    body = s.WhichOneof("body") or ""
    facets: dict[str, list[str]] = {name: [] for name in _LISTS}
    facets["actor"], facets["key"] = [h.issuer], [p.signed.key_id]
    phase = 0
    code, reason = (verdict.verdict, verdict.reason) if verdict is not None else (0, "")
    if body == "action":
        a = s.action
        phase = a.phase
        for grant_id in a.grant_ids:
            for record in _ref_chain(state, grant_id):
                facets["grantor"].append(record.issuer)
                facets["ticket"].append(record.decoded().ticket)
        approval = state.approval(a.approval_id) if a.approval_id else None
        if approval is not None:
            facets["approver"].append(approval.issuer)
            raw = kv.get(b"x/h/" + _u64(approval.index))
            facets["ticket"] += json.loads(raw).get("ticket", []) if raw else []
        facets["effect"].append(a.outcome.effect_ref)
        facets["result"].append(a.outcome.result_digest)
        facets["key"] += [a.credential.key_id, a.credential.token_jti]
        facets["resource"].append(a.operation.resource)
        facets["tool"].append(a.operation.tool_name)
        facets["action"].append(a.action_id)
        facets["trace"].append(a.correlation.trace_id)
    elif body == "identity":
        facets["subject"].append(s.identity.identity_id)
    elif body == "grant":
        facets["grantor"].append(h.issuer)
        facets["ticket"].append(s.grant.ticket)
        if s.grant.parent_grant_id:
            for record in _ref_chain(state, s.grant.parent_grant_id):
                facets["grantor"].append(record.issuer)
    elif body == "approval":
        facets["approver"].append(h.issuer)
        facets["action"].append(s.approval.action_id)
        facets["ticket"].append(s.approval.ticket)
    elif body == "grant_revocation":
        facets["subject"].append(s.grant_revocation.grant_id)
    elif body == "refusal":
        facets["actor"], facets["key"] = [s.refusal.identity_id], [s.refusal.key_id]
        reason = s.refusal.reason
    hit: dict[str, Any] = {
        "index": index,
        "leaf_hash": leaf.hex(),
        "statement_id": h.statement_id,
        "kind": body,
        "issuer": h.issuer,
        "client_time_ms": h.client_time_ms,
        "session": h.session_id,
        "verdict": code,
        "verdict_reason": reason,
    }
    hit.update({name: _ref_values(facets[name]) for name in _LISTS})
    hit.update(phase=phase, sequence=h.sequence)
    at = _u64(index)
    out = {b"x/h/" + at: json.dumps(hit, separators=(",", ":")).encode()}
    refusal = body == "refusal"
    fields = [(name, v) for name in (_REFUSAL_LISTS if refusal else _LISTS) for v in hit[name]]
    fields += [("session", h.session_id), ("statement", h.statement_id)]
    if refusal:
        fields.append(("refused", "1"))
    if code:
        fields.append(("verdict", pb.Verdict.Name(code)))  # type: ignore[arg-type]
    for name, value in fields:
        out[b"x/f/" + name.encode() + b"\x00" + value.encode() + b"\x00" + at] = b""
    out[b"x/t/" + _u64(h.client_time_ms) + at] = b""
    return out


# Text as protobuf carries it (no lone surrogates): quotes, controls, non-ASCII, empties.
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
_ids = st.sampled_from(["", "g-root", "g-child", "g-gone", "ap-1", "ap-2", 'q"uote', "é"])
_u63 = st.integers(min_value=0, max_value=2**63 - 1)


@st.composite
def _statements(draw: st.DrawFn) -> pb.Statement:
    header = pb.Header(
        statement_id=draw(_text),
        issuer=draw(_text),
        session_id=draw(_text),
        sequence=draw(_u63),
        client_time_ms=draw(_u63),
    )
    kind = draw(
        st.sampled_from(
            ["action", "identity", "grant", "approval", "grant_revocation", "refusal", "session"]
        )
    )
    if kind == "action":
        return pb.Statement(
            header=header,
            action=pb.AgentAction(
                phase=draw(st.sampled_from([pb.AgentAction.INTENT, pb.AgentAction.OUTCOME])),
                action_id=draw(_text),
                grant_ids=draw(st.lists(_ids, max_size=3)),
                approval_id=draw(_ids),
                credential=pb.CredentialRef(key_id=draw(_text), token_jti=draw(_text)),
                operation=pb.Operation(tool_name=draw(_text), resource=draw(_text)),
                correlation=pb.Correlation(trace_id=draw(_text)),
                outcome=pb.Outcome(effect_ref=draw(_text), result_digest=draw(_text)),
            ),
        )
    if kind == "identity":
        return pb.Statement(header=header, identity=pb.IdentityEvent(identity_id=draw(_text)))
    if kind == "grant":
        grant = pb.Grant(ticket=draw(_text), parent_grant_id=draw(_ids))
        return pb.Statement(header=header, grant=grant)
    if kind == "approval":
        approval = pb.Approval(action_id=draw(_text), ticket=draw(_text))
        return pb.Statement(header=header, approval=approval)
    if kind == "grant_revocation":
        revocation = pb.GrantRevocation(grant_id=draw(_text))
        return pb.Statement(header=header, grant_revocation=revocation)
    if kind == "refusal":
        refusal = pb.Refusal(identity_id=draw(_text), key_id=draw(_text), reason=draw(_text))
        return pb.Statement(header=header, refusal=refusal)
    return pb.Statement(header=header, session=pb.SessionEvent())


def _state(tickets: list[str], approval_hit: bool) -> tuple[DictKV, LogState]:
    """A delegated grant (g-child under g-root) and approvals ap-1 (its hit holding tickets,
    or absent) and ap-2 (an earlier statement's, with a hit of no tickets)."""
    kv = DictKV()
    state = LogState(kv)
    root = pb.Grant(grantee="agent-1", ticket=tickets[0] if tickets else "")
    child = pb.Grant(grantee="sub-1", parent_grant_id="g-root", ticket="CHG-é")
    state._put(b"s/g/g-root", GrantRecord("g-root", 2, "human-1", root.SerializeToString()))
    state._put(b"s/g/g-child", GrantRecord("g-child", 3, "agent\x01", child.SerializeToString()))
    state._put(b"s/a/ap-1", ApprovalRecord("ap-1", 5, "human-1", "act-1", "sha256:00", 1, "s"))
    state._put(b"s/a/ap-2", ApprovalRecord("ap-2", 6, "human-2", "act-2", "sha256:00", 1, "s"))
    if approval_hit:
        kv.put(b"x/h/" + _u64(5), json.dumps({"ticket": tickets}).encode())
    kv.put(b"x/h/" + _u64(6), b"{}")
    return kv, state


@settings(max_examples=400, deadline=None)
@given(
    statement=_statements(),
    key_id=_text,
    index=st.integers(min_value=100, max_value=2**63 - 1),  # after the fixture's records
    leaf=st.binary(min_size=32, max_size=32),
    verdict=st.one_of(
        st.none(),
        st.builds(
            VerdictRecord,
            st.sampled_from([v for _, v in pb.Verdict.items()]),
            _text,
            _text,
            _u63,
        ),
    ),
    tickets=st.lists(_text, max_size=3),
    approval_hit=st.booleans(),
)
def test_the_two_halves_write_the_records_the_one_dict_did(
    statement: pb.Statement,
    key_id: str,
    index: int,
    leaf: bytes,
    verdict: VerdictRecord | None,
    tickets: list[str],
    approval_hit: bool,
) -> None:
    prepared = Prepared(pb.SignedStatement(key_id=key_id), statement, None)
    kv, state = _state(tickets, approval_hit)
    expected = _reference(kv, state, index, leaf, prepared, verdict)
    free = search_index.free_facets(prepared)  # where it is prepared: a worker, a verify thread
    before = dict(kv.data)
    search_index.index_statement(kv, state, index, leaf, free, verdict)
    written = {k: v for k, v in kv.data.items() if k not in before}
    assert written == expected
