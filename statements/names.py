"""The grammar of tool and resource names and of the patterns grants write over them.

A name is a sequence of segments, and a pattern's wildcards never reach across a segment
boundary unless the pattern says so with a whole `**` segment. So under `repo:acme/*` the
resource `repo:acme/../evilcorp/secrets` cannot match: it is not even a name (`..` is no
segment), and `*` cannot swallow the `/` before `evilcorp` either.

Tool names: dot-separated segments of `[A-Za-z0-9_-]`, e.g. `github.create_pull_request`.
Resource names: `scheme:` then, optionally, `//`, then `/`-separated segments of
`[A-Za-z0-9._~@+=,:-]`, e.g. `repo:acme/web`, `secret:prod/payments/db@v8`,
`https://github.com/acme/web`. A segment is never empty, `.` or `..`; control characters,
whitespace, `;`, `\\`, `?`, `#`, `%` and `*` never appear in a name. Names are at most
MAX_NAME characters.

Patterns use the same grammar, with two wildcards inside segments: `*` any run of segment
characters (possibly none) and `?` exactly one; and one wildcard segment: `**`, one or more
whole segments (the one way to cross a separator). A resource pattern's scheme is literal.
Operation names (gen_ai.operation.name) follow the tool grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

MAX_NAME = 512

Kind = Literal["tool", "resource"]

# Regular-expression class bodies of the characters a segment may hold.
_TOOL_SEGMENT = r"A-Za-z0-9_\-"
_RESOURCE_SEGMENT = r"A-Za-z0-9._~@+=,:\-"
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,31}")


@dataclass(frozen=True)
class Parsed:
    """A name or pattern split into its literal prefix (a resource's `scheme:` or
    `scheme://`, empty for tools) and its segments."""

    prefix: str
    segments: tuple[str, ...]


def _separator(kind: Kind) -> str:
    return "." if kind == "tool" else "/"


def _segment_chars(kind: Kind) -> str:
    return _TOOL_SEGMENT if kind == "tool" else _RESOURCE_SEGMENT


def _split(kind: Kind, text: str) -> Parsed | str:
    """The parsed text, or why it has no prefix/segments shape."""
    if not text:
        return "is empty"
    if len(text) > MAX_NAME:
        return f"is {len(text)} characters; at most {MAX_NAME}"
    prefix = ""
    rest = text
    if kind == "resource":
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME.fullmatch(scheme):
            return "must start with a scheme: lowercase letters, digits, '+', '.', '-', then ':'"
        prefix = scheme + ":"
        if rest.startswith("//"):
            prefix, rest = prefix + "//", rest[2:]
    return Parsed(prefix, tuple(rest.split(_separator(kind))))


def _segment_problem(kind: Kind, segment: str, pattern: bool) -> str | None:
    if segment in ("", ".", ".."):
        return f"has an empty, '.' or '..' segment ({segment!r})"
    if pattern and segment == "**":
        return None
    allowed = _segment_chars(kind) + (r"*?" if pattern else "")
    bad = re.search(f"[^{allowed}]", segment)
    if bad:
        char = bad.group()
        shown = repr(char) if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"
        return f"holds {shown}, which a {kind} name may not contain"
    return None


def problem(kind: Kind, text: str, *, pattern: bool = False) -> str | None:
    """Why text is not a well-formed name (or pattern) of this kind; None when it is."""
    parsed = _split(kind, text)
    if isinstance(parsed, str):
        return parsed
    for segment in parsed.segments:
        found = _segment_problem(kind, segment, pattern)
        if found:
            return found
    return None


@lru_cache(maxsize=4096)
def _compiled(kind: Kind, pattern: str) -> re.Pattern[str] | None:
    """The pattern as one regular expression, or None when it is malformed (matches nothing)."""
    parsed = _split(kind, pattern)
    if isinstance(parsed, str) or problem(kind, pattern, pattern=True):
        return None
    chars = f"[{_segment_chars(kind)}]"
    sep = re.escape(_separator(kind))
    parts = []
    for segment in parsed.segments:
        if segment == "**":
            parts.append(f"{chars}+(?:{sep}{chars}+)*")
        else:
            parts.append(
                "".join(
                    f"{chars}*" if c == "*" else chars if c == "?" else re.escape(c)
                    for c in segment
                )
            )
    return re.compile(re.escape(parsed.prefix) + sep.join(parts))


_SEGMENT = {
    kind: f"(?!\\.\\.?(?:{re.escape(_separator(kind))}|$))[{_segment_chars(kind)}]+"
    for kind in ("tool", "resource")
}
_NAME = {
    "tool": re.compile(f"{_SEGMENT['tool']}(?:\\.{_SEGMENT['tool']})*"),
    "resource": re.compile(
        f"[a-z][a-z0-9+.-]{{0,31}}:(?://)?{_SEGMENT['resource']}(?:/{_SEGMENT['resource']})*"
    ),
}
"""The grammar as one expression per kind: what problem() accepts, checked in one pass."""


# The same tools and resources come back in statement after statement: judged once each.
@lru_cache(maxsize=4096)
def is_name(kind: Kind, text: str) -> bool:
    """Whether text is a well-formed name of this kind (problem() says why not)."""
    return len(text) <= MAX_NAME and _NAME[kind].fullmatch(text) is not None


def matches(kind: Kind, pattern: str, name: str) -> bool:
    """Whether name is a well-formed name that pattern matches. A malformed name matches no
    pattern, and a malformed pattern matches no name."""
    compiled = _compiled(kind, pattern)
    return compiled is not None and compiled.fullmatch(name) is not None and is_name(kind, name)


def _segment_covers(parent: str, child: str) -> bool:
    """Whether every segment the child segment pattern matches, the parent's matches too
    (judged conservatively; `**` is handled by the caller)."""
    if parent == child or parent == "*":
        return True
    if "*" not in child and "?" not in child:
        return (
            re.fullmatch(
                "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in parent),
                child,
                re.S,
            )
            is not None
        )
    # A wildcard child segment is covered by a prefix glob ("pr-*") that its literal start
    # extends.
    head = parent[:-1]
    return parent.endswith("*") and "*" not in head and "?" not in head and child.startswith(head)


def covers(kind: Kind, parent: str, child: str) -> bool:
    """Whether every name child matches is also matched by parent (judged conservatively: a
    False may be a covering the judge cannot see, never the reverse)."""
    if problem(kind, parent, pattern=True) or problem(kind, child, pattern=True):
        return False
    p, c = _split(kind, parent), _split(kind, child)
    assert isinstance(p, Parsed) and isinstance(c, Parsed)
    if p.prefix != c.prefix:
        return False
    ps, cs = p.segments, c.segments
    if ps and ps[-1] == "**":
        # A trailing `**` covers one or more whole segments, whatever the child puts there.
        head = ps[:-1]
        if len(cs) <= len(head) or "**" in cs[: len(head)]:
            return False
        return all(_segment_covers(a, b) for a, b in zip(head, cs, strict=False))
    if "**" in ps:
        return parent == child
    if len(ps) != len(cs) or "**" in cs:
        return False
    return all(_segment_covers(a, b) for a, b in zip(ps, cs, strict=True))
