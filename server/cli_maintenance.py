"""The server's maintenance commands: check (re-verify a stopped or shared log), migrate (LevelDB
to PostgreSQL and object storage) and auditor-token."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from affidavit.server import config
from affidavit.server.access import new_token
from affidavit.server.cli import (
    data_dir_option,
    fail,
    objects_option,
    private_objects_option,
    storage_option,
    store_spec,
)
from affidavit.server.integrity import CheckReport, DamageNote, KeptCheckpoint, check_log
from affidavit.server.logstore import StorageUnavailableError, open_store
from affidavit.server.storage import DataLossError, StorageError

EXIT_DAMAGED = 1
"""`check`'s exit code when it finds damage (the CLI's "verification failed")."""


@click.command()
@data_dir_option
@storage_option
@objects_option
@private_objects_option
def check(
    data_dir: Path,
    storage_url: str | None,
    objects_url: str | None,
    private_objects_url: str | None,
) -> None:
    """Re-verify a log: every stored entry and tile against its signed checkpoint, and the
    database against the checkpoint kept outside it.

    Reads the whole log (progress on stderr), rebuilding the tree from the entries and
    comparing every tile and the root. The log's key comes from DATA_DIR.

    \b
    LevelDB (the default): stop the server first, it holds the database's lock (a running
    server checks itself: serve --check-hours).
    PostgreSQL + S3 (--storage, --objects): frontends may go on serving; the check covers
    the tree published when it starts, reading entry bundles and tiles from the object
    store, and also checks the bucket's public checkpoint (one the log signed, not behind).
    Like any frontend, it first completes a publication a dead frontend left unfinished.

    \b
      affidavit check --data-dir ./data
      affidavit check --data-dir ./keys --storage postgresql://affidavit@db:5432/log \\
          --objects s3://audit-log/prod

    \b
    Exit codes: 0 the log is sound, 1 damage found (every problem listed, up to 100),
    2 the log cannot be checked (no log, in use, unreadable key, storage unreachable).
    """
    spec = store_spec(data_dir, storage_url, objects_url, private_objects_url)
    try:
        _, verifier_key = config.load_key(data_dir)
        storage = open_store(spec, min_free_bytes=0)
    except DataLossError as e:
        click.echo(f"affidavit: damaged: {e}", err=True)
        sys.exit(EXIT_DAMAGED)
    except (StorageError, OSError) as e:
        fail(str(e))
    interactive = sys.stderr.isatty()
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - shown[0] < (0.2 if interactive else 5.0) and done != total:
            return
        shown[0] = now
        line = f"checked {done}/{total} entries"
        click.echo(f"\r{line}" if interactive else line, err=True, nl=not interactive)

    try:
        kept = KeptCheckpoint(data_dir / config.CHECKPOINT_FILE)
        report = check_log(storage, verifier_key, kept, progress=progress)
    except StorageUnavailableError as e:  # not damage: nothing is noted, check again later
        fail(f"the check could not finish: {e}")
    except StorageError as e:
        report = CheckReport(0, [str(e)])
    finally:
        storage.close()
    if interactive:
        click.echo("", err=True)
    damage = DamageNote(data_dir / config.DAMAGE_FILE)
    if report.problems:
        for problem in report.problems:
            click.echo(f"damaged: {problem}")
        damage.write(report.problems)
        click.echo(
            f"{len(report.problems)} problems in the log at {storage.location}; restore it from "
            f"a backup (a server with --data-dir {data_dir} refuses to serve it until it checks "
            "out)"
        )
        sys.exit(EXIT_DAMAGED)
    damage.clear()
    click.echo(f"sound: {report.size} entries and their tiles match the signed checkpoint")


@click.command("auditor-token")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token to this file (mode 0600) and print only its hash.",
)
def auditor_token(out: Path | None) -> None:
    """Make an auditor token: give the token to the auditor, its hash to `serve
    --auditor-token-hash`. The server keeps only the hash.

    \b
      HASH=$(affidavit auditor-token --out auditor.token)
      affidavit serve --auditor-token-hash "$HASH"
      affidavit search --token @auditor.token ...
    """
    token, digest = new_token()
    if out is not None:
        if out.exists():
            fail(f"{out} exists; choose another --out")
        config.write_private(out, token + "\n")
        click.echo(digest)
        return
    click.echo(f"token (give to the auditor, shown once): {token}")
    click.echo(f"hash (for serve --auditor-token-hash):   {digest}")


@click.command()
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    help="The LevelDB log's data directory (its keys and db/); stop its server first.",
)
@click.option(
    "--to",
    "storage_url",
    metavar="URL",
    required=True,
    envvar="AFFIDAVIT_STORAGE",
    show_envvar=True,
    help="PostgreSQL URL of an empty database (postgresql://USER@HOST:PORT/DATABASE).",
)
@objects_option
@private_objects_option
def migrate(
    source: Path, storage_url: str, objects_url: str | None, private_objects_url: str | None
) -> None:
    """Move a LevelDB log to PostgreSQL and object storage, verifying it on the way.

    Every signed checkpoint is checked (the log's signature, and the root of the tiles grown
    from its entries) and replayed as the batch it was; statement state, search index and
    witness cosignatures are copied; at the end the new storage must give the same latest
    checkpoint, recomputed from its tiles. Nothing is re-signed: origin, key and every proof
    stay valid. Then serve it with `affidavit serve --data-dir FROM --storage URL --objects
    s3://…` (the keys stay in FROM; db/ there is no longer used).

    \b
      affidavit migrate --from ./data --to postgresql://affidavit@db:5432/log \\
          --objects s3://audit-log/prod
    """
    from affidavit.server.migrate import Progress
    from affidavit.server.migrate import migrate as run

    spec = store_spec(source, storage_url, objects_url, private_objects_url)
    if objects_url is None:
        fail("--objects s3://BUCKET/PREFIX is required: tiles and entries go there")
    last = [0.0]

    def show(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0 or p.size == p.total:
            last[0] = now
            click.echo(
                f"migrated {p.size}/{p.total} entries ({p.checkpoints} checkpoints)", err=True
            )

    if not config.is_initialised(source):
        fail(f"{source} holds no log (no {config.KEY_FILE})")
    try:
        done = run(source, spec, show)
    except StorageError as e:
        fail(f"migration stopped: {e}")
    click.echo(
        f"migrated {done.size} entries, {done.checkpoints} checkpoints, {done.records} state "
        f"and index records, {done.cosigned} cosigned checkpoints; the latest checkpoint "
        "verifies against the new storage's tiles"
    )
