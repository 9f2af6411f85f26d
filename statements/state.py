"""The registry and ledger state that statements build up, over any key-value store.

Every rule that depends on history (who holds which key, the next sequence of a session, a
grant's uses, an approval, an action's intent) reads it from here, and every admitted statement
updates it through apply(). The server keeps it in its LevelDB, written in the same batch as
the entries; the auditor rebuilds it by replaying the log. One encoding, one transition
function, so both reach the same state from the same entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, TypeVar

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.signing import key_id

_K = b"s/"  # every state key starts with this


class KV(Protocol):
    def get(self, key: bytes, /) -> bytes | None: ...

    def put(self, key: bytes, value: bytes, /) -> None: ...


class DictKV:
    """An in-memory KV (the auditor, tests)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes, /) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, /) -> None:
        self.data[key] = value


@dataclass(frozen=True)
class KeyRecord:
    """A public key and the span of the log [valid_from, retired_at) in which it may sign."""

    key_id: str
    identity_id: str
    public_key: bytes
    valid_from: int
    retired_at: int | None = None


@dataclass(frozen=True)
class IdentityRecord:
    identity_id: str
    kind: int
    key_id: str
    owner: str
    registered_at: int
    revoked_at: int | None = None
    roles: str = ""  # the registration's "roles" attribute: comma-separated role names

    def has_role(self, role: str) -> bool:
        return role in (r.strip() for r in self.roles.split(","))


@dataclass(frozen=True)
class SessionHead:
    """Where an (issuer, session) chain stands: the next sequence and the last leaf hash."""

    next_sequence: int
    last_leaf_hash: bytes
    closed_at: int | None = None
    """The index of the session's CLOSE: nothing may follow it."""


@dataclass(frozen=True)
class GrantRecord:
    """A grant; revoked_at is the index of its GrantRevocation (by revoked_by), if any."""

    grant_id: str
    index: int
    issuer: str
    grant: bytes  # the serialized pb.Grant
    revoked_at: int | None = None
    revoked_by: str = ""

    def decoded(self) -> pb.Grant:
        return pb.Grant.FromString(self.grant)


@dataclass(frozen=True)
class ApprovalRecord:
    approval_id: str
    index: int
    issuer: str
    action_id: str
    parameters_digest: str
    decision: int
    agent_id: str = ""


@dataclass(frozen=True)
class IntentRecord:
    action_id: str
    index: int
    leaf_hash: bytes
    issuer: str
    tool_name: str
    resource: str
    parameters_digest: str
    policy_decision: int
    verdict: int
    reason: str
    outcome_index: int | None = None
    access: int = 0
    operation_name: str = ""


@dataclass(frozen=True)
class VerdictRecord:
    """The log's scope verdict on an action: IN_SCOPE (with the grant it was in scope of),
    OUT_OF_SCOPE or NO_GRANT (with a reason code)."""

    verdict: int
    reason: str = ""
    grant_id: str = ""
    admitted_ms: int = 0


R = TypeVar("R")


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_BYTES_FIELDS: dict[type, tuple[str, ...]] = {}


def _bytes_fields(cls: type) -> tuple[str, ...]:
    """The fields of a record class that hold bytes (stored as hex), computed once per class."""
    names = _BYTES_FIELDS.get(cls)
    if names is None:
        names = _BYTES_FIELDS[cls] = tuple(f.name for f in fields(cls) if f.type == "bytes")
    return names


def _encode(record: Any) -> bytes:
    data = dict(vars(record))  # records are flat: no asdict() deep copy needed
    for name in _bytes_fields(type(record)):
        data[name] = data[name].hex()
    return _ENCODER.encode(data).encode()


def _decode(cls: type[R], raw: bytes | None) -> R | None:
    if raw is None:
        return None
    data = json.loads(raw)
    for name in _bytes_fields(cls):
        data[name] = bytes.fromhex(data[name])
    return cls(**data)


def _key(kind: bytes, *parts: str | int) -> bytes:
    return (
        _K
        + kind
        + b"/"
        + b"\x00".join(p.to_bytes(8, "big") if isinstance(p, int) else p.encode() for p in parts)
    )


class LogState:
    """Typed reads and the one transition function over a KV."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    def key(self, kid: str) -> KeyRecord | None:
        return _decode(KeyRecord, self.kv.get(_key(b"k", kid)))

    def identity(self, identity_id: str) -> IdentityRecord | None:
        return _decode(IdentityRecord, self.kv.get(_key(b"i", identity_id)))

    def session(self, issuer: str, session_id: str) -> SessionHead | None:
        return _decode(SessionHead, self.kv.get(_key(b"q", issuer, session_id)))

    def grant(self, grant_id: str) -> GrantRecord | None:
        return _decode(GrantRecord, self.kv.get(_key(b"g", grant_id)))

    def grant_uses(self, grant_id: str) -> int:
        raw = self.kv.get(_key(b"u", grant_id))
        return 0 if raw is None else int(raw)

    def approval(self, approval_id: str) -> ApprovalRecord | None:
        return _decode(ApprovalRecord, self.kv.get(_key(b"a", approval_id)))

    def rejection(self, action_id: str) -> str:
        """The statement id of the first REJECT of an action, or ""."""
        raw = self.kv.get(_key(b"r", action_id))
        return "" if raw is None else raw.decode()

    def intent(self, action_id: str) -> IntentRecord | None:
        return _decode(IntentRecord, self.kv.get(_key(b"x", action_id)))

    def statement_index(self, statement_id: str) -> int | None:
        raw = self.kv.get(_key(b"s", statement_id))
        return None if raw is None else int.from_bytes(raw, "big")

    def verdict(self, index: int) -> VerdictRecord | None:
        return _decode(VerdictRecord, self.kv.get(_key(b"v", index)))

    def has_admin(self) -> bool:
        return self.kv.get(_key(b"m", "admin")) is not None

    def apply(
        self, index: int, leaf_hash: bytes, statement: pb.Statement, verdict: VerdictRecord | None
    ) -> None:
        """Record an admitted statement at index: the only way the state changes."""
        h = statement.header
        self.kv.put(_key(b"s", h.statement_id), index.to_bytes(8, "big"))
        body = statement.WhichOneof("body")
        closes = body == "session" and statement.session.op == pb.SessionEvent.CLOSE
        head = SessionHead(h.sequence + 1, leaf_hash, index if closes else None)
        self.kv.put(_key(b"q", h.issuer, h.session_id), _encode(head))
        if body == "identity":
            self._apply_identity(index, statement.identity)
        elif body == "grant":
            record = GrantRecord(
                h.statement_id, index, h.issuer, statement.grant.SerializeToString()
            )
            self.kv.put(_key(b"g", h.statement_id), _encode(record))
        elif body == "approval":
            a = statement.approval
            approval = ApprovalRecord(
                h.statement_id,
                index,
                h.issuer,
                a.action_id,
                a.parameters_digest,
                a.decision,
                a.agent_id,
            )
            self.kv.put(_key(b"a", h.statement_id), _encode(approval))
            if a.decision == pb.Approval.REJECT and not self.rejection(a.action_id):
                self.kv.put(_key(b"r", a.action_id), h.statement_id.encode())
        elif body == "grant_revocation":
            grant = self.grant(statement.grant_revocation.grant_id)
            assert grant is not None  # admission checked it
            revoked = replace(grant, revoked_at=index, revoked_by=h.issuer)
            self.kv.put(_key(b"g", grant.grant_id), _encode(revoked))
        elif body == "action":
            assert verdict is not None
            self.kv.put(_key(b"v", index), _encode(verdict))
            self._apply_action(index, leaf_hash, statement, verdict)

    def _apply_identity(self, index: int, event: pb.IdentityEvent) -> None:
        current = self.identity(event.identity_id)
        if event.op == pb.IdentityEvent.REGISTER:
            kid = key_id(event.public_key)
            self.kv.put(
                _key(b"k", kid), _encode(KeyRecord(kid, event.identity_id, event.public_key, index))
            )
            record = IdentityRecord(
                event.identity_id,
                event.kind,
                kid,
                event.owner,
                index,
                roles=event.attributes.get("roles", ""),
            )
            self.kv.put(_key(b"i", event.identity_id), _encode(record))
            if event.kind == pb.ADMIN:
                self.kv.put(_key(b"m", "admin"), b"1")
            return
        assert current is not None
        old = self.key(current.key_id)
        assert old is not None
        self.kv.put(_key(b"k", old.key_id), _encode(replace(old, retired_at=index)))
        if event.op == pb.IdentityEvent.ROTATE_KEY:
            kid = key_id(event.public_key)
            self.kv.put(
                _key(b"k", kid), _encode(KeyRecord(kid, event.identity_id, event.public_key, index))
            )
            self.kv.put(_key(b"i", event.identity_id), _encode(replace(current, key_id=kid)))
        else:  # REVOKE
            self.kv.put(_key(b"i", event.identity_id), _encode(replace(current, revoked_at=index)))

    def _apply_action(
        self, index: int, leaf_hash: bytes, statement: pb.Statement, verdict: VerdictRecord
    ) -> None:
        a = statement.action
        if a.phase == pb.AgentAction.INTENT:
            intent = IntentRecord(
                a.action_id,
                index,
                leaf_hash,
                statement.header.issuer,
                a.operation.tool_name,
                a.operation.resource,
                a.operation.parameters_digest,
                a.authorization.decision,
                verdict.verdict,
                verdict.reason,
                access=a.operation.access,
                operation_name=a.operation.operation_name,
            )
            self.kv.put(_key(b"x", a.action_id), _encode(intent))
            # An action in scope uses up one use of the grant it was in, and of every grant up
            # its chain: authority delegated from a grant is that grant's authority, so a child
            # grant cannot multiply its parent's uses. Parents precede children: this ends.
            # An intent its policy denied will not run, so it uses nothing.
            denied = a.authorization.decision == pb.DENY
            grant_id = "" if denied else verdict.grant_id
            while grant_id:
                uses = self.grant_uses(grant_id) + 1
                self.kv.put(_key(b"u", grant_id), str(uses).encode())
                record = self.grant(grant_id)
                grant_id = record.decoded().parent_grant_id if record is not None else ""
        else:
            done = self.intent(a.action_id)
            assert done is not None
            self.kv.put(_key(b"x", a.action_id), _encode(replace(done, outcome_index=index)))
