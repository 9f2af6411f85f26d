"""The `affidavit console` command: the investigator's console, beside any log."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click
from affidavit.client.client import Tls
from affidavit.console.app import Settings, standalone_app
from aiohttp import web


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (port 0 to 65535)")
    return host.strip("[]"), int(port)


async def _run(settings: Settings, host: str, port: int) -> None:
    runner = web.AppRunner(standalone_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=False, reuse_port=False)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror}") from None
    bound = runner.addresses[0]
    click.echo(
        f"affidavit console at http://{bound[0]}:{bound[1]}{settings.prefix}/ "
        f"for the log at {settings.server}",
        err=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


@click.command()
@click.option(
    "--server",
    default="127.0.0.1:7420",
    show_default=True,
    envvar="AFFIDAVIT_SERVER",
    show_envvar=True,
    help="The log's gRPC address host:port.",
)
@click.option(
    "--listen",
    default="127.0.0.1:7430",
    show_default=True,
    envvar="AFFIDAVIT_CONSOLE_LISTEN",
    show_envvar=True,
    help="Where the console serves HTTP (port 0: any free port). Browsers verify with WebCrypto "
    "only on HTTPS or localhost: put a TLS proxy in front to serve it elsewhere.",
)
@click.option(
    "--audit-report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A report from `affidavit audit --json > FILE`, shown on the log page.",
)
@click.option(
    "--session-timeout",
    type=click.FloatRange(min=1),
    default=1800.0,
    show_default=True,
    help="Seconds a login stays open without a request.",
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_TLS_CA",
    show_envvar=True,
    help="Reach the log over TLS, trusting this CA (PEM).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_TLS_CERT",
    show_envvar=True,
    help="Client certificate for mTLS to the log.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_TLS_KEY",
    show_envvar=True,
    help="The client certificate's key.",
)
def console(
    server: str,
    listen: str,
    audit_report: Path | None,
    session_timeout: float,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Serve the investigator's console for the log at --server: search, actions with their
    chain of authority verified in the browser, session timelines, identities, evidence.

    \b
    Log in with an auditor token and the log's verifier key (data/log.pub); the token stays in
    this process, the pinned keys in your browser. Example:
      affidavit console --server 127.0.0.1:7420 --listen 127.0.0.1:7430
      then open http://127.0.0.1:7430/console/
    """
    host, port = _listen(listen)
    tls = Tls(tls_ca, tls_cert, tls_key) if (tls_ca or tls_cert) else None
    settings = Settings(server, tls=tls, audit_report=audit_report, idle_seconds=session_timeout)
    try:
        asyncio.run(_run(settings, host, port))
    except KeyboardInterrupt:
        sys.exit(0)
