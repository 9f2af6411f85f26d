"""Search indexes over statements, and the queries that use them.

Written in the integration batch of the statement they describe (so they cannot drift), by
server.search_index:

    x/h/<index>                          the hit record: what a search returns and filters on
    x/f/<field>\\x00<value>\\x00<index>    one key per (field, value) a statement has
    x/t/<client time ms><index>          by client time

Fields: actor, grantor (every grantor up the delegation chain), approver, key (signing key id,
credential key id or token jti), resource, tool, verdict, session, trace, statement (id),
action (action id), subject (the identity an identity event is about, the grant a grant
revocation withdraws), refused (the log's records of refused statements, found by the
claimed signer as actor and key), ticket (a grant's or
approval's; an action's grants up the chain and its approval's), effect and result (an
OUTCOME's effect reference and result digest). Integers are 8-byte big-endian, so exact-value
scans run in log order and pages resume by index. A criterion with several values merges the
scans of each (in index order), so a page still resumes by index.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from affidavit.proto import affidavit_pb2 as pb
from affidavit.server.logstore import LogStore
from affidavit.server.search_index import FIELD, HIT, TIME, u64

MAX_PAGE = 1000
MAX_ENTRY_PAGE_BYTES = 3 << 20
"""Most entry bytes a page carries with with_entries: under gRPC's default 4 MiB message."""
MAX_RANGE_SCAN = 200_000
"""Most index keys a prefix or time-window search reads before asking for a narrower query."""


@dataclass
class Facets:
    """What a statement is about: the hit record, stored once per statement (as
    search_index.index_statement() writes it: the same fields, in this order)."""

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
    ticket: list[str] = field(default_factory=list)
    effect: list[str] = field(default_factory=list)
    result: list[str] = field(default_factory=list)
    phase: int = 0
    sequence: int = 0

    def hit(self) -> pb.SearchHit:
        return pb.SearchHit(
            action_id=self.action[0] if self.action else "",
            phase=pb.AgentAction.Phase.ValueType(self.phase),
            tool=self.tool[0] if self.tool else "",
            resource=self.resource[0] if self.resource else "",
            session_id=self.session,
            sequence=self.sequence,
            index=self.index,
            leaf_hash=bytes.fromhex(self.leaf_hash),
            statement_id=self.statement_id,
            kind=self.kind,
            issuer=self.issuer,
            client_time_ms=self.client_time_ms,
            verdict=pb.Verdict.ValueType(self.verdict),
            verdict_reason=self.verdict_reason,
        )


class SearchError(ValueError):
    """A search that cannot be run as asked (no criteria, too broad)."""


# Each exact criterion: the request field and the index field it is looked up in.
_CRITERIA = (
    ("actor", "actor"),
    ("grantor", "grantor"),
    ("approver", "approver"),
    ("key_id", "key"),
    ("tool", "tool"),
    ("session_id", "session"),
    ("trace_id", "trace"),
    ("statement_id", "statement"),
    ("action_id", "action"),
    ("subject", "subject"),
    ("ticket", "ticket"),
    ("effect_ref", "effect"),
    ("result_digest", "result"),
    ("verdict", "verdict"),
)
MAX_VALUES = 64
"""Most values one criterion may be given."""


def _exact(request: pb.SearchRequest) -> list[tuple[str, list[str]]]:
    """The exact criteria given, each as (index field, its values), most selective first: an
    identifier before a person, a person before a verdict (the first one drives the scan)."""
    out = []
    for request_field, name in _CRITERIA:
        raw = getattr(request, request_field)
        if request_field == "verdict":
            values = [pb.Verdict.Name(v) for v in raw if v]
        else:
            values = [v for v in raw if v]
        if values:
            out.append((name, sorted(set(values))))
    if request.refused:
        out.insert(0, ("refused", ["1"]))  # drives the scan: refusals are indexed only there
    order = ("statement", "action", "effect", "result", "subject", "trace", "session")
    out.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    return out


def _values_of(f: Facets, name: str) -> list[str]:
    if name == "session":
        return [f.session]
    if name == "statement":
        return [f.statement_id]
    if name == "verdict":
        return [pb.Verdict.Name(pb.Verdict.ValueType(f.verdict))] if f.verdict else []
    if name == "refused":
        return ["1"] if f.kind == "refusal" else []
    values: list[str] = getattr(f, name)
    return values


def _matches(f: Facets, request: pb.SearchRequest, exact: list[tuple[str, set[str]]]) -> bool:
    for name, wanted in exact:
        if not wanted & set(_values_of(f, name)):
            return False
    prefixes = [p for p in request.resource_prefix if p]
    if prefixes and not any(r.startswith(p) for r in f.resource for p in prefixes):
        return False
    if request.time_from_ms and f.client_time_ms < request.time_from_ms:
        return False
    return not (request.time_to_ms and f.client_time_ms >= request.time_to_ms)


def _field_scan(storage: LogStore, name: str, value: str, start: int) -> Iterator[int]:
    prefix = FIELD + name.encode() + b"\x00" + value.encode() + b"\x00"
    for key, _ in storage.scan(prefix, u64(start)):
        yield int.from_bytes(key[-8:], "big")


def _candidates(
    storage: LogStore, request: pb.SearchRequest, exact: list[tuple[str, list[str]]]
) -> Iterator[int]:
    """Indexes that may match, ascending from start_index, from the most direct index."""
    start = request.start_index
    if exact:
        name, values = exact[0]
        merged = heapq.merge(*(_field_scan(storage, name, v, start) for v in values))
        last = -1
        for index in merged:
            if index != last:
                yield index
            last = index
        return
    found: list[int] = []
    prefixes = [p for p in request.resource_prefix if p]
    if prefixes:
        scans = [storage.scan(FIELD + b"resource\x00" + p.encode()) for p in set(prefixes)]
    else:
        scans = [storage.scan(TIME, u64(request.time_from_ms))]
    n = 0
    for scan in scans:
        for key, _ in scan:
            n += 1
            if n > MAX_RANGE_SCAN:
                raise SearchError(
                    "the search matches too much; add an exact criterion (actor, tool, ...)"
                )
            if (
                key.startswith(TIME)
                and request.time_to_ms
                and int.from_bytes(key[4:12], "big") >= request.time_to_ms
            ):
                break
            index = int.from_bytes(key[-8:], "big")
            if index >= start:
                found.append(index)
    yield from sorted(set(found))


def search(storage: LogStore, request: pb.SearchRequest) -> pb.SearchResponse:
    """One page of hits, oldest first; next_index is the next hit's index, 0 when there is none
    (so a client can say for certain whether more results exist)."""
    exact = _exact(request)
    if not (exact or any(request.resource_prefix) or request.time_from_ms or request.time_to_ms):
        raise SearchError(
            "give at least one criterion: actor, grantor, approver, key_id, resource_prefix, tool, "
            "verdict, session_id, trace_id, statement_id, action_id, subject, ticket, "
            "effect_ref, result_digest, refused or a time window"
        )
    for request_field, _ in (*_CRITERIA, ("resource_prefix", "")):
        if len(getattr(request, request_field)) > MAX_VALUES:
            raise SearchError(f"{request_field} has more than {MAX_VALUES} values")
    limit = min(request.page_size or MAX_PAGE, MAX_PAGE)
    hits: list[pb.SearchHit] = []
    wanted = [(name, set(values)) for name, values in exact]  # once, not per candidate
    entry_bytes = 0
    for index in _candidates(storage, request, exact):
        raw = storage.get(HIT + u64(index))
        if raw is None:
            continue
        f = Facets(**json.loads(raw))
        if _matches(f, request, wanted):
            entry = storage.entry(index) if request.with_entries else None
            entry_bytes += len(entry or b"")
            if len(hits) == limit or (hits and entry_bytes > MAX_ENTRY_PAGE_BYTES):
                return pb.SearchResponse(hits=hits, next_index=index)  # the next page's first
            hit = f.hit()
            if entry is not None:
                hit.entry = entry
            hits.append(hit)
    return pb.SearchResponse(hits=hits, next_index=0)
