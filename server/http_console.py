"""The investigator's console beside the log: mounted under /console/ of the HTTP face.

The console is a client of the log like any other (console/): it reads through the gRPC client
and verifies what it shows, holding each investigator's auditor token from their login. Inside
`serve` it dials this server's own gRPC address — the bound port, a wildcard listen address
replaced by loopback — with the same TLS the server speaks. It is imported only when enabled,
so a server without it never loads the console (nor jinja2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from affidavit.server.http_app import Face

PREFIX = "/console"

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}


@dataclass(frozen=True)
class ConsoleTls:
    """How the console reaches a TLS log: the CA it trusts for the server's certificate (the
    certificate itself when it is self-signed), and its own client certificate for mTLS."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


def dial_address(listen: str, port: int) -> str:
    """The address this server's gRPC is reached at from inside it: listen's host (loopback
    for a wildcard) with the port bound."""
    host = listen.rpartition(":")[0]
    return f"{_WILDCARDS.get(host, host)}:{port}"


def console_face(
    listen: str, port: int, tls: ConsoleTls | None, audit_report: Path | None = None
) -> Face:
    """The console as a face of the HTTP app, reading the log at listen (bound to port); its
    log page shows audit_report (from `affidavit audit --json`) when given."""
    from affidavit.client.client import Tls
    from affidavit.console.app import Settings, console_app

    client_tls = None if tls is None else Tls(tls.ca, tls.cert, tls.key)
    settings = Settings(
        dial_address(listen, port), prefix=PREFIX, tls=client_tls, audit_report=audit_report
    )
    return Face(mounts={PREFIX: console_app(settings)})
