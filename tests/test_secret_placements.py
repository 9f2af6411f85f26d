"""The secret placements an adversarial run got into a live log, each refused or redacted now.

Every placement is a fake credential put where an agent might put a real one: wrapped in base64
or URL encoding, named by a sibling key, split across keys or array items, in a DSN, a command
line, a passphrase, or a free-text field that is not a parameter. As parameters, the client
redacts it (the signed statement then passes the log's rules and holds no piece of it) and the
log refuses the same statement unredacted, naming the field and never the value. In free-text
fields the log refuses it. Names that refer to secrets pass.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import secret_values
from affidavit.statements.canonical import canonical_json, shown_digest
from affidavit.statements.redact import redact_parameters
from hypothesis import given, settings
from hypothesis import strategies as hs

from tests.statement_world import INVALID, base, check_schema, schema_rejection

KEY = b"placements-fingerprint-key-32byt"


def _fill(n: int, alphabet: str = "q8Zr2Lm9Xv4Tn7Kw3Hb6Jc5Fd1Sg0Py") -> str:
    return (alphabet * (n // len(alphabet) + 1))[:n]


GHP = "ghp_" + _fill(36)
AKIA = "AKIA" + _fill(16, "QWERTYUIOPASDFGHJKLZXCVBNM234567")
AWS_SECRET = _fill(40, "wJalrXUtnFEMIK7MDENGbPxRfiCY0123456789/+")
STRIPE = "rk_live_" + _fill(24)
OPENAI = "sk-proj-" + _fill(48)
JWT = (
    base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    + "."
    + base64.urlsafe_b64encode(b'{"sub":"agent-7","exp":1900000000}').decode().rstrip("=")
    + "."
    + _fill(43)
)
SLACK_HOOK = f"https://hooks.slack.com/services/T0ABCDEFG/B0ABCDEFGHI/{_fill(24)}"
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    + "\n".join(_fill(70) for _ in range(4))
    + "\n-----END OPENSSH PRIVATE KEY-----"
)
DB_URL = "postgres://app:Zx9mQ2kLw8vB@db.internal:5432/payments"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# (placement, parameters, the secret that must not survive redaction)
PARAMETERS: list[tuple[str, Any, str]] = [
    *(
        (f"base64 {name}", {"blob": b64(secret)}, secret)
        for name, secret in [
            ("aws key id", AKIA),
            ("ghp token", GHP),
            ("stripe rk_live", STRIPE),
            ("openai key", OPENAI),
            ("jwt", JWT),
        ]
    ),
    ("base64 twice", {"blob": b64(b64(GHP))}, GHP),
    ("url-encoded slack webhook", {"u": quote(SLACK_HOOK, safe="")}, SLACK_HOOK[-24:]),
    ("url-encoded pem key", {"k": quote(PEM, safe="")}, _fill(70)),
    ("url-encoded database url", {"dsn": quote(DB_URL, safe="")}, "Zx9mQ2kLw8vB"),
    ("base64 of url-encoded", {"x": b64(quote(DB_URL, safe=""))}, "Zx9mQ2kLw8vB"),
    (
        "sibling name AWS_SECRET_ACCESS_KEY",
        {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": AWS_SECRET}]},
        AWS_SECRET,
    ),
    (
        "sibling name DB_PASSWORD",
        {"env": [{"name": "DB_PASSWORD", "value": "tangerine-walrus"}]},
        "tangerine-walrus",
    ),
    ("csv row", {"csv": "name,value\nDB_PASSWORD,Zx9mQ2kLw8vB\nREGION,eu-west-1"}, "Zx9mQ2kLw8vB"),
    ("token split across keys", {"t1": GHP[:20], "t2": GHP[20:]}, GHP),
    ("token split across items", {"parts": [GHP[:14], GHP[14:30], GHP[30:]]}, GHP),
    ("dsn with #", {"dsn": "mysql://app:p#ssw0rdZ9@db:3306/x"}, "p#ssw0rdZ9"),
    ("dsn with @", {"dsn": "postgres://app:p@ssw0rdZ9@db:5432/x"}, "p@ssw0rdZ9"),
    ("pass key", {"pass": "Zx9mQ2kLw8vB"}, "Zx9mQ2kLw8vB"),
    ("pwd key", {"pwd": "Zx9mQ2kLw8vB"}, "Zx9mQ2kLw8vB"),
    ("pat key", {"pat": "Zx9mQ2kLw8vBn4Tq"}, "Zx9mQ2kLw8vBn4Tq"),
    ("mysql -p", {"cmd": "mysql -h db -u root -pZx9mQ2kLw8vB orders"}, "Zx9mQ2kLw8vB"),
    ("curl -u", {"cmd": "curl -u deploy:Zx9mQ2kLw8vB https://ci/api"}, "Zx9mQ2kLw8vB"),
    ("sshpass -p", {"cmd": "sshpass -p 'Zx9mQ2kLw8vB' ssh ops@db"}, "Zx9mQ2kLw8vB"),
    ("letters-only passphrase", {"conf": "password=tangerinewalrusanchor"}, "tangerinewalrus"),
    ("spaced passphrase", {"conf": "password=tangerine walrus anchor"}, "tangerine walrus"),
    (
        "high-entropy letters under a credential name",
        {"api_key": _fill(24, "qZrLmXvTnKwHbJcFdSgPy")},
        _fill(24, "qZrLmXvTnKwHbJcFdSgPy"),
    ),
]


def _pieces(secret: str) -> list[str]:
    return [secret[i : i + 10] for i in range(0, max(1, len(secret) - 9), 5)]


def _intent_with(params_json: str, digest: str, redactions: list[pb.Redaction]) -> pb.Statement:
    st = base("intent")
    op = st.action.operation
    op.parameters_json, op.parameters_digest = params_json, digest
    del op.redactions[:]
    op.redactions.extend(redactions)
    return st


@pytest.mark.parametrize(
    ("placement", "params", "secret"), PARAMETERS, ids=[p[0] for p in PARAMETERS]
)
def test_parameters_are_redacted_and_refused_unredacted(
    placement: str, params: Any, secret: str
) -> None:
    shown, digest, redactions = redact_parameters(params, KEY)
    assert redactions, placement
    assert not any(piece in shown for piece in _pieces(secret)), shown
    check_schema(_intent_with(shown, digest, redactions))  # what the client signs passes
    raw = canonical_json(params)
    e = schema_rejection(_intent_with(raw, shown_digest(raw), []))
    assert e.code == INVALID and "action.operation.parameters_json holds" in e.message
    assert not any(piece in e.message for piece in _pieces(secret))


def _set(path: str, value: str) -> Callable[[pb.Statement], None]:
    def mutate(st: pb.Statement) -> None:
        *parents, last = path.split(".")
        target: Any = st
        for p in parents:
            target = getattr(target, p)
        setattr(target, last, value)

    return mutate


FIELDS: list[tuple[str, str, Callable[[pb.Statement], None]]] = [
    ("grant", "grant.justification", _set("grant.justification", f"deploy with {b64(GHP)}")),
    ("grant", "grant.ticket", _set("grant.ticket", f"CHG-1 password={'tangerine walrus anchor'}")),
    (
        "identity",
        "identity.attributes['value']",
        lambda st: st.identity.attributes.update(
            {"name": "AWS_SECRET_ACCESS_KEY", "value": AWS_SECRET}
        ),
    ),
    ("identity", "identity.display_name", _set("identity.display_name", quote(DB_URL, safe=""))),
    ("intent", "header.session_id", _set("header.session_id", JWT)),
    ("outcome", "action.outcome.error_code", _set("action.outcome.error_code", f"Auth: {OPENAI}")),
    (
        "outcome",
        "action.outcome.effect_ref",
        _set("action.outcome.effect_ref", "mysql -pZx9mQ2kLw8vB"),
    ),
    ("approval", "approval.comment", _set("approval.comment", "use curl -u ops:Zx9mQ2kLw8vB")),
    ("intent", "action.actor.workload_id", _set("action.actor.workload_id", b64(AKIA))),
]


@pytest.mark.parametrize(("kind", "path", "mutate"), FIELDS, ids=[f[1] for f in FIELDS])
def test_free_text_fields_are_guarded(
    kind: str, path: str, mutate: Callable[[pb.Statement], None]
) -> None:
    st = base(kind)
    mutate(st)
    e = schema_rejection(st)
    assert e.code == INVALID and e.message.startswith(f"{path} holds what looks like a secret")


def _every_string_field(descriptor: Any, prefix: str = "", depth: int = 0) -> list[str]:
    out: list[str] = []
    for field in descriptor.fields:
        name = f"{prefix}{field.name}"
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if depth < 4:
                out += _every_string_field(field.message_type, f"{name}.", depth + 1)
        elif field.type == field.TYPE_STRING:
            out.append(name)
    return out


def test_every_string_field_of_every_statement_kind_is_guarded() -> None:
    """A GitHub token in any string field of the schema, repeated or not, is refused."""
    fields = [f for f in _every_string_field(pb.Statement.DESCRIPTOR) if "." in f]
    kinds = {"identity": "identity", "grant": "grant", "approval": "approval", "action": "intent"}
    assert len(fields) > 40
    for field in fields:
        body = field.partition(".")[0]
        st = base(kinds.get(body, "grant"))
        target: Any = st
        *parents, last = field.split(".")
        for p in parents:
            target = getattr(target, p)
            if not hasattr(target, "ListFields"):  # a repeated message: set its first
                target = target[0] if len(target) else target.add()
        value = f"x {GHP}"
        if isinstance(getattr(target, last), str):
            setattr(target, last, value)
        else:
            getattr(target, last).append(value)
        e = schema_rejection(st)
        assert e.code == INVALID and "looks like a secret" in e.message, field


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("grant", lambda st: st.grant.resources.append("secret:prod/payments/*")),
        ("outcome", _set("action.outcome.effect_ref", "secret:prod/payments/db@v8")),
        ("intent", _set("action.operation.resource", "secret:prod/payments/db")),
        ("grant", _set("grant.justification", "rotate secret:prod/payments/db, then the token")),
    ],
)
def test_names_that_refer_to_secrets_pass(
    kind: str, mutate: Callable[[pb.Statement], None]
) -> None:
    st = base(kind)
    mutate(st)
    check_schema(st)


def test_a_secret_used_as_a_key_is_refused_by_the_client_and_the_log() -> None:
    params = {GHP: "x"}
    assert secret_values.scan_value(params)[0].in_key
    raw = canonical_json(params)
    e = schema_rejection(_intent_with(raw, shown_digest(raw), []))
    assert "in a key at /" in e.message and GHP[4:14] not in e.message


_PIECES = hs.sampled_from(
    [GHP, GHP[:20], GHP[20:], b64(GHP), quote(DB_URL, safe=""), "Zx9mQ2kLw8vB", "main", "eu-west-1"]
)
_KEYS = hs.sampled_from(["password", "name", "value", "token", "repo", "env", "a", "b"])
_VALUES = hs.recursive(
    hs.one_of(_PIECES, hs.text(max_size=12), hs.integers(-5, 5), hs.none()),
    lambda inner: hs.one_of(
        hs.lists(inner, max_size=4),
        hs.dictionaries(_KEYS, inner, max_size=4),
        hs.builds(lambda v: {"name": "DB_PASSWORD", "value": v}, inner),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_VALUES)
def test_what_the_client_redacts_the_log_finds_clean(value: Any) -> None:
    """redact_value leaves nothing scan_value (the log's check) would refuse, and redacting
    again changes nothing: client and log apply one walk."""
    redacted = secret_values.redact_value(value, KEY)
    assert secret_values.scan_value(redacted) == []
    assert secret_values.redact_value(redacted, KEY) == redacted
