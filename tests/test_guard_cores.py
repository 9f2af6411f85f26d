"""The guard's and canonical JSON's C cores change no verdict: schema.check gives the same
answer (the same Rejection, or none) with them and without them, on generated parameters and
fields, clean and with secrets in them.

The cores (statements/_guardcore.c, statements/_canonicalcore.c) are fast paths that decline
what they are not sure of; their own tests (test_secret_walk.py, test_canonical.py) hold them
to the Python they stand in for piece by piece. This holds the whole check to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import canonical, schema, secret_values, secrets
from affidavit.statements.canonical import shown_digest
from affidavit.statements.errors import Rejection
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as hs

from tests.c_cores import skip_if_c_cores_off
from tests.statement_world import base
from tests.test_secret_walk import _ASCII_VALUES, _PIECES, _VALUES

_CORES = (secrets, secret_values, canonical)

skip_if_c_cores_off(module=True)


def _outcome(check: Callable[[], None]) -> str:
    try:
        check()
    except Rejection as e:
        return f"{e.code}: {e.message}"
    return "accepted"


def _both(statement: pb.Statement, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    signed = pb.SignedStatement(key_id="0" * 32, statement=statement.SerializeToString())
    assert all(m.CORE is not None for m in _CORES), "the C cores are built by pip install -e ."
    with_cores = _outcome(lambda: schema.check(signed, statement))
    with monkeypatch.context() as m:
        for module in _CORES:
            m.setattr(module, "CORE", None)
        without = _outcome(lambda: schema.check(signed, statement))
    return with_cores, without


def _text(value: Any, how: str) -> str:
    if how == "canonical":
        try:
            return canonical.canonical_json(value)
        except canonical.JSONLimitError:
            return json.dumps(value)
    return json.dumps(value, ensure_ascii=how == "ascii", sort_keys=True)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=hs.one_of(_VALUES, _ASCII_VALUES),
    how=hs.sampled_from(["canonical", "ascii", "sorted"]),
    field=hs.one_of(_PIECES, hs.text(max_size=24)),
)
def test_the_cores_change_no_verdict(
    monkeypatch: pytest.MonkeyPatch, value: Any, how: str, field: str
) -> None:
    statement = base("intent")
    op = statement.action.operation
    op.parameters_json = _text({"p": value}, how)
    op.parameters_digest = shown_digest(op.parameters_json)
    del op.redactions[:]
    statement.action.actor.model = field
    with_cores, without = _both(statement, monkeypatch)
    assert with_cores == without
    event("secret" if "looks like a secret" in with_cores else with_cores[:24])
