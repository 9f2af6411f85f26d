"""Shared by every client command: output (--json, -q), the connection options, the signing
key option, error handling with documented exit codes, and parsing of values given on the line."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from affidavit.client.client import Client, Receipt, Tls
from affidavit.client.errors import (
    ClientError,
    NotFoundError,
    NotSentError,
    RefusedError,
    UnavailableError,
    VerificationError,
)
from affidavit.client.jsonform import message_json
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import keys
from affidavit.merkle.errors import MerkleError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.errors import Rejection
from affidavit.statements.signing import IdentityKey

EXIT_VERIFY, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 1, 2, 3, 4
EXIT_NOT_AUTHORISED, EXIT_NOT_FOUND, EXIT_INTERRUPTED = 5, 6, 130

EXIT_CODES: dict[int, tuple[str, str]] = {
    0: ("ok", "done"),
    EXIT_VERIFY: ("verification-failed", "something did not verify, or an audit found something"),
    EXIT_USAGE: ("usage", "usage error or invalid input; nothing was sent"),
    EXIT_REFUSED: ("refused", "the log refused the request"),
    EXIT_UNREACHABLE: ("unreachable", "the log could not be reached"),
    EXIT_NOT_AUTHORISED: (
        "not-authorised",
        "the action is not authorised (append: recorded, but not authorised)",
    ),
    EXIT_NOT_FOUND: ("not-found", "no such entry, statement or action in the log"),
    EXIT_INTERRUPTED: ("interrupted", "interrupted (Ctrl-C)"),
}
"""Every exit code of a client command: its name (the `kind` of a --json error) and meaning."""

EXIT_CODES_TEXT = ", ".join(f"{code} {meaning}" for code, (_, meaning) in EXIT_CODES.items())

F = TypeVar("F", bound=Callable[..., Any])


# Output and errors.


def json_wanted() -> bool:
    """Whether the command running was given --json (its errors are then JSON too)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def error_json(message: str, code: int, **more: str) -> str:
    """An error as one line of JSON: {"error": {"kind", "exit_code", "message", ...}}."""
    error = {"kind": EXIT_CODES[code][0], "exit_code": code, "message": message, **more}
    return json.dumps({"error": error}, ensure_ascii=False, sort_keys=True)


def fail(message: str, code: int, **more: str) -> NoReturn:
    """Report a failure on stderr, one line (JSON with --json; more: extra JSON fields such
    as the log's status), and exit with its documented code."""
    if json_wanted():
        click.echo(error_json(message, code, **more), err=True)
    else:
        click.echo(f"affidavit: {message}", err=True)
    sys.exit(code)


def handle_errors(f: F) -> F:
    """One clear line and a documented exit code for every expected failure; no traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except VerificationError as e:
            fail(f"VERIFICATION FAILED: {e}", EXIT_VERIFY)
        except NotFoundError as e:
            fail(f"not found: {e.message}", EXIT_NOT_FOUND, status=e.code)
        except RefusedError as e:
            hint = ""
            if e.code == "UNAUTHENTICATED" and "auditor token" in e.message:
                hint = "; give it with --token TOKEN or --token @FILE (or AFFIDAVIT_TOKEN)"
            elif e.code == "PERMISSION_DENIED" and "not an auditor token" in e.message:
                hint = "; check --token (or AFFIDAVIT_TOKEN)"
            fail(f"refused by the log ({e.code}): {e.message}{hint}", EXIT_REFUSED, status=e.code)
        except (NotSentError, Rejection) as e:
            fail(
                f"not sent: {e.message} ({e.code}; checked here, before sending, by the rule "
                "the log applies)",
                EXIT_USAGE,
                reason=e.code,
            )
        except UnavailableError as e:
            fail(f"cannot reach the log: {e}", EXIT_UNREACHABLE)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except click.UsageError as e:
            if not json_wanted():
                raise
            fail(e.format_message(), EXIT_USAGE)
        except (ClientError, MerkleError, OSError, ValueError) as e:
            fail(f"error: {e}", EXIT_USAGE)

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


def message_dict(message: Any) -> dict[str, Any]:
    """A message as JSON: integers as numbers, hashes as hex (client/jsonform.py)."""
    return message_json(message)


# Connection options, shared by every client command.


def key_text(value: str) -> str:
    """A key given inline or as @file."""
    return Path(value[1:]).read_text().strip() if value.startswith("@") else value.strip()


def default_log_key() -> str | None:
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
        try:
            log_key = key_text(self.log_key)
            TrustPolicy(log_key).log_verifier()
        except (MerkleError, OSError, ValueError) as e:
            raise ValueError(
                f"--log-key {self.log_key}: {e}; give the log's verifier key "
                "(NAME+HASH+KEY, as in data/log.pub) or @FILE holding it"
            ) from None
        witnesses = []
        for k in self.witness_keys:
            try:
                witnesses.append(key_text(k))
                TrustPolicy(log_key, (witnesses[-1],)).witness_verifiers()
            except (MerkleError, OSError, ValueError) as e:
                raise ValueError(
                    f"--witness-key {k}: {e}; give a witness's verifier key (the .pub of "
                    "`affidavit keygen --witness`) or @FILE holding it"
                ) from None
        return TrustPolicy(log_key, tuple(witnesses), self.quorum)

    def client(self, tiles_url: str | None = None) -> Client:
        """A Client of the log; with tiles_url, reading checkpoints and proofs from its
        tlog-tiles HTTP API (no gRPC)."""
        from affidavit.client.tiles import TileLog  # aiohttp, only when reading tiles

        token = key_text(self.token) if self.token else None
        tiles = None if tiles_url is None else TileLog(tiles_url, token=token)
        return Client(
            self.server,
            self.policy(),
            trust_dir=self.trust_dir,
            token=token,
            tls=self.tls,
            tiles=tiles,
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
        default=default_log_key,
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
        envvar="AFFIDAVIT_CLIENT_TLS_CERT",
        show_envvar=True,
        help="Client certificate (mTLS).",
    )
    @click.option(
        "--tls-key",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        envvar="AFFIDAVIT_CLIENT_TLS_KEY",
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


def tiles_option(f: F) -> F:
    """Add --tiles URL: read through the log's tlog-tiles HTTP API instead of gRPC."""
    return click.option(
        "--tiles",
        "tiles_url",
        metavar="URL",
        envvar="AFFIDAVIT_TILES",
        show_envvar=True,
        help="Read the log's C2SP tlog-tiles HTTP API at URL (e.g. http://127.0.0.1:7421) "
        "instead of gRPC: proofs are built from its tiles and checked against its signed "
        "checkpoint.",
    )(f)


def load_identity_key(path: Path, flag: str = "--key") -> IdentityKey:
    """The identity key in path; ValueError naming the flag, the file and the key expected."""
    expected = (
        "expected the private key file of an identity, as `affidavit keygen ID` writes it "
        "(ID.key, one line starting PRIVATE+KEY+)"
    )
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{flag} {path}: cannot read it ({e}); {expected}") from None
    try:
        return IdentityKey.from_text(text)
    except (MerkleError, ValueError) as e:
        if text.startswith("PRIVATE+KEY+"):
            try:
                keys.parse_signer_key(text)
                what = "a witness key (from keygen --witness), not an identity key"
            except MerkleError:
                what = f"a damaged signer key ({e})"
        elif len(text) == 44 and text.endswith("="):
            what = "a public key (the .pub beside the .key): give the private .key"
        elif text.count("+") >= 2:
            what = "a verifier key (public), not a private key"
        else:
            what = "not a key"
        raise ValueError(f"{flag} {path} is {what}; {expected}") from None


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


def receipt_data(r: Receipt) -> dict[str, Any]:
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


def receipt_line(what: str, statement_id: str, r: Receipt) -> str:
    verdict = "" if r.verdict == "VERDICT_UNSPECIFIED" else f", {r.verdict}"
    reason = f" ({r.verdict_reason})" if r.verdict_reason else ""
    return (
        f"{what} {statement_id} recorded at index {r.index}{verdict}{reason} "
        f"(verified in tree of size {r.checkpoint.checkpoint.size})"
    )


# Values given on the command line.


ACCESS = {
    "read": pb.READ,
    "create": pb.CREATE,
    "update": pb.UPDATE,
    "delete": pb.DELETE,
    "execute": pb.EXECUTE,
}


def utc_text(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M:%S}Z"


TIME_FORMS = (
    "ISO 8601 (2026-12-04T09:30:00Z or 2026-12-04; UTC if no zone), Unix milliseconds, or "
    "relative to now: now, today, yesterday, -2h, +30m, 7d ago (units s, m, h, d, w)"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^(?:([+-])\s*(\d+)\s*([smhdw])|(\d+)\s*([smhdw])\s+ago)$")


def time_ms(value: str | None, now: datetime | None = None) -> int:
    """A time as a person writes it (TIME_FORMS) in Unix milliseconds; None or empty is 0
    (unbounded). ValueError, naming the forms, for anything else."""
    if not value:
        return 0
    text = value.strip().lower()
    now = now or datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    named = {"now": now, "today": midnight, "yesterday": midnight - timedelta(days=1)}
    if text in named:
        return int(named[text].timestamp() * 1000)
    if text.isdigit():
        return int(text)
    relative = _RELATIVE.match(text)
    if relative:
        sign, amount, unit, ago_amount, ago_unit = relative.groups()
        seconds = int(amount or ago_amount) * _UNITS[unit or ago_unit]
        return int((now.timestamp() + (seconds if sign == "+" else -seconds)) * 1000)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a time; give {TIME_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class TimeParam(click.ParamType[int]):
    """A time option (TIME_FORMS), converted to Unix milliseconds; click names the option in
    the error. Every relative time of one command is relative to the same instant (the clock
    read once per command), so `--not-before now --not-after +8h` is exactly 8 hours."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        now = None
        if ctx is not None:
            now = ctx.find_root().meta.setdefault("affidavit.now", datetime.now(UTC))
        try:
            return time_ms(value, now)
        except ValueError as e:
            self.fail(str(e), param, ctx)


TIME = TimeParam()


def json_arg(value: str, flag: str = "--params") -> Any:
    """JSON given inline, as @FILE, or - for standard input; ValueError naming the flag and
    where the JSON is broken."""
    where = "standard input" if value == "-" else value[1:] if value.startswith("@") else ""
    try:
        if value == "-":
            text = sys.stdin.read()
        elif value.startswith("@"):
            text = Path(value[1:]).read_text()
        else:
            text = value
        return json.loads(text)
    except json.JSONDecodeError as e:
        source = f" (from {where})" if where else ""
        raise ValueError(
            f"{flag}{source} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}; "
            'give JSON inline (quote it for the shell: \'{"repo": "acme/web"}\'), '
            "@FILE, or - for standard input"
        ) from None
    except OSError as e:
        raise ValueError(f"{flag}: cannot read {where}: {e.strerror}") from None
