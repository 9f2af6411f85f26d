"""Reading and proving: get, prove, verify (search: searching.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, BinaryIO

import click
from affidavit.client.cli.options import (
    Conn,
    connection,
    handle_errors,
    message_dict,
    tiles_option,
)
from affidavit.client.errors import NotFoundError, VerificationError
from affidavit.client.verify import check_tlog_proof
from affidavit.merkle.tlogproof import TlogProof
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.build import statement_of
from affidavit.statements.claims import producer_claims

# Reading and proving.


def _entry_data(entry: pb.Entry) -> dict[str, Any]:
    data: dict[str, Any] = {"index": entry.index, "leaf_hash": entry.leaf_hash.hex()}
    try:
        signed = pb.SignedStatement.FromString(entry.data)
        data["key_id"] = signed.key_id
        statement = statement_of(entry.data)
        data["statement"] = message_dict(statement)
        if statement.WhichOneof("body") == "action":
            # Shown apart from the verified fields: no rule checks these (statements.claims).
            data["producer_claims"] = producer_claims(statement.action)
    except Exception:  # an opaque log's entry, or a leaf that is not a statement
        data["data_base64"] = base64.b64encode(entry.data).decode()
    if entry.verdict:
        data["verdict"] = pb.Verdict.Name(entry.verdict)
        data["verdict_reason"] = entry.verdict_reason
        data["admitted_ms"] = entry.admitted_ms
    return data


@click.command()
@click.argument("index", type=int, required=False)
@click.option("--statement-id", help="Find the entry by statement id.")
@click.option("--action-id", help="Every entry of an action (intent, outcome, approval).")
@connection
@handle_errors
def get(conn: Conn, index: int | None, statement_id: str | None, action_id: str | None) -> None:
    """Show entries, decoded, each with its inclusion verified (needs --token)."""
    with conn.client() as client:
        if index is not None:
            indexes = [index]
        elif statement_id or action_id:
            hits = client.search(statement_id=statement_id or "", action_id=action_id or "")
            indexes = [h.index for h in hits]
            if not indexes:
                raise NotFoundError("no such statement in the log")
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


@click.command()
@click.argument("index", type=int, required=False)
@click.option("--leaf-hash", help="The entry's leaf hash (hex) instead of its index.")
@click.option(
    "--format",
    "proof_format",
    type=click.Choice(["text", "tlog-proof"]),
    default="text",
    show_default=True,
    help="tlog-proof: print the proof as c2sp.org/tlog-proof@v1 text (index, proof, the "
    "checkpoint with its cosignatures), checkable offline with `affidavit verify-proof`.",
)
@tiles_option
@connection
@handle_errors
def prove(
    conn: Conn,
    index: int | None,
    leaf_hash: str | None,
    proof_format: str,
    tiles_url: str | None,
) -> None:
    """Prove an entry is in the log: a verified inclusion proof to a trusted checkpoint."""
    if (index is None) == (leaf_hash is None):
        raise click.UsageError("give an INDEX or --leaf-hash")
    with conn.client(tiles_url) as client:
        proof, cp = client.prove(
            index=index, leaf_hash=bytes.fromhex(leaf_hash) if leaf_hash else None
        )
    if proof_format == "tlog-proof":
        click.echo(TlogProof(proof.index, tuple(proof.hashes), cp.note).format(), nl=False)
        return
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


@click.command()
@tiles_option
@connection
@handle_errors
def verify(conn: Conn, tiles_url: str | None) -> None:
    """Check the log now: its checkpoint's signature (and witness quorum), and that it extends
    the checkpoint this client trusted before (catches rollbacks and forks)."""
    with conn.client(tiles_url) as client:
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


@click.command("verify-proof")
@click.argument("proof_file", metavar="FILE", type=click.File("rb"))
@click.option(
    "--entry",
    required=True,
    help="The entry the proof is about: @FILE (its exact bytes) or the text itself.",
)
@connection
@handle_errors
def verify_proof(conn: Conn, proof_file: BinaryIO, entry: str) -> None:
    """Check a c2sp.org/tlog-proof offline (FILE, or - for standard input): the checkpoint is
    signed by the log (--log-key) and cosigned by --quorum of the --witness-key witnesses, and
    proves the entry at its index. Needs no log and no network."""
    data = Path(entry[1:]).read_bytes() if entry.startswith("@") else entry.encode()
    proof, cp = check_tlog_proof(proof_file.read(), data, conn.policy())
    witnesses = f", cosigned by {', '.join(cp.witnesses)}" if cp.witnesses else ""
    conn.out.emit(
        f"entry {proof.index} is in {cp.checkpoint.origin} at size {cp.checkpoint.size}"
        f"{witnesses}: proof verified",
        {
            "index": proof.index,
            "origin": cp.checkpoint.origin,
            "tree_size": cp.checkpoint.size,
            "root_hash": cp.checkpoint.root_hash.hex(),
            "witnesses": list(cp.witnesses),
        },
    )
