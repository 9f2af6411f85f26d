"""The secret guard: finds credentials in text, shared by every side.

The client redacts with it before signing, the server rejects what slips through at ingest, the
auditor re-checks on replay; all three must agree, so this is the only implementation. Python,
no I/O; its one compiled piece, the keyword search (statements/_guardcore.c), finds exactly
what str.find does. The rules are in secret_rules.py; the walk over JSON values and
maps, with the context of keys and sibling keys and tokens split across items, is in
secret_values.py.

    scan(text, name=None) -> list[Finding]                  each secret, in order, non-overlapping
    redact(text, key, name=None) -> (str, list[Redaction])  each secret replaced by a marker
    fingerprint(value, key) -> str                          8 hex of HMAC-SHA256(key, value)

A Finding's span covers the secret *value* only (for ``password=hunter2xyz!`` just
``hunter2xyz!``), so a redacted text keeps its shape. Redaction writes
``«redacted:<rule>:<fingerprint>»`` (U+00AB, U+00BB): the fingerprint lets the holder of the key
see that two records carry the same secret without either record revealing it.

Encodings: a scan also looks through up to DECODE_DEPTH layers of URL encoding (a run of text
holding ``%XX``) and base64 (a run of 16+ base64 characters with both cases whose first bytes
decode to text), and reports a secret found inside as the whole encoded run. Base64 is decoded
only where its head decodes to printable text, so images, digests and identifiers cost a few
characters' decoding, not a full one.

Invariants:
  * Findings never overlap; where two rules claim overlapping text the earlier rule in RULES
    wins, so a specific rule (``github-token``) beats a generic one (``secret-assignment``).
  * Redaction markers are opaque, and findings are made so that ``scan(redact(t, k)[0]) == []``
    and redacting redacted text changes nothing (``_findings`` says how).
  * Findings do not depend on hash seeds or on the order of a rule's keywords: every process
    that scans a text reports the same findings.
  * No finding's value is a low-entropy mask (``ghp_xxxx…``, ``****``): every value must carry
    at least MIN_ENTROPY bits per character — except under a credential carrier's name
    (``Authorization``, ``Cookie``, ``Set-Cookie``, ``Proxy-Authorization``), whose whole value
    is redacted as ``credential-carrier`` whatever it looks like: the field says what it holds.

The guard catches accidents, not adversaries: anyone can encode a secret past any list of
patterns. It is one layer; keeping secrets away from agents is the other.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import hmac
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Final
from urllib.parse import unquote

from affidavit.statements import compiled
from affidavit.statements.secret_rules import (
    MIN_ENTROPY,
    RULES,
    Rule,
    b64decode,
    carried_template,
    carries_credential,
    entropy,
    names_credential,
    plausible_value,
)

FINGERPRINT_HEX: Final = 8
"""Hex characters of HMAC-SHA256 kept in a fingerprint (32 bits: for correlation, not identity)."""

MIN_KEY_SIZE: Final = 16
"""Shortest fingerprint key, in bytes: with a guessable key, a fingerprint would let anyone
test candidate passwords against it."""

DECODE_DEPTH: Final = 2
"""Layers of encoding (URL, base64) a scan looks through."""


@dataclass(frozen=True)
class Finding:
    """A secret in a text: ``text[start:end]`` is the value, ``rule`` the id that found it."""

    rule: str
    start: int
    end: int


@dataclass(frozen=True)
class Redaction:
    """One replaced secret: ``output[start:end]`` is its marker in the redacted text.

    ``fingerprint`` is ``fingerprint(secret, key)``, also the last field of the marker.
    """

    rule: str
    fingerprint: str
    start: int
    end: int


def fingerprint(value: str | bytes, key: bytes) -> str:
    """First 8 hex characters of HMAC-SHA256(key, value); a str is hashed as UTF-8."""
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"fingerprint key must be at least {MIN_KEY_SIZE} bytes")
    data = value.encode() if isinstance(value, str) else value
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]


_KEYWORDS: Final = frozenset(k for rule in RULES for k in rule.keywords)
_KEYWORD_LIST: Final = tuple(sorted(_KEYWORDS))  # a fixed order: the same work every run
_RULES_OF: Final = {k: tuple(r for r in RULES if k in r.keywords) for k in _KEYWORD_LIST}


CORE: ModuleType | None = compiled.load("_guardcore")
"""The compiled keyword search (statements/_guardcore.c), or None (AFFIDAVIT_PURE_PYTHON=1 at
import, or not built): then each keyword is searched for in turn with str.find, with the same
result (tests run both)."""


def _keyword_table() -> tuple[bytes, list[tuple[str, ...] | None]]:
    """The C core's table of the keywords by their first two characters (see _guardcore.c):
    the bits of the two-character starts, and at each start its keywords, sorted."""
    assert all(k.isascii() and len(k) >= 2 for k in _KEYWORD_LIST), "the C core's premise"
    table: list[tuple[str, ...] | None] = [None] * (128 * 128)
    starts = bytearray(128 * 128 // 8)
    for keyword in _KEYWORD_LIST:  # sorted: each entry's keywords are too
        at = ord(keyword[0]) * 128 + ord(keyword[1])
        table[at] = (*(table[at] or ()), keyword)
        starts[at >> 3] |= 1 << (at & 7)
    return bytes(starts), table


_STARTS, _TABLE = _keyword_table()


def keyword_occurrences(lowered: str) -> list[tuple[int, str]]:
    """(position, keyword) of every occurrence of every rule keyword in ``lowered`` (already
    lowercased), overlapping ones included, sorted by position then keyword."""
    if CORE is not None:
        found: list[tuple[int, str]] = CORE.occurrences(lowered, _STARTS, _TABLE)
        return found
    found = []
    for keyword in _KEYWORD_LIST:
        if keyword in lowered:
            at = lowered.find(keyword)
            while at >= 0:
                found.append((at, keyword))
                at = lowered.find(keyword, at + 1)
    return sorted(found)


_TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MARKER: Final = re.compile(r"«redacted:(?P<rule>[a-z0-9-]+):(?P<fp>[0-9a-f]{8})»")
"""A redaction marker; ``rule`` and ``fp`` (the fingerprint) are its fields."""
_URL_RUN: Final = re.compile(r"[^\s\"'<>«»]*%[0-9A-Fa-f]{2}[^\s\"'<>«»]*")
_URL_ESCAPE: Final = re.compile(r"%[0-9A-Fa-f]{2}")  # in every URL run
_B64_MIN: Final = 16
_B64_RUN: Final = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_B64_HEAD: Final = 32  # characters decoded first, to see whether a run is text at all
_MIN_ENCODED: Final = 12  # shorter text encodes no secret a rule would find


def scan(text: str, name: str | None = None) -> list[Finding]:
    """Every secret in ``text``, sorted by position, non-overlapping.

    ``name`` is the key the text is stored under (a map key, a parameter name, or the name a
    sibling key gives it), if any. When it names a credential (``password``, ``api_key``) and
    no rule finds anything inside the text, the whole text is judged as that credential's
    value by the ``secret-assignment`` gates, so ``{"password": "hunter2xyz!"}`` is caught even
    when key and value are scanned apart.
    """
    return [Finding(rule, start, end) for start, end, rule in _scan(text, name, DECODE_DEPTH)]


def quiet(text: str) -> bool:
    """True when ``scan(text)`` (with no name) is certainly empty: the cheap test the walks
    make first. ``loud([text])`` says how."""
    return not loud([text])


def loud(texts: list[str]) -> set[int]:
    """The indices ``i`` of the strings whose ``scan(texts[i])`` (with no name) may find
    something; for every other string it certainly finds nothing.

    A string is loud when a rule matches where one of its keywords occurs (the first step of
    every finding; text holding a redaction marker is loud at any keyword, as its rules see the
    gaps between markers apart), or when a decoding layer would open it: a ``%XX`` escape in a
    string of 12+ characters, or a mixed-case base64 run whose head decodes to text. Found in
    one pass over the strings joined, not string by string; the keyword search is the C
    core's when built.
    """
    joined = "\x00".join(texts)
    lowered = joined.lower()
    if len(lowered) != len(joined):  # a letter lowercased to two characters: offsets move
        if len(texts) == 1:
            return {0}
        return {i for i, text in enumerate(texts) if loud([text])}
    marks: set[int] = set()
    occurrences = keyword_occurrences(lowered)
    escapes = [m.start() for m in _URL_ESCAPE.finditer(joined)] if "%" in joined else []
    if occurrences or escapes:
        where = _Offsets(texts, joined)
        for at, keyword in occurrences:
            i, start = where.of(at)
            if i not in marks and _may_match(texts[i], at - start, keyword):
                marks.add(i)
        for at in escapes:
            i, _ = where.of(at)
            if len(texts[i]) >= _MIN_ENCODED:
                marks.add(i)
    if lowered != joined and joined.upper() != joined:
        long = [i for i, text in enumerate(texts) if len(text) >= _B64_MIN]
        marks.update(i for i in long if i not in marks and _opens_base64(texts[i]))
    return marks


class _Offsets:
    """Which string of ``texts`` an offset of ``joined`` (``"\\x00".join(texts)``) falls in."""

    def __init__(self, texts: list[str], joined: str) -> None:
        self.joined = joined
        # Counting separators is exact when no string holds one; else offsets from lengths.
        self.starts = (
            None
            if joined.count("\x00") == len(texts) - 1
            else [0, *itertools.accumulate(len(text) + 1 for text in texts)]
        )

    def of(self, at: int) -> tuple[int, int]:
        """(index of the string, offset of its start) for an offset ``at`` of ``joined``."""
        if self.starts is None:
            return self.joined.count("\x00", 0, at), self.joined.rfind("\x00", 0, at) + 1
        i = bisect.bisect_right(self.starts, at) - 1
        return i, self.starts[i]


def _opens_base64(text: str) -> bool:
    """Whether the base64 layer of a scan would decode some run of ``text`` (``_decoded``)."""
    if text.lower() == text or text.upper() == text:
        return False
    for m in _B64_RUN.finditer(text):
        run = m.group()
        if run.lower() != run and run.upper() != run and _b64_text(run) is not None:
            return True
    return False


def _may_match(text: str, at: int, keyword: str) -> bool:
    """Whether a rule gated by ``keyword`` matches at ``at`` in ``text``, as the first pass of
    ``_findings`` tries it (a text with markers: always, its gaps are judged apart)."""
    if "«redacted:" in text:
        return True
    lowered = text.lower()
    for rule in _RULES_OF[keyword]:
        if rule.token and text[at - 1 : at] in _TOKEN_CHARS:
            continue
        if rule.pattern.match(lowered if rule.lowercase else text, at) is not None:
            return True
    return False


def _scan(text: str, name: str | None, depth: int) -> list[tuple[int, int, str]]:
    lowered = text.lower()
    if len(lowered) != len(text):  # a few letters lowercase to two characters (İ → i̇)
        lowered = text.translate(_ASCII_LOWER)
    # On clean text one search for any keyword is the whole cost of the rules.
    found: list[tuple[int, int, str]] = []
    present = {k for _, k in keyword_occurrences(lowered)}
    if present:
        found = _findings(text, lowered, present)
    # A marker contains "redacted", a placeholder word, so redacted text is never judged here.
    if not found and name is not None and names_credential(name) and plausible_value(text, name):
        return [(0, len(text), "secret-assignment")]
    # A carrier already holding a marker was redacted before: leave it (idempotence); one
    # holding a template (Bearer <token>) holds no credential.
    carrier = name is not None and text != "" and carries_credential(name)
    if not found and carrier and "«redacted:" not in text and not carried_template(text):
        return [(0, len(text), "credential-carrier")]
    if depth > 0 and len(text) >= _MIN_ENCODED:
        _decoded(text, found, depth - 1)
    return found


def _decoded(text: str, found: list[tuple[int, int, str]], depth: int) -> None:
    """Add to ``found`` each URL-encoded or base64 run of ``text`` (outside the findings so
    far) that holds a secret once decoded, as the whole run."""
    runs: list[tuple[int, int, str]] = []
    if "%" in text:
        runs += ((m.start(), m.end(), unquote(m.group())) for m in _URL_RUN.finditer(text))
    mixed = text != text.lower() and text != text.upper()
    for m in _B64_RUN.finditer(text) if mixed else ():
        run = m.group()
        if run == run.lower() or run == run.upper():
            continue  # base64 of text has both cases; hex digests and names do not
        if (decoded := _b64_text(run)) is not None:
            runs.append((m.start(), m.end(), decoded))
    for start, end, decoded in runs:
        if decoded == text[start:end] or any(s < end and start < e for s, e, _ in found):
            continue
        inner = _scan(decoded, None, depth)
        if inner:
            bisect.insort(found, (start, end, inner[0][2]))


def _b64_text(run: str) -> str | None:
    """The text a base64 run encodes, or None when it is not base64 of printable text."""
    head = b64decode(run[: _B64_HEAD - _B64_HEAD % 4].rstrip("="))
    if head is None or not _printable(head):
        return None
    raw = b64decode(run.rstrip("="))
    if raw is None or not _printable(raw):
        return None
    return raw.decode("utf-8", "replace")


def _printable(raw: bytes) -> bool:
    """Mostly printable ASCII or UTF-8 text (tabs and newlines allowed)."""
    bad = sum(1 for b in raw if b < 9 or 13 < b < 32 or b == 127)
    return bad == 0 and raw.count(0xFF) == 0


def _findings(text: str, lowered: str, present: set[str]) -> list[tuple[int, int, str]]:
    """(start, end, rule id) of each secret in ``text``, sorted; ``present``: the keywords in it.

    Each rule scans the gaps between redaction markers and the findings so far, each gap as a
    whole text, just as it will once those findings are markers. A finding can split a
    candidate that was rejected whole (say, a value that ran into a token), so passes repeat
    until one adds nothing: that last pass saw exactly the gaps of the redacted text, which is
    therefore clean. Clean text takes one pass, text with secrets usually two.
    """
    rules = _rules_for(frozenset(present))
    markers = [m.span() for m in MARKER.finditer(text)] if "«redacted:" in text else []
    found: list[tuple[int, int, str]] = []
    added = True
    while added:
        count = len(found)
        for rule, keywords in rules:
            for start, end in _gaps(len(text), sorted(markers + [f[:2] for f in found])):
                segment, segment_lowered = text[start:end], lowered[start:end]
                for m in _matches(rule, keywords, segment, segment_lowered):
                    _take(found, rule, segment, m, start)
        added = len(found) > count
    return found


@functools.lru_cache(maxsize=1024)
def _rules_for(present: frozenset[str]) -> list[tuple[Rule, list[str]]]:
    """The rules gated by any of ``present``, in priority order, each with those keywords."""
    return [(r, ks) for r in RULES if (ks := [k for k in r.keywords if k in present])]


def _gaps(length: int, spans: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The non-empty stretches of ``range(length)`` outside ``spans`` (sorted, disjoint)."""
    start = 0
    for span_start, span_end in spans:
        if span_start > start:
            yield start, span_start
        start = span_end
    if length > start:
        yield start, length


def _matches(rule: Rule, keywords: list[str], text: str, lowered: str) -> Iterator[re.Match[str]]:
    """``rule``'s matches in ``text``, tried at its keywords' occurrences from left to right.

    As with ``finditer``, the search resumes after each match, so the results do not depend on
    the order of the keywords, and the work stays linear in the length of the text even when a
    keyword repeats (``password=password=…``).
    """
    subject = lowered if rule.lowercase else text
    occurrences: set[int] = set()
    for keyword in keywords:
        at = lowered.find(keyword)
        while at >= 0:
            occurrences.add(at)
            at = lowered.find(keyword, at + 1)
    resume = 0
    for at in sorted(occurrences):
        if at < resume or (rule.token and text[at - 1 : at] in _TOKEN_CHARS):
            continue
        m = rule.pattern.match(subject, at)
        if m is not None:
            yield m
            resume = m.end()


def _take(
    found: list[tuple[int, int, str]], rule: Rule, text: str, m: re.Match[str], offset: int
) -> None:
    """Record ``m``, a match in ``text`` found at ``offset`` of the scanned text, if it passes
    its rule."""
    start, end = m.span("secret")
    if rule.token and text[end : end + 1] in _TOKEN_CHARS:
        return
    if rule.check is not None and not rule.check(text, m):
        return
    if entropy(text[start:end]) < MIN_ENTROPY:
        return
    bisect.insort(found, (start + offset, end + offset, rule.id))


def redact(text: str, key: bytes, name: str | None = None) -> tuple[str, list[Redaction]]:
    """``text`` with every finding of ``scan(text, name)`` replaced by its marker.

    Each marker is ``«redacted:<rule>:<fingerprint(secret, key)>»``; the Redactions give the
    markers' spans in the *returned* text, in order. The result scans clean, and redacting it
    again returns it unchanged with no Redactions.
    """
    parts: list[str] = []
    redactions: list[Redaction] = []
    out_len = last = 0
    for f in scan(text, name):
        fp = fingerprint(text[f.start : f.end], key)
        marker = f"«redacted:{f.rule}:{fp}»"
        parts += (text[last : f.start], marker)
        out_len += f.start - last
        redactions.append(Redaction(f.rule, fp, out_len, out_len + len(marker)))
        out_len += len(marker)
        last = f.end
    parts.append(text[last:])
    return "".join(parts), redactions
