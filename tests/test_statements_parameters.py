"""Statement rules on an action's parameters and on secrets (statements.schema, redact, the
secret guard): canonical parameters JSON matching its digest, redactions that list exactly the
markers shown, digests that confirm no guess, bounds on the JSON, and a secret in any string
field refused without echoing it (a map value judged by its key).

base(kind) and the schema checks are in tests/statement_world.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.canonical import canonical_json
from affidavit.statements.redact import parameters_digest, redact_parameters

from tests.statement_world import (
    GITHUB_TOKEN,
    INVALID,
    PARAMS,
    PASSWORD,
    Mutation,
    base,
    check_schema,
    schema_rejection,
)


@pytest.mark.parametrize(
    "text",
    [
        '{"title":"x","branch":"y"}',  # keys not sorted
        '{"branch": "y"}',  # spaces
        '{"a":1,"a":2}',  # duplicate key
        '{"a":NaN}',  # not JSON numbers
        "not json",
        '{"a":"\\u00e9"}',  # escaped where canonical JSON writes UTF-8
    ],
)
def test_non_canonical_parameters_json_is_refused(text: str) -> None:
    st_ = base("intent")
    st_.action.operation.ClearField("redactions")
    st_.action.operation.parameters_json = text
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.parameters_json" in e.message


def test_parameters_json_must_match_its_digest() -> None:
    """The digest (what an approval binds) and the parameters an auditor reads must agree."""
    st_ = base("intent")
    st_.action.operation.ClearField("redactions")
    st_.action.operation.parameters_json = canonical_json({**PARAMS, "branch": "main"})
    st_.action.operation.parameters_digest = parameters_digest(PARAMS)
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.parameters_digest" in e.message
    st_.action.operation.parameters_json = canonical_json(PARAMS)
    check_schema(st_)
    check_schema(base("intent"))
    st_.action.operation.ClearField("parameters_json")
    e = schema_rejection(st_)
    assert "action.operation.parameters_json must be set" in e.message


def test_a_fake_redaction_does_not_skip_the_digest_check() -> None:
    """Issue 9 item 2: listing a Redaction once let any digest stand beside any parameters, so
    unapproved parameters appeared approved. The digest is checked whatever redactions say."""
    st_ = base("intent")
    op = st_.action.operation
    approved = op.parameters_digest
    op.parameters_json = canonical_json({**PARAMS, "branch": "main", "token": "«redacted»"})
    assert op.parameters_digest == approved and len(op.redactions) == 1
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.parameters_digest" in e.message


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("unlisted marker", lambda op: op.ClearField("redactions")),
        ("listed twice", lambda op: op.redactions.append(op.redactions[0])),
        ("wrong path", lambda op: setattr(op.redactions[0], "path", "/branch")),
        ("wrong rule", lambda op: setattr(op.redactions[0], "rule", "jwt")),
        ("wrong fingerprint", lambda op: setattr(op.redactions[0], "fingerprint", "00000000")),
    ],
)
def test_redactions_list_exactly_the_markers_shown(
    name: str, mutate: Callable[[pb.Operation], None]
) -> None:
    st_ = base("intent")
    mutate(st_.action.operation)
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.redactions" in e.message, name


def test_the_digest_is_the_same_for_every_producer_and_confirms_no_guess() -> None:
    """The approving human and the agent redact the same real parameters under different
    fingerprint keys, and get one digest; it is the digest of the text shown, so no guess of
    the redacted value changes it."""
    real = {**PARAMS, "token": GITHUB_TOKEN}
    human = redact_parameters(real, b"h" * 32)
    agent = redact_parameters(real, b"a" * 32)
    assert human[0] != agent[0] and human[1] == agent[1] == parameters_digest(real)
    other = redact_parameters({**PARAMS, "token": "ghp_" + GITHUB_TOKEN[:3:-1]}, b"a" * 32)
    assert other[1] == agent[1]  # the secret's value is not in the digest at all
    assert parameters_digest({**PARAMS, "title": "Other"}) != agent[1]  # everything shown is
    for guess in (real, canonical_json(real), GITHUB_TOKEN):
        raw = canonical_json(guess).encode() if isinstance(guess, dict) else guess.encode()
        assert hashlib.sha256(raw).hexdigest() != agent[1]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[" * 3000 + "]" * 3000, "nests deeper than 32"),
        ('{"a":' * 40 + "1" + "}" * 40, "nests deeper than 32"),
        ('{"n":9007199254740993}', "not canonicalizable"),
        ('{"n":NaN}', "not JSON"),
        ('{"s":"\\ud800"}', "not canonicalizable"),
    ],
)
def test_parameters_json_beyond_bounds_is_refused_naming_the_field(text: str, says: str) -> None:
    st_ = base("intent")
    st_.action.operation.ClearField("redactions")
    st_.action.operation.parameters_json = text
    e = schema_rejection(st_)
    assert e.code == INVALID and "action.operation.parameters_json" in e.message
    assert says in e.message, e.message


SECRET_PLACES: list[tuple[str, str, Mutation]] = [
    (
        "grant",
        "header.producer.adapter",
        lambda s: setattr(s.header.producer, "adapter", GITHUB_TOKEN),
    ),
    (
        "identity",
        "identity.display_name",
        lambda s: setattr(s.identity, "display_name", f"bob {GITHUB_TOKEN}"),
    ),
    (
        "identity",
        "identity.attributes['note']",
        lambda s: s.identity.attributes.update({"note": f"token {GITHUB_TOKEN}"}),
    ),
    (
        "grant",
        "grant.justification",
        lambda s: setattr(s.grant, "justification", f"use {GITHUB_TOKEN} for this"),
    ),
    ("grant", "grant.ticket", lambda s: setattr(s.grant, "ticket", GITHUB_TOKEN)),
    ("grant", "grant.resources[1]", lambda s: s.grant.resources.append(f"repo:{GITHUB_TOKEN}")),
    ("approval", "approval.comment", lambda s: setattr(s.approval, "comment", GITHUB_TOKEN)),
    (
        "intent",
        "action.operation.parameters_json",
        lambda s: setattr(
            s.action.operation, "parameters_json", canonical_json({"token": GITHUB_TOKEN})
        ),
    ),
    ("intent", "action.actor.model", lambda s: setattr(s.action.actor, "model", GITHUB_TOKEN)),
    ("intent", "action.principal_chain[1]", lambda s: s.action.principal_chain.append("x")),
    (
        "intent",
        "action.credential.issuer",
        lambda s: setattr(s.action.credential, "issuer", GITHUB_TOKEN),
    ),
    (
        "intent",
        "action.authorization.scopes_granted[0]",
        lambda s: s.action.authorization.scopes_granted.append(GITHUB_TOKEN),
    ),
    (
        "intent",
        "action.operation.redactions[0].path",
        lambda s: setattr(s.action.operation.redactions[0], "path", GITHUB_TOKEN),
    ),
    (
        "outcome",
        "action.outcome.effect_ref",
        lambda s: setattr(s.action.outcome, "effect_ref", GITHUB_TOKEN),
    ),
    (
        "outcome",
        "action.correlation.parent_action_id",
        lambda s: setattr(s.action.correlation, "parent_action_id", GITHUB_TOKEN),
    ),
]


def _shows_secret(message: str, secret: str) -> bool:
    """Whether any 8 consecutive characters of the secret appear in the message."""
    return any(secret[i : i + 8] in message for i in range(len(secret) - 7))


@pytest.mark.parametrize(
    ("kind", "path", "mutate"), SECRET_PLACES, ids=[p for _, p, _ in SECRET_PLACES]
)
def test_secret_in_any_string_field_is_refused_without_echo(
    kind: str, path: str, mutate: Mutation
) -> None:
    st_ = base(kind)
    mutate(st_)
    if path == "action.principal_chain[1]":  # the second element, not the first
        st_.action.principal_chain[1] = f"agent {GITHUB_TOKEN}"
    e = schema_rejection(st_)
    assert e.code == INVALID
    assert f"{path} holds what looks like a secret (rule github-token)" in e.message
    assert not _shows_secret(e.message, GITHUB_TOKEN)


def test_secret_in_a_map_value_is_judged_by_its_key() -> None:
    """A map's key names what its value is: {"db_password": "hunter2xyz!"} is a password, as
    the secret guard's `name` argument says, though the value alone looks like a word."""
    st_ = base("identity")
    st_.identity.attributes["db_password"] = PASSWORD
    e = schema_rejection(st_)
    assert e.code == INVALID
    assert "identity.attributes['db_password']" in e.message and "secret-assignment" in e.message
    assert PASSWORD not in e.message and not _shows_secret(e.message, PASSWORD)
    # In parameters the JSON text carries the key, and the guard sees it there already.
    st_ = base("intent")
    st_.action.operation.parameters_json = canonical_json({"password": PASSWORD})
    e = schema_rejection(st_)
    assert "parameters_json" in e.message and "secret-assignment" in e.message
    assert not _shows_secret(e.message, PASSWORD)
    # Benign look-alikes in the same places pass.
    st_ = base("identity")
    st_.identity.attributes.update(
        {"key_id": "0123456789abcdef0123456789abcdef", "commit": "9f2c1e7a" * 5}
    )
    check_schema(st_)
