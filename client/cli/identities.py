"""Keys and identities: keygen, id, identity add/rotate/revoke."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import click
from affidavit.client.actor import Actor
from affidavit.client.cli.options import (
    Conn,
    Out,
    connection,
    handle_errors,
    key_text,
    load_identity_key,
    receipt_data,
    receipt_line,
    signing_key,
)
from affidavit.client.trust import write_atomic
from affidavit.merkle import keys
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey

# Keys and identities.


@click.command()
@click.argument("identity_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file (default: IDENTITY_ID.key, mode 0600); the public key goes beside "
    "it, with .pub.",
)
@click.option("--witness", is_flag=True, help="Make a witness key (C2SP cosignature/v1) instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@handle_errors
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
        raw = base64.b64decode(key_text(value), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueError("a public key is 32 bytes of base64 (the .pub from `affidavit keygen`)")
    return raw


@click.command("id")
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


@click.group()
def identity() -> None:
    """Register, rotate, revoke or list identities (changes are signed by an admin's --key)."""


@identity.command("list")
@connection
@handle_errors
def identity_list(conn: Conn) -> None:
    """Every identity the log knows, as its identity events left it: kind, owner, current key,
    where it was registered and by whom, rotations, revocation (needs --token)."""
    from affidavit.client import registry

    with conn.client() as client:
        found = registry.identities(client)
    lines = [f"{'IDENTITY':<24} {'KIND':<8} {'OWNER':<20} {'KEY ID':<16} REGISTERED  STATUS"]
    for who in found:
        status = f"revoked at #{who.revoked_at}" if who.revoked_at is not None else "active"
        if who.rotations:
            status += f", key rotated at #{', #'.join(map(str, who.rotations))}"
        lines.append(
            f"{who.identity_id:<24} {who.kind:<8} {who.owner or '-':<20} {who.key_id[:16]:<16} "
            f"#{who.registered_at:<10} {status}"
        )
    conn.out.emit(
        "\n".join(lines) if found else "no identities",
        [
            {
                "identity_id": w.identity_id,
                "kind": w.kind,
                "owner": w.owner,
                "display_name": w.display_name,
                "key_id": w.key_id,
                "registered_at": w.registered_at,
                "registered_by": w.registered_by,
                "rotated_at": w.rotations,
                "revoked_at": w.revoked_at,
            }
            for w in found
        ],
    )


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
@handle_errors
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
        rec = Actor(client, load_identity_key(key_file)).register(
            identity_id,
            KINDS[kind],
            _public_key(public_key),
            owner=owner,
            display_name=display_name,
            attributes=attrs,
        )
    conn.out.emit(
        receipt_line(f"identity {identity_id} registered:", rec.statement_id, rec.receipt),
        {"statement_id": rec.statement_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )


@identity.command("rotate")
@click.argument("identity_id")
@click.option(
    "--public-key", "public_key", required=True, help="The new public key: base64 or @KEYFILE."
)
@signing_key
@connection
@handle_errors
def identity_rotate(conn: Conn, identity_id: str, public_key: str, key_file: Path) -> None:
    """Give IDENTITY_ID a new key; the old one is refused from this entry on."""
    with conn.client() as client:
        rec = Actor(client, load_identity_key(key_file)).rotate(
            identity_id, _public_key(public_key)
        )
    conn.out.emit(
        receipt_line(f"key of {identity_id} rotated:", rec.statement_id, rec.receipt),
        {"statement_id": rec.statement_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )


@identity.command("revoke")
@click.argument("identity_id")
@signing_key
@connection
@handle_errors
def identity_revoke(conn: Conn, identity_id: str, key_file: Path) -> None:
    """Revoke IDENTITY_ID: nothing it signs is accepted from this entry on."""
    with conn.client() as client:
        rec = Actor(client, load_identity_key(key_file)).revoke(identity_id)
    conn.out.emit(
        receipt_line(f"{identity_id} revoked:", rec.statement_id, rec.receipt),
        {"statement_id": rec.statement_id, **receipt_data(rec.receipt)},
        rec.statement_id,
    )
