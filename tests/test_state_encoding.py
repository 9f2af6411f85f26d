"""statements.state stores each record as the JSON json.JSONEncoder(separators=(",", ":")) writes
for its fields (bytes as hex): records written before the field-by-field encoder must compare
equal, byte for byte, with those written after it, and decode to the same record."""

from __future__ import annotations

import json
from dataclasses import fields
from enum import IntEnum
from typing import Any

import pytest
from affidavit.statements import state
from hypothesis import given
from hypothesis import strategies as st

from tests.c_cores import skip_if_c_cores_off

_RECORDS = (
    state.KeyRecord,
    state.IdentityRecord,
    state.SessionHead,
    state.GrantRecord,
    state.ApprovalRecord,
    state.IntentRecord,
    state.VerdictRecord,
)

_TEXT = st.text()  # every code point: escapes, non-ASCII, surrogates, line separators
_INT = st.integers(min_value=-(2**70), max_value=2**70)


def _value(type_name: str) -> st.SearchStrategy[Any]:
    if type_name == "bytes":
        return st.binary(max_size=40)
    if type_name == "str":
        return _TEXT
    if type_name == "int":
        return _INT | st.booleans()  # a bool in an int field is encoded as json would (true)
    assert type_name == "int | None", type_name
    return st.none() | _INT


def _record(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{f.name: _value(str(f.type)) for f in fields(cls)})


def _as_json_encoder_writes(record: Any) -> bytes:
    data = {
        f.name: getattr(record, f.name).hex() if f.type == "bytes" else getattr(record, f.name)
        for f in fields(record)
    }
    return json.JSONEncoder(separators=(",", ":")).encode(data).encode()


@given(st.one_of(*(_record(cls) for cls in _RECORDS)))
def test_a_record_is_stored_as_the_json_encoder_writes_it(record: Any) -> None:
    assert state._encode(record) == _as_json_encoder_writes(record)


@given(st.one_of(*(_record(cls) for cls in _RECORDS)))
def test_a_stored_record_decodes_to_itself(record: Any) -> None:
    decoded = state._decode(type(record), state._encode(record))
    assert [getattr(decoded, f.name) for f in fields(record)] == [
        getattr(record, f.name) for f in fields(record)
    ]


def test_the_stored_form_of_a_session_head_is_pinned() -> None:
    head = state.SessionHead(3, b"\xab" * 32, None)
    assert state._encode(head) == (
        b'{"next_sequence":3,"last_leaf_hash":"' + b"ab" * 32 + b'","closed_at":null}'
    )


def _plain(type_name: str) -> st.SearchStrategy[Any]:
    """Values of the kinds the C core writes itself (no bools)."""
    if type_name == "int":
        return _INT
    return _value(type_name)


def _plain_record(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{f.name: _plain(str(f.type)) for f in fields(cls)})


def _core() -> Any:
    skip_if_c_cores_off()
    assert state.CORE is not None, "the C core is built by pip install -e ."
    return state.CORE


@given(st.one_of(*(_plain_record(cls) for cls in _RECORDS)))
def test_the_c_core_writes_what_the_python_encoder_writes(record: Any) -> None:
    """Strings of every code point (escaped by json's own encoder or written as they are),
    integers beyond 64 bits, None, bytes: the core answers every such record, with the bytes
    the Python loop writes."""
    core = _core()
    layout = state._layout(type(record))
    raw = core.encode(record, layout)
    assert raw is not None
    python = pytest.MonkeyPatch()
    python.setattr(state, "CORE", None)
    try:
        assert raw == state._encode(record) == _as_json_encoder_writes(record)
    finally:
        python.undo()


class _Small(IntEnum):
    ONE = 1


def test_the_c_core_declines_what_it_does_not_write() -> None:
    """A bool (json writes true), a float, an int subclass: left to Python, which encodes them
    as json does."""
    core = _core()
    for value in (True, 1.5, _Small.ONE):
        head = state.SessionHead(value, b"\x01" * 32)  # type: ignore[arg-type]
        assert core.encode(head, state._layout(state.SessionHead)) is None
        assert state._encode(head) == _as_json_encoder_writes(head)
    # A str where bytes belong is written as a string, as the Python loop writes it.
    text = state.SessionHead(1, "not bytes")  # type: ignore[arg-type]
    assert core.encode(text, state._layout(state.SessionHead)) == (
        b'{"next_sequence":1,"last_leaf_hash":"not bytes","closed_at":null}'
    )
