"""Actions: an agent records an INTENT (checked against its grants) and then its OUTCOME."""

from __future__ import annotations

import errno
import hashlib
import os
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
from google.protobuf.message import DecodeError

from affidavit import merkle

# Actions.

POLICY = {"allow": pb.ALLOW, "deny": pb.DENY, "allow-if-approved": pb.ALLOW_IF_APPROVED}
STATUS = {"ok": pb.OK, "error": pb.ERROR, "denied": pb.DENIED, "timeout": pb.TIMEOUT}


NOT_AUTHORISED = {"OUT_OF_SCOPE", "NO_GRANT"}
"""Verdicts under which the log recorded an action that its grants do not authorise."""


def _is_intent_of(leaf: bytes, agent_id: str, action_id: str) -> bool:
    """Whether leaf is the INTENT of agent_id's action action_id (false for bytes that are no
    statement). An action is its agent's action id: other agents' INTENTs of the id are other
    actions."""
    try:
        statement = statement_of(leaf)
    except DecodeError:
        return False
    action = statement.action
    return (
        statement.WhichOneof("body") == "action"
        and action.phase == pb.AgentAction.INTENT
        and (action.actor.agent_id, action.action_id) == (agent_id, action_id)
    )


# Pending INTENTs: `append` keeps an INTENT's exact bytes under --trust-dir/intents/ until its
# OUTCOME is recorded (written atomically, deleted once the OUTCOME is).


def _pending_path(trust_dir: Path, agent_id: str, action_id: str) -> Path:
    """Where `append` keeps the INTENT of agent_id's action action_id: intents/<hex SHA-256 of
    agent id 0x00 action id>.leaf.

    Keyed by the pair, so agents sharing a trust dir and an action id keep apart INTENTs (an
    identity id holds no 0x00, so distinct pairs are distinct inputs). The action id is any
    non-empty string the producer chose, '/', '..' and 0x00 included, of up to
    statements.schema_walk.MAX_STRING (1024) characters, so it is never part of a path: a
    digest is one fixed-length file name in intents/ whatever the id holds, where a quoted form
    of a long id (up to 4 KiB of UTF-8, tripled by quoting) would outgrow a file name (255
    bytes) and need a digest anyway. The name is no secret (the INTENT is in the log), so a
    plain digest does."""
    name = hashlib.sha256(agent_id.encode() + b"\x00" + action_id.encode()).hexdigest()
    return trust_dir / "intents" / f"{name}.leaf"


def _upgrade_pending(conn: Conn, agent_id: str, action_id: str) -> bytes | None:
    """The INTENT of agent_id's action action_id as an `append` before _pending_path kept it,
    under intents/<action id>.leaf, moved to _pending_path; None if there is no such file of
    this agent's. The one upgrade step of that layout: _intent_leaf calls it only when
    _pending_path holds nothing.

    That name was the id itself, shared by every agent using the id, so the file is read only
    where the id makes one file name in intents/ (no '/' or 0x00; a name too long for the file
    system is no file), and used and moved only if its bytes are the INTENT of this agent and
    id: another agent's is left for it, and no other file (a _pending_path name included) is
    taken for one. This step can be deleted once no trust dir holds an INTENT kept by an older
    `affidavit append` (each OUTCOME recorded): from the release after the one that ships it,
    say; without it such an OUTCOME is still recorded, its INTENT fetched from the log with an
    auditor token."""
    if "/" in action_id or "\x00" in action_id:
        return None
    old = conn.trust_dir / "intents" / f"{action_id}.leaf"
    try:
        leaf = old.read_bytes()
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENAMETOOLONG, errno.EISDIR):
            return None
        raise
    if not _is_intent_of(leaf, agent_id, action_id):
        return None
    os.replace(old, _pending_path(conn.trust_dir, agent_id, action_id))  # one directory: atomic
    return leaf


def _intent_leaf(conn: Conn, client: Client, key: IdentityKey, action_id: str) -> bytes:
    """The exact bytes of the INTENT of this identity's action action_id: kept under
    --trust-dir by the `append` that recorded it, or else fetched from the log (with an auditor
    token), proven included in a trusted checkpoint, and checked to be this identity's INTENT
    of that action."""
    path = _pending_path(conn.trust_dir, key.identity_id, action_id)
    if path.exists():
        return path.read_bytes()
    kept = _upgrade_pending(conn, key.identity_id, action_id)
    if kept is not None:
        return kept
    if conn.token is None:
        raise click.UsageError(
            f"the INTENT of action {action_id} was not recorded from here ({path} is missing); "
            "to fetch it from the log, give an auditor token: --token TOKEN or @FILE "
            "(AFFIDAVIT_TOKEN), or use the --trust-dir that recorded it"
        )
    for hit in client.search(action_id=action_id):
        entry = next(client.entries(hit.index, hit.index + 1))
        if not _is_intent_of(entry.data, key.identity_id, action_id):
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
            _pending_path(conn.trust_dir, key.identity_id, outcome_of).unlink(missing_ok=True)
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
        write_atomic(_pending_path(conn.trust_dir, key.identity_id, act.action_id), rec.leaf)
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
