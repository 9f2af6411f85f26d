"""`export --format ocsf`: the log's statements as OCSF API Activity events, one JSON per line.

Without a selection, every entry of the log up to the newest checkpoint the client trusts, read
in order; the root of the leaf hashes read is recomputed and must be that checkpoint's, so the
file is exactly the log's first N statements. With a selection (--session, --trace, --actor,
--since, --until) the statements the log's search returns, each proven included in that
checkpoint. A file (--out) is written beside its name and renamed into place only once
everything verified: a crash or a failed check leaves no partial file under that name.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

import click
from affidavit.client.client import Client
from affidavit.client.errors import VerificationError
from affidavit.client.ocsf import event
from affidavit.client.proven import fetch_proven
from google.protobuf.message import DecodeError

from affidavit import merkle

PROGRESS_EVERY = 10_000


def _whole_log(client: Client, origin: str, out: TextIO) -> tuple[int, int]:
    verified = client.checkpoint()
    size = verified.checkpoint.size
    hashes = []
    for entry in client.entries(0, size) if size else iter(()):
        try:
            document = event(
                entry.index,
                entry.data,
                entry.leaf_hash,
                entry.verdict,
                entry.verdict_reason,
                origin,
            )
        except DecodeError:
            raise ValueError(
                f"entry {entry.index} is not a signed statement: this log holds opaque entries"
            ) from None
        out.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
        hashes.append(entry.leaf_hash)
        if len(hashes) % PROGRESS_EVERY == 0:
            click.echo(f"exported {len(hashes)}/{size} statements", err=True)
    if merkle.root_hash(hashes) != verified.checkpoint.root_hash:
        raise VerificationError(
            f"the {size} entries the log sent do not hash to its checkpoint's root"
        )
    return len(hashes), size


def _selected(client: Client, origin: str, out: TextIO, **criteria: object) -> tuple[int, int]:
    indexes = [h.index for h in client.search(**criteria)]
    verified = client.checkpoint()
    size = verified.checkpoint.size
    entries = fetch_proven(client, [i for i in indexes if i < size], verified)
    for e in entries:
        document = event(e.index, e.leaf, e.leaf_hash, e.verdict, e.verdict_reason, origin)
        out.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
    return len(entries), size


def _write(client: Client, out: TextIO, criteria: dict[str, object]) -> tuple[int, int]:
    """Write the events; how many, and the size of the checkpoint they are proven in."""
    origin = client.policy.log_verifier().name
    if any(criteria.values()):
        return _selected(client, origin, out, **criteria)
    return _whole_log(client, origin, out)


def export_ocsf(client: Client, out: Path | None, criteria: dict[str, object]) -> str:
    """Write the events to out (standard output when None); a line saying what was written."""
    if out is None:
        count, size = _write(client, sys.stdout, criteria)
        return f"exported {count} statement(s) as OCSF events (log size {size})"
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as f:
            count, size = _write(client, f, criteria)
            f.flush()
            os.fsync(f.fileno())
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return f"wrote {out}: {count} statement(s) as OCSF API Activity events (log size {size})"
