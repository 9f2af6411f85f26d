"""Writing the search records server.search reads (its docstring gives the layout), in two
halves.

free_facets() is what a statement's records hold that needs no history: its hit record but
for the index, leaf hash, verdict and the grantors, approvers and tickets read from the log's
grants and approvals, as fragments of the stored JSON, and the index keys every such statement
has, each waiting for the 8-byte index. It runs where the statement is prepared (an ingest
worker process, or a verifier thread), off the integrator; index_statement(), in the integrator,
adds what the log decides and writes them all into the batch.

Invariant: the bytes are those of the hit record as one dict in Facets' order, encoded by
json with separators (",", ":") and ASCII escapes, and of one empty-valued key per (field,
value) as listed in server.search (tests/test_search_index_halves.py compares them with that
encoding on generated statements). Only statements rules are imported here, so an ingest
worker can import it without the server.

Where the C core is built (server/_facetcore.c), free_facets() first reads an action's facets
from its signed bytes with it: it answers only for an action whose bytes and strings it can
read with certainty (its module doc says which), and declines the rest to the Python here, so
the bytes are the same either way (tests/test_facet_core.py compares the two).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii
from types import ModuleType
from typing import NamedTuple

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import compiled
from affidavit.statements.ingest import Prepared
from affidavit.statements.scope import MAX_CHAIN
from affidavit.statements.state import KV, GrantRecord, LogState, VerdictRecord

LISTS = (
    "actor",
    "grantor",
    "approver",
    "key",
    "resource",
    "tool",
    "trace",
    "action",
    "subject",
    "ticket",
    "effect",
    "result",
)
"""The list-valued facets, in the hit record's order."""
HIT = b"x/h/"
FIELD = b"x/f/"
TIME = b"x/t/"
_FIELD_PREFIX = {
    name: FIELD + name.encode() + b"\x00"
    for name in (*LISTS, "session", "statement", "verdict", "refused")
}
_GRANTOR, _APPROVER, _TICKET = (_FIELD_PREFIX[n] for n in ("grantor", "approver", "ticket"))
_VERDICT_KEYS: dict[int, bytes] = {
    number: _FIELD_PREFIX["verdict"] + name.encode() + b"\x00"
    for name, number in pb.Verdict.items()
}
"""Each verdict's index key but for the index: its name as pb.Verdict.Name gives it."""
CORE: ModuleType | None = compiled.load("_facetcore", "affidavit.server")
"""The C fast path of free_facets() for actions, or None (AFFIDAVIT_PURE_PYTHON=1, not built)."""


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


class FreeFacets(NamedTuple):
    """What a statement's search records hold that needs no history. A plain tuple, so it
    crosses an ingest worker's pipe cheaply. The JSON fragments are ASCII text; the key
    prefixes are complete keys but for the statement's index."""

    head: str
    ""","statement_id":...,"session":... (after the leaf hash, before the verdict)"""
    actor: str
    ""","actor":[...] (after the verdict reason, before the grantors)"""
    middle: str
    ""","key":[...] ... ,"subject":[...] (after the approvers, before the tickets)"""
    tail: str
    ""","effect":[...] ... ,"sequence":N} (after the tickets, to the end)"""
    reason: str | None
    """A refusal record's reason, which its hit shows as the verdict reason; None otherwise."""
    grantor: tuple[str, ...]
    approver: tuple[str, ...]
    ticket: tuple[str, ...]
    """The statement's own grantors, approvers and tickets (before those the log adds)."""
    ticket_chains: tuple[str, ...]
    """Grants whose chains add grantors and tickets (an action's)."""
    grantor_chains: tuple[str, ...]
    """Grants whose chains add grantors only (a delegated grant's parent)."""
    approval: str
    """The approval whose approver and tickets are added (an action's), or ""."""
    keys: tuple[bytes, ...]
    """The index keys of the statement's own facets, each followed by its index when written."""


_string: Callable[[str], str] = encode_basestring_ascii
"""A string as json writes it with ASCII escapes (json's own C function)."""


def _list(values: Sequence[str]) -> str:
    """A list of strings as json writes it with separators (",", ":") and ASCII escapes."""
    return "[" + ",".join(map(_string, values)) + "]" if values else "[]"


def _values(found: Sequence[str]) -> Sequence[str]:
    """A facet's values as stored: distinct, sorted, empty ones left out."""
    if len(found) < 2:  # most facets of a statement are empty: no set to sort
        return found if not found or found[0] else []
    return sorted({v for v in found if v})


_NONE: list[str] = []
"""A facet with no values (shared: free_facets only reads its lists)."""


def _one(value: str) -> list[str]:
    """_values([value]), without the call's list and length test: most facets hold one."""
    return [value] if value else _NONE


def free_facets(prepared: Prepared) -> FreeFacets:
    """The part of an admitted statement's search records that needs no history.
    prepared.signed.statement holds the bytes prepared.statement was decoded from (as
    statements.ingest.prepare gives them), or none: the C core reads those bytes, and declines
    to the Python when there are none."""
    if CORE is not None:
        fields = CORE.action_facets(prepared.signed.statement, prepared.signed.key_id)
        if fields is not None:
            return FreeFacets._make(fields)
    return _free_facets(prepared)


def _free_facets(prepared: Prepared) -> FreeFacets:
    """free_facets() in Python.

    Each body reads only the fields it has; the others stay empty (_NONE). Every list is
    as _values() leaves it (distinct, sorted, no empty value): a facet with one candidate
    value goes through _one()."""
    st = prepared.statement
    h = st.header
    body = st.WhichOneof("body") or ""
    issuer = h.issuer
    actor = _one(issuer)
    key: Sequence[str] = _one(prepared.signed.key_id)
    grantor: tuple[str, ...] = ()
    approver: tuple[str, ...] = ()
    ticket: tuple[str, ...] = ()
    resource = tool = trace = action = subject = effect = result = _NONE
    ticket_chains: tuple[str, ...] = ()
    grantor_chains: tuple[str, ...] = ()
    approval = ""
    reason = None
    phase = 0
    if body == "action":
        a = st.action
        phase = a.phase
        ticket_chains = tuple(a.grant_ids)
        approval = a.approval_id
        outcome = a.outcome
        effect, result = _one(outcome.effect_ref), _one(outcome.result_digest)
        credential = a.credential
        if credential.key_id or credential.token_jti:
            key = _values([prepared.signed.key_id, credential.key_id, credential.token_jti])
        operation = a.operation
        resource, tool = _one(operation.resource), _one(operation.tool_name)
        action, trace = _one(a.action_id), _one(a.correlation.trace_id)
    elif body == "identity":
        subject = _one(st.identity.identity_id)
    elif body == "grant":
        grantor, ticket = (issuer,), (st.grant.ticket,)
        if st.grant.parent_grant_id:
            grantor_chains = (st.grant.parent_grant_id,)
    elif body == "approval":
        approver, ticket = (issuer,), (st.approval.ticket,)
        action = _one(st.approval.action_id)
    elif body == "grant_revocation":
        subject = _one(st.grant_revocation.grant_id)
    elif body == "refusal":  # found by the claimed signer, not by the log that wrote it
        r = st.refusal
        actor, key = _one(r.identity_id), _one(r.key_id)
        reason = r.reason  # what a hit shows of why it was refused
    refusal = body == "refusal"
    keys = [
        prefix + v.encode() + b"\x00"
        for prefix, values in (
            # A refusal is never among what an identity itself signed, which actor / key return.
            (_FIELD_PREFIX["actor"], _NONE if refusal else actor),
            (_FIELD_PREFIX["key"], _NONE if refusal else key),
            (_FIELD_PREFIX["resource"], resource),
            (_FIELD_PREFIX["tool"], tool),
            (_FIELD_PREFIX["trace"], trace),
            (_FIELD_PREFIX["action"], action),
            (_FIELD_PREFIX["subject"], subject),
            (_FIELD_PREFIX["effect"], effect),
            (_FIELD_PREFIX["result"], result),
        )
        for v in values
    ]
    keys.append(_FIELD_PREFIX["session"] + h.session_id.encode() + b"\x00")
    keys.append(_FIELD_PREFIX["statement"] + h.statement_id.encode() + b"\x00")
    if refusal:  # found with `refused`, then filtered by the claimed signer (actor and key)
        keys.append(_FIELD_PREFIX["refused"] + b"1\x00")
    keys.append(TIME + h.client_time_ms.to_bytes(8, "big"))
    return FreeFacets(  # the kind is a oneof's name (an identifier): nothing to escape
        f',"statement_id":{_string(h.statement_id)},"kind":"{body}",'
        f'"issuer":{_string(issuer)},"client_time_ms":{h.client_time_ms},'
        f'"session":{_string(h.session_id)}',
        f',"actor":{_list(actor)}',
        f',"key":{_list(key)},"resource":{_list(resource)},"tool":{_list(tool)},'
        f'"trace":{_list(trace)},"action":{_list(action)},"subject":{_list(subject)}',
        f',"effect":{_list(effect)},"result":{_list(result)},"phase":{phase},'
        f'"sequence":{h.sequence}}}',
        reason,
        grantor,
        approver,
        ticket,
        ticket_chains,
        grantor_chains,
        approval,
        tuple(keys),
    )


def _chain(state: LogState, grant_id: str) -> list[GrantRecord]:
    """A grant and its parents, up to the root (or the first one not in the log)."""
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


def tickets_of(kv: KV, index: int) -> list[str]:
    """The tickets indexed for the statement at index (an approval's, read from its hit)."""
    raw = kv.get(HIT + u64(index))
    if raw is None:
        return []
    tickets: list[str] = json.loads(raw).get("ticket", [])
    return tickets


def index_statement(
    kv: KV,
    state: LogState,
    index: int,
    leaf_hash: bytes,
    free: FreeFacets,
    verdict: VerdictRecord | None,
) -> None:
    """Write the hit record and index keys of an admitted statement into the batch: its free
    facets (free_facets(), made where it was prepared) and what the log so far adds. (It runs
    in the integrator, under the interpreter lock, once a statement: the grantors, approvers
    and tickets are copied only when the log adds some, and the keys' prefixes are made once.)"""
    grantor: Sequence[str] = free.grantor
    approver: Sequence[str] = free.approver
    ticket: Sequence[str] = free.ticket
    if free.ticket_chains or free.grantor_chains or free.approval:
        grantor, approver, ticket = list(grantor), list(approver), list(ticket)
        for grant_id in free.ticket_chains:
            for record in _chain(state, grant_id):
                grantor.append(record.issuer)
                ticket.append(record.decoded().ticket)
        for grant_id in free.grantor_chains:
            for record in _chain(state, grant_id):
                grantor.append(record.issuer)
        if free.approval:
            approved = state.approval(free.approval)
            if approved is not None:
                approver.append(approved.issuer)
                ticket += tickets_of(kv, approved.index)
    grantor, approver, ticket = _values(grantor), _values(approver), _values(ticket)
    verdict_code, reason = (verdict.verdict, verdict.reason) if verdict is not None else (0, "")
    if free.reason is not None:
        reason = free.reason
    at = u64(index)
    put = kv.put
    hit = (
        f'{{"index":{index},"leaf_hash":"{leaf_hash.hex()}"{free.head},"verdict":{verdict_code},'
        f'"verdict_reason":{_string(reason)}{free.actor},"grantor":{_list(grantor)},'
        f'"approver":{_list(approver)}{free.middle},"ticket":{_list(ticket)}{free.tail}'
    )
    put(HIT + at, hit.encode())
    for prefix in free.keys:
        put(prefix + at, b"")
    suffix = b"\x00" + at
    for prefix, values in ((_GRANTOR, grantor), (_APPROVER, approver), (_TICKET, ticket)):
        for v in values:
            put(prefix + v.encode() + suffix, b"")
    if verdict_code:
        put(_VERDICT_KEYS[verdict_code] + at, b"")
