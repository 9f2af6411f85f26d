"""What each console page shows, read from the log through a verifying client.

Every function here takes a `Client` (holding the investigator's token and trust policy) and
returns plain records for a template; nothing here renders HTML. They block on gRPC, so the
application runs them in worker threads. What the log sends is verified as any client verifies
it: checkpoints against the pinned log key (and witness quorum), entries against their leaf
hashes, an action's evidence by `client.bundle.verify`, the same code `affidavit verify-bundle`
runs. The browser then re-checks an action page's evidence on its own (static/verify.js).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affidavit.client import bundle as bundles
from affidavit.client.client import Client, search_request
from affidavit.client.errors import NotFoundError, VerificationError
from affidavit.client.history import History, identity_history
from affidavit.merkle import note
from affidavit.merkle.cosignature import CosignatureV1Verifier
from affidavit.merkle.errors import MerkleError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from google.protobuf import json_format

from affidavit import merkle

RATE_WINDOW = 200
"""Newest entries whose client times give the log page's append rate."""

PAGE_SIZE = 100
"""Search results per page unless the investigator asks for another size (at most 1000)."""


def verdict_name(value: int) -> str:
    """ "IN_SCOPE", "OUT_OF_SCOPE", "NO_GRANT", or "" for statements that have no verdict."""
    return "" if value == pb.VERDICT_UNSPECIFIED else pb.Verdict.Name(pb.Verdict.ValueType(value))


# The log.


@dataclass(frozen=True)
class WitnessSeen:
    """A known witness: whether it cosigned the newest cosigned checkpoint, and when."""

    name: str
    cosigned_size: int | None
    timestamp: int | None

    def age_seconds(self, now: float) -> float | None:
        return None if self.timestamp is None else max(0.0, now - self.timestamp)


@dataclass(frozen=True)
class AuditStatus:
    """The newest audit report the console was pointed at (`affidavit audit --json` output)."""

    path: str
    ok: bool
    size: int
    findings: int
    severity_counts: dict[str, int]
    written: float


@dataclass(frozen=True)
class LogOverview:
    origin: str
    size: int
    root_hex: str
    note: str
    cosigned_size: int
    witnesses: tuple[WitnessSeen, ...]
    quorum: int
    rate_per_minute: float | None
    audit: AuditStatus | None


def _witnesses(client: Client, cosigned_note: str, cosigned_size: int) -> tuple[WitnessSeen, ...]:
    """Each witness the policy knows, with the time of its verified cosignature, if any."""
    verifiers = client.policy.witness_verifiers()
    seen: dict[str, int] = {}
    if cosigned_note:
        try:
            opened = note.open_note(cosigned_note, [client.policy.log_verifier(), *verifiers])
        except MerkleError:
            opened = None
        for v in verifiers:
            sig = None if opened is None else opened.verified_by(v.name, v.key_hash)
            if sig is not None and isinstance(v, CosignatureV1Verifier):
                seen[v.name] = v.timestamp(sig.signature)
    return tuple(
        WitnessSeen(v.name, cosigned_size if v.name in seen else None, seen.get(v.name))
        for v in verifiers
    )


def _rate(client: Client, size: int) -> float | None:
    """Statements per minute over the newest RATE_WINDOW entries, by their client times."""
    if size < 2:
        return None
    times = [
        build.statement_of(e.data).header.client_time_ms
        for e in client.entries(max(0, size - RATE_WINDOW), size)
    ]
    span_ms = max(times) - min(times)
    return None if span_ms <= 0 else (len(times) - 1) * 60_000 / span_ms


def audit_status(path: Path | None) -> AuditStatus | None:
    """The audit report at path, or None when none was given or it cannot be read as one."""
    if path is None:
        return None
    try:
        data: Any = json.loads(path.read_text())
        return AuditStatus(
            str(path),
            bool(data["ok"]),
            int(data["checkpoint"]["size"]),
            sum(int(n) for n in data["finding_counts"].values()),
            {str(k): int(v) for k, v in data["severity_counts"].items()},
            path.stat().st_mtime,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def log_overview(client: Client, audit_report: Path | None) -> LogOverview:
    """The log's newest checkpoint (verified), its witnesses and how recently each cosigned."""
    verified = client.checkpoint()
    raw = client.call(client.stub.GetCheckpoint, pb.GetCheckpointRequest())
    cp = verified.checkpoint
    return LogOverview(
        origin=cp.origin,
        size=cp.size,
        root_hex=cp.root_hash.hex(),
        note=verified.note,
        cosigned_size=raw.cosigned_size,
        witnesses=_witnesses(client, raw.cosigned_note, raw.cosigned_size),
        quorum=client.policy.quorum,
        rate_per_minute=_rate(client, cp.size),
        audit=audit_status(audit_report),
    )


# Statements.


@dataclass(frozen=True)
class Row:
    """One statement as a line of a table."""

    index: int
    time_ms: int
    kind: str
    issuer: str
    statement_id: str
    session_id: str
    sequence: int
    action_id: str
    agent: str
    """The agent whose action action_id is: an action's actor, or the agent an approval names
    (an action is its agent's action id)."""
    phase: str
    tool: str
    resource: str
    subject: str
    verdict: str
    verdict_reason: str
    leaf_hash: str


def row_of(index: int, leaf: bytes, verdict: int = 0, reason: str = "") -> Row:
    """A table row from an entry's exact bytes (and the verdict the log recorded for it)."""
    st = build.statement_of(leaf)
    body = st.WhichOneof("body") or ""
    action_id = agent = phase = tool = resource = subject = ""
    if body == "action":
        a = st.action
        action_id, agent, phase = a.action_id, a.actor.agent_id, pb.AgentAction.Phase.Name(a.phase)
        tool, resource = a.operation.tool_name, a.operation.resource
    elif body == "grant":
        subject, tool = st.grant.grantee, ", ".join(st.grant.tools)
        resource = ", ".join(st.grant.resources)
    elif body == "approval":
        action_id, agent = st.approval.action_id, st.approval.agent_id
        phase = pb.Approval.Decision.Name(st.approval.decision)
    elif body == "identity":
        subject = st.identity.identity_id
        phase = pb.IdentityEvent.Op.Name(st.identity.op)
    return Row(
        index=index,
        time_ms=st.header.client_time_ms,
        kind=body,
        issuer=st.header.issuer,
        statement_id=st.header.statement_id,
        session_id=st.header.session_id,
        sequence=st.header.sequence,
        action_id=action_id,
        agent=agent,
        phase=phase,
        tool=tool,
        resource=resource,
        subject=subject,
        verdict=verdict_name(verdict),
        verdict_reason=reason,
        leaf_hash=merkle.leaf_hash(leaf).hex(),
    )


def _leaves(client: Client, indexes: list[int]) -> dict[int, bytes]:
    """The exact bytes of each entry at indexes, read in runs of consecutive indexes."""
    leaves: dict[int, bytes] = {}
    runs: list[list[int]] = []
    for i in sorted(set(indexes)):
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        for entry in client.entries(run[0], run[-1] + 1):
            leaves[entry.index] = entry.data
    return leaves


@dataclass(frozen=True)
class SearchPage:
    rows: tuple[Row, ...]
    next_index: int
    """Where the next page starts; 0 when there are no more results."""


def search(client: Client, criteria: dict[str, Any], start: int, page_size: int) -> SearchPage:
    """One page of a search (criteria as SearchRequest fields), each row decoded from its
    entry's exact bytes: carried by the hits (one RPC), each checked against the hit's leaf
    hash; read separately only where a log sends none."""
    request = search_request(**criteria, start_index=start, page_size=page_size, with_entries=True)
    response = client.call(client.stub.Search, request)
    hits = list(response.hits)
    leaves = _leaves(client, [h.index for h in hits if not h.entry])
    for h in hits:
        if h.entry:
            if merkle.leaf_hash(h.entry) != h.leaf_hash:
                raise VerificationError(f"entry {h.index} from the log is not what it claims")
            leaves[h.index] = h.entry
    rows = tuple(row_of(h.index, leaves[h.index], h.verdict, h.verdict_reason) for h in hits)
    return SearchPage(rows, response.next_index)


def _all_hits(client: Client, **criteria: Any) -> list[pb.SearchHit]:
    return list(client.search(**criteria))


# One action.


@dataclass(frozen=True)
class ActionView:
    """An action's verified evidence bundle and the story it proves."""

    bundle: bundles.Bundle
    report: bundles.Report
    rows: tuple[Row, ...]
    bundle_json: str


class NotFound(Exception):
    """What the page asks for is not in the log."""


AgentNeeded = bundles.AmbiguousActionError
"""The page names an action id several agents used (.agents, sorted) and not whose: the
export's own error, passed through (one error type for the one failure)."""


def action(client: Client, action_id: str, agent_id: str | None = None) -> ActionView:
    """The evidence of one action: exported and verified exactly as `affidavit export` does.
    agent_id names the agent whose action it is, where several used the id (AgentNeeded if
    they did and it is None)."""
    hits = {h.index: h for h in client.search(action_id=action_id)}
    if not hits:
        raise NotFound(f"no statement about action {action_id!r} is in the log")
    try:
        bundle = bundles.export(client, action_id=action_id, agent_id=agent_id)
    except bundles.ExportError as e:
        raise NotFound(str(e)) from None
    text = bundle.to_json()
    report = bundles.verify(text, client.policy)
    rows = tuple(
        row_of(
            e.index,
            e.leaf,
            hits[e.index].verdict if e.index in hits else 0,
            hits[e.index].verdict_reason if e.index in hits else "",
        )
        for e in bundle.entries
    )
    return ActionView(bundle, report, rows, text)


# One entry.


@dataclass(frozen=True)
class EntryView:
    """One entry: its row, the statement decoded as JSON, and its verified inclusion."""

    row: Row
    decoded: str
    tree_size: int


def entry(client: Client, index: int) -> EntryView:
    """The entry at index, its inclusion in the newest trusted checkpoint verified."""
    size = client.checkpoint().checkpoint.size
    if not 0 <= index < size:
        raise NotFound(f"the log has no entry {index} (its size is {size})")
    leaves = _leaves(client, [index])
    proof, cp = client.prove(index=index)
    if proof.leaf_hash != merkle.leaf_hash(leaves[index]):
        raise VerificationError(f"entry {index} is not the leaf the log proves at {index}")
    hits = list(client.search(statement_id=build.statement_of(leaves[index]).header.statement_id))
    hit = next((h for h in hits if h.index == index), None)
    row = row_of(index, leaves[index], hit.verdict if hit else 0, hit.verdict_reason if hit else "")
    decoded = json_format.MessageToJson(
        build.statement_of(leaves[index]), preserving_proto_field_name=True, indent=2
    )
    return EntryView(row, decoded, cp.checkpoint.size)


# A session.


@dataclass(frozen=True)
class Gap:
    """Sequence numbers of an issuer's session with no statement in the log."""

    first: int
    last: int


@dataclass(frozen=True)
class Chain:
    """One issuer's statements in a session, in sequence order, with the gaps between them."""

    issuer: str
    items: tuple[Row | Gap, ...]
    broken_links: tuple[int, ...]
    """Sequences whose previous_hash is not the leaf hash of the statement before them."""


def chains(statements: list[tuple[pb.Statement, Row]]) -> tuple[Chain, ...]:
    """Statements of one session grouped by issuer, each in sequence order, with a Gap for every
    run of sequence numbers that has no statement and every broken previous-hash link named."""
    by_issuer: dict[str, list[tuple[pb.Statement, Row]]] = {}
    for st, row in statements:
        by_issuer.setdefault(st.header.issuer, []).append((st, row))
    out = []
    for issuer, items in sorted(by_issuer.items()):
        items.sort(key=lambda item: (item[0].header.sequence, item[1].index))
        shown: list[Row | Gap] = []
        broken: list[int] = []
        expected = 0
        previous: Row | None = None
        for st, row in items:
            seq = st.header.sequence
            if seq > expected:
                shown.append(Gap(expected, seq - 1))
            if (
                previous is not None
                and previous.sequence == seq - 1
                and st.header.previous_hash.hex() != previous.leaf_hash
            ):
                broken.append(seq)
            shown.append(row)
            expected, previous = max(expected, seq + 1), row
        out.append(Chain(issuer, tuple(shown), tuple(broken)))
    return tuple(out)


def session(client: Client, session_id: str) -> tuple[Chain, ...]:
    """Every statement of a session by issuer, in sequence order, gaps shown as gaps."""
    hits = _all_hits(client, session_id=session_id)
    if not hits:
        raise NotFound(f"no statement of session {session_id!r} is in the log")
    leaves = _leaves(client, [h.index for h in hits])
    return chains(
        [
            (
                build.statement_of(leaves[h.index]),
                row_of(h.index, leaves[h.index], h.verdict, h.verdict_reason),
            )
            for h in hits
        ]
    )


# An identity.


def identity(client: Client, identity_id: str) -> History:
    """An identity's lifecycle, each key and when it was valid, and the attempts the log
    refused in its name: `affidavit identity history`'s reading (client.history), one rule."""
    try:
        return identity_history(client, identity_id)
    except NotFoundError as e:
        raise NotFound(e.message) from None


def now() -> float:
    """Wall-clock seconds, for ages shown on pages."""
    return time.time()
