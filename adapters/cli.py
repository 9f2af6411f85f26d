"""The commands that drive adapters: `affidavit mcp-proxy` and `affidavit otlp-bridge`.

The top-level group (client/cli/__init__.py) imports this module only when one of these
commands runs; each command imports its framework only when it runs, so a base install lists
and explains them and says which extra to install.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from affidavit.adapters.recording import Recorder, Target, ToolCall
from affidavit.adapters.spool import Spool
from affidavit.client.actor import Actor
from affidavit.client.cli.options import (
    ACCESS,
    EXIT_USAGE,
    Conn,
    connection,
    fail,
    handle_errors,
    signing_key,
)
from affidavit.client.errors import UnavailableError
from affidavit.statements.signing import IdentityKey


def _framework(module: str, extra: str) -> ModuleType:
    """The adapter module, or a clear usage error naming the extra to install."""
    try:
        return import_module(module)
    except ImportError as e:
        fail(f"{e.name or module} is not installed: pip install 'affidavit[{extra}]'", EXIT_USAGE)


def _pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    """TOOL=VALUE options as a dict (a usage error names the flag otherwise)."""
    out = {}
    for value in values:
        tool, sep, rest = value.partition("=")
        if not sep or not tool or not rest:
            raise click.BadParameter(f"{value!r}: expected TOOL=VALUE", param_hint=flag)
        out[tool] = rest
    return out


def target_of(resources: dict[str, str], access: dict[str, str]) -> Callable[[ToolCall], Target]:
    """The target mapping the flags describe: a resource template per tool, formatted with the
    call's arguments ({repo} -> the "repo" argument); `tool:<name>` and execute otherwise."""
    for tool, kind in access.items():
        if kind not in ACCESS:
            raise click.BadParameter(
                f"{tool}={kind}: access must be one of {', '.join(sorted(ACCESS))}",
                param_hint="--access",
            )
    for tool, template in resources.items():
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        if any(not f.isidentifier() for f in fields):
            raise click.BadParameter(
                f"{tool}={template}: fields must be argument names, as in repo:{{repo}}",
                param_hint="--resource",
            )

    def target(call: ToolCall) -> Target:
        kind = ACCESS[access.get(call.tool, "execute")]
        template = resources.get(call.tool)
        if template is None:
            return Target(f"tool:{call.tool}", kind)
        args = call.arguments if isinstance(call.arguments, dict) else {}
        try:
            return Target(template.format_map({k: str(v) for k, v in args.items()}), kind)
        except (KeyError, IndexError, ValueError):
            return Target(f"tool:{call.tool}", kind)  # the call lacks the argument named

    return target


def _recorder(
    conn: Conn,
    key_file: Path,
    grant_ids: tuple[str, ...],
    *,
    enforce: bool,
    spool: Path | None,
    adapter: str,
    target: Callable[[ToolCall], Target],
    observe_only: bool = False,
) -> Recorder:
    actor = Actor(conn.client(), IdentityKey.load(key_file))
    recorder = Recorder(
        actor,
        grant_ids=grant_ids,
        enforce=enforce,
        target=target,
        spool=Spool(spool) if spool is not None else None,
        adapter=adapter,
        observe_only=observe_only,
    )
    if recorder.spool is not None and len(recorder.spool):
        # What an earlier run spooled goes first, now (it would otherwise wait for a call).
        try:
            sent = len(recorder.replay())
            click.echo(f"affidavit: replayed {sent} spooled statements from {spool}", err=True)
        except UnavailableError:
            click.echo(
                f"affidavit: the log is unreachable; {len(recorder.spool)} statements stay "
                f"spooled in {spool}",
                err=True,
            )
    return recorder


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT (port 0-65535)")
    return host.strip("[]"), int(port)


_GRANT = click.option(
    "--grant", "grant_ids", multiple=True, required=True, help="Grant id acted under; repeatable."
)
_SPOOL = click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    help="Fail open: when the log is unreachable keep statements in this directory (durably, "
    "in order) and replay them when it is back. Without it, calls fail closed.",
)
_RESOURCE = click.option(
    "--resource",
    "resources",
    multiple=True,
    metavar="TOOL=TEMPLATE",
    help="The resource a tool acts on, from its arguments, e.g. create_issue=repo:{repo} "
    "(default tool:<name>); repeatable.",
)
_ACCESS = click.option(
    "--access",
    "access",
    multiple=True,
    metavar="TOOL=KIND",
    help=f"A tool's access kind ({', '.join(sorted(ACCESS))}; default execute); repeatable.",
)


@click.command("mcp-proxy", context_settings={"ignore_unknown_options": False})
@connection
@signing_key
@_GRANT
@click.option(
    "--enforce/--no-enforce",
    default=True,
    show_default=True,
    help="Do not forward calls the log judges OUT_OF_SCOPE or NO_GRANT (the client gets a tool "
    "error naming the verdict); --no-enforce records them and forwards anyway.",
)
@_RESOURCE
@_ACCESS
@_SPOOL
@click.option(
    "--approval-required",
    multiple=True,
    metavar="TOOL",
    help="Forward TOOL only with a human's approval of its exact arguments, named in the "
    "call's _meta (io.affidavit/action-id, io.affidavit/approval-id); repeatable.",
)
@click.option(
    "--listen",
    callback=lambda _c, _p, v: _address(v) if v else None,
    metavar="HOST:PORT",
    help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (port 0: any free).",
)
@click.argument("command", nargs=-1, required=True)
@handle_errors
def mcp_proxy(
    conn: Conn,
    key_file: Path,
    grant_ids: tuple[str, ...],
    enforce: bool,
    resources: tuple[str, ...],
    access: tuple[str, ...],
    spool: Path | None,
    approval_required: tuple[str, ...],
    listen: tuple[str, int] | None,
    command: tuple[str, ...],
) -> None:
    """Record every tool call to an MCP server: a proxy in front of it.

    \b
    Put it where the MCP client starts the server, the server's command after --:
      affidavit mcp-proxy --key agent.key --grant GRANT_ID \\
          --resource 'create_issue=repo:{repo}' --access create_issue=create \\
          -- npx -y @acme/github-mcp
    The tools are the server's, listed unchanged. Each tools/call is recorded in the log
    before it is forwarded (INTENT: tool, arguments with secrets redacted, _meta.traceparent)
    and after (OUTCOME: status, a commitment to the result). Needs: pip install 'affidavit[mcp]'.
    """
    proxy: Any = _framework("affidavit.adapters.mcp", "mcp")
    target = target_of(_pairs(resources, "--resource"), _pairs(access, "--access"))
    recorder = _recorder(
        conn, key_file, grant_ids, enforce=enforce, spool=spool, adapter="mcp-proxy", target=target
    )
    proxy.run(recorder, command, listen=listen, approval_required=frozenset(approval_required))


@click.command("otlp-bridge")
@connection
@signing_key
@_GRANT
@click.option(
    "--listen",
    default="127.0.0.1:4318",
    show_default=True,
    callback=lambda _c, _p, v: _address(v),
    metavar="HOST:PORT",
    help="Where to receive OTLP/HTTP (POST /v1/traces); port 0 picks a free one.",
)
@_RESOURCE
@_ACCESS
@_SPOOL
@handle_errors
def otlp_bridge(
    conn: Conn,
    key_file: Path,
    grant_ids: tuple[str, ...],
    listen: tuple[str, int],
    resources: tuple[str, ...],
    access: tuple[str, ...],
    spool: Path | None,
) -> None:
    """Record the GenAI tool spans an OpenTelemetry Collector exports (observe-only).

    \b
    Receive OTLP/HTTP traces (protobuf or JSON) and record every execute_tool span
    (gen_ai.tool.name, gen_ai.tool.call.arguments, ...) as an INTENT and an OUTCOME, signed
    with --key under --grant. Spans arrive after the tool ran: the records say
    "observe-only", and block nothing; the log's verdict still marks what was out of scope.
    In the Collector:  exporters: otlphttp/affidavit: endpoint: http://127.0.0.1:4318
    Needs: pip install 'affidavit[otel]'.
    """
    bridge: Any = _framework("affidavit.adapters.otlp", "otel")
    target = target_of(_pairs(resources, "--resource"), _pairs(access, "--access"))
    recorder = _recorder(
        conn,
        key_file,
        grant_ids,
        enforce=False,
        spool=spool,
        adapter="otlp-bridge",
        target=target,
        observe_only=True,
    )
    bridge.run(recorder, *listen)
