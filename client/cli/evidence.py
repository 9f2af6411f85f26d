"""Evidence: export an action's bundle, verify one offline, and ask who authorised an action."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from affidavit.client.cli.options import (
    EXIT_VERIFY,
    Conn,
    connection,
    handle_errors,
    message_dict,
)
from affidavit.proto import affidavit_pb2 as pb

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
        "intent": message_dict(report.intent),
        "outcome": message_dict(report.outcome) if report.outcome is not None else None,
        "checkpoint_size": report.checkpoint.size,
        "witnesses": [name for name, _ in report.witnesses],
        "summary": report.summary(),
    }


def _action_target(action_id: str | None, index: int | None) -> dict[str, Any]:
    if (action_id is None) == (index is None):
        raise click.UsageError("give an ACTION_ID or --index")
    return {"action_id": action_id} if action_id is not None else {"index": index}


@click.command()
@click.argument("action_id", required=False)
@click.option("--index", type=int, help="The action's INTENT or OUTCOME index instead of its id.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The bundle file to write.",
)
@connection
@handle_errors
def export(conn: Conn, action_id: str | None, index: int | None, out: Path) -> None:
    """Write an evidence bundle: the action, its grants up to the human, its approval and the
    identities that signed them, each with an inclusion proof to one (witnessed) checkpoint.
    Needs --token; with --quorum, the checkpoint carries that many witness cosignatures."""
    from affidavit.client import bundle

    with conn.client() as client:
        b = bundle.export(client, **_action_target(action_id, index))
    text = b.to_json()
    out.write_text(text)
    report = bundle.verify(text, conn.policy())
    conn.out.emit(
        f"wrote {out}: {len(b.entries)} entries proven in tree of size {report.checkpoint.size}\n\n"
        + report.summary(),
        {"file": str(out), **_report_data(report)},
    )


@click.command("verify-bundle")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@connection
@handle_errors
def verify_bundle(conn: Conn, file: Path) -> None:
    """Verify an evidence bundle offline, with public keys only (--log-key, --witness-key,
    --quorum), and say in plain words who did what, on whose authority, approved by whom.
    Exits 1 if anything fails to verify or the action was not properly authorised."""
    from affidavit.client import bundle

    report = bundle.verify(file.read_bytes(), conn.policy())
    conn.out.emit(report.summary(), _report_data(report))
    if not report.in_scope:
        sys.exit(EXIT_VERIFY)


@click.command("who-authorised")
@click.argument("action_id", required=False)
@click.option("--index", type=int, help="The action's INTENT or OUTCOME index instead of its id.")
@connection
@handle_errors
def who_authorised(conn: Conn, action_id: str | None, index: int | None) -> None:
    """Who authorised an action: the grant chain up to the human, the approval and its ticket,
    each verified against the log (needs --token)."""
    from affidavit.client import bundle

    with conn.client() as client:
        b = bundle.export(client, **_action_target(action_id, index))
    report = bundle.verify(b.to_json(), conn.policy())
    conn.out.emit(report.summary(), _report_data(report))
