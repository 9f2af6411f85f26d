"""The `affidavit` command.

One click group joins the server's commands (server/cli.py: init, serve, auditor-token),
imported only when one of them runs, with the client's commands defined here. Every client
command takes the connection options (also as AFFIDAVIT_* environment variables) and --json.

Exit codes: 0 done; 1 something did not verify (or an audit found something); 2 usage error;
3 the log refused the request; 4 the log could not be reached.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from affidavit.client.actor import Actor, outcome_body
from affidavit.client.client import Client, Receipt, Tls
from affidavit.client.errors import ClientError, RefusedError, UnavailableError, VerificationError
from affidavit.client.trust import write_atomic
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import keys
from affidavit.merkle.errors import MerkleError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.build import statement_of
from affidavit.statements.errors import Rejection
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey
from google.protobuf import json_format

EXIT_VERIFY, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 1, 2, 3, 4

# Commands that live beside what they drive: name -> "module:attribute".
_SERVER_COMMANDS = {
    "auditor-token": "affidavit.server.cli:auditor_token",
    "init": "affidavit.server.cli:init",
    "serve": "affidavit.server.cli:serve",
}

F = TypeVar("F", bound=Callable[..., Any])


def _version() -> str:
    try:
        return version("affidavit")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Affidavit(click.Group):
    """The top-level group; server commands are imported only when used (client code never
    imports the server otherwise)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_SERVER_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _SERVER_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = target.split(":")
        command: click.Command = getattr(import_module(module), attribute)
        return command


@click.group(
    cls=_Affidavit,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit codes: 0 done, 1 verification failed or findings, 2 usage error, "
    "3 refused by the log, 4 log unreachable. Shell completion: "
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
      affidavit append ...                   record an agent action
      affidavit who-authorised ACTION_ID     answer the auditor's question
    """


# Output and errors.


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"affidavit: {message}", err=True)
    sys.exit(code)


def _errors(f: F) -> F:
    """One clear line and a documented exit code for every expected failure; no traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except VerificationError as e:
            _fail(f"VERIFICATION FAILED: {e}", EXIT_VERIFY)
        except RefusedError as e:
            _fail(f"refused ({e.code}): {e.message}", EXIT_REFUSED)
        except Rejection as e:
            _fail(f"refused ({e.code}): {e.message}", EXIT_REFUSED)
        except UnavailableError as e:
            _fail(f"cannot reach the log: {e}", EXIT_UNREACHABLE)
        except (ClientError, MerkleError, OSError, ValueError) as e:
            _fail(f"error: {e}", EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


@dataclass
class Out:
    """Human-readable lines, one JSON document with --json, or just the new id with --quiet."""

    as_json: bool
    quiet: bool = False

    def emit(self, human: str, data: Any, new_id: str | None = None) -> None:
        if self.quiet and new_id is not None:
            click.echo(new_id)
        elif self.as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            click.echo(human)


def _message_dict(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


# Connection options, shared by every client command.


def _key_text(value: str) -> str:
    """A key given inline or as @file."""
    return Path(value[1:]).read_text().strip() if value.startswith("@") else value.strip()


def _default_log_key() -> str | None:
    path = Path("data/log.pub")
    return f"@{path}" if path.exists() else None


@dataclass
class Conn:
    server: str
    log_key: str | None
    token: str | None
    trust_dir: Path
    witness_keys: tuple[str, ...]
    quorum: int
    tls: Tls | None
    out: Out

    def policy(self) -> TrustPolicy:
        if self.log_key is None:
            raise click.UsageError(
                "give the log's verifier key: --log-key KEY or @FILE (AFFIDAVIT_LOG_KEY)"
            )
        return TrustPolicy(
            _key_text(self.log_key), tuple(_key_text(k) for k in self.witness_keys), self.quorum
        )

    def client(self) -> Client:
        token = _key_text(self.token) if self.token else None
        return Client(
            self.server, self.policy(), trust_dir=self.trust_dir, token=token, tls=self.tls
        )


def connection(f: F) -> F:
    """Add the connection options and --json; the command receives conn: Conn."""

    @click.option(
        "--server",
        default="127.0.0.1:7420",
        show_default=True,
        envvar="AFFIDAVIT_SERVER",
        show_envvar=True,
        help="The log's gRPC address host:port.",
    )
    @click.option(
        "--log-key",
        default=_default_log_key,
        envvar="AFFIDAVIT_LOG_KEY",
        show_envvar=True,
        show_default="@data/log.pub if present",
        help="The log's verifier key text, or @FILE holding it.",
    )
    @click.option(
        "--token",
        envvar="AFFIDAVIT_TOKEN",
        show_envvar=True,
        help="Auditor token (or @FILE holding it), for reading entries and searching.",
    )
    @click.option(
        "--trust-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(".affidavit"),
        show_default=True,
        envvar="AFFIDAVIT_TRUST_DIR",
        show_envvar=True,
        help="Where this client keeps the last checkpoint it trusted (and pending intents).",
    )
    @click.option(
        "--witness-key",
        "witness_keys",
        multiple=True,
        envvar="AFFIDAVIT_WITNESS_KEYS",
        show_envvar=True,
        help="A witness's verifier key (or @FILE); repeat for several.",
    )
    @click.option(
        "--quorum",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        envvar="AFFIDAVIT_QUORUM",
        show_envvar=True,
        help="Cosignatures from known witnesses a checkpoint needs to be trusted.",
    )
    @click.option(
        "--tls-ca",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        envvar="AFFIDAVIT_TLS_CA",
        show_envvar=True,
        help="Use TLS, trusting this CA (PEM) for the log's certificate.",
    )
    @click.option(
        "--tls-cert",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        envvar="AFFIDAVIT_TLS_CERT",
        show_envvar=True,
        help="Client certificate (mTLS).",
    )
    @click.option(
        "--tls-key",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        envvar="AFFIDAVIT_TLS_KEY",
        show_envvar=True,
        help="Client certificate's key (mTLS).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @click.option(
        "-q", "--quiet", is_flag=True, help="Print only the id of what was recorded (for scripts)."
    )
    @functools.wraps(f)
    def wrapper(
        server: str,
        log_key: str | None,
        token: str | None,
        trust_dir: Path,
        witness_keys: tuple[str, ...],
        quorum: int,
        tls_ca: Path | None,
        tls_cert: Path | None,
        tls_key: Path | None,
        as_json: bool,
        quiet: bool,
        **kwargs: Any,
    ) -> Any:
        tls = Tls(tls_ca, tls_cert, tls_key) if (tls_ca or tls_cert) else None
        conn = Conn(
            server, log_key, token, trust_dir, witness_keys, quorum, tls, Out(as_json, quiet)
        )
        return f(conn=conn, **kwargs)

    return wrapper  # type: ignore[return-value]


def signing_key(f: F) -> F:
    """Add --key: the identity key the command signs with."""
    return click.option(
        "--key",
        "key_file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        required=True,
        envvar="AFFIDAVIT_KEY",
        show_envvar=True,
        help="Your identity's key file (from `affidavit keygen`).",
    )(f)


def _receipt_data(r: Receipt) -> dict[str, Any]:
    data: dict[str, Any] = {
        "index": r.index,
        "leaf_hash": r.leaf_hash.hex(),
        "tree_size": r.checkpoint.checkpoint.size,
        "duplicate": r.duplicate,
        "verified": ["checkpoint signature", "inclusion proof", "consistency"],
    }
    if r.verdict != "VERDICT_UNSPECIFIED":
        data["verdict"], data["verdict_reason"] = r.verdict, r.verdict_reason
    return data


def _receipt_line(what: str, statement_id: str, r: Receipt) -> str:
    verdict = "" if r.verdict == "VERDICT_UNSPECIFIED" else f", {r.verdict}"
    reason = f" ({r.verdict_reason})" if r.verdict_reason else ""
    return (
        f"{what} {statement_id} recorded at index {r.index}{verdict}{reason} "
        f"(verified in tree of size {r.checkpoint.checkpoint.size})"
    )


# Keys and identities.


@main.command()
@click.argument("identity_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file (default: IDENTITY_ID.key, mode 0600); the public key goes beside "
    "it, with .pub.",
)
@click.option("--witness", is_flag=True, help="Make a witness key (C2SP cosignature/v1) instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_errors
def keygen(identity_id: str, out: Path | None, witness: bool, as_json: bool) -> None:
    """Make a signing key for IDENTITY_ID: a private key file and its public .pub beside it.

    Keep the .key file to yourself; give the .pub to an admin to register the identity
    (`affidavit identity add ... --public-key @ID.pub`). With --witness, a witness key: its .pub
    is the verifier key for log operators (serve --witness-key) and clients (--witness-key).
    """
    path = out or Path(f"{identity_id.replace('/', '_')}.key")
    pub = path.with_suffix(".pub")
    for p in (path, pub):
        if p.exists():
            raise ValueError(f"{p} exists; choose another --out")
    if witness:
        signer, public = keys.generate_key(identity_id, keys.ALG_COSIGNATURE_V1)
        key_id = keys.parse_verifier_key(public).key_hash.hex()
    else:
        key = IdentityKey.generate(identity_id)
        signer, public, key_id = key.text(), base64.b64encode(key.public_key).decode(), key.key_id
    write_atomic(path, (signer + "\n").encode())
    pub.write_text(public + "\n")
    Out(as_json).emit(
        f"private key: {path} (keep it secret)\n"
        f"public key:  {pub}: {public}\nkey id:      {key_id}",
        {
            "key_file": str(path),
            "public_file": str(pub),
            "identity_id": identity_id,
            "public_key": public,
            "key_id": key_id,
        },
    )


def _public_key(value: str) -> bytes:
    """An Ed25519 public key: base64, or @FILE holding it (an ID.pub from keygen)."""
    try:
        raw = base64.b64decode(_key_text(value), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueError("a public key is 32 bytes of base64 (the .pub from `affidavit keygen`)")
    return raw


@main.command("id")
def new_id() -> None:
    """Print a fresh UUIDv7, e.g. to name an action before asking for its approval."""
    click.echo(uuid7())


KINDS = {
    "agent": pb.AGENT,
    "human": pb.HUMAN,
    "service": pb.SERVICE,
    "witness": pb.WITNESS,
    "admin": pb.ADMIN,
}


@main.group()
def identity() -> None:
    """Register, rotate or revoke identities (signed by an admin's --key)."""


@identity.command("add")
@click.argument("identity_id")
@click.option(
    "--kind", type=click.Choice(sorted(KINDS)), required=True, help="What the identity is."
)
@click.option(
    "--public-key",
    "public_key",
    required=True,
    help="Its public key: base64 (from `affidavit keygen`) or @KEYFILE.",
)
@click.option(
    "--owner", default="", help="The identity that answers for it (e.g. an agent's human)."
)
@click.option("--name", "display_name", default="", help="A display name.")
@click.option("--attribute", "attributes", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@signing_key
@connection
@_errors
def identity_add(
    conn: Conn,
    identity_id: str,
    kind: str,
    public_key: str,
    owner: str,
    display_name: str,
    attributes: tuple[str, ...],
    key_file: Path,
) -> None:
    """Register IDENTITY_ID with its public key."""
    attrs = dict(a.split("=", 1) for a in attributes if "=" in a)
    if len(attrs) != len(attributes):
        raise ValueError("--attribute takes KEY=VALUE")
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).register(
            identity_id,
            KINDS[kind],
            _public_key(public_key),
            owner=owner,
            display_name=display_name,
            attributes=attrs,
        )
    conn.out.emit(
        _receipt_line(f"identity {identity_id} registered:", rec.statement_id, rec.receipt),
        {"statement_id": rec.statement_id, **_receipt_data(rec.receipt)},
        rec.statement_id,
    )


@identity.command("rotate")
@click.argument("identity_id")
@click.option(
    "--public-key", "public_key", required=True, help="The new public key: base64 or @KEYFILE."
)
@signing_key
@connection
@_errors
def identity_rotate(conn: Conn, identity_id: str, public_key: str, key_file: Path) -> None:
    """Give IDENTITY_ID a new key; the old one is refused from this entry on."""
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).rotate(identity_id, _public_key(public_key))
    conn.out.emit(
        _receipt_line(f"key of {identity_id} rotated:", rec.statement_id, rec.receipt),
        {"statement_id": rec.statement_id, **_receipt_data(rec.receipt)},
        rec.statement_id,
    )


@identity.command("revoke")
@click.argument("identity_id")
@signing_key
@connection
@_errors
def identity_revoke(conn: Conn, identity_id: str, key_file: Path) -> None:
    """Revoke IDENTITY_ID: nothing it signs is accepted from this entry on."""
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).revoke(identity_id)
    conn.out.emit(
        _receipt_line(f"{identity_id} revoked:", rec.statement_id, rec.receipt),
        {"statement_id": rec.statement_id, **_receipt_data(rec.receipt)},
        rec.statement_id,
    )


# Grants and approvals.

ACCESS = {
    "read": pb.READ,
    "create": pb.CREATE,
    "update": pb.UPDATE,
    "delete": pb.DELETE,
    "execute": pb.EXECUTE,
}


def _utc(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M:%S}Z"


def _time_ms(value: str | None) -> int:
    """ISO 8601 (UTC if no zone) or Unix milliseconds; None/empty is 0 (unbounded)."""
    if not value:
        return 0
    if value.isdigit():
        return int(value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@main.command()
@click.argument("grantee")
@click.option(
    "--tool", "tools", multiple=True, required=True, help="Tool name glob (* and ?); repeatable."
)
@click.option(
    "--resource", "resources", multiple=True, required=True, help="Resource URI glob; repeatable."
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
@click.option("--not-before", help="ISO 8601 time or Unix ms.")
@click.option("--not-after", help="ISO 8601 time or Unix ms.")
@click.option("--max-uses", type=click.IntRange(min=0), default=0, help="0: no limit.")
@click.option(
    "--parent", "parent_grant_id", default="", help="The grant this one attenuates (agents)."
)
@click.option("--ticket", default="", help="Change or access ticket, e.g. CHG-1042.")
@click.option("--justification", default="")
@signing_key
@connection
@_errors
def grant(
    conn: Conn,
    grantee: str,
    tools: tuple[str, ...],
    resources: tuple[str, ...],
    access: tuple[str, ...],
    operations: tuple[str, ...],
    not_before: str | None,
    not_after: str | None,
    max_uses: int,
    parent_grant_id: str,
    ticket: str,
    justification: str,
    key_file: Path,
) -> None:
    """Delegate a scope to GRANTEE (an agent), signed by your --key."""
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).grant(
            grantee,
            tools=tools,
            resources=resources,
            access=[ACCESS[a] for a in access],
            operations=operations,
            not_before_ms=_time_ms(not_before),
            not_after_ms=_time_ms(not_after),
            max_uses=max_uses,
            parent_grant_id=parent_grant_id,
            ticket=ticket,
            justification=justification,
        )
    conn.out.emit(
        _receipt_line("grant", rec.statement_id, rec.receipt),
        {"grant_id": rec.statement_id, **_receipt_data(rec.receipt)},
        rec.statement_id,
    )


def _json_arg(value: str) -> Any:
    """JSON given inline, as @FILE, or - for standard input."""
    if value == "-":
        return json.load(sys.stdin)
    if value.startswith("@"):
        return json.loads(Path(value[1:]).read_text())
    return json.loads(value)


DECISIONS = {"approve": pb.Approval.APPROVE, "edit": pb.Approval.EDIT, "reject": pb.Approval.REJECT}


@main.command()
@click.argument("action_id")
@click.option("--params", required=True, help="The exact parameters approved: JSON, @FILE or -.")
@click.option(
    "--decision", type=click.Choice(sorted(DECISIONS)), default="approve", show_default=True
)
@click.option("--ticket", default="")
@click.option("--comment", default="")
@signing_key
@connection
@_errors
def approve(
    conn: Conn,
    action_id: str,
    params: str,
    decision: str,
    ticket: str,
    comment: str,
    key_file: Path,
) -> None:
    """Approve (or reject) one intended action, bound to the digest of its exact parameters."""
    with conn.client() as client:
        rec = Actor(client, IdentityKey.load(key_file)).approve(
            action_id,
            _json_arg(params),
            decision=DECISIONS[decision],
            ticket=ticket,
            comment=comment,
        )
    conn.out.emit(
        _receipt_line("approval", rec.statement_id, rec.receipt),
        {"approval_id": rec.statement_id, **_receipt_data(rec.receipt)},
        rec.statement_id,
    )


# Actions.

POLICY = {"allow": pb.ALLOW, "deny": pb.DENY, "allow-if-approved": pb.ALLOW_IF_APPROVED}
STATUS = {"ok": pb.OK, "error": pb.ERROR, "denied": pb.DENIED, "timeout": pb.TIMEOUT}


def _pending_path(conn: Conn, action_id: str) -> Path:
    return conn.trust_dir / "intents" / f"{action_id}.leaf"


@main.command()
@click.option("--tool", help="Tool name (gen_ai.tool.name) of an INTENT.")
@click.option("--resource", help="Target resource URI of an INTENT.")
@click.option("--access", type=click.Choice(sorted(ACCESS)), help="Access kind of an INTENT.")
@click.option(
    "--params",
    default="{}",
    show_default=True,
    help="Parameters: JSON, @FILE or -. Secrets in "
    "them are redacted before signing; the digest binds the originals.",
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
@_errors
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
    outcome_of: str | None,
    status: str,
    effect_ref: str,
    error_code: str,
    key_file: Path,
) -> None:
    """Record an agent action: its INTENT (before acting), or with --outcome its OUTCOME.

    The INTENT is kept under --trust-dir until its OUTCOME is recorded, so the two can be
    recorded by separate invocations.
    """
    key = IdentityKey.load(key_file)
    with conn.client() as client:
        actor = Actor(client, key)
        if outcome_of is not None:
            path = _pending_path(conn, outcome_of)
            if not path.exists():
                raise ValueError(
                    f"no INTENT of action {outcome_of} recorded from here ({path} is missing)"
                )
            outcome = pb.Outcome(
                status=STATUS[status], effect_ref=effect_ref, error_code=error_code
            )
            rec = actor.submit(outcome_body(path.read_bytes(), outcome))
            path.unlink()
            conn.out.emit(
                _receipt_line(f"OUTCOME of {outcome_of}:", rec.statement_id, rec.receipt),
                {
                    "action_id": outcome_of,
                    "statement_id": rec.statement_id,
                    **_receipt_data(rec.receipt),
                },
                rec.statement_id,
            )
            return
        if not (tool and resource and access):
            raise click.UsageError(
                "an INTENT needs --tool, --resource and --access (or use --outcome)"
            )
        credential = (
            pb.CredentialRef(kind=credential_kind, key_id=credential_key_id)
            if credential_kind
            else None
        )
        act = actor.action(
            tool,
            resource,
            ACCESS[access],
            _json_arg(params),
            grant_ids=grant_ids,
            operation=operation,
            action_id=action_id,
            approval_id=approval_id,
            decision=POLICY[decision],
            credential=credential,
            trace_id=trace_id,
        )
        rec = actor.submit(act.intent)
        write_atomic(_pending_path(conn, act.action_id), rec.leaf)
    conn.out.emit(
        _receipt_line(f"INTENT of action {act.action_id}:", rec.statement_id, rec.receipt)
        + f"\nrecord its outcome with: affidavit append --outcome {act.action_id} --status ok",
        {
            "action_id": act.action_id,
            "statement_id": rec.statement_id,
            **_receipt_data(rec.receipt),
        },
        act.action_id,
    )


# Reading and proving.


def _entry_data(entry: pb.Entry) -> dict[str, Any]:
    data: dict[str, Any] = {"index": entry.index, "leaf_hash": entry.leaf_hash.hex()}
    try:
        signed = pb.SignedStatement.FromString(entry.data)
        data["key_id"] = signed.key_id
        data["statement"] = _message_dict(statement_of(entry.data))
    except Exception:  # an opaque log's entry, or a leaf that is not a statement
        data["data_base64"] = base64.b64encode(entry.data).decode()
    if entry.verdict:
        data["verdict"] = pb.Verdict.Name(entry.verdict)
        data["verdict_reason"] = entry.verdict_reason
    return data


@main.command()
@click.argument("index", type=int, required=False)
@click.option("--statement-id", help="Find the entry by statement id.")
@click.option("--action-id", help="Every entry of an action (intent, outcome, approval).")
@connection
@_errors
def get(conn: Conn, index: int | None, statement_id: str | None, action_id: str | None) -> None:
    """Show entries, decoded, each with its inclusion verified (needs --token)."""
    with conn.client() as client:
        if index is not None:
            indexes = [index]
        elif statement_id or action_id:
            hits = client.search(statement_id=statement_id or "", action_id=action_id or "")
            indexes = [h.index for h in hits]
            if not indexes:
                raise ValueError("no such statement in the log")
        else:
            raise click.UsageError("give an INDEX, --statement-id or --action-id")
        shown = []
        for i in indexes:
            entry = next(client.entries(i, i + 1))
            # Raises unless entry i is provably in a trusted checkpoint; and it must be this entry.
            proof, _ = client.prove(index=i)
            if proof.leaf_hash != entry.leaf_hash:
                raise VerificationError(
                    f"entry {i} as served has leaf hash {entry.leaf_hash.hex()}, but the log "
                    f"proves leaf {proof.leaf_hash.hex()} at that index"
                )
            shown.append(_entry_data(entry))
    human = "\n\n".join(json.dumps(d, indent=2, ensure_ascii=False) for d in shown)
    conn.out.emit(human, shown if len(shown) > 1 else shown[0])


@main.command()
@click.option("--actor", default="", help="Who issued the statement.")
@click.option("--grantor", default="", help="Anyone in an action's delegation chain.")
@click.option("--approver", default="", help="Who approved an action.")
@click.option(
    "--key-id", default="", help="Signing key id, or an action's credential key id / jti."
)
@click.option("--resource-prefix", default="", help="Target resource URI prefix.")
@click.option("--tool", default="")
@click.option("--verdict", type=click.Choice(["in-scope", "out-of-scope", "no-grant"]))
@click.option("--session", "session_id", default="")
@click.option("--trace-id", default="")
@click.option("--action-id", default="")
@click.option("--statement-id", default="")
@click.option("--subject", default="", help="Identity events about this identity.")
@click.option("--from", "time_from", help="Client time from (ISO 8601 or Unix ms).")
@click.option("--to", "time_to", help="Client time before (ISO 8601 or Unix ms).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@connection
@_errors
def search(
    conn: Conn,
    limit: int,
    verdict: str | None,
    time_from: str | None,
    time_to: str | None,
    **criteria: str,
) -> None:
    """Find statements by who and what they concern (needs --token)."""
    request: dict[str, Any] = {k: v for k, v in criteria.items() if v}
    if verdict:
        request["verdict"] = {
            "in-scope": pb.IN_SCOPE,
            "out-of-scope": pb.OUT_OF_SCOPE,
            "no-grant": pb.NO_GRANT,
        }[verdict]
    request["time_from_ms"], request["time_to_ms"] = _time_ms(time_from), _time_ms(time_to)
    hits = []
    with conn.client() as client:
        for hit in client.search(**request):
            hits.append(hit)
            if len(hits) == limit:
                break
    lines = [
        f"{h.index:>8}  {h.kind:<8}  {_utc(h.client_time_ms)}  {h.issuer}  "
        f"{pb.Verdict.Name(h.verdict) if h.verdict else ''} {h.verdict_reason}".rstrip()
        for h in hits
    ]
    conn.out.emit("\n".join(lines) or "no matches", [_message_dict(h) for h in hits])


@main.command()
@click.argument("index", type=int, required=False)
@click.option("--leaf-hash", help="The entry's leaf hash (hex) instead of its index.")
@connection
@_errors
def prove(conn: Conn, index: int | None, leaf_hash: str | None) -> None:
    """Prove an entry is in the log: a verified inclusion proof to a trusted checkpoint."""
    if (index is None) == (leaf_hash is None):
        raise click.UsageError("give an INDEX or --leaf-hash")
    with conn.client() as client:
        proof, cp = client.prove(
            index=index, leaf_hash=bytes.fromhex(leaf_hash) if leaf_hash else None
        )
    data = {
        "index": proof.index,
        "leaf_hash": proof.leaf_hash.hex(),
        "tree_size": proof.tree_size,
        "root_hash": cp.checkpoint.root_hash.hex(),
        "proof": [h.hex() for h in proof.hashes],
        "checkpoint": cp.note,
        "witnesses": list(cp.witnesses),
    }
    conn.out.emit(
        f"entry {proof.index} (leaf {proof.leaf_hash.hex()}) is in {cp.checkpoint.origin} at size "
        f"{proof.tree_size}: inclusion proof of {len(proof.hashes)} hashes verified",
        data,
    )


@main.command()
@connection
@_errors
def verify(conn: Conn) -> None:
    """Check the log now: its checkpoint's signature (and witness quorum), and that it extends
    the checkpoint this client trusted before (catches rollbacks and forks)."""
    with conn.client() as client:
        before = client.trusted.checkpoint.size if client.trusted else None
        cp = client.checkpoint()
    checks = [f"signed by {cp.checkpoint.origin}"]
    if cp.witnesses:
        checks.append(f"cosigned by {', '.join(cp.witnesses)}")
    checks.append(
        "first checkpoint trusted" if before is None else f"consistent with trusted size {before}"
    )
    conn.out.emit(
        f"log {cp.checkpoint.origin} at size {cp.checkpoint.size}, "
        f"root {cp.checkpoint.root_hash.hex()}: " + "; ".join(checks),
        {
            "origin": cp.checkpoint.origin,
            "size": cp.checkpoint.size,
            "root_hash": cp.checkpoint.root_hash.hex(),
            "witnesses": list(cp.witnesses),
            "previously_trusted_size": before,
            "note": cp.note,
        },
    )


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(affidavit completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(main, {}, "affidavit", "_AFFIDAVIT_COMPLETE").source())


# Witnessing.


@main.command()
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
    "logs",
    multiple=True,
    metavar="ADDRESS=LOGKEY",
    help="A log to witness: its address and verifier key (text or @FILE); repeatable. "
    "Default: --server with --log-key.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".affidavit-witness"),
    show_default=True,
    envvar="AFFIDAVIT_WITNESS_STATE",
    show_envvar=True,
    help="Where the last cosigned checkpoint of each log is kept.",
)
@click.option(
    "--evidence-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where fork evidence is written (default: STATE_DIR/evidence).",
)
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
@_errors
def witness(
    conn: Conn,
    key_file: Path,
    logs: tuple[str, ...],
    state_dir: Path,
    evidence_dir: Path | None,
    once: bool,
    keep_going: bool,
    poll_interval: float | None,
) -> None:
    """Witness logs: check every new checkpoint is consistent with the last one cosigned, then
    cosign it. On a fork or rollback: refuse, write evidence, exit 1 (or keep going)."""
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
            witnessing.LogConfig.from_key(address, _key_text(key), conn.tls)
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


# Evidence.


def _report_data(report: Any) -> dict[str, Any]:
    return {
        "action_id": report.action_id,
        "agent": report.agent,
        "owner": report.owner,
        "in_scope": report.in_scope,
        "verdict": report.verdict,
        "verdict_reason": report.verdict_reason,
        "findings": list(report.findings),
        "authority": [
            {
                "grant_id": g.grant_id,
                "index": g.index,
                "grantor": g.grantor,
                "grantor_kind": g.grantor_kind,
                "ticket": g.grant.ticket,
            }
            for g in report.authority
        ],
        "approvals": [
            {
                "approval_id": a.approval_id,
                "index": a.index,
                "approver": a.approver,
                "ticket": a.approval.ticket,
                "decision": pb.Approval.Decision.Name(a.approval.decision),
                "problem": a.problem,
            }
            for a in report.approvals
        ],
        "intent": _message_dict(report.intent),
        "outcome": _message_dict(report.outcome) if report.outcome is not None else None,
        "checkpoint_size": report.checkpoint.size,
        "witnesses": [name for name, _ in report.witnesses],
        "summary": report.summary(),
    }


def _action_target(action_id: str | None, index: int | None) -> dict[str, Any]:
    if (action_id is None) == (index is None):
        raise click.UsageError("give an ACTION_ID or --index")
    return {"action_id": action_id} if action_id is not None else {"index": index}


@main.command()
@click.argument("action_id", required=False)
@click.option("--index", type=int, help="The action's INTENT or OUTCOME index instead of its id.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The bundle file to write.",
)
@connection
@_errors
def export(conn: Conn, action_id: str | None, index: int | None, out: Path) -> None:
    """Write an evidence bundle: the action, its grants up to the human, its approval and the
    identities that signed them, each with an inclusion proof to one (witnessed) checkpoint.
    Needs --token; with --quorum, the checkpoint carries that many witness cosignatures."""
    from affidavit.client import bundle

    with conn.client() as client:
        b = bundle.export(client, **_action_target(action_id, index))
    text = b.to_json()
    out.write_text(text)
    report = bundle.verify(text, conn.policy())
    conn.out.emit(
        f"wrote {out}: {len(b.entries)} entries proven in tree of size {report.checkpoint.size}\n\n"
        + report.summary(),
        {"file": str(out), **_report_data(report)},
    )


@main.command("verify-bundle")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@connection
@_errors
def verify_bundle(conn: Conn, file: Path) -> None:
    """Verify an evidence bundle offline, with public keys only (--log-key, --witness-key,
    --quorum), and say in plain words who did what, on whose authority, approved by whom.
    Exits 1 if anything fails to verify or the action was not properly authorised."""
    from affidavit.client import bundle

    report = bundle.verify(file.read_bytes(), conn.policy())
    conn.out.emit(report.summary(), _report_data(report))
    if not report.in_scope:
        sys.exit(EXIT_VERIFY)


@main.command("who-authorised")
@click.argument("action_id", required=False)
@click.option("--index", type=int, help="The action's INTENT or OUTCOME index instead of its id.")
@connection
@_errors
def who_authorised(conn: Conn, action_id: str | None, index: int | None) -> None:
    """Who authorised an action: the grant chain up to the human, the approval and its ticket,
    each verified against the log (needs --token)."""
    from affidavit.client import bundle

    with conn.client() as client:
        b = bundle.export(client, **_action_target(action_id, index))
    report = bundle.verify(b.to_json(), conn.policy())
    conn.out.emit(report.summary(), _report_data(report))


# Auditing.


@main.command()
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the audit's position here as it goes, and continue from it if it exists.",
)
@click.option(
    "--workers", type=click.IntRange(min=0), help="Processes verifying signatures (default: CPUs)."
)
@connection
@_errors
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
    if interactive:
        click.echo("", err=True)
    conn.out.emit(report.text(), report.to_json())
    if not report.ok:
        sys.exit(EXIT_VERIFY)
