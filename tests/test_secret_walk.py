"""The guard's walk over JSON values (secret_values.scan_value) reports exactly what the
straightforward walk it replaced reported: same hits, same order, on generated values.

The reference below is that earlier walk, kept here only as the specification the faster one
(lazy pointers, one pass collecting strings and split runs, a whole-value quiet test) must
match: every string scanned with its name, then every run of short adjacent strings joined.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from affidavit.statements import secret_values, secrets
from affidavit.statements.secret_values import Hit, pointer_part
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from tests import benign_corpus
from tests.c_cores import skip_if_c_cores_off


@pytest.fixture(params=["c", "pure-python"])
def keyword_search(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with each keyword search: the C core's (statements/_guardcore.c) and
    str.find's."""
    if request.param == "c":
        skip_if_c_cores_off()
        assert secrets.CORE is not None, "the C core is built by pip install -e ."
    else:
        monkeypatch.setattr(secrets, "CORE", None)
    return str(request.param)


def reference_scan_value(value: Any) -> list[Hit]:
    hits: list[Hit] = []
    for path, text, name, in_key in _strings(value, "", None):
        hits += (Hit(path, f.rule, f.start, f.end, in_key) for f in secrets.scan(text, name))
    return hits + _split_hits(value, "")


def _strings(
    value: Any, path: str, name: str | None
) -> Iterator[tuple[str, str, str | None, bool]]:
    if isinstance(value, str):
        yield path, value, name, False
    elif isinstance(value, dict):
        sibling = secret_values._sibling_name(value)
        for k, v in value.items():
            child = f"{path}/{pointer_part(k)}"
            yield child, str(k), None, True
            yield from _strings(v, child, secret_values._child_name(value, str(k), sibling))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}/{i}", name)


def _split_hits(value: Any, path: str) -> list[Hit]:
    hits: list[Hit] = []
    if isinstance(value, dict):
        items = [(f"{path}/{pointer_part(k)}", v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"{path}/{i}", v) for i, v in enumerate(value)]
    else:
        return hits
    run: list[tuple[str, str]] = []
    for child, v in [*items, ("", None)]:
        if (
            isinstance(v, str)
            and 0 < len(v) <= secret_values.SPLIT_PIECE_MAX
            and len(v.split()) == 1
        ):
            run.append((child, v))
            continue
        if len(run) > 1:
            bounds, at = [], 0
            for _, text in run:
                bounds.append((at, at + len(text)))
                at += len(text)
            for f in secrets.scan("".join(text for _, text in run)):
                touched = [i for i, (s, e) in enumerate(bounds) if s < f.end and f.start < e]
                if len(touched) > 1:
                    hits += (Hit(run[i][0], f.rule, 0, len(run[i][1])) for i in touched)
        run = []
        if v is not None:
            hits += _split_hits(v, child)
    return hits


GHP = "ghp_" + "q8Zr2Lm9Xv4Tn7Kw3Hb6Jc5Fd1Sg0PyA2bC"
_WORDS = ["=", ": ", '"', "hunter2xyz!", "Zx9mQ2kLw8vB", "%2F", "://u:", "@h", "_live_", "s", "h"]
_PIECES = hs.sampled_from(
    [
        GHP,
        GHP[:20],
        GHP[20:],
        base64.b64encode(GHP.encode()).decode(),
        quote("postgres://app:Zx9mQ#2kL@db/x", safe=""),
        "Zx9mQ2kLw8vB",
        "tangerine-walrus-9",
        "Bearer ",
        "path",
        "max_tokens",
        "secret:prod/payments/*",
        "«redacted:github-token:0a1b2c3d»",
        "2f1c7a52-9a0e-4c53-9a56-1e2b1d1f0c11",
        "gh",
        "p_",
    ]
)
_KEYS = hs.sampled_from(
    ["password", "name", "value", "token", "repo", "env", "a", "b", "Authorization", "path/~x"]
)
_VALUES = hs.recursive(
    hs.one_of(_PIECES, hs.text(max_size=16), hs.integers(-5, 5), hs.none(), hs.booleans()),
    lambda inner: hs.one_of(
        hs.lists(inner, max_size=5),
        hs.dictionaries(_KEYS | hs.text(max_size=8), inner, max_size=5),
        hs.builds(lambda v: {"name": "DB_PASSWORD", "value": v}, inner),
    ),
    max_leaves=16,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_VALUES)
def test_the_walk_matches_the_straightforward_walk(keyword_search: str, value: Any) -> None:
    assert secret_values.scan_value(value) == reference_scan_value(value)


_TEXTS = hs.lists(hs.one_of(_PIECES, hs.text(max_size=40)), max_size=8)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=_TEXTS)
def test_loud_is_quiet_string_by_string(keyword_search: str, texts: list[str]) -> None:
    """secrets.loud finds in one pass the strings quiet() would not pass one by one."""
    assert secrets.loud(texts) == {i for i, text in enumerate(texts) if not secrets.quiet(text)}


_QUIET_PROBES = hs.one_of(
    _PIECES,
    hs.text(max_size=40),
    hs.lists(hs.sampled_from([*secrets._KEYWORD_LIST, *_WORDS]), max_size=8).map("".join),
    hs.lists(hs.sampled_from([*secrets._KEYWORD_LIST, *_WORDS]), max_size=8).map(" ".join),
)


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=_QUIET_PROBES)
def test_a_quiet_text_scans_clean(keyword_search: str, text: str) -> None:
    """What the walks skip as quiet, a scan finds nothing in: quiet() never hides a finding."""
    if secrets.quiet(text):
        assert secrets.scan(text) == []


def _occurrences_by_find(lowered: str) -> list[tuple[int, str]]:
    found = []
    for keyword in secrets._KEYWORD_LIST:
        at = lowered.find(keyword)
        while at >= 0:
            found.append((at, keyword))
            at = lowered.find(keyword, at + 1)
    return sorted(found)


_KEYWORDY = hs.lists(
    hs.sampled_from(
        [*secrets._KEYWORD_LIST, "x", "é", "İ", "\ud800", "\U0001f600", "-", "=", "pas", "s"]
    ),
    max_size=12,
).map("".join)


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=hs.one_of(_KEYWORDY, hs.text(max_size=60)))
def test_each_search_finds_every_occurrence_find_does(keyword_search: str, text: str) -> None:
    """Every keyword search reports every occurrence, overlapping ones included."""
    lowered = text.lower()
    assert secrets.keyword_occurrences(lowered) == _occurrences_by_find(lowered)


def _corpus_texts() -> list[str]:
    corpus = Path(__file__).parent / "vectors" / "secrets-corpus.json"
    data = json.loads(corpus.read_text(encoding="utf-8"))
    texts = [e["text"] for e in data["secrets"]] + [e["text"] for e in data["benign"]]
    texts += [b.text for b in benign_corpus.corpus()]
    # each also behind the decoding layers the scan looks through
    return (
        texts + [base64.b64encode(t.encode()).decode() for t in texts] + [quote(t) for t in texts]
    )


def test_quiet_never_hides_a_finding_in_the_corpora(keyword_search: str) -> None:
    """Every corpus text (secrets, benign look-alikes, and both encoded): quiet only when the
    scan finds nothing; and loud over them all together says the same string by string."""
    texts = _corpus_texts()
    quiet = [secrets.quiet(t) for t in texts]
    for text, is_quiet in zip(texts, quiet, strict=True):
        assert not is_quiet or secrets.scan(text) == [], text[:40]
    assert secrets.loud(texts) == {i for i, q in enumerate(quiet) if not q}
    assert sum(quiet) > 0 and not all(quiet)  # the test sees both answers


def test_the_c_search_refuses_a_table_it_cannot_trust() -> None:
    """A table that breaks the C core's premises is a ValueError, never a read past it."""
    skip_if_c_cores_off()
    core = secrets.CORE
    assert core is not None, "the C core is built by pip install -e ."
    at = ord("a") * 128 + ord("b")
    starts = bytearray(128 * 128 // 8)
    starts[at >> 3] |= 1 << (at & 7)
    table: list[tuple[str, ...] | None] = [None] * (128 * 128)
    assert core.occurrences("xabx", bytes(starts), table) == []  # a start marked, no entry
    for entry in [("a",), ("ac",), ("abé",), (1,), "ab"]:
        table[at] = entry  # type: ignore[call-overload]
        with pytest.raises(ValueError):
            core.occurrences("xabx", bytes(starts), table)
    with pytest.raises(ValueError):
        core.occurrences("ab", bytes(starts), table[:-1])
    with pytest.raises(ValueError):
        core.occurrences("ab", bytes(starts[:-1]), table)
    table[at] = ("ab", "abc")
    assert core.occurrences("xabcab", bytes(starts), table) == [(1, "ab"), (1, "abc"), (4, "ab")]


_SPACED = hs.lists(hs.sampled_from(["a", "Z9", " ", "\t", "\x1c", "\u2028", "\u3000", "é"]))
_ASCII_VALUES = hs.recursive(
    hs.one_of(_PIECES, _SPACED.map("".join), hs.text(max_size=16), hs.integers(), hs.none()),
    lambda inner: hs.one_of(
        hs.lists(inner, max_size=5),
        hs.dictionaries(_KEYS | hs.sampled_from(["NAME", "Key", "ids", "x"]), inner, max_size=5),
    ),
    max_leaves=16,
)


@settings(max_examples=500, deadline=None)
@given(value=hs.one_of(_VALUES, _ASCII_VALUES))
def test_the_c_pieces_are_the_walks(value: Any) -> None:
    """The C core's pieces(): the walk's strings and runs, and a superset of its names; so
    secret_values.pieces with it calls a value named whenever it does without it."""
    skip_if_c_cores_off()
    core = secret_values.CORE
    assert core is not None, "the C core is built by pip install -e ."
    found = core.pieces(value, secret_values._NAME_KEYS_ORDERED, secret_values.SPLIT_PIECE_MAX)
    if found is None:
        assert any(not k.isascii() for k in _keys(value)), "declined only a non-ASCII key"
        return
    walk = secret_values._Walk()
    walk.value(value, None, None)
    strings = [text for _, text, _, _ in walk.strings]
    strings += ("".join(text for _, text in run) for run in walk.runs)
    assert found[0] == strings  # in scan_value's order: its marks are handed over
    assert {n for _, _, n, _ in walk.strings if n is not None} <= set(found[1])
    try:
        secret_values.CORE = None
        _, named_by_walk = secret_values.pieces(value)
    finally:
        secret_values.CORE = core
    assert secret_values.pieces(value)[1] or not named_by_walk


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        yield from value
        value = list(value.values())
    if isinstance(value, list):
        for v in value:
            yield from _keys(v)


def test_the_c_pieces_decline_what_python_must_read() -> None:
    skip_if_c_cores_off()
    core = secret_values.CORE
    assert core is not None, "the C core is built by pip install -e ."

    class Text(str):
        pass

    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    args = (secret_values._NAME_KEYS_ORDERED, secret_values.SPLIT_PIECE_MAX)
    for value in [{"é": "x"}, {1: "x"}, [Text("x")], {"a": {"b": Text("y")}}, deep]:
        assert core.pieces(value, *args) is None
    assert core.pieces(("a", "b", 3, b"x"), *args) == (["a", "b", "ab"], [])
    assert core.pieces([["a", "b"], "c", "d"], *args) == (["a", "b", "c", "d", "ab", "cd"], [])
    assert core.pieces({"Name": "DB_PASSWORD", "v": "a b"}, *args) == (
        ["Name", "DB_PASSWORD", "v", "a b"],
        ["Name", "DB_PASSWORD", "v"],
    )
    with pytest.raises(ValueError):
        core.pieces({}, ("é",), 1)
