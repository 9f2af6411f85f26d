"""Who exists and who granted what, read from the log through Search (needs an auditor token).

    for who in identities(client):          # every identity, as the log's events left it
        print(who.identity_id, who.kind, who.owner, who.key_id, who.revoked_at)
    for g in grants(client, grantee="code-agent"):
        print(g.grant_id, g.issuer, g.grant.tools)

Identity events are signed only by admins, so identities() starts at the genesis admin (index
0, self-registered) and follows each admin's statements (Search actor=), learning the admins
they register: it reads admins' statements only, never the whole log. grants() reads the
statements of the grantor (Search grantor=: the grants it issued and those issued under its
authority down a delegation chain) or, for a grantee alone, of every identity that may issue a
grant (humans and agents). Every entry read is checked against its leaf hash by the client.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from affidavit.client.client import Client
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.build import statement_of
from affidavit.statements.signing import key_id


@dataclass
class IdentityView:
    """An identity as the log's identity events left it (up to the client's checkpoint)."""

    identity_id: str
    kind: str
    owner: str
    display_name: str
    key_id: str
    registered_at: int
    registered_by: str
    rotations: list[int] = field(default_factory=list)
    revoked_at: int | None = None


@dataclass
class GrantView:
    """A grant in the log: its id, where it is, who issued it, and the grant itself."""

    grant_id: str
    index: int
    issuer: str
    grant: pb.Grant


def _statements(client: Client, indexes: Iterable[int]) -> Iterator[tuple[int, pb.Statement]]:
    for index in sorted(set(indexes)):
        entry = next(client.entries(index, index + 1))
        yield index, statement_of(entry.data)


def identities(client: Client) -> list[IdentityView]:
    """Every identity, in order of registration."""
    size = client.checkpoint().checkpoint.size
    if size == 0:
        return []
    [(_, genesis)] = _statements(client, [0])
    if genesis.WhichOneof("body") != "identity":
        return []  # not a statements log
    found: dict[str, IdentityView] = {}
    admins, read = [genesis.header.issuer], set()
    while unread := [a for a in admins if a not in read]:
        admin = unread[0]
        read.add(admin)
        hits = [h.index for h in client.search(actor=admin) if h.kind == "identity"]
        for index, st in _statements(client, [i for i in hits if i < size]):
            _apply(found, index, st)
            event = st.identity
            if event.op == pb.IdentityEvent.REGISTER and event.kind == pb.ADMIN:
                admins.append(event.identity_id)
    return sorted(found.values(), key=lambda v: v.registered_at)


def _apply(found: dict[str, IdentityView], index: int, st: pb.Statement) -> None:
    event = st.identity
    view = found.get(event.identity_id)
    if event.op == pb.IdentityEvent.REGISTER:
        found[event.identity_id] = IdentityView(
            identity_id=event.identity_id,
            kind=pb.IdentityKind.Name(event.kind).lower(),
            owner=event.owner,
            display_name=event.display_name,
            key_id=key_id(event.public_key),
            registered_at=index,
            registered_by=st.header.issuer,
        )
    elif view is not None and event.op == pb.IdentityEvent.ROTATE_KEY:
        view.key_id = key_id(event.public_key)
        view.rotations.append(index)
    elif view is not None and event.op == pb.IdentityEvent.REVOKE:
        view.revoked_at = index


def grants(client: Client, *, grantee: str = "", grantor: str = "") -> list[GrantView]:
    """Grants to grantee and/or under grantor's authority (at least one of them), by index."""
    if not grantee and not grantor:
        raise ValueError("give a grantee, a grantor or both")
    size = client.checkpoint().checkpoint.size
    indexes: set[int] = set()
    if grantor:
        indexes.update(h.index for h in client.search(grantor=grantor) if h.kind == "grant")
    else:
        for who in identities(client):
            if who.kind in ("human", "agent"):
                indexes.update(
                    h.index for h in client.search(actor=who.identity_id) if h.kind == "grant"
                )
    out = []
    for index, st in _statements(client, [i for i in indexes if i < size]):
        if st.WhichOneof("body") == "grant" and (not grantee or st.grant.grantee == grantee):
            out.append(GrantView(st.header.statement_id, index, st.header.issuer, st.grant))
    return out
