"""Investigation: a session's, trace's or actor's timeline, and an identity's key history.

Each answers in one command what an investigator would otherwise loop `affidavit get` for;
every statement shown is proven included in one checkpoint the client trusts.
"""

from __future__ import annotations

import base64
import sys
from typing import Any

import click
from affidavit.client.cli.options import (
    EXIT_VERIFY,
    TIME,
    TIME_FORMS,
    Conn,
    connection,
    handle_errors,
    utc_text,
)
from affidavit.client.cli.searching import table
from affidavit.client.history import History, identity_history
from affidavit.client.jsonform import message_json
from affidavit.client.timeline import Event, SessionStatus, Timeline, timeline
from affidavit.proto import affidavit_pb2 as pb

# Timelines.


def what(st: pb.Statement) -> str:
    """A statement in a few words: an action's phase, or what the statement does."""
    body = st.WhichOneof("body")
    if body == "action":
        return pb.AgentAction.Phase.Name(st.action.phase)
    if body == "identity":
        op = pb.IdentityEvent.Op.Name(st.identity.op)
        return f"identity {op} {st.identity.identity_id}"
    if body == "grant":
        return f"grant to {st.grant.grantee}"
    if body == "approval":
        decision = pb.Approval.Decision.Name(st.approval.decision)
        return f"approval {decision}"
    if body == "session":
        return f"session {pb.SessionEvent.Op.Name(st.session.op)}"
    return body or "-"


def effect(st: pb.Statement) -> str:
    if st.WhichOneof("body") != "action" or st.action.phase != pb.AgentAction.OUTCOME:
        return "-"
    o = st.action.outcome
    parts = [pb.OutcomeStatus.Name(o.status), o.effect_ref, o.error_code]
    return " ".join(p for p in parts if p)


def event_json(ev: Event) -> dict[str, Any]:
    st, h = ev.statement, ev.statement.header
    a = st.action
    is_action = st.WhichOneof("body") == "action"
    return {
        "index": ev.index,
        "leaf_hash": ev.entry.leaf_hash.hex(),
        "time": utc_text(h.client_time_ms),
        "client_time_ms": h.client_time_ms,
        "issuer": h.issuer,
        "key_id": ev.key_id,
        "session_id": h.session_id,
        "sequence": h.sequence,
        "statement_id": h.statement_id,
        "kind": st.WhichOneof("body") or "",
        "what": what(st),
        "action_id": a.action_id if is_action else st.approval.action_id,
        "phase": pb.AgentAction.Phase.Name(a.phase) if is_action else "",
        "tool": a.operation.tool_name if is_action else "",
        "resource": a.operation.resource if is_action else "",
        "verdict": pb.Verdict.Name(pb.Verdict.ValueType(ev.entry.verdict))
        if ev.entry.verdict
        else "",
        "verdict_reason": ev.entry.verdict_reason,
        "effect": effect(st),
        "statement": message_json(st),
    }


TIMELINE_HEADER = (
    "INDEX",
    "TIME (UTC)",
    "ISSUER",
    "SEQ",
    "WHAT",
    "ACTION ID",
    "TOOL",
    "RESOURCE",
    "VERDICT",
    "EFFECT",
)


def _timeline_text(tl: Timeline, title: str, show_session: bool) -> str:
    gaps_before: dict[int, list[str]] = {}
    for g in tl.gaps:
        seqs = f"sequence {g.first}" if g.first == g.last else f"sequences {g.first}-{g.last}"
        gaps_before.setdefault(g.before_index, []).append(
            f"--- GAP: {seqs} of session {g.session_id} of {g.issuer} missing from the log's "
            "answer ---"
        )
    header = list(TIMELINE_HEADER)
    if show_session:
        header.insert(3, "SESSION")
    rows: list[list[str]] = []
    interleaved: list[tuple[str, Any]] = []
    for ev in tl.events:
        for line in gaps_before.pop(ev.index, []):
            interleaved.append(("line", line))
        d = event_json(ev)
        verdict = d["verdict"] + (f" ({d['verdict_reason']})" if d["verdict_reason"] else "")
        row = [
            str(d["index"]),
            d["time"],
            d["issuer"],
            str(d["sequence"]),
            d["what"],
            d["action_id"] or "-",
            d["tool"] or "-",
            d["resource"] or "-",
            verdict or "-",
            d["effect"],
        ]
        if show_session:
            row.insert(3, d["session_id"])
        rows.append(row)
        interleaved.append(("row", len(rows) - 1))
    # Gaps not followed by a shown statement (the chain's next one is outside the selection).
    trailing = [line for lines in gaps_before.values() for line in lines]
    lines = table(header, rows).splitlines() if rows else []
    out = [title, lines[0]] if lines else [title]
    for kind, value in interleaved:
        out.append(value if kind == "line" else lines[1 + value])
    out += trailing
    for b in tl.broken:
        out.append(
            f"--- BROKEN LINK: sequence {b.sequence} of session {b.session_id} of {b.issuer} "
            f"(index {b.index}) does not follow the chain's statement before it ---"
        )
    for status in tl.sessions:
        out.append(_session_line(status))
    for ev in tl.unanswered:
        out.append(
            f"INTENT without an OUTCOME: action {ev.statement.action.action_id} "
            f"(index {ev.index}): no OUTCOME in the log"
        )
    if tl.beyond_checkpoint:
        out.append(
            f"{tl.beyond_checkpoint} newer statement(s) are not yet in a checkpoint the policy "
            "accepts (not shown)"
        )
    if tl.findings:
        out.append(
            f"FINDINGS: {len(tl.gaps)} gap(s), {len(tl.broken)} broken link(s) in the session "
            "chains: the log's answer is incomplete"
        )
    return "\n".join(out)


def _session_line(s: SessionStatus) -> str:
    name = f"session {s.session_id} of {s.issuer}"
    if s.complete:
        return (
            f"{name}: COMPLETE: opened, closed at index {s.closed_at_index}, all "
            f"{s.statements} statement(s) linked"
        )
    state = ["opened" if s.opened else "no OPEN recorded"]
    state.append(
        f"closed at index {s.closed_at_index}"
        if s.closed_at_index is not None
        else "not closed (it may still grow)"
    )
    return f"{name}: {', '.join(state)}; {s.statements} statement(s) read"


def _timeline_json(tl: Timeline) -> dict[str, Any]:
    return {
        "checkpoint_size": tl.checkpoint.checkpoint.size,
        "statements": [event_json(ev) for ev in tl.events],
        "gaps": [
            {
                "issuer": g.issuer,
                "session_id": g.session_id,
                "first_sequence": g.first,
                "last_sequence": g.last,
                "before_index": g.before_index,
            }
            for g in tl.gaps
        ],
        "broken_links": [
            {
                "issuer": b.issuer,
                "session_id": b.session_id,
                "sequence": b.sequence,
                "index": b.index,
            }
            for b in tl.broken
        ],
        "intents_without_outcome": [
            {"action_id": ev.statement.action.action_id, "index": ev.index} for ev in tl.unanswered
        ],
        "sessions": [
            {
                "issuer": s.issuer,
                "session_id": s.session_id,
                "opened": s.opened,
                "closed_at_index": s.closed_at_index,
                "statements": s.statements,
                "complete": s.complete,
            }
            for s in tl.sessions
        ],
        "beyond_checkpoint": tl.beyond_checkpoint,
        "findings": tl.findings,
    }


@click.command("timeline")
@click.option("--session", default="", help="Every statement of this session id.")
@click.option("--trace", default="", help="Every statement of this W3C trace id.")
@click.option("--actor", default="", help="Every statement this identity issued.")
@click.option("--since", type=TIME, default=0, help=f"Only from this client time: {TIME_FORMS}.")
@click.option("--until", type=TIME, default=0, help="Only before this client time (same forms).")
@connection
@handle_errors
def timeline_command(
    conn: Conn, session: str, trace: str, actor: str, since: int, until: int
) -> None:
    """Every statement of a session, trace or actor in log order: phase, tool, resource,
    verdict and effect (needs --token).

    Each statement is proven included in one trusted checkpoint. The session chains the
    statements belong to are read whole: a sequence number missing from the log's answer is
    shown as a GAP and a statement that does not link to the one before as a BROKEN LINK; both
    exit 1. INTENTs with no OUTCOME anywhere in the log are listed.
    """
    if sum(bool(x) for x in (session, trace, actor)) != 1:
        raise click.UsageError("give one of --session, --trace or --actor")
    with conn.client() as client:
        tl = timeline(
            client,
            session=session,
            trace=trace,
            actor=actor,
            since_ms=since,
            until_ms=until,
        )
    subject = f"session {session}" if session else f"trace {trace}" if trace else f"actor {actor}"
    title = (
        f"timeline of {subject}: {len(tl.events)} statement(s), each proven in the checkpoint "
        f"of size {tl.checkpoint.checkpoint.size}"
    )
    conn.out.emit(_timeline_text(tl, title, show_session=not session), _timeline_json(tl))
    if tl.findings:
        sys.exit(EXIT_VERIFY)


# Identity history.


def _received(first_ms: int, last_ms: int) -> str:
    """When the log received refused attempts: one time, or the span of an aggregate."""
    if first_ms == last_ms:
        return utc_text(first_ms)
    return f"{utc_text(first_ms)} .. {utc_text(last_ms)}"


def _history_text(h: History) -> str:
    status = "revoked" if h.revoked_at is not None else "active"
    head = f"identity {h.identity_id} ({h.kind}), {status}" + (
        f", owner {h.owner}" if h.owner else ""
    )
    key_rows = [
        [
            k.key_id,
            f"{k.from_index} ({utc_text(k.from_time_ms)})",
            "-" if k.until_index is None else f"{k.until_index} ({utc_text(k.until_time_ms or 0)})",
            k.ended_by or "current",
            str(h.refused_count(k.key_id)),
        ]
        for k in h.keys
    ]
    event_rows = [
        [str(e.index), utc_text(e.time_ms), e.op, e.signed_by, e.key_id or "-"] for e in h.events
    ]
    lines = [
        head,
        "",
        table(("KEY ID", "VALID FROM INDEX", "UNTIL INDEX", "ENDED BY", "REFUSED"), key_rows),
        "",
        table(("INDEX", "TIME (UTC)", "EVENT", "SIGNED BY", "KEY ID"), event_rows),
        "",
    ]
    if h.refused:
        attempts = sum(r.count for r in h.refused)
        lines.append(
            f"refused attempts: {attempts} in {len(h.refused)} record(s) signed by the log"
        )
        rows = [
            [
                str(r.index),
                _received(r.first_ms, r.last_ms),
                r.issuer or "-",
                r.key_id or "-",
                r.reason,
                str(r.count),
                r.source,
            ]
            for r in h.refused
        ]
        header = ("INDEX", "RECEIVED (UTC)", "CLAIMED ISSUER", "CLAIMED KEY", "REASON", "ATTEMPTS")
        lines += [table((*header, "SOURCE"), rows), ""]
    else:
        lines += ["refused attempts: none on the record", ""]
    lines.append(
        f"proven in the checkpoint of size {h.checkpoint.checkpoint.size}; statements a "
        "key signed: affidavit search --key-id KEY_ID"
    )
    return "\n".join(lines)


def _history_json(h: History) -> dict[str, Any]:
    return {
        "identity_id": h.identity_id,
        "kind": h.kind,
        "owner": h.owner,
        "display_name": h.display_name,
        "revoked_at": h.revoked_at,
        "keys": [
            {
                "key_id": k.key_id,
                "public_key": base64.b64encode(k.public_key).decode("ascii"),
                "valid_from_index": k.from_index,
                "valid_from_time_ms": k.from_time_ms,
                "valid_until_index": k.until_index,
                "valid_until_time_ms": k.until_time_ms,
                "ended_by": k.ended_by,
                "refused_attempts": h.refused_count(k.key_id),
            }
            for k in h.keys
        ],
        "events": [
            {
                "index": e.index,
                "client_time_ms": e.time_ms,
                "op": e.op,
                "signed_by": e.signed_by,
                "key_id": e.key_id,
            }
            for e in h.events
        ],
        "refused": [
            {
                "index": r.index,
                "leaf_hash": r.leaf_hash.hex(),
                "refused_leaf_hash": r.refused_leaf_hash.hex(),
                "claimed_issuer": r.issuer,
                "claimed_key_id": r.key_id,
                "reason": r.reason,
                "source": r.source,
                "count": r.count,
                "first_ms": r.first_ms,
                "last_ms": r.last_ms,
            }
            for r in h.refused
        ],
        "checkpoint_size": h.checkpoint.checkpoint.size,
    }


@click.command("history")
@click.argument("identity_id")
@connection
@handle_errors
def identity_history_command(conn: Conn, identity_id: str) -> None:
    """Each key IDENTITY_ID held, with the log indexes and times in which it was valid, how
    it ended (rotation, revocation), every identity event about it, and the attempts the log
    refused that claimed it or one of its keys (needs --token).

    Everything shown is proven included in one trusted checkpoint; the refusal records are
    the log's own statements, checked against the log's key. A record may stand for several
    attempts (ATTEMPTS, over the RECEIVED span): the log records the first few distinct
    attempts per source at once and counts the rest until its refusal window closes.
    """
    with conn.client() as client:
        h = identity_history(client, identity_id)
    conn.out.emit(_history_text(h), _history_json(h))
