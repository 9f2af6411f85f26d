"""Witnessing: follow a log, check it grew consistently, cosign its checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from affidavit.client.cli.options import (
    Conn,
    F,
    connection,
    handle_errors,
    key_text,
)

# Witnessing.


def state_options(command: F) -> F:
    """--state-dir and --evidence-dir: where a witness keeps what it cosigned and what it caught
    (the same for `witness` and `witness serve`, which may share them)."""
    command = click.option(
        "--evidence-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where fork evidence is written (default: STATE_DIR/evidence).",
    )(command)
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(".affidavit-witness"),
        show_default=True,
        envvar="AFFIDAVIT_WITNESS_STATE",
        show_envvar=True,
        help="Where the last cosigned checkpoint of each log is kept.",
    )(command)


@click.group(invoke_without_command=True)
@click.option(
    "--witness-key-file",
    "key_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_WITNESS_KEY_FILE",
    show_envvar=True,
    help="This witness's signer key (from `affidavit keygen --witness`).",
)
@click.option(
    "--log",
    "logs",
    multiple=True,
    metavar="ADDRESS=LOGKEY",
    help="A log to witness: its address and verifier key (text or @FILE); repeatable. "
    "Default: --server with --log-key.",
)
@state_options
@click.option("--once", is_flag=True, help="Check each log's current checkpoint once, then exit.")
@click.option(
    "--keep-going", is_flag=True, help="After a fork, keep witnessing the other logs (loudly)."
)
@click.option(
    "--poll",
    "poll_interval",
    type=click.FloatRange(min=0.1),
    help="Poll every SECONDS instead of watching the log's checkpoint stream.",
)
@connection
@handle_errors
def witness(
    conn: Conn,
    key_file: Path | None,
    logs: tuple[str, ...],
    state_dir: Path,
    evidence_dir: Path | None,
    once: bool,
    keep_going: bool,
    poll_interval: float | None,
) -> None:
    """Witness logs: check every new checkpoint is consistent with the last one cosigned, then
    cosign it. On a fork or rollback: refuse, write evidence, exit 1 (or keep going).

    Without a subcommand, follow logs over gRPC (pull). `affidavit witness serve` instead
    answers logs that push their checkpoints (C2SP tlog-witness over HTTP); both keep the same
    state, so one witness can do either."""
    if click.get_current_context().invoked_subcommand is not None:
        return
    if key_file is None:
        raise click.UsageError("give --witness-key-file (this witness's signer key)")
    import logging
    import signal
    import threading

    from affidavit.client import witness as witnessing

    if logs:
        targets = [entry.split("=", 1) for entry in logs]
        if any(len(t) != 2 for t in targets):
            raise click.UsageError("--log takes ADDRESS=LOGKEY")
    else:
        targets = [[conn.server, conn.log_key or ""]]
        if not conn.log_key:
            raise click.UsageError("give --log ADDRESS=LOGKEY, or --server and --log-key")
    config = witnessing.WitnessConfig(
        logs=tuple(
            witnessing.LogConfig.from_key(address, key_text(key), conn.tls)
            for address, key in targets
        ),
        key_file=key_file,
        state_dir=state_dir,
        evidence_dir=evidence_dir,
        poll_interval=poll_interval,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def report(event: witnessing.WitnessEvent) -> None:
        if conn.out.as_json:
            # One JSON object per event: the outcome by its value ("cosigned"), sizes as numbers.
            data = dict(vars(event), outcome=event.outcome.value)
            if event.evidence is not None:
                data["evidence"] = str(event.evidence)
            click.echo(json.dumps(data))

    sys.exit(witnessing.run(config, once=once, keep_going=keep_going, stop=stop, on_event=report))


@witness.command("serve")
@click.option(
    "--listen",
    default="127.0.0.1:7440",
    show_default=True,
    envvar="AFFIDAVIT_WITNESS_LISTEN",
    show_envvar=True,
    help="host:port to answer POST /add-checkpoint on (port 0 picks a free one).",
)
@click.option(
    "--witness-key-file",
    "key_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    envvar="AFFIDAVIT_WITNESS_KEY_FILE",
    show_envvar=True,
    help="This witness's signer key (from `affidavit keygen --witness`).",
)
@click.option(
    "--log",
    "log_keys",
    multiple=True,
    required=True,
    metavar="LOGKEY",
    help="The verifier key (text or @FILE) of a log to witness; its name is the log's origin. "
    "Repeatable.",
)
@state_options
@handle_errors
def serve(
    listen: str,
    key_file: Path,
    log_keys: tuple[str, ...],
    state_dir: Path,
    evidence_dir: Path | None,
) -> None:
    """Answer C2SP tlog-witness: logs POST /add-checkpoint with a consistency proof from the
    size this witness last cosigned; it checks and cosigns (or answers 409 with its size, 422
    for a bad proof, and keeps evidence of a fork). Runs until Ctrl-C or SIGTERM.

    \b
    Then the log pushes to it:
      affidavit serve --witness NAME=http://HOST:PORT@WITNESS_VKEY --witness-quorum 1
    """
    import asyncio
    import logging

    from affidavit.client.witness import http_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    check = http_server.load(key_file, [key_text(k) for k in log_keys], state_dir, evidence_dir)
    asyncio.run(http_server.serve(check, listen))
