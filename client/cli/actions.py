"""Actions: an agent records an INTENT (checked against its grants) and then its OUTCOME."""

from __future__ import annotations

from pathlib import Path

import click
from affidavit.client.actor import Actor, Recorded, outcome_body
from affidavit.client.cli.options import (
    ACCESS,
    EXIT_NOT_AUTHORISED,
    Conn,
    connection,
    fail,
    handle_errors,
    json_arg,
    load_identity_key,
    receipt_data,
    receipt_line,
    signing_key,
)
from affidavit.client.client import Client, Receipt
from affidavit.client.errors import NotFoundError, VerificationError
from affidavit.client.sessionfile import SessionFile
from affidavit.client.trust import write_atomic
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.build import statement_of
from affidavit.statements.signing import IdentityKey

from affidavit import merkle

# Actions.

POLICY = {"allow": pb.ALLOW, "deny": pb.DENY, "allow-if-approved": pb.ALLOW_IF_APPROVED}
STATUS = {"ok": pb.OK, "error": pb.ERROR, "denied": pb.DENIED, "timeout": pb.TIMEOUT}


NOT_AUTHORISED = {"OUT_OF_SCOPE", "NO_GRANT"}
"""Verdicts under which the log recorded an action that its grants do not authorise."""


def _pending_path(conn: Conn, action_id: str) -> Path:
    return conn.trust_dir / "intents" / f"{action_id}.leaf"


def _intent_leaf(conn: Conn, client: Client, key: IdentityKey, action_id: str) -> bytes:
    """The exact bytes of the INTENT of action_id: kept under --trust-dir by the `append` that
    recorded it, or else fetched from the log (with an auditor token), proven included in a
    trusted checkpoint, and checked to be this identity's INTENT of that action."""
    path = _pending_path(conn, action_id)
    if path.exists():
        return path.read_bytes()
    if conn.token is None:
        raise click.UsageError(
            f"the INTENT of action {action_id} was not recorded from here ({path} is missing); "
            "to fetch it from the log, give an auditor token: --token TOKEN or @FILE "
            "(AFFIDAVIT_TOKEN), or use the --trust-dir that recorded it"
        )
    # An action is its agent's action id: other agents' INTENTs with this id are other actions.
    for hit in client.search(action_id=action_id):
        entry = next(client.entries(hit.index, hit.index + 1))
        statement = statement_of(entry.data)
        action = statement.action
        if statement.WhichOneof("body") != "action" or action.phase != pb.AgentAction.INTENT:
            continue
        if action.actor.agent_id != key.identity_id:
            continue
        proof, _ = client.prove(index=hit.index)
        if proof.leaf_hash != merkle.leaf_hash(entry.data):
            raise VerificationError(
                f"entry {hit.index} as served is not the entry the log proves at that index"
            )
        return entry.data
    raise NotFoundError(
        f"no INTENT of {key.identity_id}'s action {action_id} in the log (an OUTCOME is for the "
        "agent that recorded the INTENT)"
    )


def _verdict_exit(conn: Conn, receipt: Receipt) -> None:
    """Exit EXIT_NOT_AUTHORISED, saying so, when the log recorded the statement outside any
    grant: it is on the record (the evidence stands), but it was not authorised."""
    if receipt.verdict in NOT_AUTHORISED:
        reason = f" ({receipt.verdict_reason})" if receipt.verdict_reason else ""
        fail(
            f"recorded, but NOT AUTHORISED: the log's verdict is {receipt.verdict}{reason}",
            EXIT_NOT_AUTHORISED,
            verdict=receipt.verdict,
            verdict_reason=receipt.verdict_reason,
        )


@click.command()
@click.option("--tool", help="Tool name (gen_ai.tool.name) of an INTENT.")
@click.option("--resource", help="Target resource URI of an INTENT.")
@click.option("--access", type=click.Choice(sorted(ACCESS)), help="Access kind of an INTENT.")
@click.option(
    "--params",
    default="{}",
    show_default=True,
    help="Parameters: JSON, @FILE or -. Secrets in them are redacted before signing; the "
    "digest (what an approval binds to) is over the redacted form, so it confirms no guess.",
)
@click.option("--grant", "grant_ids", multiple=True, help="Grant id acted under; repeatable.")
@click.option(
    "--operation", default="execute_tool", show_default=True, help="gen_ai.operation.name."
)
@click.option(
    "--decision",
    type=click.Choice(sorted(POLICY)),
    default="allow",
    show_default=True,
    help="The policy decision for this INTENT.",
)
@click.option("--approval", "approval_id", default="", help="Approval id (with allow-if-approved).")
@click.option("--action-id", default=None, help="The action's id (default: a new UUIDv7).")
@click.option("--credential-kind", default="", help="e.g. oauth-token, service-account-key.")
@click.option("--credential-key-id", default="", help="Key id or token jti of the credential used.")
@click.option("--trace-id", default="", help="W3C trace id (32 hex).")
@click.option("--span-id", default="", help="W3C span id (16 hex) of the tool call.")
@click.option(
    "--parent-action", "parent_action_id", default="", help="The action this one is part of."
)
@click.option("--tool-server", default="", help="Where the tool runs, e.g. an MCP server URI.")
@click.option("--credential-issuer", default="", help="Who issued the credential used.")
@click.option(
    "--session",
    "session_id",
    default=None,
    help="Record into this session, opened with `affidavit session open` (its head is kept "
    "beside --key); default: a session of its own.",
)
@click.option(
    "--outcome", "outcome_of", metavar="ACTION_ID", help="Record the OUTCOME of ACTION_ID instead."
)
@click.option(
    "--status",
    type=click.Choice(sorted(STATUS)),
    default="ok",
    show_default=True,
    help="OUTCOME status.",
)
@click.option("--effect-ref", default="", help="OUTCOME effect, e.g. commit:<sha>.")
@click.option("--error-code", default="", help="OUTCOME error code.")
@signing_key
@connection
@handle_errors
def append(
    conn: Conn,
    tool: str | None,
    resource: str | None,
    access: str | None,
    params: str,
    grant_ids: tuple[str, ...],
    operation: str,
    decision: str,
    approval_id: str,
    action_id: str | None,
    credential_kind: str,
    credential_key_id: str,
    trace_id: str,
    span_id: str,
    parent_action_id: str,
    tool_server: str,
    credential_issuer: str,
    session_id: str | None,
    outcome_of: str | None,
    status: str,
    effect_ref: str,
    error_code: str,
    key_file: Path,
) -> None:
    """Record an agent action: its INTENT (before acting), or with --outcome its OUTCOME.

    The INTENT is kept under --trust-dir until its OUTCOME is recorded, so the two can be
    recorded by separate invocations (with --session, both go into that session's chain);
    from elsewhere, --outcome fetches the INTENT from the log (needs --token).

    Exits 5 when the log recorded the action but its verdict is OUT_OF_SCOPE or NO_GRANT:
    recorded, but not authorised (the agent should not go ahead).
    """
    key = load_identity_key(key_file)
    with conn.client() as client:
        actor = Actor(client, key)
        state = None
        if session_id is not None:
            state = SessionFile(key_file, session_id)
            state.resume(actor)

        def submit(body: pb.AgentAction) -> Recorded:
            return actor.submit(body) if state is None else state.submit(actor, body)

        if outcome_of is not None:
            intent_leaf = _intent_leaf(conn, client, key, outcome_of)
            outcome = pb.Outcome(
                status=STATUS[status], effect_ref=effect_ref, error_code=error_code
            )
            rec = submit(outcome_body(intent_leaf, outcome))
            _pending_path(conn, outcome_of).unlink(missing_ok=True)
            conn.out.emit(
                receipt_line(f"OUTCOME of {outcome_of}:", rec.statement_id, rec.receipt),
                {
                    "action_id": outcome_of,
                    "statement_id": rec.statement_id,
                    **receipt_data(rec.receipt),
                },
                rec.statement_id,
            )
            _verdict_exit(conn, rec.receipt)
            return
        if not (tool and resource and access):
            raise click.UsageError(
                "an INTENT needs --tool, --resource and --access (or use --outcome)"
            )
        credential = (
            pb.CredentialRef(
                kind=credential_kind, key_id=credential_key_id, issuer=credential_issuer
            )
            if credential_kind or credential_key_id or credential_issuer
            else None
        )
        act = actor.action(
            tool,
            resource,
            ACCESS[access],
            json_arg(params),
            grant_ids=grant_ids,
            operation=operation,
            action_id=action_id,
            approval_id=approval_id,
            decision=POLICY[decision],
            credential=credential,
            trace_id=trace_id,
            span_id=span_id,
            parent_action_id=parent_action_id,
            tool_server=tool_server,
        )
        rec = submit(act.intent)
        write_atomic(_pending_path(conn, act.action_id), rec.leaf)
    conn.out.emit(
        receipt_line(f"INTENT of action {act.action_id}:", rec.statement_id, rec.receipt)
        + f"\nrecord its outcome with: affidavit append --outcome {act.action_id} --status ok",
        {
            "action_id": act.action_id,
            "statement_id": rec.statement_id,
            **receipt_data(rec.receipt),
        },
        act.action_id,
    )
    _verdict_exit(conn, rec.receipt)
