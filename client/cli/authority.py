"""Grants and approvals: a human delegates a scope, or approves one action's exact parameters."""

from __future__ import annotations

from pathlib import Path

import click
from affidavit.client.actor import Actor
from affidavit.client.cli.options import (
    ACCESS,
    Conn,
    connection,
    handle_errors,
    json_arg,
    receipt_data,
    receipt_line,
    signing_key,
    time_ms,
)
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.signing import IdentityKey

# Grants and approvals.


@click.command()
@click.argument("grantee")
@click.option(
    "--tool", "tools", multiple=True, required=True, help="Tool name glob (* and ?); repeatable."
)
@click.option(
    "--resource", "resources", multiple=True, required=True, help="Resource URI glob; repeatable."
)
@click.option(
    "--access",
    "access",
    multiple=True,
    required=True,
    type=click.Choice(sorted(ACCESS)),
    help="Access kind; repeatable.",
)
@click.option(
    "--operation",
    "operations",
    multiple=True,
    help="Operation name glob; repeatable (default: any).",
)
@click.option("--not-before", help="ISO 8601 time or Unix ms.")
@click.option("--not-after", help="ISO 8601 time or Unix ms.")
@click.option("--max-uses", type=click.IntRange(min=0), default=0, help="0: no limit.")
@click.option(
    "--parent", "parent_grant_id", default="", help="The grant this one attenuates (agents)."
)
@click.option("--ticket", default="", help="Change or access ticket, e.g. CHG-1042.")
@click.option("--justification", default="")
@signing_key
@connection
@handle_errors
def grant(
    conn: Conn,
    grantee: str,
    tools: tuple[str, ...],
    resources: tuple[str, ...],
    access: tuple[str, ...],
    operations: tuple[str, ...],
    not_before: str | None,
    not_after: str | None,
    max_uses: int,
    parent_grant_id: str,
    ticket: str,
    justification: str,
    key_file: Path,
) -> None:
    """Delegate a scope to GRANTEE (an agent), signed by your --key."""
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).grant(
            grantee,
            tools=tools,
            resources=resources,
            access=[ACCESS[a] for a in access],
            operations=operations,
            not_before_ms=time_ms(not_before),
            not_after_ms=time_ms(not_after),
            max_uses=max_uses,
            parent_grant_id=parent_grant_id,
            ticket=ticket,
            justification=justification,
        )
    conn.out.emit(
        receipt_line("grant", rec.statement_id, rec.receipt),
        {"grant_id": rec.statement_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )


DECISIONS = {"approve": pb.Approval.APPROVE, "edit": pb.Approval.EDIT, "reject": pb.Approval.REJECT}


@click.command()
@click.argument("action_id")
@click.option(
    "--params",
    required=True,
    help="The exact parameters approved: JSON, @FILE or -. Secrets in them are redacted and "
    "the approval binds the redacted form's digest, as the agent's INTENT does.",
)
@click.option(
    "--decision", type=click.Choice(sorted(DECISIONS)), default="approve", show_default=True
)
@click.option("--ticket", default="")
@click.option("--comment", default="")
@signing_key
@connection
@handle_errors
def approve(
    conn: Conn,
    action_id: str,
    params: str,
    decision: str,
    ticket: str,
    comment: str,
    key_file: Path,
) -> None:
    """Approve (or reject) one intended action, bound to the digest of its exact parameters."""
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).approve(
            action_id,
            json_arg(params),
            decision=DECISIONS[decision],
            ticket=ticket,
            comment=comment,
        )
    conn.out.emit(
        receipt_line("approval", rec.statement_id, rec.receipt),
        {"approval_id": rec.statement_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )
