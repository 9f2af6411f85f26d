"""statements.state stores each record as the JSON json.JSONEncoder(separators=(",", ":")) writes
for its fields (bytes as hex): records written before the field-by-field encoder must compare
equal, byte for byte, with those written after it, and decode to the same record."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from affidavit.statements import state
from hypothesis import given
from hypothesis import strategies as st

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
