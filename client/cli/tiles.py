"""Tiles: copy a log's C2SP tlog-tiles tree to a directory, for a static host."""

from __future__ import annotations

from pathlib import Path

import click
from affidavit.client.cli.options import Conn, connection, handle_errors, key_text


@click.group()
def tiles() -> None:
    """The log's C2SP tlog-tiles tree (served by `affidavit serve --http-listen`)."""


@tiles.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--tiles",
    "tiles_url",
    metavar="URL",
    required=True,
    envvar="AFFIDAVIT_TILES",
    show_envvar=True,
    help="The log's tlog-tiles HTTP API (serve --http-listen), e.g. http://127.0.0.1:7421.",
)
@click.option(
    "--entries",
    is_flag=True,
    help="Also write the entry bundles (needs --token: entry contents are for auditors).",
)
@connection
@handle_errors
def export(conn: Conn, directory: Path, tiles_url: str, entries: bool) -> None:
    """Write DIRECTORY/checkpoint and DIRECTORY/tile/... for the log's published checkpoint,
    every file checked against the signed checkpoint first; the checkpoint is written last.
    Serve DIRECTORY from any static host or bucket: it is the same read API."""
    from affidavit.client.tiles import TileLog  # aiohttp: imported when it runs
    from affidavit.client.tiles_export import export as export_tree

    token = key_text(conn.token) if conn.token else None
    with TileLog(tiles_url, token=token) as log:
        done = export_tree(
            log,
            conn.policy(),
            directory,
            entries=entries,
            progress=lambda line: click.echo(line, err=True),
        )
    cp = done.checkpoint.checkpoint
    conn.out.emit(
        f"exported {cp.origin} at size {cp.size}: {done.tiles} tiles"
        + (f", {done.bundles} entry bundles" if entries else "")
        + f" into {directory}",
        {"origin": cp.origin, "size": cp.size, "tiles": done.tiles, "bundles": done.bundles},
    )
