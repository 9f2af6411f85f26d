"""Grants and approvals: a human delegates a scope (and says which actions need whose
approval), approves one agent's action with its exact parameters, or withdraws a grant."""

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
    "--tool",
    "tools",
    multiple=True,
    required=True,
    help="Tool pattern, e.g. 'github.*' (* and ? stay inside one dot segment; ** spans "
    "segments); repeatable.",
)
@click.option(
    "--resource",
    "resources",
    multiple=True,
    required=True,
    help="Resource pattern, e.g. 'repo:acme/*' (* and ? stay inside one / segment; ** spans "
    "segments); repeatable.",
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
@click.option(
    "--require-approval",
    is_flag=True,
    help="Every action under this grant needs a human's approval.",
)
@click.option(
    "--approval-tool", multiple=True, help="Actions on tools matching this need approval."
)
@click.option(
    "--approval-resource",
    multiple=True,
    help="Actions on resources matching this need approval.",
)
@click.option(
    "--approval-access",
    multiple=True,
    type=click.Choice(sorted(ACCESS)),
    help="Actions with this access kind need approval.",
)
@click.option(
    "--approver",
    "approvers",
    multiple=True,
    help="A human who may approve (default: you, the grantor); repeatable.",
)
@click.option(
    "--approver-role",
    "approver_roles",
    multiple=True,
    help="Any human registered with this role (attribute roles=...) may approve; repeatable.",
)
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
    require_approval: bool,
    approval_tool: tuple[str, ...],
    approval_resource: tuple[str, ...],
    approval_access: tuple[str, ...],
    approvers: tuple[str, ...],
    approver_roles: tuple[str, ...],
    key_file: Path,
) -> None:
    """Delegate a scope to GRANTEE (an agent), signed by your --key.

    With --require-approval (or --approval-tool/--approval-resource/--approval-access), the
    log records matching actions as out of scope unless a permitted human approved that very
    action, for that agent, with those parameters; the agent cannot opt out.
    """
    policy = pb.ApprovalPolicy(
        all_actions=require_approval,
        tools=approval_tool,
        resources=approval_resource,
        access=[ACCESS[a] for a in approval_access],
        approvers=approvers,
        roles=approver_roles,
    )
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
            approval=policy,
        )
    conn.out.emit(
        receipt_line("grant", rec.statement_id, rec.receipt),
        {"grant_id": rec.statement_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )


DECISIONS = {"approve": pb.Approval.APPROVE, "edit": pb.Approval.EDIT, "reject": pb.Approval.REJECT}


@click.command()
@click.argument("action_id")
@click.option("--agent", required=True, help="The agent that is to act (its identity id).")
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
    agent: str,
    params: str,
    decision: str,
    ticket: str,
    comment: str,
    key_file: Path,
) -> None:
    """Approve (or reject) ACTION_ID by --agent, bound to the digest of its exact parameters.

    A reject puts any INTENT of the action out of scope, whatever the agent decides.
    """
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).approve(
            action_id,
            json_arg(params),
            agent_id=agent,
            decision=DECISIONS[decision],
            ticket=ticket,
            comment=comment,
        )
    conn.out.emit(
        receipt_line("approval", rec.statement_id, rec.receipt),
        {"approval_id": rec.statement_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )


@click.command("revoke-grant")
@click.argument("grant_id")
@click.option("--reason", default="", help="Why, for the record (no secrets).")
@signing_key
@connection
@handle_errors
def revoke_grant(conn: Conn, grant_id: str, reason: str, key_file: Path) -> None:
    """Withdraw GRANT_ID (and every grant delegated from it) from now on; by its grantor or an
    admin. Actions under it after this entry are out of scope (grant-revoked)."""
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).revoke_grant(grant_id, reason=reason)
    conn.out.emit(
        receipt_line("grant revocation", rec.statement_id, rec.receipt),
        {"revocation_id": rec.statement_id, "grant_id": grant_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )
