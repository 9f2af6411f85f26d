"""Evidence: export an action's bundle, verify one offline, and ask who authorised an action."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from affidavit.client.cli.options import (
    EXIT_NOT_AUTHORISED,
    TIME,
    TIME_FORMS,
    Conn,
    connection,
    handle_errors,
    message_dict,
)
from affidavit.client.errors import NotFoundError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.claims import producer_claims

if TYPE_CHECKING:  # imported when a command runs: the CLI starts without them
    from affidavit.client.bundle import Bundle
    from affidavit.client.client import Client

# Evidence.


def _report_data(report: Any) -> dict[str, Any]:
    return {
        "action_id": report.action_id,
        "agent": report.agent,
        "owner": report.owner,
        "in_scope": report.in_scope,
        "verdict": report.verdict,
        "verdict_reason": report.verdict_reason,
        "findings": list(report.findings),
        "authority": [
            {
                "grant_id": g.grant_id,
                "index": g.index,
                "grantor": g.grantor,
                "grantor_kind": g.grantor_kind,
                "ticket": g.grant.ticket,
                "revoked_at": g.revoked_at,
                "revoked_by": g.revoked_by or None,
            }
            for g in report.authority
        ],
        "approvals": [
            {
                "approval_id": a.approval_id,
                "index": a.index,
                "approver": a.approver,
                "ticket": a.approval.ticket,
                "decision": pb.Approval.Decision.Name(a.approval.decision),
                "problem": a.problem,
            }
            for a in report.approvals
        ],
        # What no rule checks: the producer says so (statements.claims).
        "producer_claims": producer_claims(report.intent)
        | (producer_claims(report.outcome) if report.outcome else {}),
        "intent": message_dict(report.intent),
        "outcome": message_dict(report.outcome) if report.outcome is not None else None,
        "checkpoint_size": report.checkpoint.size,
        "witnesses": [name for name, _ in report.witnesses],
        "summary": report.summary(),
    }


def _action_target(action_id: str | None, index: int | None, agent: str) -> dict[str, Any]:
    if (action_id is None) == (index is None):
        raise click.UsageError("give an ACTION_ID or --index")
    if index is not None:
        if agent:
            raise click.UsageError("--index names one action: --agent goes with an ACTION_ID")
        return {"index": index}
    return {"action_id": action_id, "agent_id": agent or None}


def _export_one(client: Client, target: dict[str, Any]) -> Bundle:
    """bundle.export of the one action target names; an id several agents used, asked without
    --agent, is a usage error naming them (the question names no one action)."""
    from affidavit.client import bundle

    try:
        return bundle.export(client, **target)
    except bundle.AmbiguousActionError as e:
        raise click.UsageError(
            f"{len(e.agents)} agents recorded an action {e.action_id} ({', '.join(e.agents)}): "
            "say whose with --agent <id>, or give --index of its INTENT"
        ) from None


_AGENT = click.option(
    "--agent",
    default="",
    help="With one ACTION_ID: the agent whose action it is, where several agents used the id "
    "(an action is its agent's action id).",
)


@click.command()
@click.argument("action_ids", nargs=-1, metavar="[ACTION_ID]...")
@click.option("--index", type=int, help="The action's INTENT or OUTCOME index instead of its id.")
@_AGENT
@click.option("--session", default="", help="Every action (or statement) of this session.")
@click.option("--trace", default="", help="Every action (or statement) of this W3C trace id.")
@click.option("--actor", default="", help="Every action (or statement) this identity issued.")
@click.option(
    "--refused",
    is_flag=True,
    help="With --format ocsf: the log's records of refused attempts (with --actor: those "
    "claiming that identity).",
)
@click.option(
    "--since", type=TIME, default=0, help=f"With a selection: from this client time: {TIME_FORMS}."
)
@click.option(
    "--until", type=TIME, default=0, help="With a selection: before this client time (same forms)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["bundle", "ocsf"]),
    default="bundle",
    show_default=True,
    help="bundle: an evidence bundle (offline-verifiable); ocsf: OCSF API Activity events, "
    "one JSON per line, for a SIEM.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write (a bundle needs one; OCSF lines go to standard output without it).",
)
@connection
@handle_errors
def export(
    conn: Conn,
    action_ids: tuple[str, ...],
    index: int | None,
    agent: str,
    session: str,
    trace: str,
    actor: str,
    refused: bool,
    since: str | None,
    until: str | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Write an evidence bundle, or the log as OCSF events (needs --token).

    \b
    A bundle holds actions, their grants up to the human, their approvals and the identities
    that signed them, each with an inclusion proof to one (witnessed, with --quorum)
    checkpoint: one ACTION_ID (or --index), several, or every action of a --session, --trace
    or --actor, sharing one authority chain and one checkpoint.
    With --format ocsf: one OCSF API Activity event per statement, of the whole log (checked
    against the checkpoint's root) or of a --session, --trace, --actor and time window, or
    the log's records of refused attempts (--refused).
    """
    from affidavit.client import bundleset
    from affidavit.client.cli.exporting import export_ocsf

    selection: dict[str, object] = {
        "session_id": session,
        "trace_id": trace,
        "actor": actor,
        "refused": refused,
        "time_from_ms": since,
        "time_to_ms": until,
    }
    selected = any((session, trace, actor, refused))
    if (since or until) and not selected:
        raise click.UsageError("--since / --until narrow a --session, --trace or --actor")
    if refused and fmt != "ocsf":
        raise click.UsageError(
            "--refused exports OCSF events (--format ocsf); a bundle is of actions"
        )
    if fmt == "ocsf":
        if action_ids or index is not None:
            raise click.UsageError(
                "--format ocsf exports statements by --session, --trace or --actor, or the "
                "whole log; not by action id"
            )
        with conn.client() as client:
            line = export_ocsf(client, out, selection)
        if out is None:
            click.echo(line, err=True)  # standard output holds the events alone
        else:
            conn.out.emit(line, {"file": str(out), "format": "ocsf"})
        return
    if out is None:
        raise click.UsageError("a bundle needs --out FILE")
    if len(action_ids) <= 1 and not selected:
        with conn.client() as client:
            target = _action_target(action_ids[0] if action_ids else None, index, agent)
            b = _export_one(client, target)
    else:
        if index is not None or agent:
            raise click.UsageError(
                "--index and --agent name one action: several action ids bundle every agent's "
                "action by each"
            )
        with conn.client() as client:
            ids = set(action_ids)
            if selected:
                ids |= {h.action_id for h in client.search(**selection) if h.kind == "action"}
            if not ids:
                raise NotFoundError("no actions match the selection: nothing to bundle")
            b = bundleset.export_set(client, ids)
    text = b.to_json()
    out.write_text(text)
    reports = bundleset.verify_set(text, conn.policy())
    head = (
        f"wrote {out}: {len(reports)} action(s), {len(b.entries)} entries proven in tree of "
        f"size {reports[0].checkpoint.size}"
    )
    conn.out.emit(
        "\n\n".join([head, *(r.summary() for r in reports)]),
        {"file": str(out), **_reports_data(reports)},
    )


def _reports_data(reports: tuple[Any, ...]) -> dict[str, Any]:
    """One report's data as before; several under "actions" (one file, one checkpoint)."""
    if len(reports) == 1:
        return _report_data(reports[0])
    return {
        "actions": [_report_data(r) for r in reports],
        "checkpoint_size": reports[0].checkpoint.size,
        "in_scope": all(r.in_scope for r in reports),
    }


@click.command("verify-bundle")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@connection
@handle_errors
def verify_bundle(conn: Conn, file: Path) -> None:
    """Verify an evidence bundle offline, with public keys only (--log-key, --witness-key,
    --quorum), and say in plain words who did what, on whose authority, approved by whom.
    Exits 1 if anything fails to verify, 5 if it verifies but an action was not authorised."""
    from affidavit.client import bundleset

    reports = bundleset.verify_set(file.read_bytes(), conn.policy())
    conn.out.emit("\n\n".join(r.summary() for r in reports), _reports_data(reports))
    if not all(r.in_scope for r in reports):
        sys.exit(EXIT_NOT_AUTHORISED)


@click.command("who-authorised")
@click.argument("action_id", required=False)
@click.option("--index", type=int, help="The action's INTENT or OUTCOME index instead of its id.")
@_AGENT
@connection
@handle_errors
def who_authorised(conn: Conn, action_id: str | None, index: int | None, agent: str) -> None:
    """Who authorised an action: the grant chain up to the human, the approval and its ticket,
    each verified against the log (needs --token). Exits 5 when the action was not
    authorised (as verify-bundle does), 6 when the log has no such action, 2 when several
    agents used ACTION_ID and --agent does not say whose."""
    from affidavit.client import bundle

    with conn.client() as client:
        b = _export_one(client, _action_target(action_id, index, agent))
    report = bundle.verify(b.to_json(), conn.policy())
    conn.out.emit(report.summary(), _report_data(report))
    if not report.in_scope:
        sys.exit(EXIT_NOT_AUTHORISED)
