"""Grants and approvals: a human delegates a scope (and says which actions need whose
approval), approves one agent's action with its exact parameters, or withdraws a grant."""

from __future__ import annotations

from pathlib import Path

import click
from affidavit.client.actor import Actor
from affidavit.client.cli.options import (
    ACCESS,
    TIME,
    TIME_FORMS,
    Conn,
    connection,
    handle_errors,
    json_arg,
    load_identity_key,
    message_dict,
    receipt_data,
    receipt_line,
    signing_key,
    utc_text,
)
from affidavit.proto import affidavit_pb2 as pb

# Grants and approvals.


class _GrantGroup(click.Group):
    """`affidavit grant GRANTEE ...` issues a grant (the `issue` subcommand, the default);
    `affidavit grant list ...` lists grants. A grantee named like a subcommand is given as
    `affidavit grant issue NAME ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["issue", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_GrantGroup)
def grant() -> None:
    """Delegate a scope to an agent (`grant GRANTEE ...`, short for `grant issue GRANTEE ...`),
    or list grants (`grant list --grantee/--grantor`)."""


@grant.command("issue")
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
@click.option(
    "--not-before",
    type=TIME,
    help=f"When the grant starts: {TIME_FORMS}. Default: at once.",
)
@click.option(
    "--not-after",
    type=TIME,
    help="When the grant ends (exclusive), in the same forms, e.g. +8h or +7d. Default: never.",
)
@click.option(
    "--max-uses",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="How many actions the grant covers (each in-scope INTENT uses one); 0: no limit. "
    "A grant with --max-uses 1 and one resource is a one-off approval.",
)
@click.option(
    "--parent",
    "parent_grant_id",
    default="",
    help="The grant this one attenuates (an agent delegating part of its own grant).",
)
@click.option("--ticket", default="", help="Change or access ticket, e.g. CHG-1042.")
@click.option(
    "--justification", default="", help="Why the scope is delegated, in words (recorded)."
)
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
def grant_issue(
    conn: Conn,
    grantee: str,
    tools: tuple[str, ...],
    resources: tuple[str, ...],
    access: tuple[str, ...],
    operations: tuple[str, ...],
    not_before: int | None,
    not_after: int | None,
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
    if not_before and not_after and not_after <= not_before:
        raise click.BadParameter("must be later than --not-before", param_hint="--not-after")
    policy = pb.ApprovalPolicy(
        all_actions=require_approval,
        tools=approval_tool,
        resources=approval_resource,
        access=[ACCESS[a] for a in approval_access],
        approvers=approvers,
        roles=approver_roles,
    )
    with conn.client() as client:
        rec = Actor(client, load_identity_key(key_file)).grant(
            grantee,
            tools=tools,
            resources=resources,
            access=[ACCESS[a] for a in access],
            operations=operations,
            not_before_ms=not_before or 0,
            not_after_ms=not_after or 0,
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


@grant.command("list")
@click.option("--grantee", default="", help="Grants to this identity.")
@click.option(
    "--grantor",
    default="",
    help="Grants this identity issued, and grants issued under its authority down a chain.",
)
@connection
@handle_errors
def grant_list(conn: Conn, grantee: str, grantor: str) -> None:
    """List grants to --grantee and/or under --grantor's authority, each with its scope,
    window, uses and ticket (needs --token)."""
    from affidavit.client import registry

    if not grantee and not grantor:
        raise click.UsageError("give --grantee, --grantor or both")
    with conn.client() as client:
        found = registry.grants(client, grantee=grantee, grantor=grantor)
    lines = []
    for g in found:
        window = f"{_when(g.grant.not_before_ms, 'now')} .. {_when(g.grant.not_after_ms, 'no end')}"
        access = ",".join(pb.AccessKind.Name(a).lower() for a in g.grant.access)
        uses = f"max {g.grant.max_uses} uses" if g.grant.max_uses else "no use limit"
        lines.append(
            f"grant {g.grant_id} at #{g.index}: {g.issuer} -> {g.grant.grantee}"
            f"{f' (under {g.grant.parent_grant_id})' if g.grant.parent_grant_id else ''}\n"
            f"  tools {' '.join(g.grant.tools)}; resources {' '.join(g.grant.resources)}; "
            f"access {access}\n  {window}; {uses}; ticket {g.grant.ticket or '-'}"
        )
    conn.out.emit(
        "\n".join(lines) if found else "no grants",
        [
            {"grant_id": g.grant_id, "index": g.index, "issuer": g.issuer, **message_dict(g.grant)}
            for g in found
        ],
    )


def _when(ms: int, unset: str) -> str:
    return utc_text(ms) if ms else unset


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
    "--decision",
    type=click.Choice(sorted(DECISIONS)),
    default="approve",
    show_default=True,
    help="approve the parameters as given, approve them as edited (--params holds the edited "
    "ones), or reject the action.",
)
@click.option("--ticket", default="", help="Change or access ticket, e.g. CHG-1042.")
@click.option("--comment", default="", help="A note for the record (shown by who-authorised).")
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

    A reject puts the INTENT of --agent's action ACTION_ID out of scope, whatever the agent
    decides (another agent's action with the same id is another action).
    """
    with conn.client() as client:
        rec = Actor(client, load_identity_key(key_file)).approve(
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
        rec = Actor(client, load_identity_key(key_file)).revoke_grant(grant_id, reason=reason)
    conn.out.emit(
        receipt_line("grant revocation", rec.statement_id, rec.receipt),
        {"revocation_id": rec.statement_id, "grant_id": grant_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )
