"""The name grammar and the pattern matcher (statements.names), against a reference model.

The model matches segment by segment (fnmatch within one segment, `**` as one or more whole
segments, by plain recursion), a different construction from the one regular expression the
matcher compiles; hypothesis looks for any name and pattern on which they disagree.
"""

from __future__ import annotations

import fnmatch
import re

import pytest
from affidavit.statements import names
from affidavit.statements.names import Kind
from hypothesis import given, settings
from hypothesis import strategies as st

_VALID = {"tool": re.compile(r"[A-Za-z0-9_-]+"), "resource": re.compile(r"[A-Za-z0-9._~@+=,:-]+")}


def _model_segments(kind: Kind, text: str) -> tuple[str, list[str]] | None:
    """(prefix, segments) of a well-formed name or pattern, by the grammar's words."""
    if not text or len(text) > names.MAX_NAME:
        return None
    prefix = ""
    if kind == "resource":
        if ":" not in text:
            return None
        scheme, rest = text.split(":", 1)
        if not re.fullmatch(r"[a-z][a-z0-9+.-]{0,31}", scheme):
            return None
        prefix = scheme + ":"
        if rest.startswith("//"):
            prefix, rest = prefix + "//", rest[2:]
        text = rest
    return prefix, text.split("." if kind == "tool" else "/")


def _model_name(kind: Kind, text: str) -> list[str] | None:
    parsed = _model_segments(kind, text)
    if parsed is None:
        return None
    _, segments = parsed
    ok = all(s not in ("", ".", "..") and _VALID[kind].fullmatch(s) for s in segments)
    return segments if ok else None


def _model_match(pattern: list[str], name: list[str]) -> bool:
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_model_match(rest, name[k:]) for k in range(1, len(name) + 1))
    return bool(name) and fnmatch.fnmatchcase(name[0], head) and _model_match(rest, name[1:])


def model_matches(kind: Kind, pattern: str, name: str) -> bool:
    if names.problem(kind, pattern, pattern=True) is not None:
        return False
    segments = _model_name(kind, name)
    p, n = _model_segments(kind, pattern), _model_segments(kind, name)
    if segments is None or p is None or n is None or p[0] != n[0]:
        return False
    return _model_match(p[1], segments)


# Alphabets small enough to collide often, with the separators and the hostile characters.
_TOOL_CHARS = "ab_.;*? \n"
_RESOURCE_CHARS = "ab./:*?\n;%"
_TOOL_PATTERNS = st.text(alphabet="ab.*?", min_size=1, max_size=8)
_RESOURCE_PATTERNS = st.text(alphabet="ab/.*?", max_size=8).map(lambda t: "r:" + t)
_TOOL_NAMES = st.text(alphabet=_TOOL_CHARS, min_size=1, max_size=10)
_RESOURCE_NAMES = st.one_of(
    st.text(alphabet=_RESOURCE_CHARS, max_size=10).map(lambda t: "r:" + t),
    st.text(alphabet=_RESOURCE_CHARS, max_size=10),
)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(_TOOL_PATTERNS, _TOOL_NAMES)
def test_tool_matcher_agrees_with_the_model(pattern: str, name: str) -> None:
    assert names.matches("tool", pattern, name) == model_matches("tool", pattern, name)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(_RESOURCE_PATTERNS, _RESOURCE_NAMES)
def test_resource_matcher_agrees_with_the_model(pattern: str, name: str) -> None:
    assert names.matches("resource", pattern, name) == model_matches("resource", pattern, name)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.sampled_from(["tool", "resource"]),
    st.one_of(
        st.text(max_size=12),
        st.text(alphabet="ab./:\n", max_size=12),
        st.text(alphabet="ab./:", max_size=10).map(lambda t: "r:" + t),
    ),
)
def test_a_name_is_well_formed_exactly_when_the_model_says(kind: Kind, text: str) -> None:
    expected = _model_name(kind, text) is not None
    assert (names.problem(kind, text) is None) == expected
    assert names.is_name(kind, text) == expected  # the one-pass check matches the grammar


def _instance(kind: Kind, pattern: str, data: st.DataObject) -> str:
    """A name the pattern matches: each wildcard filled at random with segment characters."""
    sep = "." if kind == "tool" else "/"
    fill = st.text(alphabet="abx", min_size=1, max_size=3)
    parsed = _model_segments(kind, pattern)
    assert parsed is not None
    out = []
    for segment in parsed[1]:
        if segment == "**":
            out.append(sep.join(data.draw(st.lists(fill, min_size=1, max_size=3))))
            continue
        chars = []
        for c in segment:
            if c == "*":
                chars.append(data.draw(st.text(alphabet="abx", max_size=3)))
            elif c == "?":
                chars.append(data.draw(st.sampled_from("abx")))
            else:
                chars.append(c)
        out.append("".join(chars))
    return parsed[0] + sep.join(out)


_COVER_PATTERNS = st.lists(
    st.sampled_from(["a", "b", "*", "a*", "?", "**", "ab"]), min_size=1, max_size=4
).map(lambda segs: "r:" + "/".join(segs))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(_COVER_PATTERNS, _COVER_PATTERNS, st.data())
def test_covers_is_sound(parent: str, child: str, data: st.DataObject) -> None:
    """If covers(parent, child), every name child matches is matched by parent."""
    if not names.covers("resource", parent, child):
        return
    for _ in range(4):
        name = _instance("resource", child, data)
        if names.problem("resource", name) is not None:
            continue  # e.g. a `*` filled to nothing made an empty segment
        assert names.matches("resource", child, name)
        assert names.matches("resource", parent, name), (parent, child, name)


ATTACKS: list[tuple[Kind, str, str]] = [
    ("resource", "repo:acme/*", "repo:acme/../evilcorp/secrets"),
    ("resource", "repo:acme/*", "repo:acme/x\nrepo:evilcorp/y"),
    ("resource", "repo:acme/*", "repo:acme/web/../../evilcorp"),
    ("resource", "repo:acme/*", "repo:acme/web/deeper"),
    ("resource", "repo:acme/*", "repo:acme/%2e%2e"),
    ("resource", "repo:acme/*", "repo:acme/web;rm -rf"),
    ("resource", "repo:acme/*", "repo:acme/web?x=1"),
    ("resource", "repo:acme/*", "repo:acme//x"),
    ("resource", "repo:acme/**", "repo:acme/./x"),
    ("tool", "github.*", "github.x;shell.exec"),
    ("tool", "github.*", "github.x.shell"),
    ("tool", "github.*", "github.x\nshell.exec"),
    ("tool", "github.*", "github.x shell.exec"),
]


@pytest.mark.parametrize(("kind", "pattern", "name"), ATTACKS)
def test_names_built_to_escape_a_pattern_do_not_match(kind: Kind, pattern: str, name: str) -> None:
    assert not names.matches(kind, pattern, name)


HONEST: list[tuple[Kind, str, str]] = [
    ("resource", "repo:acme/*", "repo:acme/web"),
    ("resource", "repo:acme/**", "repo:acme/web/src/main.py"),
    ("resource", "secret:prod/payments/*", "secret:prod/payments/db@v8"),
    ("resource", "https://github.com/acme/*", "https://github.com/acme/web"),
    ("resource", "host:prod-*", "host:prod-db"),
    ("tool", "github.*", "github.create_pull_request"),
    ("tool", "github.**", "github.repos.create"),
    ("tool", "github.get_?", "github.get_x"),
]


@pytest.mark.parametrize(("kind", "pattern", "name"), HONEST)
def test_honest_names_match(kind: Kind, pattern: str, name: str) -> None:
    assert names.matches(kind, pattern, name)


def test_covers_examples() -> None:
    assert names.covers("resource", "repo:acme/*", "repo:acme/web")
    assert names.covers("resource", "repo:acme/**", "repo:acme/web/*")
    assert names.covers("resource", "repo:acme/*", "repo:acme/web*")
    assert names.covers("tool", "github.get_?", "github.get_x")
    assert not names.covers("resource", "repo:acme/*", "repo:acme/**")
    assert not names.covers("resource", "repo:acme/*", "repo:acme/web/*")
    assert not names.covers("resource", "repo:acme/web", "repo:acme/*")
    assert not names.covers("resource", "repo:acme/*", "other:acme/web")
    assert not names.covers("tool", "github.get_?", "github.get_*")
    assert not names.covers("tool", "a*b", "a*")
