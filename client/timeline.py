"""Timelines: every statement of a session, a trace or an actor, in log order, with the gaps.

    tl = timeline(client, session="0197…")             # or trace=..., actor=...
    for event in tl.events: ...                         # proven entries, decoded
    tl.gaps, tl.broken, tl.unanswered                    # what the chains and actions lack

The statements come from the log's search, and each one is then fetched and proven included
in one checkpoint the client trusts (client/proven.py), so what is shown is what the log holds.
The search itself is the log's word, and a log could leave a statement out: so every session
chain a shown statement belongs to — (issuer, session id), sequence 0, 1, 2, ... each linked to
the one before by leaf hash — is read whole and checked. A sequence number the chain lacks is a
gap; a statement that does not link to the one before it is a broken link. Either means the
log's answer is incomplete (or the log refused to index what it holds): the chains are signed by
their issuers, so their numbering cannot be changed after the fact. The end of a chain is only
known once a session CLOSE states it (an open session may still grow): a session opened,
closed and whole is complete — everything its issuer recorded in it.

An INTENT is unanswered when the log holds no OUTCOME of its action (in any session) up to the
checkpoint: the agent never said how it went.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from affidavit.client.client import Client
from affidavit.client.proven import ProvenEntry, fetch_proven
from affidavit.client.verify import Verified
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.build import statement_of

_CHAINED = {"identity", "grant", "approval", "action", "session"}
"""Statement kinds an identity signs in its own session chain."""

MAX_EVENTS = 100_000
"""Most statements one timeline reads (its chains included): narrow it with a time window."""


@dataclass(frozen=True)
class Event:
    """One statement, proven in the timeline's checkpoint."""

    entry: ProvenEntry
    statement: pb.Statement
    key_id: str

    @property
    def index(self) -> int:
        return self.entry.index

    @property
    def chain(self) -> tuple[str, str]:
        return self.statement.header.issuer, self.statement.header.session_id


@dataclass(frozen=True)
class Gap:
    """Sequence numbers [first, last] of a session chain that the log did not return; the
    statement after them (if any) is at log index before_index."""

    issuer: str
    session_id: str
    first: int
    last: int
    before_index: int


@dataclass(frozen=True)
class BrokenLink:
    """A statement whose previous_hash is not the leaf hash of the chain's statement before it
    (a fork of the chain, or a different statement served under that sequence number)."""

    issuer: str
    session_id: str
    sequence: int
    index: int


@dataclass(frozen=True)
class SessionStatus:
    """Where a session chain shown in the timeline stands. complete: it was opened (its
    sequence 0 is an OPEN), closed (a CLOSE at sequence statements) and every statement in
    between is in the log, linked: everything its issuer recorded in it is in the timeline's
    chain reads."""

    issuer: str
    session_id: str
    opened: bool
    closed_at_index: int | None
    statements: int
    complete: bool


@dataclass(frozen=True)
class Timeline:
    checkpoint: Verified
    events: tuple[Event, ...]
    gaps: tuple[Gap, ...]
    broken: tuple[BrokenLink, ...]
    unanswered: tuple[Event, ...]
    sessions: tuple[SessionStatus, ...]
    beyond_checkpoint: int
    """Statements the search found that the checkpoint does not cover yet (not shown)."""

    @property
    def findings(self) -> int:
        return len(self.gaps) + len(self.broken)


def _all_hits(client: Client, **criteria: object) -> list[pb.SearchHit]:
    hits = []
    for hit in client.search(**criteria):
        hits.append(hit)
        if len(hits) > MAX_EVENTS:
            raise ValueError(
                f"more than {MAX_EVENTS} statements match: narrow it (--since / --until)"
            )
    return hits


def _events(entries: Iterable[ProvenEntry]) -> list[Event]:
    out = []
    for e in entries:
        signed = pb.SignedStatement.FromString(e.leaf)
        out.append(Event(e, statement_of(e.leaf), signed.key_id))
    return out


def _is_session_event(ev: Event, op: pb.SessionEvent.Op.ValueType) -> bool:
    st = ev.statement
    return st.WhichOneof("body") == "session" and st.session.op == op


def session_status(chain: list[Event], gaps: list[Gap], broken: list[BrokenLink]) -> SessionStatus:
    """The status of one session chain, from every statement the log returned of it."""
    ordered = sorted(chain, key=lambda e: (e.statement.header.sequence, e.index))
    first, last = ordered[0], ordered[-1]
    opened = first.statement.header.sequence == 0 and _is_session_event(first, pb.SessionEvent.OPEN)
    closed = _is_session_event(last, pb.SessionEvent.CLOSE)
    issuer, session_id = first.chain
    return SessionStatus(
        issuer,
        session_id,
        opened,
        last.index if closed else None,
        len(ordered),
        opened and closed and not gaps and not broken,
    )


def check_chain(events: list[Event]) -> tuple[list[Gap], list[BrokenLink]]:
    """Gaps and broken links of one session chain, given every statement the log returned of
    it (ascending by index)."""
    gaps: list[Gap] = []
    broken: list[BrokenLink] = []
    expected, previous = 0, b""
    for ev in sorted(events, key=lambda e: (e.statement.header.sequence, e.index)):
        h = ev.statement.header
        if h.sequence < expected:  # a second statement under a sequence number: a fork
            broken.append(BrokenLink(h.issuer, h.session_id, h.sequence, ev.index))
            continue
        if h.sequence > expected:  # the link after a gap cannot be checked
            gaps.append(Gap(h.issuer, h.session_id, expected, h.sequence - 1, ev.index))
        elif h.previous_hash != previous:
            broken.append(BrokenLink(h.issuer, h.session_id, h.sequence, ev.index))
        expected, previous = h.sequence + 1, ev.entry.leaf_hash
    return gaps, broken


def timeline(
    client: Client,
    *,
    session: str = "",
    trace: str = "",
    actor: str = "",
    since_ms: int = 0,
    until_ms: int = 0,
) -> Timeline:
    """The timeline of one session, trace or actor, optionally within a client-time window
    [since_ms, until_ms) (0 leaves a side open). See the module docstring."""
    if sum(bool(x) for x in (session, trace, actor)) != 1:
        raise ValueError("give exactly one of a session, a trace or an actor")
    criteria = {"session_id": session, "trace_id": trace, "actor": actor}
    hits = _all_hits(
        client,
        **{k: v for k, v in criteria.items() if v},
        time_from_ms=since_ms,
        time_to_ms=until_ms,
    )
    verified = client.checkpoint()
    size = verified.checkpoint.size
    shown = {h.index for h in hits if h.index < size}
    beyond = sum(h.index >= size for h in hits)
    # A record the log writes itself (a refusal, found by the identity it names) is in no
    # identity's session chain.
    chains = {(h.issuer, h.session_id) for h in hits if h.index < size and h.kind in _CHAINED}
    chain_indexes: set[int] = set()
    for issuer, session_id in sorted(chains):
        chain_indexes |= {
            h.index
            for h in _all_hits(client, actor=issuer, session_id=session_id)
            if h.index < size
        }
    if len(shown | chain_indexes) > MAX_EVENTS:
        raise ValueError(f"more than {MAX_EVENTS} statements to read: narrow the timeline")
    every = _events(fetch_proven(client, shown | chain_indexes, verified))
    by_chain: dict[tuple[str, str], list[Event]] = {}
    for ev in every:
        if ev.chain in chains:
            by_chain.setdefault(ev.chain, []).append(ev)
    gaps: list[Gap] = []
    broken: list[BrokenLink] = []
    sessions = []
    for chain in sorted(by_chain):
        g, b = check_chain(by_chain[chain])
        gaps += g
        broken += b
        sessions.append(session_status(by_chain[chain], g, b))
    events = [ev for ev in every if ev.index in shown]
    return Timeline(
        verified,
        tuple(events),
        tuple(gaps),
        tuple(broken),
        tuple(unanswered_intents(client, events, size)),
        tuple(sessions),
        beyond,
    )


def unanswered_intents(client: Client, events: Iterable[Event], size: int) -> list[Event]:
    """The INTENTs among events whose action has no OUTCOME in the log below size. An action
    is its agent's: another agent's OUTCOME with the same action id answers another action."""
    events = list(events)
    answered = {
        (ev.statement.action.actor.agent_id, ev.statement.action.action_id)
        for ev in events
        if ev.statement.WhichOneof("body") == "action"
        and ev.statement.action.phase == pb.AgentAction.OUTCOME
    }
    out = []
    for ev in events:
        st = ev.statement
        if st.WhichOneof("body") != "action" or st.action.phase != pb.AgentAction.INTENT:
            continue
        agent_id = st.action.actor.agent_id
        if (agent_id, st.action.action_id) in answered:
            continue
        if not any(
            h.index < size
            and h.kind == "action"
            and h.phase == pb.AgentAction.OUTCOME
            and h.issuer == agent_id  # an action's issuer is its actor (admission checks it)
            for h in client.search(action_id=st.action.action_id)
        ):
            out.append(ev)
    return out
