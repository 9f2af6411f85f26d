"""The secret guard over structured values: JSON parameters and string maps.

A value's meaning is often in its key or in a sibling key, not in the value: ``{"password":
"hunter2xyz!"}``, ``{"name": "AWS_SECRET_ACCESS_KEY", "value": "…"}``; and a token may be
split across keys or array items to slip past a scan of each. So the walk scans each string
with the name it is stored under — its key, or, under a value-holding key (``value``,
``data``…), the credential named by a sibling name-holding key (``name``, ``key``, ``env``…) —
and also scans each run of short adjacent strings of one object or array joined together; a
secret found across pieces marks every piece it touches.

    scan_value(value) -> list[Hit]          every secret, by JSON pointer (RFC 6901)
    redact_value(value, key) -> value        each secret replaced by its marker (secrets.redact)

Object keys are scanned too (a secret used as a key is reported; it cannot be redacted in
place, so the client refuses it before sending). Both functions walk in the same order with the
same rules, so what the client redacts is exactly what the log would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, TypeAlias

from affidavit.statements import secrets
from affidavit.statements.secret_rules import names_context, names_credential

CORE: ModuleType | None = secrets.CORE
"""The guard's C core (statements/_guardcore.c), which pieces() uses; None: the walk
here alone (tests run both; AFFIDAVIT_PURE_PYTHON=1 at import turns it off)."""

# fmt: off
NAME_KEYS: Final = frozenset({"name", "key", "id", "variable", "var", "env", "field", "header",
                              "parameter", "param", "label", "setting", "property"})
VALUE_KEYS: Final = frozenset({"value", "val", "data", "content", "secret", "default", "text"})
# fmt: on
_NAME_KEYS_ORDERED: Final = tuple(sorted(NAME_KEYS))  # the C core's form of them
SPLIT_PIECE_MAX: Final = 128
"""Longest string joined with its neighbours to look for a token split across them: pieces of
a split token are short and have no white space."""


@dataclass(frozen=True)
class Hit:
    """A secret at ``path`` (a JSON pointer): ``text[start:end]`` of the string there, or, with
    ``in_key``, in the key that ends the path."""

    path: str
    rule: str
    start: int
    end: int
    in_key: bool = False


def pointer_part(key: str | int) -> str:
    """One RFC 6901 reference token."""
    return str(key).replace("~", "~0").replace("/", "~1")


def scan_value(value: Any, loud: set[int] | None = None) -> list[Hit]:
    """Every secret in a JSON-like value (dicts, lists, strings, scalars), in walk order.
    ``loud``: ``secrets.loud(pieces(value)[0])`` when the caller has it already."""
    walk = _Walk()
    walk.value(value, None, None)
    # One pass over all the strings, and the runs joined, finds those a scan must read: the
    # other strings are judged only when their name gives them a meaning (a credential's or a
    # carrier's), the other runs not at all.
    joins = ["".join(text for _, text in run) for run in walk.runs]
    texts = [text for _, text, _, _ in walk.strings]
    if loud is None:
        loud = secrets.loud(texts + joins)
    hits: list[Hit] = []
    for i, (path, text, name, in_key) in enumerate(walk.strings):
        if i in loud or names_context(name):
            found = secrets.scan(text, name)
            hits += (Hit(_pointer(path), f.rule, f.start, f.end, in_key) for f in found)
    for j, run in enumerate(walk.runs):
        if len(texts) + j in loud:
            hits += _run_hits(run, joins[j])
    return hits


def pieces(value: Any) -> tuple[list[str], bool]:
    """What scan_value(value) reads first, in its order: every string and key of the value,
    then each run of short adjacent strings joined; and whether a string may be judged by its
    name. When none may, and ``secrets.loud`` marks none of these strings,
    ``scan_value(value)`` is certainly empty: so the guard reads them in the same loud pass as
    a statement's other fields (and hands scan_value the marks when there are some)."""
    if CORE is not None:
        found: tuple[list[str], list[str | None]] | None
        found = CORE.pieces(value, _NAME_KEYS_ORDERED, SPLIT_PIECE_MAX)
        if found is not None:
            # every key and every string under a name-holding key: a superset of the names
            strings, names = found
            return strings, any(map(names_context, names))
    walk = _Walk()
    walk.value(value, None, None)
    texts = [text for _, text, _, _ in walk.strings]
    texts += ("".join(text for _, text in run) for run in walk.runs)
    return texts, any(names_context(name) for _, _, name, _ in walk.strings)


def redact_value(value: Any, key: bytes) -> Any:
    """``value`` with each string's secrets replaced by markers keyed by ``key``; a string
    holding a piece of a split secret is replaced whole. Keys are left as they are."""
    walk = _Walk()
    walk.value(value, None, None)
    joins = ["".join(text for _, text in run) for run in walk.runs]
    loud = secrets.loud(joins)
    whole = {
        h.path: h.rule
        for j, run in enumerate(walk.runs)
        if j in loud
        for h in _run_hits(run, joins[j])
    }
    return _rebuild(value, "", None, key, whole)


def _sibling_name(obj: dict[str, Any]) -> str | None:
    """The credential a name-holding key of this object names (``"name": "DB_PASSWORD"``)."""
    for k, v in obj.items():
        if k.lower() in NAME_KEYS and isinstance(v, str) and names_credential(v):
            return v
    return None


def _child_name(obj: dict[str, Any], k: str, sibling: str | None) -> str:
    return sibling if sibling is not None and k.lower() in VALUE_KEYS else k


_Path: TypeAlias = "tuple[_Path, str | int] | None"
"""A JSON pointer as a chain of (parent, reference token), joined (``_pointer``) only for a hit."""


def _pointer(path: _Path) -> str:
    parts = []
    while path is not None:
        path, k = path
        parts.append(f"/{pointer_part(k)}")
    return "".join(reversed(parts))


class _Walk:
    """One walk over a value, in document order, collecting what the guard scans:
    ``strings``: (path, text, name, is a key) of every string and object key;
    ``runs``: each run of two or more short adjacent strings of one object or array, as
    (path, text) pieces, in the order a depth-first walk closes them."""

    def __init__(self) -> None:
        self.strings: list[tuple[_Path, str, str | None, bool]] = []
        self.runs: list[list[tuple[_Path, str]]] = []

    def value(self, value: Any, path: _Path, name: str | None) -> None:
        if isinstance(value, str):
            self.strings.append((path, value, name, False))
            return
        if isinstance(value, dict):
            sibling = _sibling_name(value)
            items: list[tuple[_Path, Any, str | None, str | None]] = []
            for k, v in value.items():
                as_text = str(k)
                items.append(((path, k), v, _child_name(value, as_text, sibling), as_text))
        elif isinstance(value, list | tuple):
            items = [((path, i), v, name, None) for i, v in enumerate(value)]
        else:
            return
        strings = self.strings
        run: list[tuple[_Path, str]] = []
        for child, v, child_name, key in items:
            if key is not None:
                strings.append((child, key, None, True))
            if isinstance(v, str):
                strings.append((child, v, child_name, False))
                if 0 < len(v) <= SPLIT_PIECE_MAX and len(v.split()) == 1:
                    run.append((child, v))
                    continue
            if len(run) > 1:
                self.runs.append(run)
            run = []
            if not isinstance(v, str):
                self.value(v, child, child_name)
        if len(run) > 1:
            self.runs.append(run)


def _run_hits(run: list[tuple[_Path, str]], joined: str) -> list[Hit]:
    """A Hit over the whole of each piece of ``run`` that holds part of a secret found in
    ``joined``, the pieces joined (and across two or more of them)."""
    bounds, at = [], 0
    for _, text in run:
        bounds.append((at, at + len(text)))
        at += len(text)
    hits: list[Hit] = []
    for f in secrets.scan(joined):
        touched = [i for i, (s, e) in enumerate(bounds) if s < f.end and f.start < e]
        if len(touched) > 1:
            hits += (Hit(_pointer(run[i][0]), f.rule, 0, len(run[i][1])) for i in touched)
    return hits


def _rebuild(value: Any, path: str, name: str | None, key: bytes, whole: dict[str, str]) -> Any:
    if isinstance(value, str):
        if path in whole:
            marker = f"«redacted:{whole[path]}:{secrets.fingerprint(value, key)}»"
            return marker if not secrets.MARKER.fullmatch(value) else value
        return secrets.redact(value, key, name)[0]
    if isinstance(value, dict):
        sibling = _sibling_name(value)
        return {
            k: _rebuild(
                v, f"{path}/{pointer_part(k)}", _child_name(value, str(k), sibling), key, whole
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_rebuild(v, f"{path}/{i}", name, key, whole) for i, v in enumerate(value)]
    return value
