"""Sessions that prove completeness: open one, record into it across calls, close it.

    S=$(affidavit session open --key bot.key -q)
    affidavit append --session "$S" --key bot.key --tool ... --resource ... --access ...
    affidavit session close "$S" --key bot.key
    affidavit timeline --session "$S"          # complete: opened, closed, no gap

The session's head is kept beside the key (client/sessionfile.py) and checked by the log at
ingest. The OPEN is the session's first statement (sequence 0); the CLOSE is its last: its
sequence says how many statements came before it, and the log refuses anything appended to the
session after it. So "everything this identity did in session S" is provable from the log:
statements 0 to the CLOSE, each linked to the one before, none missing.
"""

from __future__ import annotations

from pathlib import Path

import click
from affidavit.client.actor import Actor
from affidavit.client.cli.options import (
    Conn,
    connection,
    handle_errors,
    load_identity_key,
    receipt_data,
    receipt_line,
    signing_key,
)
from affidavit.client.errors import RefusedError
from affidavit.client.sessionfile import SessionFile
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.ids import uuid7


@click.group()
def session() -> None:
    """Open and close sessions, so a session's statements can be proven complete."""


@session.command("open")
@click.option(
    "--session-id",
    default=None,
    help="The new session's id (default: a new UUIDv7).",
)
@click.option("--purpose", default="", help="What the session is for, e.g. the task or ticket.")
@signing_key
@connection
@handle_errors
def session_open(conn: Conn, session_id: str | None, purpose: str, key_file: Path) -> None:
    """Open a session: record its OPEN (sequence 0) and keep its head beside the key, for
    `append --session` and `session close`. Prints the session id with -q."""
    sid = session_id or uuid7()
    state = SessionFile(key_file, sid)
    if state.exists():
        raise ValueError(f"session {sid} is already kept at {state.path}")
    with conn.client() as client:
        actor = Actor(client, load_identity_key(key_file), session_id=sid)
        try:
            rec = state.submit(actor, pb.SessionEvent(op=pb.SessionEvent.OPEN, purpose=purpose))
        except RefusedError:
            state.path.unlink(missing_ok=True)  # never opened: keep no state for it
            raise
    conn.out.emit(
        receipt_line(f"session {sid} opened:", rec.statement_id, rec.receipt)
        + f"\nrecord into it with: affidavit append --session {sid} ...",
        {"session_id": sid, "statement_id": rec.statement_id, **receipt_data(rec.receipt)},
        sid,
    )


@session.command("close")
@click.argument("session_id")
@signing_key
@connection
@handle_errors
def session_close(conn: Conn, session_id: str, key_file: Path) -> None:
    """Close SESSION_ID: record its CLOSE, after which the log refuses anything appended to
    it. The CLOSE's sequence is the number of statements the session holds before it."""
    state = SessionFile(key_file, session_id)
    with conn.client() as client:
        actor = Actor(client, load_identity_key(key_file), session_id=session_id)
        state.resume(actor)
        held = actor.signer.sequence
        rec = state.submit(actor, pb.SessionEvent(op=pb.SessionEvent.CLOSE), closes=True)
    conn.out.emit(
        receipt_line(f"session {session_id} closed:", rec.statement_id, rec.receipt)
        + f"\nit holds {held} statement(s) before this close (sequences 0-{held - 1})",
        {
            "session_id": session_id,
            "statements_before_close": held,
            "statement_id": rec.statement_id,
            **receipt_data(rec.receipt),
        },
        rec.statement_id,
    )
