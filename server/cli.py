"""The server's commands init and serve, and the options and error reporting every server command
shares (server/cli_maintenance.py holds check, migrate and auditor-token); all joined into
`affidavit` lazily (client/cli/__init__.py)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click
from affidavit.merkle import note
from affidavit.merkle.cosignature import CosignatureV1Verifier
from affidavit.merkle.errors import MalformedKeyError
from affidavit.server import app, config, logs
from affidavit.server.config import ServeSettings
from affidavit.server.listen import ListenAddressError, check_free, parse_listen
from affidavit.server.logstore import StoreSpec
from affidavit.server.storage import MIN_FREE_BYTES, StorageError
from affidavit.server.witness_push import parse_target

DEFAULT_DATA_DIR = Path("data")
MAX_ENTRY_BYTES = 65535
"""tlog-tiles entry bundles prefix each entry with a big-endian uint16 length."""

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    envvar="AFFIDAVIT_DATA_DIR",
    show_envvar=True,
    help="The log's directory: its keys and LevelDB database.",
)
origin_option = click.option(
    "--origin",
    default=config.default_origin,
    show_default="<hostname>/affidavit",
    envvar="AFFIDAVIT_ORIGIN",
    show_envvar=True,
    help="The log's name: the first line of its checkpoints and its key's name, a schema-less "
    "URL such as example.com/affidavit/prod. Only used when creating a log.",
)
format_option = click.option(
    "--entry-format",
    type=click.Choice(config.ENTRY_FORMATS),
    default="statements",
    show_default=True,
    envvar="AFFIDAVIT_ENTRY_FORMAT",
    show_envvar=True,
    help="What the log holds: signed agent-audit statements, checked at ingest, or opaque bytes. "
    "Fixed when the log is created.",
)
admin_option = click.option(
    "--admin-id",
    default="admin",
    show_default=True,
    envvar="AFFIDAVIT_ADMIN_ID",
    show_envvar=True,
    help="Identity id of the first admin, registered by the log's genesis entry.",
)


storage_option = click.option(
    "--storage",
    "storage_url",
    metavar="URL",
    envvar="AFFIDAVIT_STORAGE",
    show_envvar=True,
    help="Keep the log in PostgreSQL (postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE) instead "
    "of the LevelDB in --data-dir; with --objects. Any number of `serve` processes may share "
    "one database and bucket: each needs a --data-dir holding a copy of log.key and log.pub.",
)
objects_option = click.option(
    "--objects",
    "objects_url",
    metavar="s3://BUCKET/PREFIX",
    envvar="AFFIDAVIT_OBJECTS",
    show_envvar=True,
    help="Object storage for tiles, entry bundles and checkpoints, laid out as the C2SP "
    "tlog-tiles API under PREFIX/ (make it public to serve reads from the bucket). Endpoint and "
    "credentials from the standard settings: AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_REGION.",
)
private_objects_option = click.option(
    "--private-objects",
    "private_objects_url",
    metavar="s3://BUCKET/PREFIX",
    envvar="AFFIDAVIT_PRIVATE_OBJECTS",
    show_envvar=True,
    help="Where entry bundles go (only auditors may read entries): default the sibling "
    "prefix PREFIX.private/ of --objects, never under the public PREFIX/.",
)


def store_spec(
    data_dir: Path,
    storage_url: str | None,
    objects_url: str | None,
    private_objects_url: str | None,
) -> StoreSpec:
    spec = StoreSpec(data_dir, storage_url, objects_url, private_objects_url)
    try:
        spec.check()
    except StorageError as e:
        fail(str(e))
    return spec


def fail(message: str) -> NoReturn:
    """One line, exit 2 (usage error), as every affidavit command reports its errors."""
    click.echo(f"affidavit: error: {message}", err=True)
    sys.exit(2)


def error_text(e: Exception, about: Path | None = None) -> str:
    """An error in words, without Python's [Errno n] prefix: the reason, and the file it is
    about unless that is `about` (already named by the message)."""
    if isinstance(e, OSError) and e.strerror:
        if e.filename is None or (about is not None and Path(e.filename) == about):
            return e.strerror
        return f"{e.filename}: {e.strerror}"
    return str(e)


STARTUP_ERRORS = (StorageError, MalformedKeyError, OSError, ValueError)
"""What a server can meet while starting (a directory it cannot create, a taken port, a
malformed key): each becomes one line and exit 2, never a traceback."""


def _check_listen(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_listen(value, param.opts[0] if param.opts else "--listen").text()
    except ListenAddressError as e:
        raise click.BadParameter(str(e).split(": ", 1)[1]) from None


def _create(
    data_dir: Path,
    origin: str,
    entry_format: str,
    admin_id: str,
    spec: StoreSpec,
    min_free_bytes: int = MIN_FREE_BYTES,
) -> tuple[str, Path | None]:
    try:
        return asyncio.run(
            app.create_log(data_dir, origin, entry_format, admin_id, min_free_bytes, spec)
        )
    except STARTUP_ERRORS as e:
        where = data_dir if spec.storage_url is None else spec.storage_url.split("@")[-1]
        fail(f"cannot create a log in {where}: {error_text(e, data_dir)}")


@click.command()
@data_dir_option
@origin_option
@format_option
@admin_option
@storage_option
@objects_option
@private_objects_option
def init(
    data_dir: Path,
    origin: str,
    entry_format: str,
    admin_id: str,
    storage_url: str | None,
    objects_url: str | None,
    private_objects_url: str | None,
) -> None:
    """Create a new log: its Ed25519 signing key, database, and genesis admin.

    \b
    Writes:
      DATA_DIR/log.key    the log's private signer key (mode 0600): keep it on the server
      DATA_DIR/log.pub    its verifier key: give it to clients, auditors and witnesses
      DATA_DIR/admin.key  the first admin's key (mode 0600): move it to its owner
      DATA_DIR/db/        the LevelDB database (with --storage: the PostgreSQL schema and
                          the bucket's checkpoint instead)
    """
    spec = store_spec(data_dir, storage_url, objects_url, private_objects_url)
    verifier, admin_key = _create(data_dir, origin, entry_format, admin_id, spec)
    click.echo(f"created log {origin} in {data_dir}")
    click.echo(f"log verifier key (share it): {verifier}")
    if admin_key is not None:
        click.echo(
            f"admin {admin_id!r} registered; its key is in {admin_key} (move it off the server)"
        )


@click.command()
@data_dir_option
@origin_option
@format_option
@admin_option
@click.option(
    "--listen",
    default="127.0.0.1:7420",
    show_default=True,
    envvar="AFFIDAVIT_LISTEN",
    show_envvar=True,
    callback=_check_listen,
    help="host:port to serve gRPC on (port 0 picks a free one; IPv6 as [::1]:7420). "
    "A port already in use is an error.",
)
@click.option(
    "--http-listen",
    envvar="AFFIDAVIT_HTTP_LISTEN",
    show_envvar=True,
    callback=_check_listen,
    help="host:port to serve HTTP on: the C2SP tlog-tiles read API at the root (/checkpoint, "
    "/tile/..., /tile/entries/... for auditors) and the investigator's console under "
    "/console/. Off unless given.",
)
@click.option(
    "--console/--no-console",
    default=True,
    show_default=True,
    envvar="AFFIDAVIT_CONSOLE",
    show_envvar=True,
    help="With --http-listen: serve the investigator's console under /console/ (log in with "
    "an auditor token and the log's verifier key). It reads this server's own gRPC address "
    "like any client, over the same TLS. Browsers verify in the page only on HTTPS or "
    "localhost: put a TLS proxy in front to serve it elsewhere.",
)
@click.option(
    "--console-audit-report",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AFFIDAVIT_CONSOLE_AUDIT_REPORT",
    show_envvar=True,
    help="A report from `affidavit audit --json > FILE`, shown on the console's log page.",
)
@click.option(
    "--console-tls-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_CONSOLE_TLS_CA",
    show_envvar=True,
    help="With --tls-cert: the CA the console trusts for this server's certificate "
    "(default: --tls-cert itself, right for a self-signed one). The certificate must name the "
    "--listen host (loopback for 0.0.0.0).",
)
@click.option(
    "--console-tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_CONSOLE_TLS_CERT",
    show_envvar=True,
    help="With --tls-client-ca: the console's client certificate (signed by that CA).",
)
@click.option(
    "--console-tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_CONSOLE_TLS_KEY",
    show_envvar=True,
    help="The console's client certificate's key.",
)
@click.option(
    "--max-entry-bytes",
    type=click.IntRange(min=1),
    default=MAX_ENTRY_BYTES,
    show_default=True,
    envvar="AFFIDAVIT_MAX_ENTRY_BYTES",
    show_envvar=True,
    help=f"Largest entry accepted; at most {MAX_ENTRY_BYTES:,}, the most a tlog-tiles entry "
    "bundle holds (a 16-bit length).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    envvar="AFFIDAVIT_BATCH_SIZE",
    show_envvar=True,
    help="Most entries integrated (and synced) in one write.",
)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    envvar="AFFIDAVIT_BATCH_WAIT_MS",
    show_envvar=True,
    help="How long a batch waits for more entries once it has one. 0 is usually best: "
    "entries that arrive while a batch is being written form the next one.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    envvar="AFFIDAVIT_QUEUE_SIZE",
    show_envvar=True,
    help="Entries waiting at most; beyond it appends get RESOURCE_EXHAUSTED and should retry.",
)
@click.option(
    "--ingest-workers",
    type=click.IntRange(min=0),
    default=None,
    envvar="AFFIDAVIT_INGEST_WORKERS",
    show_envvar=True,
    help="Processes that check signed statements before admission (decoding, schema, secret "
    "guard, signature), beside the server's interpreter. Admission stays in log order, one "
    "statement at a time. 0: checked in the server's threads. Default: one per CPU when "
    "there are two or more, else 0.",
)
@click.option(
    "--min-free-mib",
    type=click.IntRange(min=0),
    default=MIN_FREE_BYTES >> 20,
    show_default=True,
    envvar="AFFIDAVIT_MIN_FREE_MIB",
    show_envvar=True,
    help="Free space (MiB) the data directory's disk keeps: below it appends get "
    "RESOURCE_EXHAUSTED (reads go on) and health says NOT_SERVING for the Log service, until "
    "space is freed; then appends resume by themselves.",
)
@click.option(
    "--check-hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    envvar="AFFIDAVIT_CHECK_HOURS",
    show_envvar=True,
    help="Re-verify every stored entry and tile against the checkpoint this often, in the "
    "background (0: never). Damage found stops appends (DATA_LOSS) and is noted in "
    "DATA_DIR/damage, so the log is not served again until it checks out.",
)
@click.option(
    "--refusal-window",
    "refusal_window_s",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    envvar="AFFIDAVIT_REFUSAL_WINDOW",
    show_envvar=True,
    help="Seconds over which refused attempts are aggregated per source before the log "
    "records their count (the first few distinct ones are recorded at once).",
)
@click.option(
    "--auditor-token-hash",
    "auditor_token_hashes",
    multiple=True,
    envvar="AFFIDAVIT_AUDITOR_TOKEN_HASHES",
    show_envvar=True,
    help="SHA-256 (hex) of a token that may read entries and search; repeat for several "
    "(the env var takes them space-separated). Make one with `affidavit auditor-token`.",
)
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    envvar="AFFIDAVIT_WITNESS_KEYS",
    show_envvar=True,
    help="Verifier key of a witness whose cosignatures this log accepts and serves "
    "(C2SP cosignature/v1 key text, or @FILE); repeat for several (env var: space-separated).",
)
@click.option(
    "--witness",
    "witnesses",
    multiple=True,
    metavar="NAME=URL@VKEY",
    envvar="AFFIDAVIT_WITNESSES",
    show_envvar=True,
    help="A witness to push every new checkpoint to (C2SP tlog-witness: URL/add-checkpoint), "
    "with its cosignature/v1 verifier key (text or @FILE); repeatable (env var: "
    "space-separated). Its cosignatures are stored and served; appends never wait for it.",
)
@click.option(
    "--witness-quorum",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    envvar="AFFIDAVIT_WITNESS_QUORUM",
    show_envvar=True,
    help="Publish (at /checkpoint and in GetCheckpoint's cosigned checkpoint) the newest "
    "checkpoint with at least this many witness cosignatures. 0: publish the latest.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_SERVE_TLS_CERT",
    show_envvar=True,
    help="Serve TLS with this PEM certificate.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_SERVE_TLS_KEY",
    show_envvar=True,
    help="The certificate's PEM private key.",
)
@click.option(
    "--metrics-listen",
    envvar="AFFIDAVIT_METRICS_LISTEN",
    show_envvar=True,
    callback=_check_listen,
    help="host:port to serve Prometheus metrics on, at /metrics (appends, refusals by code, "
    "batch sizes, integration latency, queue, tree size, witness cosignature age, proof "
    "requests). Off unless given.",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    show_default=True,
    envvar="AFFIDAVIT_LOG_FORMAT",
    show_envvar=True,
    help="Log lines on stderr as text, or one JSON object a line (time, level, logger, "
    "message, event and its fields) for a log pipeline. A line per startup and shutdown step "
    "and per refused entry; never an entry's contents or a secret.",
)
@click.option(
    "--log-level",
    type=click.Choice(logs.LEVELS),
    default="info",
    show_default=True,
    envvar="AFFIDAVIT_LOG_LEVEL",
    show_envvar=True,
    help="The least important lines logged (warning: only problems).",
)
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="AFFIDAVIT_SERVE_TLS_CLIENT_CA",
    show_envvar=True,
    help="Require client certificates signed by this CA (mTLS).",
)
@storage_option
@objects_option
@private_objects_option
def serve(
    data_dir: Path,
    origin: str,
    entry_format: str,
    admin_id: str,
    listen: str,
    http_listen: str | None,
    console: bool,
    console_audit_report: Path | None,
    console_tls_ca: Path | None,
    console_tls_cert: Path | None,
    console_tls_key: Path | None,
    max_entry_bytes: int,
    batch_size: int,
    batch_wait_ms: float,
    queue_size: int,
    ingest_workers: int | None,
    min_free_mib: int,
    check_hours: float,
    refusal_window_s: float,
    auditor_token_hashes: tuple[str, ...],
    witness_keys: tuple[str, ...],
    witnesses: tuple[str, ...],
    witness_quorum: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    metrics_listen: str | None,
    log_format: str,
    log_level: str,
    storage_url: str | None,
    objects_url: str | None,
    private_objects_url: str | None,
) -> None:
    """Serve a log over gRPC (creating it in DATA_DIR on first run).

    Appends are answered once durable on disk. Stop with Ctrl-C or SIGTERM: the batch in
    flight is finished first. With --http-listen, HTTP too: the tlog-tiles read API at the
    root and the investigator's console at /console/ (--no-console to leave it out).
    """
    logs.configure(log_format, log_level)
    if max_entry_bytes > MAX_ENTRY_BYTES:
        fail(
            f"--max-entry-bytes {max_entry_bytes} is too large: entries are at most "
            f"{MAX_ENTRY_BYTES:,} bytes, the most a tlog-tiles entry bundle can hold "
            "(each entry has a 16-bit length)"
        )
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        fail("--tls-client-ca needs --tls-cert and --tls-key")
    if (console_tls_cert is None) != (console_tls_key is None):
        fail("--console-tls-cert and --console-tls-key go together")
    if console and http_listen and tls_client_ca is not None and console_tls_cert is None:
        fail(
            "the console reads this log over its mTLS: give it a client certificate "
            "(--console-tls-cert, --console-tls-key) signed by --tls-client-ca, or --no-console"
        )
    for h in auditor_token_hashes:
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            fail(
                "--auditor-token-hash takes the 64-hex SHA-256 of a token "
                "(see `affidavit auditor-token`)"
            )
    try:
        witness_keys = tuple(
            Path(k[1:]).read_text().strip() if k.startswith("@") else k for k in witness_keys
        )
    except OSError as e:
        fail(f"--witness-key: cannot read {error_text(e)}")
    for key in witness_keys:
        try:
            verifier = note.parse_verifier(key)
        except MalformedKeyError as e:
            fail(f"--witness-key {key!r} is not a verifier key: {e}")
        if not isinstance(verifier, CosignatureV1Verifier):
            fail(f"--witness-key {verifier.name!r} is not a witness (cosignature/v1) key")
    keys = set(witness_keys)
    for text in witnesses:
        try:
            keys.add(parse_target(text).verifier.key_text())
        except (ValueError, OSError) as e:
            fail(str(e))
    if witness_quorum > len(keys):
        fail(
            f"--witness-quorum {witness_quorum} is more than the {len(keys)} witnesses "
            "configured (--witness, --witness-key)"
        )
    listens = (("--listen", listen), ("--http-listen", http_listen))
    for flag, address in (*listens, ("--metrics-listen", metrics_listen)):
        if address is None:
            continue
        try:
            # A taken port fails here, before a log is created for a server that cannot run.
            check_free(parse_listen(address, flag))
        except OSError as e:
            fail(f"{e}; is another server running there? (choose another {flag})")
    spec = store_spec(data_dir, storage_url, objects_url, private_objects_url)
    try:
        initialised = config.is_initialised(data_dir)
    except OSError as e:
        fail(f"cannot use --data-dir {data_dir}: {error_text(e, data_dir)}")
    if not initialised:
        _, admin_key = _create(data_dir, origin, entry_format, admin_id, spec, min_free_mib << 20)
        logging.info(
            "created log %s in %s%s",
            origin,
            data_dir,
            f"; admin {admin_id!r} key in {admin_key}" if admin_key else "",
        )
    settings = ServeSettings(
        data_dir=data_dir,
        listen=listen,
        max_entry_bytes=max_entry_bytes,
        max_batch=batch_size,
        max_wait_ms=batch_wait_ms,
        refusal_window_s=refusal_window_s,
        queue_size=queue_size,
        ingest_workers=ingest_workers,
        min_free_bytes=min_free_mib << 20,
        check_interval_s=check_hours * 3600,
        auditor_token_hashes=auditor_token_hashes,
        witness_keys=witness_keys,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        http_listen=http_listen,
        console=console,
        console_audit_report=console_audit_report,
        console_tls_ca=console_tls_ca,
        console_tls_cert=console_tls_cert,
        console_tls_key=console_tls_key,
        witnesses=witnesses,
        witness_quorum=witness_quorum,
        metrics_listen=metrics_listen,
        storage_url=storage_url,
        objects_url=objects_url,
        private_objects_url=private_objects_url,
    )
    try:
        asyncio.run(app.serve(settings))
    except STARTUP_ERRORS as e:
        fail(error_text(e))
    except Exception as e:  # one line, whatever broke: the operator reads it first
        fail(f"the server failed: {type(e).__name__}: {e}")
