"""The registry and ledger state that statements build up, over any key-value store.

Every rule that depends on history (who holds which key, the next sequence of a session, a
grant's uses, an approval, an action's intent) reads it from here, and every admitted statement
updates it through apply(). The server keeps it in its LevelDB, written in the same batch as
the entries; the auditor rebuilds it by replaying the log. One encoding, one transition
function, so both reach the same state from the same entries.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import ModuleType
from typing import Any, Protocol, TypeVar

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import compiled
from affidavit.statements.signing import key_id


class KV(Protocol):
    def get(self, key: bytes, /) -> bytes | None: ...

    def put(self, key: bytes, value: bytes, /) -> None: ...


class DictKV:
    """An in-memory KV (the auditor, tests) that keeps the records a LogState puts in it as the
    objects they are, and encodes one only when its bytes are asked for (get, encoded()): the
    auditor needs the bytes only when it saves its position, and encoding (and caching) every
    record as it was written took about a third of its admit + apply (35 -> 24 µs a statement
    on bench_audit's log, one run under load)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes | Any] = {}
        """Bytes, or a record (put by LogState) that stands for its encoding."""

    def get(self, key: bytes, /) -> bytes | None:
        value = self.data.get(key)
        return value if value is None or type(value) is bytes else _encode(value)

    def put(self, key: bytes, value: bytes, /) -> None:
        self.data[key] = value

    def encoded(self) -> dict[bytes, bytes]:
        """Every value as bytes: the records kept as objects are encoded, and their bytes kept
        in their place (so the next call encodes only what was written since)."""
        data = self.data
        for key, value in data.items():
            if type(value) is not bytes:
                data[key] = _encode(value)
        return data


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A public key and the span of the log [valid_from, retired_at) in which it may sign."""

    key_id: str
    identity_id: str
    public_key: bytes
    valid_from: int
    retired_at: int | None = None


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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

    @functools.cached_property
    def _grant(self) -> pb.Grant:
        return pb.Grant.FromString(self.grant)

    def decoded(self) -> pb.Grant:
        """The grant, parsed once per record (records are shared by RecordCache: read it, never
        modify it)."""
        return self._grant


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    approval_id: str
    index: int
    issuer: str
    action_id: str
    parameters_digest: str
    decision: int
    agent_id: str = ""


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """The log's scope verdict on an action: IN_SCOPE (with the grant it was in scope of),
    OUT_OF_SCOPE or NO_GRANT (with a reason code)."""

    verdict: int
    reason: str = ""
    grant_id: str = ""
    admitted_ms: int = 0


R = TypeVar("R")


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_JSON_STRING = json.encoder.encode_basestring_ascii
"""json's own (C) string encoder: the one _ENCODER uses (ensure_ascii, its default)."""


_FIELDS: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}
_LAYOUTS: dict[type, tuple[tuple[str, str, bool], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A record class's field names, and those of them that hold bytes (stored as hex),
    computed once per class."""
    names = _FIELDS.get(cls)
    if names is None:
        all_fields = fields(cls)
        names = _FIELDS[cls] = (
            tuple(f.name for f in all_fields),
            tuple(f.name for f in all_fields if f.type == "bytes"),
        )
    return names


def _layout(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """Each field of a record class: its name, what precedes its value in the stored JSON
    ('{"name":' for the first, ',"name":' after), and whether it holds bytes."""
    layout = _LAYOUTS.get(cls)
    if layout is None:
        names, bytes_names = _fields(cls)
        layout = _LAYOUTS[cls] = tuple(
            (name, ("," if i else "{") + _JSON_STRING(name) + ":", name in bytes_names)
            for i, name in enumerate(names)
        )
    return layout


CORE: ModuleType | None = compiled.load("_recordcore")
"""The C encoder of flat records (statements/_recordcore.c), or None."""


def _encode(record: Any) -> bytes:
    """A flat record as stored: a JSON object of its fields (not what it caches) in declaration
    order, bytes as hex. Byte for byte what _ENCODER writes for that object (stored records are
    compared as bytes), formatted field by field: strings, integers and None as json's C
    encoder writes them, anything else by _ENCODER itself. The C core writes the same bytes
    for the records that hold only those (every record here), and declines the rest."""
    layout = _layout(type(record))
    if CORE is not None:
        raw: bytes | None = CORE.encode(record, layout)
        if raw is not None:
            return raw
    parts = []
    for name, label, is_bytes in layout:
        value = getattr(record, name)
        kind = type(value)
        if kind is str:
            parts.append(label + _JSON_STRING(value))
        elif kind is int:
            parts.append(label + int.__repr__(value))
        elif value is None:
            parts.append(label + "null")
        elif is_bytes:
            parts.append(label + '"' + value.hex() + '"')
        else:
            parts.append(label + _ENCODER.encode(value))
    return ("".join(parts) + "}").encode()


def _decode(cls: type[R], raw: bytes) -> R:
    data = json.loads(raw)
    for name in _fields(cls)[1]:
        data[name] = bytes.fromhex(data[name])
    return cls(**data)


# Keys: b"s/" + kind + b"/" + parts joined by 0x00 (strings UTF-8, integers 8 bytes big-endian).
# An action is (acting agent, action id): the producer chooses the id, so another agent may
# choose the same one, and only the pair names one action. Its INTENT and the first REJECT of
# it are keyed by the pair, the agent first (an identity id, which holds no 0x00, so the key
# splits at its first 0x00 whatever the action id holds). Layout 2; layout 1 keyed both by the
# action id alone (statements.state_migration rewrites it once).
_KEY_KEY, _IDENTITY, _SESSION, _GRANT, _USES = b"s/k/", b"s/i/", b"s/q/", b"s/g/", b"s/u/"
_APPROVAL, _REJECTION, _INTENT, _STATEMENT = b"s/a/", b"s/r/", b"s/x/", b"s/s/"
_VERDICT, _ADMIN = b"s/v/", b"s/m/admin"
STATE_LAYOUT, STATE_LAYOUT_KEY = b"2", b"s/m/layout"
"""The layout of the statement state, and where a store records it (absent: layout 1)."""


def _session_key(issuer: str, session_id: str) -> bytes:
    return _SESSION + issuer.encode() + b"\x00" + session_id.encode()


def verdict_key(index: int) -> bytes:
    """Where the verdict of the statement at index is kept."""
    return _VERDICT + index.to_bytes(8, "big")


def read_verdicts(
    get_many: Callable[[Sequence[bytes]], Mapping[bytes, bytes]], indexes: Sequence[int]
) -> list[VerdictRecord | None]:
    """The verdict kept for the statement at each index (None where there is none), read in
    one get_many: a page of entries costs a shared store one round trip, not one an entry."""
    keys = [verdict_key(index) for index in indexes]
    found = get_many(keys)
    return [
        None if (raw := found.get(key)) is None else _decode(VerdictRecord, raw) for key in keys
    ]


def intent_key(agent_id: str, action_id: str) -> bytes:
    """Where the INTENT of agent_id's action action_id is kept."""
    return _INTENT + agent_id.encode() + b"\x00" + action_id.encode()


def rejection_key(agent_id: str, action_id: str) -> bytes:
    """Where the first REJECT of agent_id's action action_id is kept."""
    return _REJECTION + agent_id.encode() + b"\x00" + action_id.encode()


def reads_named_by(statement: pb.Statement, signed_with: str) -> list[bytes]:
    """The state keys admitting and applying a statement reads that its own fields name (its
    signing key and issuer, its id and session; an action's intent, rejection, grants, their
    uses and its approval; ...): what a server reads ahead, outside its serial path, so that
    admission finds them cached. A hint, not a rule: admission reads whatever it needs either
    way (records further away, such as a grant's parents, are read when reached)."""
    h = statement.header
    out = [
        _KEY_KEY + signed_with.encode(),
        _IDENTITY + h.issuer.encode(),
        _STATEMENT + h.statement_id.encode(),
        _session_key(h.issuer, h.session_id),
    ]
    body = statement.WhichOneof("body")
    if body == "action":
        a = statement.action
        agent_id = a.actor.agent_id
        out += (intent_key(agent_id, a.action_id), rejection_key(agent_id, a.action_id))
        for grant_id in a.grant_ids:
            out += (_GRANT + grant_id.encode(), _USES + grant_id.encode())
        if a.approval_id:
            out.append(_APPROVAL + a.approval_id.encode())
    elif body == "grant":
        out.append(_IDENTITY + statement.grant.grantee.encode())
        if statement.grant.parent_grant_id:
            out.append(_GRANT + statement.grant.parent_grant_id.encode())
    elif body == "approval":
        out += (
            _IDENTITY + statement.approval.agent_id.encode(),
            rejection_key(statement.approval.agent_id, statement.approval.action_id),
        )
    elif body == "identity":
        out += (_IDENTITY + statement.identity.identity_id.encode(), _ADMIN)
        if statement.identity.public_key:
            out.append(_KEY_KEY + key_id(statement.identity.public_key).encode())
    elif body == "grant_revocation":
        out.append(_GRANT + statement.grant_revocation.grant_id.encode())
    return out


class RecordCache:
    """Decoded records by state key, each beside the exact bytes it was decoded from.

    A record is returned only when the store still holds those bytes, so a cache can never
    serve a stale record, whichever store (or LogState over it) filled it: it only saves the
    decoding. Records are frozen and shared; at most MAX_RECORDS are kept, oldest dropped first.
    Safe from any thread (the server's RPC threads read through it while a batch is admitted).
    """

    MAX_RECORDS = 16_384
    """About 20 MB. A record read after it was dropped is decoded again (a missed read is
    kept anew, so records read often stay): on bench_audit's log of 100,000 statements through
    the server's gate, 321 of 850,154 reads missed at this size (none at 65,536, which held
    about 81 MB of the server's RSS)."""

    def __init__(self) -> None:
        # Oldest first; an OrderedDict drops its oldest in O(1), where a dict's first key, once
        # many were deleted before it, is found by scanning past every deleted slot.
        self._records: OrderedDict[bytes, tuple[bytes, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, cls: type[R], key: bytes, raw: bytes) -> R:
        """The record stored as raw under key."""
        hit = self._records.get(key)
        if hit is not None and hit[0] == raw:
            record: R = hit[1]
            return record
        record = _decode(cls, raw)
        self.keep(key, raw, record)
        return record

    def keep(self, key: bytes, raw: bytes, record: object) -> None:
        records = self._records
        with self._lock:
            records[key] = (raw, record)
            if len(records) > self.MAX_RECORDS:
                records.popitem(last=False)


class LogState:
    """Typed reads and the one transition function over a KV.

    A typed read returns what the store holds unless it is bytes (None when the record is
    absent; the record itself from a DictKV) and decodes bytes through the RecordCache: the
    reads an audit makes cost the typed read's own frame and a dict lookup, nothing more."""

    def __init__(self, kv: KV, cache: RecordCache | None = None) -> None:
        self.kv = kv
        self.cache = RecordCache() if cache is None else cache
        self._read = self.cache.read
        # A DictKV takes records as they are: they are neither encoded nor cached here.
        self._kept = kv.data if isinstance(kv, DictKV) else None
        self._get: Callable[[bytes], Any] = kv.get if self._kept is None else self._kept.get
        """A stored value: bytes, or (from a DictKV) a record kept as it is. The plain values
        (statement indexes, uses, rejections, the admin mark) are bytes in either store."""

    def _put(self, key: bytes, record: object) -> None:
        if self._kept is not None:
            self._kept[key] = record
            return
        raw = _encode(record)
        self.kv.put(key, raw)
        self.cache.keep(key, raw, record)

    def key(self, kid: str) -> KeyRecord | None:
        key = _KEY_KEY + kid.encode()
        value = self._get(key)
        return value if type(value) is not bytes else self._read(KeyRecord, key, value)

    def identity(self, identity_id: str) -> IdentityRecord | None:
        key = _IDENTITY + identity_id.encode()
        value = self._get(key)
        return value if type(value) is not bytes else self._read(IdentityRecord, key, value)

    def session(self, issuer: str, session_id: str) -> SessionHead | None:
        key = _session_key(issuer, session_id)
        value = self._get(key)
        return value if type(value) is not bytes else self._read(SessionHead, key, value)

    def grant(self, grant_id: str) -> GrantRecord | None:
        key = _GRANT + grant_id.encode()
        value = self._get(key)
        return value if type(value) is not bytes else self._read(GrantRecord, key, value)

    def grant_uses(self, grant_id: str) -> int:
        raw = self._get(_USES + grant_id.encode())
        return 0 if raw is None else int(raw)

    def approval(self, approval_id: str) -> ApprovalRecord | None:
        key = _APPROVAL + approval_id.encode()
        value = self._get(key)
        return value if type(value) is not bytes else self._read(ApprovalRecord, key, value)

    def rejection(self, agent_id: str, action_id: str) -> str:
        """The statement id of the first REJECT of agent_id's action action_id, or ""."""
        raw = self._get(rejection_key(agent_id, action_id))
        return "" if raw is None else raw.decode()

    def intent(self, agent_id: str, action_id: str) -> IntentRecord | None:
        """The INTENT agent_id recorded for its action action_id, or None."""
        key = intent_key(agent_id, action_id)
        value = self._get(key)
        return value if type(value) is not bytes else self._read(IntentRecord, key, value)

    def statement_index(self, statement_id: str) -> int | None:
        raw = self._get(_STATEMENT + statement_id.encode())
        return None if raw is None else int.from_bytes(raw, "big")

    def verdict(self, index: int) -> VerdictRecord | None:
        """Decoded anew, not cached (see apply): a reader paging through every entry's
        verdict would otherwise push every other record out of the cache."""
        value = self._get(verdict_key(index))
        if value is None or type(value) is not bytes:
            kept: VerdictRecord | None = value
            return kept
        return _decode(VerdictRecord, value)

    def has_admin(self) -> bool:
        return self._get(_ADMIN) is not None

    def apply(
        self, index: int, leaf_hash: bytes, statement: pb.Statement, verdict: VerdictRecord | None
    ) -> None:
        """Record an admitted statement at index: the only way the state changes."""
        h = statement.header
        issuer = h.issuer  # fields read more than once are read once (each read is a lookup)
        self.kv.put(_STATEMENT + h.statement_id.encode(), index.to_bytes(8, "big"))
        body = statement.WhichOneof("body")
        closes = body == "session" and statement.session.op == pb.SessionEvent.CLOSE
        head = SessionHead(h.sequence + 1, leaf_hash, index if closes else None)
        self._put(_session_key(issuer, h.session_id), head)
        if body == "identity":
            self._apply_identity(index, statement.identity)
        elif body == "grant":
            record = GrantRecord(h.statement_id, index, issuer, statement.grant.SerializeToString())
            self._put(_GRANT + h.statement_id.encode(), record)
        elif body == "approval":
            a = statement.approval
            approval = ApprovalRecord(
                h.statement_id,
                index,
                issuer,
                a.action_id,
                a.parameters_digest,
                a.decision,
                a.agent_id,
            )
            self._put(_APPROVAL + h.statement_id.encode(), approval)
            if a.decision == pb.Approval.REJECT and not self.rejection(a.agent_id, a.action_id):
                self.kv.put(rejection_key(a.agent_id, a.action_id), h.statement_id.encode())
        elif body == "grant_revocation":
            grant = self.grant(statement.grant_revocation.grant_id)
            assert grant is not None  # admission checked it
            revoked = replace(grant, revoked_at=index, revoked_by=issuer)
            self._put(_GRANT + grant.grant_id.encode(), revoked)
        elif body == "action":
            assert verdict is not None
            # Not kept in the cache (a DictKV keeps it, as every record): a verdict is written
            # once and read back seldom (a duplicate's answer, a page of entries), and a
            # decoded record per action would push out the records admission reads again and
            # again.
            key = verdict_key(index)
            if self._kept is not None:
                self._kept[key] = verdict
            else:
                self.kv.put(key, _encode(verdict))
            self._apply_action(index, leaf_hash, issuer, statement.action, verdict)

    def _apply_identity(self, index: int, event: pb.IdentityEvent) -> None:
        current = self.identity(event.identity_id)
        if event.op == pb.IdentityEvent.REGISTER:
            kid = key_id(event.public_key)
            self._put(
                _KEY_KEY + kid.encode(), KeyRecord(kid, event.identity_id, event.public_key, index)
            )
            record = IdentityRecord(
                event.identity_id,
                event.kind,
                kid,
                event.owner,
                index,
                roles=event.attributes.get("roles", ""),
            )
            self._put(_IDENTITY + event.identity_id.encode(), record)
            if event.kind == pb.ADMIN:
                self.kv.put(_ADMIN, b"1")
            return
        assert current is not None
        old = self.key(current.key_id)
        assert old is not None
        self._put(_KEY_KEY + old.key_id.encode(), replace(old, retired_at=index))
        if event.op == pb.IdentityEvent.ROTATE_KEY:
            kid = key_id(event.public_key)
            self._put(
                _KEY_KEY + kid.encode(), KeyRecord(kid, event.identity_id, event.public_key, index)
            )
            self._put(_IDENTITY + event.identity_id.encode(), replace(current, key_id=kid))
        else:  # REVOKE
            self._put(_IDENTITY + event.identity_id.encode(), replace(current, revoked_at=index))

    def _apply_action(
        self,
        index: int,
        leaf_hash: bytes,
        issuer: str,
        a: pb.AgentAction,
        verdict: VerdictRecord,
    ) -> None:
        action_id = a.action_id
        key = intent_key(issuer, action_id)  # the issuer is the actor (admission checked it)
        if a.phase == pb.AgentAction.INTENT:
            op, decision = a.operation, a.authorization.decision
            intent = IntentRecord(
                action_id,
                index,
                leaf_hash,
                issuer,
                op.tool_name,
                op.resource,
                op.parameters_digest,
                decision,
                verdict.verdict,
                verdict.reason,
                access=op.access,
                operation_name=op.operation_name,
            )
            self._put(key, intent)
            # An action in scope uses up one use of the grant it was in, and of every grant up
            # its chain: authority delegated from a grant is that grant's authority, so a child
            # grant cannot multiply its parent's uses. Parents precede children: this ends.
            # An intent its policy denied will not run, so it uses nothing.
            grant_id = "" if decision == pb.DENY else verdict.grant_id
            while grant_id:
                uses = self.grant_uses(grant_id) + 1
                self.kv.put(_USES + grant_id.encode(), str(uses).encode())
                record = self.grant(grant_id)
                grant_id = record.decoded().parent_grant_id if record is not None else ""
        else:
            done = self.intent(issuer, action_id)
            assert done is not None
            self._put(key, replace(done, outcome_index=index))
