"""Statement rules on form (statements.schema), without history: every kind well formed,
required fields named when missing, unknown protobuf fields and undefined enum values refused
wherever they are, sizes at and beyond their limits.

base(kind) and the schema checks are in tests/statement_world.py.
"""

from __future__ import annotations

import pytest
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import ingest, schema_walk
from affidavit.statements.canonical import canonical_json
from affidavit.statements.errors import Rejection

from tests.statement_world import (
    BOT,
    INVALID,
    KINDS,
    Mutation,
    base,
    check_schema,
    schema_rejection,
)

# Schema.


@pytest.mark.parametrize("kind", KINDS)
def test_base_statements_are_well_formed(kind: str) -> None:
    check_schema(base(kind))


REQUIRED: list[tuple[str, str, Mutation]] = [
    ("grant", "header", lambda s: s.ClearField("header")),
    ("grant", "header.statement_id", lambda s: s.header.ClearField("statement_id")),
    ("grant", "header.statement_id", lambda s: setattr(s.header, "statement_id", "not-a-uuid")),
    ("grant", "header.issuer", lambda s: s.header.ClearField("issuer")),
    ("grant", "header.session_id", lambda s: s.header.ClearField("session_id")),
    ("grant", "header.previous_hash", lambda s: setattr(s.header, "sequence", 1)),
    ("grant", "header.previous_hash", lambda s: setattr(s.header, "previous_hash", b"\x01" * 32)),
    ("grant", "header.client_time_ms", lambda s: s.header.ClearField("client_time_ms")),
    ("grant", "header.schema_version", lambda s: s.header.ClearField("schema_version")),
    ("grant", "header.producer.adapter", lambda s: s.header.producer.ClearField("adapter")),
    ("grant", "header.producer.assurance", lambda s: s.header.producer.ClearField("assurance")),
    ("grant", "body", lambda s: s.ClearField("grant")),
    ("identity", "identity.op", lambda s: s.identity.ClearField("op")),
    ("identity", "identity.identity_id", lambda s: s.identity.ClearField("identity_id")),
    ("identity", "identity.kind", lambda s: s.identity.ClearField("kind")),
    ("identity", "identity.public_key", lambda s: s.identity.ClearField("public_key")),
    ("grant", "grant.grantee", lambda s: s.grant.ClearField("grantee")),
    ("grant", "grant.tools", lambda s: s.grant.ClearField("tools")),
    ("grant", "grant.resources", lambda s: s.grant.ClearField("resources")),
    ("grant", "grant.access", lambda s: s.grant.ClearField("access")),
    ("approval", "approval.action_id", lambda s: s.approval.ClearField("action_id")),
    (
        "approval",
        "approval.parameters_digest",
        lambda s: s.approval.ClearField("parameters_digest"),
    ),
    ("approval", "approval.decision", lambda s: s.approval.ClearField("decision")),
    ("intent", "action.phase", lambda s: s.action.ClearField("phase")),
    ("intent", "action.action_id", lambda s: s.action.ClearField("action_id")),
    ("intent", "action.actor.agent_id", lambda s: s.action.actor.ClearField("agent_id")),
    (
        "intent",
        "action.operation.tool_name",
        lambda s: s.action.operation.ClearField("tool_name"),
    ),
    ("intent", "action.operation.resource", lambda s: s.action.operation.ClearField("resource")),
    ("intent", "action.operation.access", lambda s: s.action.operation.ClearField("access")),
    (
        "intent",
        "action.operation.parameters_digest",
        lambda s: s.action.operation.ClearField("parameters_digest"),
    ),
    (
        "intent",
        "action.authorization.decision",
        lambda s: s.action.authorization.ClearField("decision"),
    ),
    ("outcome", "action.intent_leaf_hash", lambda s: s.action.ClearField("intent_leaf_hash")),
    ("outcome", "action.outcome.status", lambda s: s.action.outcome.ClearField("status")),
]


@pytest.mark.parametrize(
    ("kind", "field", "mutate"), REQUIRED, ids=[f"{k}:{f}" for k, f, _ in REQUIRED]
)
def test_missing_required_field_is_invalid_naming_it(
    kind: str, field: str, mutate: Mutation
) -> None:
    st_ = base(kind)
    mutate(st_)
    e = schema_rejection(st_)
    assert e.code == INVALID
    assert field in e.message


def test_envelope_key_id_must_be_hex() -> None:
    signed = pb.SignedStatement.FromString(BOT.sign(base("grant").SerializeToString()))
    signed.key_id = signed.key_id.upper()
    with pytest.raises(Rejection) as caught:
        ingest.prepare(signed.SerializeToString(), lambda _kid: None)
    assert caught.value.code == INVALID and "key_id" in caught.value.message


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


UNKNOWN = _varint(99 << 3) + _varint(1)
"""An unknown field: number 99, varint 1."""


def test_unknown_protobuf_fields_are_refused_wherever_they_are() -> None:
    st_ = base("intent")
    # In the statement itself.
    e = schema_rejection(st_.SerializeToString() + UNKNOWN)
    assert e.code == INVALID and e.message.startswith("statement has fields")
    # In the header.
    without_header = pb.Statement()
    without_header.CopyFrom(st_)
    without_header.ClearField("header")
    raw = _field(1, st_.header.SerializeToString() + UNKNOWN) + without_header.SerializeToString()
    e = schema_rejection(raw)
    assert e.code == INVALID and e.message.startswith("header has fields")
    # Deep inside the action.
    action = pb.AgentAction()
    action.CopyFrom(st_.action)
    action.ClearField("operation")
    action_raw = action.SerializeToString() + _field(
        10, st_.action.operation.SerializeToString() + UNKNOWN
    )
    raw = _field(1, st_.header.SerializeToString()) + _field(13, action_raw)
    e = schema_rejection(raw)
    assert e.code == INVALID and e.message.startswith("action.operation has fields")
    # In the signed envelope.
    leaf = BOT.sign(st_.SerializeToString()) + UNKNOWN
    with pytest.raises(Rejection) as caught:
        ingest.prepare(leaf, lambda _kid: None)
    assert caught.value.code == INVALID and "signed_statement" in caught.value.message
    # And bytes that are no protobuf at all.
    with pytest.raises(Rejection) as caught:
        ingest.prepare(b"\xff\xff\xff", lambda _kid: None)
    assert caught.value.code == INVALID


UNDEFINED_ENUMS: list[tuple[str, str, Mutation]] = [
    ("identity", "identity.op", lambda s: setattr(s.identity, "op", 7)),
    ("identity", "identity.kind", lambda s: setattr(s.identity, "kind", 42)),
    ("approval", "approval.decision", lambda s: setattr(s.approval, "decision", 9)),
    ("intent", "action.phase", lambda s: setattr(s.action, "phase", 5)),
    ("intent", "action.operation.access", lambda s: setattr(s.action.operation, "access", 77)),
    ("grant", "grant.access[2]", lambda s: s.grant.access.append(pb.AccessKind.ValueType(66))),
    ("grant", "header.producer.assurance", lambda s: setattr(s.header.producer, "assurance", 8)),
]


@pytest.mark.parametrize(
    ("kind", "field", "mutate"), UNDEFINED_ENUMS, ids=[f for _, f, _ in UNDEFINED_ENUMS]
)
def test_undefined_enum_values_are_refused(kind: str, field: str, mutate: Mutation) -> None:
    """proto3 enums are open: a value the schema does not define survives decoding, and the rules
    would read it as something else (an op 7 acted as a REVOKE, an approval decision 9 as an
    approval). Nothing may hide in a leaf that a reader of the schema cannot see."""
    st_ = base(kind)
    mutate(st_)
    e = schema_rejection(st_)
    assert e.code == INVALID and field in e.message


OVERSIZE: list[tuple[str, str, Mutation]] = [
    (
        "grant",
        "header.producer.adapter is 1025 characters",
        lambda s: setattr(s.header.producer, "adapter", "a" * 1025),
    ),
    (
        "grant",
        "grant.justification is 4097 characters",
        lambda s: setattr(s.grant, "justification", "j" * 4097),
    ),
    (
        "intent",
        "action.operation.parameters_json is",
        lambda s: setattr(
            s.action.operation, "parameters_json", canonical_json({"x": "p" * 33_000})
        ),
    ),
    ("grant", "grant.tools has 65 items", lambda s: s.grant.tools.extend(["t"] * 64)),
    (
        "intent",
        "action.principal_chain[1] is 1025 characters",
        lambda s: s.action.principal_chain.__setitem__(1, "x" * 1025),
    ),
    (
        "identity",
        "identity.attributes has 33 entries",
        lambda s: s.identity.attributes.update({f"k{i}": "v" for i in range(32)}),
    ),
    (
        "identity",
        "identity.attributes['team'] is 2000 characters",
        lambda s: s.identity.attributes.update({"team": "v" * 2000}),
    ),
    (
        "identity",
        "identity.attributes.key is 2000 characters",
        lambda s: s.identity.attributes.update({"k" * 2000: "v"}),
    ),
    (
        "outcome",
        "action.intent_leaf_hash is 1025 bytes",
        lambda s: setattr(s.action, "intent_leaf_hash", b"h" * 1025),
    ),
]


@pytest.mark.parametrize(
    ("kind", "message", "mutate"), OVERSIZE, ids=[m.split(" ")[0] for _, m, _ in OVERSIZE]
)
def test_oversize_strings_and_lists_are_refused(kind: str, message: str, mutate: Mutation) -> None:
    st_ = base(kind)
    mutate(st_)
    e = schema_rejection(st_)
    assert e.code == INVALID and message in e.message


def test_sizes_at_the_limits_are_accepted() -> None:
    st_ = base("grant")
    st_.header.producer.adapter = "a" * schema_walk.MAX_STRING
    st_.grant.justification = "j" * schema_walk.LONG_STRINGS["justification"]
    st_.grant.tools.extend(["t"] * (schema_walk.MAX_REPEATED - 1))
    check_schema(st_)
    st_ = base("identity")
    st_.identity.attributes.update(
        {f"k{i}": "v" * 100 for i in range(schema_walk.MAX_ATTRIBUTES - 1)}
    )
    check_schema(st_)
