"""statements.canonical.is_canonical: its shortcut never answers other than RFC 8785 does.

The shortcut (the standard library's sorted, compact dumps) may only say yes where rfc8785
writes the same text; everything else falls through to canonical_json. These tests compare
is_canonical with `canonical_json(parsed) == text` on generated values, written canonically,
by the standard library, and with edits, including the cases the shortcut must leave alone:
floats, integers near 2**53, characters that sort otherwise in UTF-16, escapes.

The C core (statements/_canonicalcore.c) parses text it reads as plainly canonical and
declines the rest: every test runs with it and without it, and it is held to json.loads and
rfc8785 directly on the same texts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from affidavit.statements import canonical
from affidavit.statements.canonical import JSONLimitError, canonical_json, is_canonical, loads
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.c_cores import skip_if_c_cores_off


@pytest.fixture(params=["c", "pure-python"], autouse=True)
def canonical_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the C fast path of loads and is_canonical and without it."""
    if request.param == "c":
        skip_if_c_cores_off()
        assert canonical.CORE is not None, "the C core is built by pip install -e ."
    else:
        monkeypatch.setattr(canonical, "CORE", None)
    return str(request.param)


_TEXT = st.text(
    st.characters(codec="utf-8")
    | st.sampled_from(["\x00", "\x1f", "\x7f", "\b", "\t", "\n", "\f", "\r", '"', "\\", "/"])
    | st.sampled_from(["\ue000", "\uffff", "\U0001f600", "\u2028", "é", "ß"]),
    max_size=8,
)
_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) - 2, 2**53 + 2)
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _rfc8785_says(text: str, parsed: Any) -> bool | str:
    try:
        return canonical_json(parsed) == text
    except JSONLimitError:
        return "refused"


def _shortcut_says(text: str, parsed: Any) -> bool | str:
    try:
        return is_canonical(text, parsed)
    except JSONLimitError:
        return "refused"


def _agree(text: str) -> None:
    _core_agrees(text)
    try:
        parsed = loads(text)
    except JSONLimitError:
        return
    assert repr(parsed) == repr(json.loads(text))  # repr: True is not 1, key order counts
    assert _shortcut_says(text, parsed) == _rfc8785_says(text, parsed)
    # parse's "known canonical" (what schema.check skips is_canonical on) is only ever right.
    value, known = canonical.parse(text)
    assert repr(value) == repr(parsed)
    assert not known or _rfc8785_says(text, parsed) is True


def _core_agrees(text: str) -> None:
    """The C core answers only with json.loads's value, of which text is the RFC 8785 text."""
    core = canonical.CORE
    if core is None:
        return
    answer = core.parse(text)
    if answer is not None:
        (value,) = answer
        assert repr(value) == repr(json.loads(text))
        assert canonical_json(value) == text


@settings(max_examples=400, deadline=None)
@given(_VALUE)
@example({"\ue000": 1, "\U0001f600": 2})
@example({"a": 2**53 - 1, "b": -(2**53 - 1)})
@example({"a": 2**53})
@example([1.0, 0.5, 1e21, -0.0])
@example("\x00\x1f\x7f\u2028")
def test_canonical_texts_of_any_value(value: Any) -> None:
    try:
        text = canonical_json(value)
    except JSONLimitError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    _agree(text)


@settings(max_examples=400, deadline=None)
@given(_VALUE, st.booleans(), st.booleans())
def test_texts_the_standard_library_writes(value: Any, ascii_only: bool, sort: bool) -> None:
    """What a producer without a JCS library might send: right often, not always."""
    _agree(json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), sort_keys=sort))


@settings(max_examples=300, deadline=None)
@given(_VALUE, st.integers(0, 10_000), st.sampled_from([" ", "\\u0041", "1", ".0", "e0", "-"]))
def test_edited_texts(value: Any, at: int, insert: str) -> None:
    try:
        text = canonical_json(value)
    except JSONLimitError:
        return
    at %= len(text) + 1
    _agree(text[:at] + insert + text[at:])


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"b":[true,false,null],"c":"x"}',
        '{"b":1,"a":2}',
        '{"a":1.0}',
        '{"a":1.5}',
        '{"a":1e2}',
        '{"a":9007199254740991}',
        '{"a":9007199254740992}',
        '{"a":"\\u001f"}',
        '{"a":"\\u001F"}',
        '{"a":"\\n"}',
        '{"a":"\\u000a"}',
        '{"\ue000":1,"\U0001f600":2}',
        '{"\U0001f600":2,"\ue000":1}',
        '{"a":-0}',
        '{"a":1,"a":2}',
        '"\\ud800"',
    ],
)
def test_known_cases(text: str) -> None:
    _agree(text)


_PLAIN_KEY = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\')
)
_PLAIN_TEXT = st.text(st.characters(codec="utf-8", exclude_characters='"\\', min_codepoint=0x20))
_PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**15) + 1, 10**15 - 1) | _PLAIN_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_PLAIN_KEY, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=_PLAIN)
def test_core_parses_plainly_canonical_text(value: Any) -> None:
    """What the core is for: canonical text with no escapes, floats or non-ASCII keys is
    parsed by it (not declined), to json.loads's value."""
    text = canonical_json(value)
    if canonical.CORE is not None:  # else the pure-Python run
        assert canonical.CORE.parse(text) is not None
    _agree(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " {}",
        "{} ",
        '{"a": 1}',
        "[1,]",
        "[01]",
        "[-]",
        "[1e5]",
        "[1.5]",
        "1234567890123456",
        "-0",
        "tru",
        "nul",
        '"abc',
        '"a\\"',
        '"\x01"',
        '{"a":1,"a":1}',
        '{"ab":1,"a":1}',
        '{"\u00e9":1}',
        '{"a":"\\u00e9"}',
        '"\ud800"',
        "\ufeff{}",
        "[" * 33 + "]" * 33,
    ],
)
def test_core_declines(text: str, canonical_core: str) -> None:
    if canonical_core == "c":
        assert canonical.CORE is not None
        assert canonical.CORE.parse(text) is None
    _agree(text)


def test_core_depth_is_the_bound(canonical_core: str) -> None:
    """Nesting up to MAX_DEPTH parses; one level more is declined (loads refuses it)."""
    deep = "[" * canonical.MAX_DEPTH + "]" * canonical.MAX_DEPTH
    assert loads(deep) is not None
    with pytest.raises(JSONLimitError):
        loads("[" + deep + "]")
    if canonical_core == "c":
        assert canonical.CORE is not None
        assert canonical.CORE.MAX_DEPTH == canonical.MAX_DEPTH
        assert canonical.CORE.parse(deep) is not None
        with pytest.raises(TypeError):
            canonical.CORE.parse(b"{}")
