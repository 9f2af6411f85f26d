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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from affidavit.statements import secrets
from affidavit.statements.secret_rules import names_context, names_credential

# fmt: off
NAME_KEYS: Final = frozenset({"name", "key", "id", "variable", "var", "env", "field", "header",
                              "parameter", "param", "label", "setting", "property"})
VALUE_KEYS: Final = frozenset({"value", "val", "data", "content", "secret", "default", "text"})
# fmt: on
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


def scan_value(value: Any) -> list[Hit]:
    """Every secret in a JSON-like value (dicts, lists, strings, scalars), in walk order."""
    hits: list[Hit] = []
    strings = list(_strings(value, "", None))
    # The keywords of the whole value, found once: each string is then tested for those only.
    present = secrets.keywords_in("\x00".join(text for _, text, _, _ in strings))
    for path, text, name, in_key in strings:
        if secrets.quiet(text, present) and not names_context(name):
            continue
        hits += (Hit(path, f.rule, f.start, f.end, in_key) for f in secrets.scan(text, name))
    hits += _split_hits(value, "")
    return hits


def redact_value(value: Any, key: bytes) -> Any:
    """``value`` with each string's secrets replaced by markers keyed by ``key``; a string
    holding a piece of a split secret is replaced whole. Keys are left as they are."""
    whole = {h.path: h.rule for h in _split_hits(value, "")}
    return _rebuild(value, "", None, key, whole)


def _sibling_name(obj: dict[str, Any]) -> str | None:
    """The credential a name-holding key of this object names (``"name": "DB_PASSWORD"``)."""
    for k, v in obj.items():
        if k.lower() in NAME_KEYS and isinstance(v, str) and names_credential(v):
            return v
    return None


def _child_name(obj: dict[str, Any], k: str, sibling: str | None) -> str:
    return sibling if sibling is not None and k.lower() in VALUE_KEYS else k


def _strings(
    value: Any, path: str, name: str | None
) -> Iterator[tuple[str, str, str | None, bool]]:
    """(pointer, text, name, is a key) of every string and object key, in walk order."""
    if isinstance(value, str):
        yield path, value, name, False
    elif isinstance(value, dict):
        sibling = _sibling_name(value)
        for k, v in value.items():
            child = f"{path}/{pointer_part(k)}"
            yield child, str(k), None, True
            yield from _strings(v, child, _child_name(value, str(k), sibling))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}/{i}", name)


def _split_hits(value: Any, path: str) -> list[Hit]:
    """A Hit over the whole of each short string that holds a piece of a secret split across
    adjacent strings of one object or array (and found in none of them alone)."""
    hits: list[Hit] = []
    if isinstance(value, dict):
        items = [(f"{path}/{pointer_part(k)}", v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"{path}/{i}", v) for i, v in enumerate(value)]
    else:
        return hits
    run: list[tuple[str, str]] = []
    for child, v in [*items, ("", None)]:
        if isinstance(v, str) and 0 < len(v) <= SPLIT_PIECE_MAX and len(v.split()) == 1:
            run.append((child, v))
            continue
        hits += _run_hits(run)
        run = []
        if v is not None:
            hits += _split_hits(v, child)
    return hits


def _run_hits(run: list[tuple[str, str]]) -> list[Hit]:
    if len(run) < 2:
        return []
    bounds, at = [], 0
    for _, text in run:
        bounds.append((at, at + len(text)))
        at += len(text)
    hits: list[Hit] = []
    joined = "".join(text for _, text in run)
    if secrets.quiet(joined):
        return []
    for f in secrets.scan(joined):
        touched = [i for i, (s, e) in enumerate(bounds) if s < f.end and f.start < e]
        if len(touched) > 1:
            hits += (Hit(run[i][0], f.rule, 0, len(run[i][1])) for i in touched)
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
