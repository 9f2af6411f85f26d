"""The secret guard: one rule table that finds credentials in text, shared by every side.

The client redacts with it before signing, the server rejects what slips through at ingest, the
auditor re-checks on replay; all three must agree, so this is the only implementation. Pure
Python (stdlib only), no I/O.

    scan(text, name=None) -> list[Finding]                  each secret, in order, non-overlapping
    redact(text, key, name=None) -> (str, list[Redaction])  each secret replaced by a marker
    fingerprint(value, key) -> str                          8 hex of HMAC-SHA256(key, value)

A Finding's span covers the secret *value* only (for ``password=hunter2xyz!`` just
``hunter2xyz!``), so a redacted text keeps its shape. Redaction writes
``«redacted:<rule>:<fingerprint>»`` (U+00AB, U+00BB): the fingerprint lets the holder of the key
see that two records carry the same secret without either record revealing it.

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

Rules favour fixed prefixes and structures (high signal, near-zero false positives), and each
runs its regex only where one of its keywords occurs. The generic ``secret-assignment`` rule —
a credential-named key; then ``=``, ``:``, or a space after a ``--flag`` or .netrc's
``password``; then a value — accepts the value only if all hold:
  * the key's last word names a credential (``password``, ``DB_PASS``, ``client_secret``,
    ``api_key``, ``X-Api-Key``, ``access_token``), not a property of one (``token_type``,
    ``password_file``, ``max_tokens``), nor a pagination/idempotency token (``next_page_token``);
  * the value is at least 8 characters with at least 2.5 bits/char of Shannon entropy (at 8
    characters, 6 distinct ones: ``letmein1`` passes, ``aaaa1111`` and ``abab1212`` do not).
    The bar is low on purpose: the key already says "credential", a leak into an append-only
    log is forever, and a false alarm costs only a redacted value;
  * it has a letter and a digit or symbol: letters alone read as words or identifiers
    (``password: required``, ``token: TokenResponse``), digits alone as counts or ids;
  * it is not a placeholder (``<password>``, ``${PASSWORD}``, ``$PASS``, ``****``,
    ``changeme``, ``your-token-here``, anything containing ``redacted``/``example``) and, when
    unquoted, not code (``os.environ[...]``, ``get_token()``, ``self.secret``).
Letters-only and digits-only credentials therefore pass unseen unless a structural rule knows
them; that is the price of not redacting every word that follows ``password:`` in prose and code.

Measured on tests/vectors/secrets-corpus.json (85 fake secrets in JSON, command lines, URLs,
env dumps and log lines; 145 benign look-alikes): recall 1.00 (each secret found under the
expected rule with the exact span), false-positive rate 0.00 — on a corpus written alongside
the rules, so read these as regression bounds, not field accuracy. Speed (CPython 3.11, one
x86-64 core): about 17 µs per KiB of benign text with no keyword in it (JSON parameters, paths,
digests, log lines: one substring search per keyword, no regex), about 32 µs per KiB when
words like "token" and "key" recur, and 1 µs for a short field.

The guard catches accidents, not adversaries: anyone can encode a secret past any list of
patterns. It is one layer; keeping secrets away from agents is the other.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

FINGERPRINT_HEX: Final = 8
"""Hex characters of HMAC-SHA256 kept in a fingerprint (32 bits: for correlation, not identity)."""

MIN_KEY_SIZE: Final = 16
"""Shortest fingerprint key, in bytes: with a guessable key, a fingerprint would let anyone
test candidate passwords against it."""

MIN_ENTROPY: Final = 2.5
"""Bits per character of Shannon entropy below which no value is reported: masks such as
``ghp_xxxx…`` or ``****``, and ``secret-assignment`` values such as ``aaaa1111``."""

ASSIGNMENT_MIN_LENGTH: Final = 8
"""Shortest value ``secret-assignment`` reports."""


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


Check: TypeAlias = Callable[[str, re.Match[str]], bool]
"""Accepts or rejects a match: called with the text the pattern ran on (in its original case)
and the match (same offsets)."""


@dataclass(frozen=True)
class Rule:
    """A detector: ``pattern``'s group ``secret`` spans a candidate, ``check`` must accept it.

    ``pattern`` is tried only where one of ``keywords`` (lowercase) occurs in the lowercased
    text, and must match from there: every match begins with a keyword. A scan of text holding
    no keyword therefore costs one substring search per keyword and runs no regex at all.
    ``lowercase``: ``pattern`` is written in lowercase and matched against the lowercased text
    (same offsets), for context words in any case. ``token``: the value starts at the keyword
    and must not touch ``[A-Za-z0-9_-]`` on either side — a whole token, not a piece of one.
    """

    id: str
    keywords: tuple[str, ...]
    pattern: re.Pattern[str]
    check: Check | None = None
    lowercase: bool = False
    token: bool = False


def fingerprint(value: str | bytes, key: bytes) -> str:
    """First 8 hex characters of HMAC-SHA256(key, value); a str is hashed as UTF-8."""
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"fingerprint key must be at least {MIN_KEY_SIZE} bytes")
    data = value.encode() if isinstance(value, str) else value
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]


def _entropy(s: str) -> float:
    """Shannon entropy of the characters of ``s``, in bits per character."""
    n = len(s)
    return math.log2(n) - sum(c * math.log2(c) for c in map(s.count, set(s))) / n


def _secret(text: str, m: re.Match[str]) -> str:
    return text[m.start("secret") : m.end("secret")]


def _starts_word(m: re.Match[str]) -> bool:
    return m.start() == 0 or not m.string[m.start() - 1].isalnum()


_PLACEHOLDER_SHAPES: Final = re.compile(
    r"""[*xX•._#-]+          # masks: ****, xxxx, ...
      | <[^<>]*> | \[[^\[\]]*\] | \{\{.*\}\} | \{[A-Za-z_]\w*\}  # <pw>, [REDACTED], {{ v }}, {v}
      | \$\{[^}]*\} | \$\(.*\) | \$[A-Za-z_]\w* | %[A-Za-z_]\w*%  # shell and cmd variables
      | %\(?\w*\)?[sd]                                # printf-style %s, %(password)s
    """,
    re.X,
)
# fmt: off
_PLACEHOLDER_WORDS: Final = ("redacted", "placeholder", "changeme", "change_me", "change-me",
                             "example", "dummy", "your", "xxxx", "****")
_PLACEHOLDER_VALUES: Final = frozenset({
    "password", "passwd", "pass", "secret", "token", "none", "null", "nil", "undefined", "true",
    "false", "empty", "required", "optional", "string", "x-oauth-basic"})
# fmt: on


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return (
        lowered in _PLACEHOLDER_VALUES
        or any(w in lowered for w in _PLACEHOLDER_WORDS)
        or _PLACEHOLDER_SHAPES.fullmatch(value) is not None
    )


def _random_looking(value: str) -> bool:
    """Not a placeholder, and has the digits or mixed case of a generated token."""
    has_case = value != value.lower() and value != value.upper()
    return not _is_placeholder(value) and (has_case or any(c.isdigit() for c in value))


# --- secret-assignment -----------------------------------------------------------------------

_WORDS: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# fmt: off
_CREDENTIAL_SUFFIXES: Final = ("password", "passwd", "passphrase", "secret", "token", "apikey",
                               "secretkey", "privatekey", "accesskey", "credential", "credentials")
# "key" alone names too much (an S3 object key, a dict key); these words make it a credential.
_KEY_QUALIFIERS: Final = frozenset({"api", "access", "secret", "private", "client", "signing",
                                    "encryption", "master", "account", "auth", "shared", "app"})
# Opaque tokens that grant nothing: pagination cursors, idempotency and sync tokens.
_HARMLESS_TOKEN_QUALIFIERS: Final = frozenset({"page", "continuation", "resume", "sync",
                                               "idempotency", "cancellation", "cursor"})
# fmt: on
_SPACED: Final = frozenset({"password", "passwd"})
_MAX_NAME: Final = 64  # longer runs of name characters are data, not a variable name
_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# self.token, process.env.API_KEY: words, each maybe numbered, unlike a token's random segments
_CODE_REFERENCE: Final = re.compile(r"[A-Za-z_$]+\d*(?:\.[A-Za-z_$]+\d*)+")


def _names_credential(name: str) -> bool:
    """Whether an identifier's last word names a credential (``DB_PASSWORD``, ``apiKey``)."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return False
    last, before = words[-1], words[-2] if len(words) > 1 else ""
    if last == "key":
        return before in _KEY_QUALIFIERS
    if last in ("pass", "pwd"):  # only qualified: a bare PWD is the shell's working directory
        return before != ""
    return last.endswith(_CREDENTIAL_SUFFIXES) and before not in _HARMLESS_TOKEN_QUALIFIERS


# Fields whose whole value is a credential, whatever it looks like (an HTTP Authorization
# header, a cookie): compared as their words joined, so "Set-Cookie" and "set_cookie" match.
_CARRIERS: Final = frozenset({"authorization", "proxyauthorization", "cookie", "setcookie"})


def _carries_credential(name: str) -> bool:
    """Whether a field named so carries a credential in its whole value (``Authorization``)."""
    return "".join(w.lower() for w in _WORDS.findall(name)) in _CARRIERS


def _plausible_value(value: str) -> bool:
    """The value gates of ``secret-assignment`` (see the module docstring)."""
    return (
        len(value) >= ASSIGNMENT_MIN_LENGTH
        and any(c.isalpha() for c in value)
        and not value.isalpha()  # a digit or a symbol (a space counts: passphrases)
        and _entropy(value) >= MIN_ENTROPY
        and not _is_placeholder(value)
    )


def _check_assignment(text: str, m: re.Match[str]) -> bool:
    """The pattern matched from the credential word on; the name runs back to its start."""
    start, limit = m.start(), max(0, m.start() - _MAX_NAME)
    while start > limit and text[start - 1] in _NAME_CHARS:
        start -= 1
    if start > 0 and text[start - 1] == ":":
        return False  # an ARN's or URN's segment (arn:aws:secretsmanager:…:secret:name)
    name, value = text[start : m.end("word")], _secret(text, m)
    if m.group("op") is None and not (name.startswith("--") or name.lower() in _SPACED):
        return False  # a space separates a value only after --flag and in .netrc's "password"
    if m.group("q") is None and (
        text[m.end() : m.end() + 1] in ("(", "[") or _CODE_REFERENCE.fullmatch(value)
    ):
        return False  # unquoted code: a call, a subscript or an attribute, not a literal
    return _names_credential(name) and _plausible_value(value)


# --- structural checks -----------------------------------------------------------------------


def _b64decode(text: str) -> bytes | None:
    """Base64 in either alphabet (standard or URL-safe), padding optional; None if invalid."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except ValueError:
        return None


def _check_jwt(text: str, m: re.Match[str]) -> bool:
    """A JWT's first segment is base64url of a JSON object with an "alg" member (RFC 7515)."""
    header = _b64decode(_secret(text, m).split(".", 1)[0])
    if header is None:
        return False
    try:
        parsed: object = json.loads(header)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and "alg" in parsed


def _check_basic_header(text: str, m: re.Match[str]) -> bool:
    """HTTP Basic credentials are base64 of printable ``user:password``."""
    raw = _b64decode(_secret(text, m).rstrip("="))
    return _starts_word(m) and raw is not None and b":" in raw and all(32 <= b < 127 for b in raw)


def _check_bearer(text: str, m: re.Match[str]) -> bool:
    return _starts_word(m) and _random_looking(_secret(text, m))


def _check_private_key(text: str, m: re.Match[str]) -> bool:
    """A header alone (a mention in prose or docs) is not a key: require a body."""
    return sum(c.isalnum() for c in text[m.start("body") : m.end("body")]) >= 64


def _check_not_placeholder(text: str, m: re.Match[str]) -> bool:
    return not _is_placeholder(_secret(text, m))


def _check_random(text: str, m: re.Match[str]) -> bool:
    return _random_looking(_secret(text, m))


def _check_mixed(text: str, m: re.Match[str]) -> bool:
    """Upper case, lower case and digits, as in generated keys; unlike kebab-case names."""
    v = _secret(text, m)
    return v != v.lower() and v != v.upper() and any(c.isdigit() for c in v)


def _rule(
    rule_id: str,
    keywords: tuple[str, ...],
    pattern: str,
    check: Check | None = None,
    *,
    lowercase: bool = False,
    token: bool = False,
) -> Rule:
    return Rule(rule_id, keywords, re.compile(pattern, re.X), check, lowercase, token)


RULES: Final[tuple[Rule, ...]] = (
    _rule(
        "private-key-block",
        ("-----begin",),
        r"""(?P<secret>-----BEGIN\ (?:[A-Z0-9]+\ )*PRIVATE\ KEY(?:\ BLOCK)?-----
            (?P<body>(?:[^-]|-(?!----))*)             # base64, PEM headers; up to the next -----
            (?:-----END\ (?:[A-Z0-9]+\ )*PRIVATE\ KEY(?:\ BLOCK)?-----)?)""",
        _check_private_key,
    ),
    _rule(  # this project's own signed-note signer keys (merkle.keys)
        "note-signer-key",
        ("private+key+",),
        r"(?P<secret>PRIVATE\+KEY\+[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]{43,}={0,2})",
    ),
    _rule(
        "jwt",
        ("eyj",),
        r"(?P<secret>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*)",
        _check_jwt,
        token=True,
    ),
    _rule(  # long-term (AKIA) and temporary (ASIA) access key ids
        "aws-access-key-id",
        ("akia", "asia"),
        r"(?P<secret>A(?:KIA|SIA)[A-Z2-7]{16})",
        token=True,
    ),
    _rule(
        "aws-secret-access-key",
        ("secret",),
        r"""secret[_-]?access[_-]?key\\?["']?[\ \t]*[:=][\ \t]*\\?["']?
            (?P<secret>[a-z0-9/+]{40})(?![a-z0-9/+=])""",
        lowercase=True,
    ),
    _rule(
        "github-token",
        ("gh", "github_pat_"),
        r"(?P<secret>g(?:h[pousr]_[A-Za-z0-9]{36,251}|ithub_pat_[A-Za-z0-9_]{36,244}))",
        token=True,
    ),
    _rule(
        "gitlab-token",
        ("gl",),
        r"""(?P<secret>gl(?:pat|dt|rt|ptt|cbt|ft|imt|agent|oas|soat|ffct)-
            [A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*)""",
        token=True,
    ),
    _rule(
        "slack-webhook",
        ("hooks.slack.com",),
        r"""hooks\.slack\.com/(?:services|workflows|triggers)/
            (?P<secret>[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/[A-Za-z0-9_/-]{16,})""",
    ),
    _rule(
        "slack-token",
        ("xox", "xapp-"),
        r"(?P<secret>x(?:ox[abposr]|oxe(?:\.xox[bp])?|app)-\d+-[0-9A-Za-z-]{8,})",
        token=True,
    ),
    _rule(  # publishable keys (pk_) are public by design and are not reported
        "stripe-key",
        ("sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_"),
        r"(?P<secret>[sr]k_(?:live|test)_[0-9A-Za-z]{16,247}|whsec_[A-Za-z0-9+/]{32,})",
        token=True,
    ),
    _rule(
        "google-api-key",
        ("aiza",),
        r"(?P<secret>AIza[0-9A-Za-z_-]{35})",
        token=True,
    ),
    _rule(  # OAuth 2.0 access tokens issued by Google
        "google-oauth-token",
        ("ya29.",),
        r"(?P<secret>ya29\.(?=[\w.-]{20})[0-9A-Za-z_-]+(?:\.[0-9A-Za-z_-]+)*)",
        _check_random,
        token=True,
    ),
    _rule(  # before openai-key, whose sk- prefix it shares
        "anthropic-key",
        ("sk-",),
        r"(?P<secret>sk-ant-[a-z]+\d{2}-[A-Za-z0-9_-]{32,})",
        token=True,
    ),
    _rule(
        "openai-key",
        ("sk-",),
        r"(?P<secret>sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{32,})",
        _check_mixed,
        token=True,
    ),
    _rule(
        "huggingface-token",
        ("hf_",),
        r"(?P<secret>hf_[A-Za-z]{34})",
        _check_random,
        token=True,
    ),
    _rule(
        "npm-token",
        ("npm_",),
        r"(?P<secret>npm_[A-Za-z0-9]{36})",
        token=True,
    ),
    _rule(  # a macaroon whose location is pypi.org or test.pypi.org
        "pypi-token",
        ("pypi-age",),
        r"(?P<secret>pypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,})",
        token=True,
    ),
    _rule(
        "sendgrid-key",
        ("sg.",),
        r"(?P<secret>SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})",
        token=True,
    ),
    _rule(
        "azure-storage-key",
        ("accountkey=", "sharedaccesskey="),
        r"(?:AccountKey|SharedAccessKey)=(?P<secret>[A-Za-z0-9+/]{40,}={0,2})",
    ),
    _rule(  # the signature of a shared-access-signature URL is a bearer credential
        "azure-sas-signature",
        ("sig=",),
        r"sig=(?<=[?&]sig=)(?P<secret>(?:[A-Za-z0-9+/]|%2[BbFf]){40,}(?:=|%3[Dd]){0,2})",
    ),
    _rule(
        "basic-auth-url",
        ("://",),
        r"://[^\s:/?#@\"'<>]*:(?P<secret>[^\s/?#@\"'<>]+)@",
        _check_not_placeholder,
    ),
    _rule(
        "basic-auth-header",
        ("basic",),
        r"basic[\ \t]+(?P<secret>[a-z0-9+/]{8,}={0,2})(?![a-z0-9+/=])",
        _check_basic_header,
        lowercase=True,
    ),
    _rule(
        "bearer-token",
        ("bearer", "authorization"),
        r"""(?:bearer|authorization:[\ \t]*token)[\ \t]+
            (?P<secret>[a-z0-9._~+/-]{16,}=*)(?![a-z0-9._~+/=-])""",
        _check_bearer,
        lowercase=True,
    ),
    _rule(
        "secret-assignment",
        ("pass", "pwd", "secret", "token", "key", "credential"),
        r"""(?P<word>pass(?:word|wd|phrase)?|pwd|secret|token|key|credentials?)
            (?![a-z0-9_.-])                             # the word ends the name
            \\?["']?                                    # the closing quote of a JSON or dict key
            (?:[\ \t]*(?P<op>:=|=>|[=:])[\ \t]*|[\ \t]+)  # an operator or a space, on one line
            \\?(?P<q>["'])?
            (?P<secret>(?(q)(?:(?!\\?(?P=q)).)+          # quoted: up to the closing quote
                           |[^\s"'`,;&<>(){}\[\]\\]+))    # bare: up to a separator
        """,
        _check_assignment,
        lowercase=True,
    ),
)
"""The rules in priority order: on overlap, the earlier rule's finding is kept."""

_KEYWORDS: Final = frozenset(k for rule in RULES for k in rule.keywords)
_TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MARKER: Final = re.compile(r"«redacted:(?P<rule>[a-z0-9-]+):(?P<fp>[0-9a-f]{8})»")
"""A redaction marker; ``rule`` and ``fp`` (the fingerprint) are its fields."""


def scan(text: str, name: str | None = None) -> list[Finding]:
    """Every secret in ``text``, sorted by position, non-overlapping.

    ``name`` is the key the text is stored under (a map key, a parameter name), if any. When it
    names a credential (``password``, ``api_key``) and no rule finds anything inside the text,
    the whole text is judged as that credential's value by the ``secret-assignment`` gates, so
    ``{"password": "hunter2xyz!"}`` is caught even when key and value are scanned apart.
    """
    lowered = text.lower()
    if len(lowered) != len(text):  # a few letters lowercase to two characters (İ → i̇)
        lowered = text.translate(_ASCII_LOWER)
    present = {k for k in _KEYWORDS if k in lowered}  # on clean text, the whole cost of a scan
    found = _findings(text, lowered, present) if present else []
    # A marker contains "redacted", a placeholder word, so redacted text is never judged here.
    if not found and name is not None and _names_credential(name) and _plausible_value(text):
        found.append((0, len(text), "secret-assignment"))
    # A carrier already holding a marker was redacted before: leave it (idempotence).
    elif not found and name and text and _carries_credential(name) and "«redacted:" not in text:
        found.append((0, len(text), "credential-carrier"))
    return [Finding(rule, start, end) for start, end, rule in found]


def _findings(text: str, lowered: str, present: set[str]) -> list[tuple[int, int, str]]:
    """(start, end, rule id) of each secret in ``text``, sorted; ``present``: the keywords in it.

    Each rule scans the gaps between redaction markers and the findings so far, each gap as a
    whole text, just as it will once those findings are markers. A finding can split a
    candidate that was rejected whole (say, a value that ran into a token), so passes repeat
    until one adds nothing: that last pass saw exactly the gaps of the redacted text, which is
    therefore clean. Clean text takes one pass, text with secrets usually two.
    """
    rules = [(r, ks) for r in RULES if (ks := [k for k in r.keywords if k in present])]
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
    if _entropy(text[start:end]) < MIN_ENTROPY:
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
