"""Auditing: replay the whole log with the shared rules and report what does not hold."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from affidavit.client.cli.options import (
    EXIT_INTERRUPTED,
    EXIT_VERIFY,
    Conn,
    connection,
    fail,
    handle_errors,
)

# Auditing.


@click.command()
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the audit's position in this file as it goes (every 30 s, on Ctrl-C and at the "
    "end); when it exists, continue from it to the log's current checkpoint, which the log "
    "must prove consistent with the one saved.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Processes checking entries (decoding, schema, secret guard, signature) while this one "
    "replays them in log order; 0: everything in this one. Default: one per CPU when 10,000 "
    "entries or more are left and there are two CPUs or more, else 0.",
)
@connection
@handle_errors
def audit(conn: Conn, resume: Path | None, workers: int | None) -> None:
    """Replay the whole log (needs --token): recompute its root against a verified checkpoint
    (and witness quorum), re-check every statement with the log's own rules and every action's
    verdict. Prints a report; exits 1 on any error or violation found."""
    from affidavit.client import audit as auditing

    interactive = sys.stderr.isatty()
    last = [0.0, -1.0]  # when the last line was shown, and at which count

    def show(p: auditing.Progress) -> None:
        now = time.monotonic()
        final = p.done == p.total
        if p.done == last[1] or (now - last[0] < (0.2 if interactive else 5.0) and not final):
            return
        last[0], last[1] = now, p.done
        eta = f", {p.eta:.0f} s left" if p.eta is not None else ""
        line = f"audited {p.done}/{p.total} entries ({p.rate:,.0f}/s{eta})"
        click.echo(f"\r{line}" if interactive else line, err=True, nl=not interactive)

    try:
        with conn.client() as client:
            report = auditing.audit(client, resume=resume, progress=show, workers=workers)
    except auditing.PositionError as e:  # an unusable --resume file: one line, not a traceback
        raise ValueError(str(e)) from None
    except auditing.AuditInterrupted as e:
        if interactive:
            click.echo("", err=True)
        saved = (
            f"; position saved in {e.position}: run the same command again to continue"
            if e.position is not None
            else " (give --resume FILE to be able to continue an audit)"
        )
        fail(f"interrupted after {e.done} of {e.total} entries{saved}", EXIT_INTERRUPTED)
    if interactive:
        click.echo("", err=True)
    conn.out.emit(report.text(), report.to_json())
    if not report.ok:
        sys.exit(EXIT_VERIFY)
