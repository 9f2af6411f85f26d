"""Search indexes over statements, and the queries that use them.

Written in the integration batch of the statement they describe (so they cannot drift):

    x/h/<index>                          the hit record: what a search returns and filters on
    x/f/<field>\\x00<value>\\x00<index>    one key per (field, value) a statement has
    x/t/<client time ms><index>          by client time

Fields: actor, grantor (every grantor up the delegation chain), approver, key (signing key id,
credential key id or token jti), resource, tool, verdict, session, trace, statement (id),
action (action id) and subject (the identity an identity event is about). Integers are 8-byte
big-endian, so exact-value scans run in log order and pages resume by index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from affidavit.proto import affidavit_pb2 as pb
from affidavit.server.storage import Storage
from affidavit.statements.ingest import Prepared
from affidavit.statements.scope import MAX_CHAIN
from affidavit.statements.state import KV, LogState, VerdictRecord

MAX_PAGE = 1000
MAX_RANGE_SCAN = 200_000
"""Most index keys a prefix or time-window search reads before asking for a narrower query."""

_LISTS = ("actor", "grantor", "approver", "key", "resource", "tool", "trace", "action", "subject")
_HIT = b"x/h/"
_FIELD = b"x/f/"
_TIME = b"x/t/"


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


@dataclass
class Facets:
    """What a statement is about: the hit record, stored once per statement."""

    index: int
    leaf_hash: str
    statement_id: str
    kind: str
    issuer: str
    client_time_ms: int
    session: str
    verdict: int = 0
    verdict_reason: str = ""
    actor: list[str] = field(default_factory=list)
    grantor: list[str] = field(default_factory=list)
    approver: list[str] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    resource: list[str] = field(default_factory=list)
    tool: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    action: list[str] = field(default_factory=list)
    subject: list[str] = field(default_factory=list)

    def hit(self) -> pb.SearchHit:
        return pb.SearchHit(
            index=self.index,
            leaf_hash=bytes.fromhex(self.leaf_hash),
            statement_id=self.statement_id,
            kind=self.kind,
            issuer=self.issuer,
            client_time_ms=self.client_time_ms,
            verdict=pb.Verdict.ValueType(self.verdict),
            verdict_reason=self.verdict_reason,
        )


def _grantors(state: LogState, grant_id: str) -> list[str]:
    out = []
    for _ in range(MAX_CHAIN):
        record = state.grant(grant_id)
        if record is None:
            break
        out.append(record.issuer)
        grant_id = record.decoded().parent_grant_id
        if not grant_id:
            break
    return out


def facets_of(
    state: LogState, index: int, leaf_hash: bytes, prepared: Prepared, verdict: VerdictRecord | None
) -> Facets:
    st = prepared.statement
    h = st.header
    body = st.WhichOneof("body") or ""
    f = Facets(
        index, leaf_hash.hex(), h.statement_id, body, h.issuer, h.client_time_ms, h.session_id
    )
    f.actor.append(h.issuer)
    f.key.append(prepared.signed.key_id)
    if verdict is not None:
        f.verdict, f.verdict_reason = verdict.verdict, verdict.reason
    if body == "identity":
        f.subject.append(st.identity.identity_id)
    elif body == "grant":
        f.grantor.append(h.issuer)
        if st.grant.parent_grant_id:
            f.grantor += _grantors(state, st.grant.parent_grant_id)
    elif body == "approval":
        f.approver.append(h.issuer)
        f.action.append(st.approval.action_id)
    elif body == "action":
        a = st.action
        for grant_id in a.grant_ids:
            f.grantor += _grantors(state, grant_id)
        approval = state.approval(a.approval_id) if a.approval_id else None
        if approval is not None:
            f.approver.append(approval.issuer)
        f.key += [k for k in (a.credential.key_id, a.credential.token_jti) if k]
        f.resource.append(a.operation.resource)
        f.tool.append(a.operation.tool_name)
        f.action.append(a.action_id)
        if a.correlation.trace_id:
            f.trace.append(a.correlation.trace_id)
    for name in _LISTS:
        setattr(f, name, sorted(set(getattr(f, name))))
    return f


def index_statement(
    kv: KV,
    state: LogState,
    index: int,
    leaf_hash: bytes,
    prepared: Prepared,
    verdict: VerdictRecord | None,
) -> None:
    """Write the hit record and index keys of an admitted statement into the batch."""
    f = facets_of(state, index, leaf_hash, prepared, verdict)
    kv.put(_HIT + _u64(index), json.dumps(vars(f), separators=(",", ":")).encode())
    values = {name: getattr(f, name) for name in _LISTS}
    values["session"] = [f.session]
    values["statement"] = [f.statement_id]
    if f.verdict:
        values["verdict"] = [pb.Verdict.Name(pb.Verdict.ValueType(f.verdict))]
    for name, vs in values.items():
        for v in vs:
            kv.put(_FIELD + name.encode() + b"\x00" + v.encode() + b"\x00" + _u64(index), b"")
    kv.put(_TIME + _u64(f.client_time_ms) + _u64(index), b"")


class SearchError(ValueError):
    """A search that cannot be run as asked (no criteria, too broad)."""


def _exact(request: pb.SearchRequest) -> list[tuple[str, str]]:
    pairs = [
        ("actor", request.actor),
        ("grantor", request.grantor),
        ("approver", request.approver),
        ("key", request.key_id),
        ("tool", request.tool),
        ("session", request.session_id),
        ("trace", request.trace_id),
        ("statement", request.statement_id),
        ("action", request.action_id),
        ("subject", request.subject),
        ("verdict", pb.Verdict.Name(request.verdict) if request.verdict else ""),
    ]
    return [(name, value) for name, value in pairs if value]


def _matches(f: Facets, request: pb.SearchRequest) -> bool:
    for name, value in _exact(request):
        if name == "session":
            ok = f.session == value
        elif name == "statement":
            ok = f.statement_id == value
        elif name == "verdict":
            ok = f.verdict == request.verdict
        else:
            ok = value in getattr(f, name)
        if not ok:
            return False
    if request.resource_prefix and not any(
        r.startswith(request.resource_prefix) for r in f.resource
    ):
        return False
    if request.time_from_ms and f.client_time_ms < request.time_from_ms:
        return False
    return not (request.time_to_ms and f.client_time_ms >= request.time_to_ms)


def _candidates(storage: Storage, request: pb.SearchRequest) -> Iterator[int]:
    """Indexes that may match, ascending from start_index, from the most direct index."""
    exact = _exact(request)
    start = request.start_index
    if exact:
        name, value = exact[0]
        prefix = _FIELD + name.encode() + b"\x00" + value.encode() + b"\x00"
        for key, _ in storage.scan(prefix, _u64(start)):
            yield int.from_bytes(key[-8:], "big")
        return
    found: list[int] = []
    if request.resource_prefix:
        scan = storage.scan(_FIELD + b"resource\x00" + request.resource_prefix.encode())
    else:
        scan = storage.scan(_TIME, _u64(request.time_from_ms))
    for n, (key, _) in enumerate(scan):
        if n >= MAX_RANGE_SCAN:
            raise SearchError(
                "the search matches too much; add an exact criterion (actor, tool, ...)"
            )
        if (
            key.startswith(_TIME)
            and request.time_to_ms
            and int.from_bytes(key[4:12], "big") >= request.time_to_ms
        ):
            break
        index = int.from_bytes(key[-8:], "big")
        if index >= start:
            found.append(index)
    yield from sorted(set(found))


def search(storage: Storage, request: pb.SearchRequest) -> pb.SearchResponse:
    """One page of hits, oldest first."""
    if not (
        _exact(request) or request.resource_prefix or request.time_from_ms or request.time_to_ms
    ):
        raise SearchError(
            "give at least one criterion: actor, grantor, approver, key_id, resource_prefix, tool, "
            "verdict, session_id, trace_id, statement_id, action_id, subject or a time window"
        )
    limit = min(request.page_size or MAX_PAGE, MAX_PAGE)
    hits: list[pb.SearchHit] = []
    for index in _candidates(storage, request):
        if len(hits) == limit:
            return pb.SearchResponse(hits=hits, next_index=index)
        raw = storage.get(_HIT + _u64(index))
        if raw is None:
            continue
        f = Facets(**json.loads(raw))
        if _matches(f, request):
            hits.append(f.hit())
    return pb.SearchResponse(hits=hits, next_index=0)
