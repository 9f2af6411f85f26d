"""The guard's and canonical JSON's C cores at the edges an attacker would pick: whenever a core
answers, its answer is the pure-Python one.

test_secret_walk.py, test_canonical.py and test_guard_cores.py hold the cores to Python on
generated values; these walk the edges one class at a time instead, so a miss there names its
input: every character as a string and as a key (UTF-8 widths, surrogates, DEL, U+2028), the
numbers around 15 digits and 2**53, nesting at the bound, each keyword at each end of text of
each str width, every white space character splitting a piece, keys that lowercase into a
name-holding key, and the references each call leaves behind.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from affidavit.statements import canonical, secret_values, secrets
from affidavit.statements.canonical import JSONLimitError, canonical_json

from tests.c_cores import skip_if_c_cores_off
from tests.statement_world import base
from tests.test_guard_cores import _both

skip_if_c_cores_off(module=True)

_SAMPLE_CHARS = [
    *map(chr, range(0x3100)),  # ASCII, Latin, Greek (final sigma), spaces up to U+3000
    *map(chr, range(0xD7F0, 0xE010)),  # the surrogates and their neighbours
    *"\ufb01\ufeff\ufffe\uffff\U00010000\U0001f600\U0010ffff",
]


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (True is not 1, 1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _pure_loads(text: str) -> Any:
    core, canonical.CORE = canonical.CORE, None
    try:
        return canonical.loads(text)
    finally:
        canonical.CORE = core


def _core_agrees(text: str) -> bool:
    """None (declined), or json.loads's value of text, which is the RFC 8785 text of it."""
    assert canonical.CORE is not None, "the C core is built by pip install -e ."
    found = canonical.CORE.parse(text)
    if found is None:
        return False
    value = _pure_loads(text)  # a JSONLimitError here is a divergence too
    assert _same(found[0], value), text
    assert canonical_json(value) == text, text
    return True


def test_every_character_as_a_string_and_as_a_key() -> None:
    for c in _SAMPLE_CHARS:
        plain = c >= " " and c not in '"\\' and not "\ud800" <= c <= "\udfff"
        assert _core_agrees(f'"{c}"') == plain, repr(c)  # RFC 8785 writes it as itself
        for text in (f'{{"{c}":1}}', f'{{"a":1,"{c}":2}}', f'{{"{c}":1,"a":2}}'):
            _core_agrees(text)


def _numbers() -> Iterator[int]:
    yield from range(-1100, 1100)
    for k in range(12, 18):
        for n in (10**k - 2, 10**k - 1, 10**k, 10**k + 1):
            yield from (n, -n)
    yield from (2**53 - 1, 2**53, 2**53 + 1, -(2**53 - 1), -(2**53))


def test_numbers_around_the_digit_bound() -> None:
    for n in _numbers():
        texts = [str(n), f"[{n}]", f'{{"a":{n}}}', f"{n}.0", f"{n}e0", f"{n}E2", f"0{n}"]
        texts += [f"-0{abs(n)}", f"[-0{abs(n)}]", "-0", "[-0]", '{"a":-0}']
        answered = [_core_agrees(t) for t in texts]
        assert answered[0] == (len(str(abs(n))) <= 15), n  # 15 digits, the core's bound
        assert not any(answered[3:]), n


@pytest.mark.parametrize("depth", range(canonical.MAX_DEPTH - 2, canonical.MAX_DEPTH + 3))
def test_nesting_at_the_bound(depth: int) -> None:
    half = depth // 2
    texts = [
        "[" * depth + "]" * depth,
        '{"a":' * depth + "1" + "}" * depth,
        '[{"a":' * half + "[]" + "}]" * half,
    ]
    for text in texts:
        try:
            _pure_loads(text)
        except JSONLimitError:
            assert canonical.CORE is not None and canonical.CORE.parse(text) is None
        else:
            _core_agrees(text)


def _pure_occurrences(text: str) -> list[tuple[int, str]]:
    found = []
    for keyword in secrets._KEYWORD_LIST:
        at = text.find(keyword)
        while at >= 0:
            found.append((at, keyword))
            at = text.find(keyword, at + 1)
    return sorted(found)


@pytest.mark.parametrize("width", ["", "\xff", "\u0100", "\U0001f600"])  # each str kind
def test_each_keyword_at_each_edge(width: str) -> None:
    assert secrets.CORE is not None, "the C core is built by pip install -e ."
    search: Callable[..., list[tuple[int, str]]] = secrets.CORE.occurrences
    for k in secrets._KEYWORD_LIST:
        for c in ("", "x", "\x00", width, k[0], k[-1]):
            for text in (
                k + c,
                c + k,
                width + k[:-1],
                k[:1] + c + k[1:],
                k[:2] + c + k[2:],
                k + k,
                k + k[1:],
                k[1:] + k + width,
            ):
                assert search(text, secrets._STARTS, secrets._TABLE) == _pure_occurrences(text)


def _pure_pieces(value: Any) -> tuple[list[str], bool]:
    core, secret_values.CORE = secret_values.CORE, None
    try:
        return secret_values.pieces(value)
    finally:
        secret_values.CORE = core


def test_every_white_space_splits_a_piece_as_str_split_does() -> None:
    assert secret_values.CORE is not None, "the C core is built by pip install -e ."
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    for c in [*_SAMPLE_CHARS, *spaces]:
        for text in (f"a{c}b", c, f"{c}x", f"x{c}"):
            value = [text, "q", {"k": text, "v": "z"}]
            found = secret_values.pieces(value)
            texts, named = _pure_pieces(value)
            assert Counter(found[0]) == Counter(texts), repr(c)
            assert found[1] or not named


def test_a_key_that_lowercases_into_a_name_key_is_left_to_python() -> None:
    """KELVIN SIGN K lowercases to ASCII k: "\u212aey" names its sibling as "key" does."""
    value = {"\u212aey": "DB_PASSWORD", "value": "hunter2xyz!"}
    assert secret_values.CORE is not None
    args = (secret_values._NAME_KEYS_ORDERED, secret_values.SPLIT_PIECE_MAX)
    assert secret_values.CORE.pieces(value, *args) is None
    assert secret_values.pieces(value) == _pure_pieces(value)
    assert secret_values.scan_value(value), "the sibling's name makes the value a secret"


@pytest.mark.parametrize(
    "parameters",
    [
        '{"\u212aey":"DB_PASSWORD","value":"hunter2xyz!"}',
        '{"p":["ghp_q8Zr2Lm9Xv4T","n7Kw3Hb6Jc5Fd1Sg0PyA2bC"]}',
        '{"p":["ghp_q8Zr2Lm9Xv4T\x1cn7Kw3Hb6Jc5Fd1Sg0PyA2bC"]}',
        '{"p":"\U0001f600 token=Zx9mQ2kLw8vBqq"}',
        '{"p":"\u0100 passwd: Zx9mQ2kLw8vBqq"}',
        '{"p":"x","NAME":"api_key","Val":"Zx9mQ2kLw8vB"}',
        '{"b":1, "a":"secret=Zx9mQ2kLw8vBqq"}',
        '{"p":"key"}',
    ],
)
def test_verdicts_on_edge_parameters(monkeypatch: pytest.MonkeyPatch, parameters: str) -> None:
    statement = base("intent")
    op = statement.action.operation
    op.parameters_json = parameters
    op.parameters_digest = canonical.shown_digest(parameters)
    del op.redactions[:]
    with_cores, without = _both(statement, monkeypatch)
    assert with_cores == without


def test_no_call_leaves_a_reference_behind() -> None:
    """Answers, declines and errors each release what they took: the references to their
    input and the objects they made (traced memory stays flat)."""
    assert secrets.CORE is not None and canonical.CORE is not None
    guard, parse = secrets.CORE, canonical.CORE.parse
    names = secret_values._NAME_KEYS_ORDERED
    leaf, key = "".join(["to", "ken"]), "".join(["na", "me"])
    items = [leaf, "x", leaf]
    value = {key: leaf, "v": items, "t": (leaf, 1)}
    bad_table = list(secrets._TABLE)
    bad_table[ord("t") * 128 + ord("o")] = ("tx",)

    def calls() -> None:
        guard.pieces(value, names, 128)
        guard.pieces({**value, "é": 1}, names, 128)
        guard.occurrences(leaf + " key=" + leaf, secrets._STARTS, secrets._TABLE)
        with pytest.raises(ValueError):
            guard.occurrences(leaf, secrets._STARTS, bad_table)
        parse('[true,false,null,{"a":"token"}]')
        parse('[true,false,null,{"b":1,"a":"token"}]')

    watched = [leaf, key, items, value, *secrets._KEYWORD_LIST, *filter(None, secrets._TABLE)]
    calls()
    gc.collect()
    before = [sys.getrefcount(o) for o in watched]
    tracemalloc.start()
    try:
        for _ in range(1000):
            calls()
        gc.collect()
        settled, _ = tracemalloc.get_traced_memory()
        for _ in range(1000):
            calls()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(o) for o in watched] == before
    assert grown < 1000 * 16, "an object (16 bytes at least) kept per call"
