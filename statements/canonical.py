"""Canonical JSON (RFC 8785, JCS), bounded JSON parsing, and the digests statements store.

Canonical form is RFC 8785's (through the PyPI ``rfc8785`` package): keys sorted by UTF-16 code
units, no insignificant white space, UTF-8, numbers as ECMAScript prints them (``1.0`` is
``1``), integers within ±(2**53 - 1). A producer in any language with a JCS library writes the
same bytes for the same value, so a digest made by one matches the other's exactly or not at all.

Digests come in two kinds, and the difference is the point (statements/README.md):
  * ``shown_digest`` is over text the log shows in full (parameters with their secrets already
    replaced by markers). It reveals nothing the entry does not, so anyone can recompute it.
  * ``commitment`` is a keyed HMAC whose key never reaches the log. It binds a value the log
    must not show (a tool's result) without letting anyone who guesses the value confirm it.
No statement stores an unkeyed digest of a value it does not show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from types import ModuleType
from typing import Any

import rfc8785
from affidavit.statements import compiled

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in parameters (the top level is depth 1)."""

RESULT_COMMITMENT = "affidavit/v1/result"
"""Purpose of an OUTCOME's result commitment; its subject is the action id."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # unrolled: no alternation per character
_MAX_SAFE = 2**53 - 1
_UTF16_ORDER = re.compile("[\ud800-\udfff\ue000-\U0010ffff]")  # sorts otherwise in UTF-16
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
_DIGEST = re.compile(r"[0-9a-f]{64}")
_BRACKETS = re.compile(r"[\[\]{}]")
_MARKER_FINGERPRINT = re.compile(r"(«redacted:[a-z0-9-]+):[0-9a-f]{8}»")


CORE: ModuleType | None = compiled.load("_canonicalcore")
"""The C fast path in use (statements/_canonicalcore.c: text that is plainly canonical JSON
parsed, anything else declined), or None: the functions here alone, with the same results
(tests run both; AFFIDAVIT_PURE_PYTHON=1 at import turns it off)."""


class JSONLimitError(ValueError):
    """JSON beyond this log's bounds (nesting, number domain) or not JSON at all."""


def canonical_json(value: Any) -> str:
    """The RFC 8785 text of a JSON-compatible value; JSONLimitError for anything else."""
    _check_value_depth(value)
    try:
        return rfc8785.dumps(value).decode()
    except (ValueError, TypeError) as e:  # out-of-domain numbers, lone surrogates, non-JSON types
        raise JSONLimitError(f"is not canonicalizable JSON: {e}") from None


def is_canonical(text: str, parsed: Any) -> bool:
    """Whether text is canonical_json(parsed), for parsed = loads(text).

    A shortcut settles most parameters: for JSON of strings, integers below 2**53, booleans and
    null, whose characters sort alike in UTF-16 and in code points, the standard library's
    sorted, compact dumps writes exactly RFC 8785's text (the same escapes: \\b \\t \\n \\f \\r,
    else \\u00xx). It only ever says yes; anything else is decided by canonical_json, so the
    answer is always RFC 8785's (tests compare the two on generated values). The C core
    says yes sooner, to text it reads as plainly canonical (and declines the rest).
    """
    if CORE is not None and CORE.parse(text) is not None:
        return True
    if not _UTF16_ORDER.search(text) and _plain(parsed) and _COMPACT.encode(parsed) == text:
        return True
    return canonical_json(parsed) == text


def _plain(value: Any) -> bool:
    """No float and no integer beyond ±(2**53 - 1) anywhere in a parsed JSON value: the numbers
    Python writes as RFC 8785 does."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float or (kind is int and not -_MAX_SAFE <= item <= _MAX_SAFE):
            return False
    return True


def loads(text: str) -> Any:
    """Parse JSON text, refusing nesting beyond MAX_DEPTH before the parser recurses into it,
    NaN and infinities; JSONLimitError with a message fit to follow a field name. Text the
    C core reads as plainly canonical JSON it parses itself, to the same value."""
    return parse(text)[0]


def parse(text: str) -> tuple[Any, bool]:
    """``loads(text)``, and True when ``text`` is certainly canonical (the C core read it as
    plainly RFC 8785: ``is_canonical`` would say yes without parsing it again); False when
    that is not known yet."""
    if CORE is not None and (parsed := CORE.parse(text)) is not None:
        return parsed[0], True
    return _parse(text), False


def _parse(text: str) -> Any:
    """``loads`` without the C core (for text it declines, or when it is not built)."""
    depth = 0
    # Nesting never exceeds the count of opening brackets: most texts need no closer look.
    brackets = (
        ()
        if text.count("[") + text.count("{") <= MAX_DEPTH
        else _BRACKETS.findall(_STRING.sub("", text))
    )
    for bracket in brackets:
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            raise JSONLimitError(f"nests deeper than {MAX_DEPTH} levels of arrays and objects")
    try:
        return _DECODER.decode(text) if not text.startswith("\ufeff") else json.loads(text)
    except (ValueError, RecursionError) as e:
        raise JSONLimitError(f"is not JSON ({e})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
"""json.loads with this decoder, made once (json.loads builds one per call given an option);
json.loads itself for text with a byte-order mark, which it refuses with its own message."""


def _check_value_depth(value: Any) -> None:
    """Depth of a Python value, iteratively (a cycle or a deep value must not recurse)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise JSONLimitError(f"nests deeper than {MAX_DEPTH} levels of arrays and objects")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def digest(data: str | bytes) -> str:
    """SHA-256 hex of text (UTF-8) or bytes."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def shown_digest(parameters_json: str) -> str:
    """The parameters digest: SHA-256 hex of the canonical text as shown, each redaction marker
    ``«redacted:<rule>:<fingerprint>»`` cut to ``«redacted:<rule>»``.

    Fingerprints are keyed per producer, so the approving human's client and the agent's client
    write different ones for the same secret; without them both compute the same digest from
    the same real parameters, and the digest holds nothing the shown text does not.
    """
    if "«redacted:" not in parameters_json:  # no marker: nothing to cut
        return digest(parameters_json)
    return digest(_MARKER_FINGERPRINT.sub(r"\1»", parameters_json))


def commitment_key(producer_key: bytes, purpose: str, subject: str) -> bytes:
    """The per-subject key of a commitment: HMAC-SHA256(producer_key, purpose ‖ 0x0A ‖ subject).

    Revealing it opens one commitment (say, one action's result) and no other: the producer's
    key stays with the producer.
    """
    return hmac.new(producer_key, f"{purpose}\n{subject}".encode(), hashlib.sha256).digest()


def commitment(key: bytes, data: str | bytes) -> str:
    """HMAC-SHA256 hex of data under a commitment key: binds data, confirms no guess of it
    without the key."""
    raw = data.encode() if isinstance(data, str) else data
    return hmac.new(key, raw, hashlib.sha256).hexdigest()


def is_digest(text: str) -> bool:
    """64 lowercase hex characters."""
    return _DIGEST.fullmatch(text) is not None
