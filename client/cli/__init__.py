"""The `affidavit` command: one click group composed from the commands of each part.

The client's commands live in this package, one module per command group (identities,
authority, actions, reading, searching, investigating, sessions, witnessing, evidence,
auditing); the server's (server/cli.py: init, serve; server/cli_maintenance.py: check, migrate,
auditor-token), the console's and the adapters' (adapters/cli.py: mcp-proxy, otlp-bridge) are
imported only when one of them runs, the one place client-side code touches them. Every client
command takes the connection options (also as AFFIDAVIT_* environment variables) and --json.

Exit codes (options.EXIT_CODES): 0 done; 1 something did not verify (or an audit found
something); 2 usage error or invalid input, nothing sent (a check made before sending included);
3 the log refused the request; 4 the log could not be reached; 5 not authorised (`append`:
recorded, but the log's verdict is OUT_OF_SCOPE or NO_GRANT; `who-authorised`, `verify-bundle`:
the action was not authorised); 6 not found (no such entry, statement or action); 130
interrupted. With --json, an error is one line of JSON on stderr:
{"error": {"kind": ..., "exit_code": ..., "message": ...}}.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click
from affidavit.client.cli import (
    actions,
    auditing,
    authority,
    evidence,
    identities,
    investigating,
    reading,
    searching,
    sessions,
    tiles,
    witnessing,
)
from affidavit.client.cli.options import EXIT_CODES_TEXT, EXIT_USAGE, error_json

# Commands that live beside what they drive, imported only when run (the client never imports
# the server, or the parts built on the client, otherwise): name -> "module:attribute".
_SERVER_COMMANDS = {
    "auditor-token": "affidavit.server.cli_maintenance:auditor_token",
    "check": "affidavit.server.cli_maintenance:check",
    "console": "affidavit.console.cli:console",
    "init": "affidavit.server.cli:init",
    "migrate": "affidavit.server.cli_maintenance:migrate",
    "serve": "affidavit.server.cli:serve",
}
# The adapters' commands (adapters/cli.py), imported the same way: client code never imports
# the adapters otherwise, and each framework only when its command runs.
_ADAPTER_COMMANDS = {
    "mcp-proxy": "affidavit.adapters.cli:mcp_proxy",
    "otlp-bridge": "affidavit.adapters.cli:otlp_bridge",
}
_LAZY_COMMANDS = {**_SERVER_COMMANDS, **_ADAPTER_COMMANDS}


def _version() -> str:
    try:
        return version("affidavit")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Affidavit(click.Group):
    """The top-level group; server and adapter commands are imported only when used (client
    code never imports the server or the adapters otherwise)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = target.split(":")
        command: click.Command = getattr(import_module(module), attribute)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """As click's, but a command line click rejects while --json is given is reported as
        one line of JSON on stderr, like every other error of a --json command."""
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode or "--json" not in argv:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            code = e.exit_code if isinstance(e, click.UsageError) else EXIT_USAGE
            click.echo(error_json(e.format_message(), code), err=True)
            sys.exit(code)
        except click.Abort:
            click.echo(error_json("aborted", EXIT_USAGE), err=True)
            sys.exit(EXIT_USAGE)
        sys.exit(result if isinstance(result, int) else 0)  # an int: click's Exit code


@click.group(
    cls=_Affidavit,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=f"Exit codes: {EXIT_CODES_TEXT}. Shell completion: "
    'eval "$(affidavit completion bash)" (or zsh, fish).',
)
@click.version_option(_version(), prog_name="affidavit")
def main() -> None:
    """affidavit: a verifiable, witnessed audit log for AI agents.

    \b
    Run a log here (keys and data under ./data, listening on 127.0.0.1:7420):
      affidavit serve
    Then, with AFFIDAVIT_LOG_KEY=@data/log.pub and an identity key (AFFIDAVIT_KEY):
      affidavit keygen code-agent            make an identity key
      affidavit identity add code-agent ...  register it (as an admin)
      affidavit grant code-agent ...         delegate a scope (as a human)
      affidavit grant list --grantee ID      the grants an agent holds
      affidavit append ...                   record an agent action
      affidavit who-authorised ACTION_ID     answer the auditor's question
    """


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(affidavit completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "affidavit", "_AFFIDAVIT_COMPLETE").source())


for _command in (
    identities.keygen,
    identities.new_id,
    identities.identity,
    authority.grant,
    authority.approve,
    authority.revoke_grant,
    actions.append,
    reading.get,
    searching.search,
    investigating.timeline_command,
    sessions.session,
    reading.prove,
    reading.verify,
    reading.verify_proof,
    witnessing.witness,
    evidence.export,
    evidence.verify_bundle,
    evidence.who_authorised,
    auditing.audit,
    tiles.tiles,
):
    main.add_command(_command)

# `identity history` lives with the other investigation commands.
identities.identity.add_command(investigating.identity_history_command)
