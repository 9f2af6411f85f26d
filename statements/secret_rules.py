"""The secret guard's rules: what a credential looks like, in one table.

Each Rule is a keyword-gated regex plus a check; the engine that runs them (scan, redact,
decoding layers) is secrets.py, the walk over JSON values and maps that adds the context of keys
and sibling keys is secret_values.py. This module holds only judgements of text.

Rules favour fixed prefixes and structures (high signal, near-zero false positives). The generic
``secret-assignment`` rule — a credential-named key; then ``=``, ``:``, ``:=``, ``=>``, a comma
between a quoted name and its value or after an environment-style NAME (CSV rows), the
operators of common languages (``::=``, ``?=``, ``.=``, ``==``), an XML element's ``>``, or a
space after a ``--flag`` or .netrc's ``password``; then a value — accepts the value only if
all hold:
  * the key's last word names a credential (``password``, ``DB_PASS``, ``pwd``, ``pat``,
    ``client_secret``, ``api_key``, ``X-Api-Key``, ``access_token``), not a property of one
    (``token_type``, ``password_file``, ``max_tokens``), nor a pagination/idempotency token;
  * the value is at least 8 characters with at least 2.5 bits/char of Shannon entropy, is not a
    placeholder (``<password>``, ``${PASSWORD}``, ``****``, ``changeme``, ``required``…), not a
    file path (``/run/secrets/db``), not unquoted code (``os.environ[...]``, ``self.secret``),
    and not a reference to a secret (``secret:prod/payments/db@v8``: a colon straight after the
    name, then a path — a name that refers to a secret is not one);
  * it has a letter (digits alone read as counts and ids), and looks like a credential *for
    that kind of name*: after a password word (``password``, ``passwd``, ``passphrase``,
    ``pass``, ``pwd``) any such value, letters-only and spaced passphrases included (the
    ``passphrase-assignment`` rule takes the spaced words of letters after ``password=``);
    after other names (``token``, ``secret``, ``api_key``) a digit or symbol, or 16+
    mixed-case letters of high entropy — so ``token: TokenResponse`` is a type, not a token.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

MIN_ENTROPY: Final = 2.5
"""Bits per character of Shannon entropy below which no value is reported: masks such as
``ghp_xxxx…`` or ``****``, and ``secret-assignment`` values such as ``aaaa1111``."""

ASSIGNMENT_MIN_LENGTH: Final = 8
"""Shortest value ``secret-assignment`` reports."""

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


def entropy(s: str) -> float:
    """Shannon entropy of the characters of ``s``, in bits per character.

    The terms are added exactly (math.fsum), so the result does not depend on the order a set
    of the characters comes in, which follows the process's hash seed: a value at exactly
    MIN_ENTROPY must be judged alike by every process (the log's, an auditor's)."""
    n = len(s)
    return math.log2(n) - math.fsum(c * math.log2(c) for c in map(s.count, set(s))) / n


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
                             "example", "dummy", "your", "xxxx", "****", "fake", "tokenhere",
                             "keyhere", "stringhere", "secrethere", "passwordhere")
_PLACEHOLDER_VALUES: Final = frozenset({
    "password", "passwd", "pass", "secret", "token", "none", "null", "nil", "undefined", "true",
    "false", "empty", "required", "optional", "string", "x-oauth-basic", "hidden", "masked",
    "omitted", "sensitive", "unset", "blank", "invalid", "incorrect", "expired", "missing",
    "notused", "not-used", "not_used"})
# fmt: on


_CONSTANT_NAME: Final = re.compile(r"[A-Z]+(?:_[A-Z]+)+")  # ACCESS_TOKEN: a name, not a value


def is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return (
        lowered in _PLACEHOLDER_VALUES
        or "${" in value  # a template: ${{ secrets.TOKEN }}, ${VAR:-x}
        or "{{" in value
        or re.match(r"\$[A-Za-z_]", value) is not None  # $HOME/x: a shell expansion
        or _CONSTANT_NAME.fullmatch(value) is not None
        or any(w in lowered for w in _PLACEHOLDER_WORDS)
        or _PLACEHOLDER_SHAPES.fullmatch(value) is not None
    )


def _random_looking(value: str) -> bool:
    """Not a placeholder, and has the digits or mixed case of a generated token."""
    has_case = value != value.lower() and value != value.upper()
    return not is_placeholder(value) and (has_case or any(c.isdigit() for c in value))


# --- secret-assignment -----------------------------------------------------------------------

_WORDS: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# fmt: off
_PASSWORD_WORDS: Final = ("password", "passwd", "passphrase")
_CREDENTIAL_SUFFIXES: Final = (*_PASSWORD_WORDS, "secret", "token", "apikey", "secretkey",
                               "privatekey", "accesskey", "credential", "credentials")
# "key" alone names too much (an S3 object key, a dict key); these words make it a credential.
_KEY_QUALIFIERS: Final = frozenset({"api", "access", "secret", "private", "client", "signing",
                                    "encryption", "master", "account", "auth", "shared", "app"})
# Opaque tokens that grant nothing: pagination cursors, idempotency and sync tokens.
_HARMLESS_TOKEN_QUALIFIERS: Final = frozenset({"page", "continuation", "resume", "sync",
                                               "idempotency", "cancellation", "cursor", "csrf",
                                               "public", "publishable", "authenticity"})
# fmt: on
_SPACED: Final = frozenset({"password", "passwd"})
_MAX_NAME: Final = 64  # longer runs of name characters are data, not a variable name
_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# self.token, process.env.API_KEY: words, each maybe numbered, unlike a token's random segments
_CODE_REFERENCE: Final = re.compile(r"[A-Za-z_$]+\d*(?:\.[A-Za-z_$]+\d*)+")
# /run/secrets/db, ~/.pgpass, ./key.pem: where a secret is kept, not the secret
_PATH: Final = re.compile(r"(?:~|\.{1,2})?/[\w.@%+-]*(?:/[\w.@%+-]*)*")
# prod/payments/db@v8, payments-db-password, repo:acme/*: names made of words (a word may end
# in a short number, v8), which refer to a secret rather than hold one
_IDENTIFIER: Final = re.compile(r"[a-z*]+\d{0,2}(?:[-_./@:](?:[a-z*]+\d{0,2}|\d+))+")
_ENV_NAME: Final = re.compile(r"[A-Z][A-Z0-9_]*_[A-Z0-9_]*")


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(name)]


@functools.lru_cache(maxsize=4096)
def names_credential(name: str) -> bool:
    """Whether an identifier's last word names a credential (``DB_PASSWORD``, ``apiKey``,
    ``pwd``, ``github_pat``), not a property of one (``token_type``) or a harmless token."""
    words = _words(name)
    if not words:
        return False
    last, before = words[-1], words[-2] if len(words) > 1 else ""
    if last == "key":
        return before in _KEY_QUALIFIERS
    if last in ("pass", "pwd", "pw", "pat"):
        return True
    return last.endswith(_CREDENTIAL_SUFFIXES) and before not in _HARMLESS_TOKEN_QUALIFIERS


# Fields whose whole value is a credential, whatever it looks like (an HTTP Authorization
# header, a cookie): compared as their words joined, so "Set-Cookie" and "set_cookie" match.
_CARRIERS: Final = frozenset({"authorization", "proxyauthorization", "cookie", "setcookie"})


@functools.lru_cache(maxsize=4096)
def carries_credential(name: str) -> bool:
    """Whether a field named so carries a credential in its whole value (``Authorization``)."""
    return "".join(_words(name)) in _CARRIERS


_TEMPLATE: Final = re.compile(
    r"(?:(?:bearer|basic|token|digest)\s+)?(?:<[^<>]*>|\$\{[^}]*\}|\{\{.*\}\}|\$[a-z_]\w*)",
    re.I,
)


def carried_template(value: str) -> bool:
    """A carrier's value that is a template, not a credential: ``Bearer <token>``,
    ``${AUTH_HEADER}``, ``Basic {{ creds }}``."""
    return _TEMPLATE.fullmatch(value.strip()) is not None


@functools.lru_cache(maxsize=4096)
def names_context(name: str | None) -> bool:
    """Whether a value stored under ``name`` is judged by its name (a credential's or a
    carrier's), not by its text alone. Cached: the guard asks it of every parameter name."""
    return name is not None and (names_credential(name) or carries_credential(name))


@functools.lru_cache(maxsize=4096)
def names_password(name: str) -> bool:
    """Whether a credential name is a password's (any value a person chose may follow it)."""
    words = _words(name)
    return bool(words) and (
        words[-1] in ("pass", "pwd", "pw") or words[-1].endswith(_PASSWORD_WORDS)
    )


def plausible_value(value: str, name: str) -> bool:
    """The value gates of ``secret-assignment`` for a value stored under ``name``.

    After a password word any chosen value with a letter counts, letters alone and spaced
    passphrases included; after other credential names a value needs a digit or symbol, or
    16+ mixed-case letters of high entropy, and names made of words are references to secrets.
    """
    if (
        len(value) < ASSIGNMENT_MIN_LENGTH
        or entropy(value) < MIN_ENTROPY
        or is_placeholder(value)
        or _PATH.fullmatch(value) is not None
        or not any(c.isalpha() for c in value)  # digits alone read as counts and ids
    ):
        return False
    if names_password(name):
        return True
    if _IDENTIFIER.fullmatch(value):
        return False
    if not value.isalpha():
        return True  # a digit, a symbol or a space
    mixed = value != value.lower() and value != value.upper()
    return len(value) >= 16 and mixed and entropy(value) >= 3.5


def _name_start(text: str, at: int) -> int:
    start, limit = at, max(0, at - _MAX_NAME)
    while start > limit and text[start - 1] in _NAME_CHARS:
        start -= 1
    return start


def _check_assignment(text: str, m: re.Match[str]) -> bool:
    """The pattern matched from the credential word on; the name runs back to its start."""
    start = _name_start(text, m.start())
    if start > 0 and text[start - 1] == ":":
        return False  # an ARN's or URN's segment (arn:aws:secretsmanager:…:secret:name)
    name, value, op = text[start : m.end("word")], _secret(text, m), m.group("op")
    if m.group("xml") is not None:
        if text[start - 1 : start] != "<":
            return False  # > closes an element's start tag, <apiToken>, or nothing
    elif op is None:
        if m.group("nq") is not None or not (name.startswith("--") or name.lower() in _SPACED):
            return False  # a space separates a value only after --flag and in .netrc's password
        if value[-1] in ".,:;!?" or value.isalpha():
            return False  # prose: "the password combination."
    if op == "," and m.group("nq") is None and not _ENV_NAME.fullmatch(name):
        return False  # name, value: a call's arguments ("api_token", …) or a CSV row (NAME,…)
    if (m.group("q") == "`" and " " in value) or value.startswith("<"):
        return False  # a shell command substitution, or markup
    if m.group("q") is None:
        if text[m.end() : m.end() + 1] in ("(", "[") or _CODE_REFERENCE.fullmatch(value):
            return False  # unquoted code: a call, a subscript or an attribute, not a literal
        if op == ":" and m.start("secret") == m.end("op") and "/" in value:
            return False  # scheme:path — a reference (secret:prod/payments/db@v8)
    return names_credential(name) and plausible_value(value, name)


def _check_passphrase(text: str, m: re.Match[str]) -> bool:
    """``password=`` then spaced words of letters: a passphrase."""
    start = _name_start(text, m.start())
    name = text[start : m.end("word")]
    return names_password(name) and plausible_value(_secret(text, m), name)


def _check_named_value(text: str, m: re.Match[str]) -> bool:
    """A value whose sibling key or attribute names a credential."""
    name = text[m.start("name") : m.end("name")]
    return names_credential(name) and plausible_value(_secret(text, m), name)


def _check_command(text: str, m: re.Match[str]) -> bool:
    value = _secret(text, m)
    return (
        len(value) >= 4
        and not is_placeholder(value)
        and _PATH.fullmatch(value) is None
        and not any(c in value for c in "<>{}$%")  # <user:password>, %{http_code}, $PASS
    )


# --- structural checks -----------------------------------------------------------------------


def b64decode(text: str) -> bytes | None:
    """Base64 in either alphabet (standard or URL-safe), padding optional; None if invalid."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except ValueError:
        return None


def _check_jwt(text: str, m: re.Match[str]) -> bool:
    """A JWT's first segment is base64url of a JSON object with an "alg" member (RFC 7515)."""
    header = b64decode(_secret(text, m).split(".", 1)[0])
    if header is None:
        return False
    try:
        parsed: object = json.loads(header)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and "alg" in parsed


def _check_basic_header(text: str, m: re.Match[str]) -> bool:
    """HTTP Basic credentials are base64 of printable ``user:password``."""
    raw = b64decode(_secret(text, m).rstrip("="))
    return _starts_word(m) and raw is not None and b":" in raw and all(32 <= b < 127 for b in raw)


def _check_bearer(text: str, m: re.Match[str]) -> bool:
    return _starts_word(m) and _random_looking(_secret(text, m))


def _check_private_key(text: str, m: re.Match[str]) -> bool:
    """A header alone (a mention in prose or docs) is not a key: require a body."""
    return sum(c.isalnum() for c in text[m.start("body") : m.end("body")]) >= 64


def _check_not_placeholder(text: str, m: re.Match[str]) -> bool:
    return not is_placeholder(_secret(text, m))


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
        _check_not_placeholder,  # AKIAIOSFODNN7EXAMPLE, AWS's documentation key
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
            (?P<secret>[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/[A-Za-z0-9_/-]{16,}|[A-Za-z0-9_-]{32,})""",
    ),
    _rule(
        "slack-token",
        ("xox", "xapp-"),
        r"(?P<secret>x(?:ox[abposr]|oxe(?:\.xox[bp])?|app)-\d+-[0-9A-Za-z-]{8,})",
        _check_not_placeholder,  # xoxe.xoxp-1-RANDOMSTRINGHERE
        token=True,
    ),
    _rule(  # publishable keys (pk_) are public by design and are not reported
        "stripe-key",
        ("sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_"),
        r"(?P<secret>[sr]k_(?:live|test)_[0-9A-Za-z]{16,247}|whsec_[A-Za-z0-9+/]{32,})",
        token=True,
    ),
    _rule(
        "sourcegraph-token",
        ("sgp_",),
        r"(?P<secret>sgp_(?:local_|[0-9a-fA-F]{16}_)?[0-9a-fA-F]{40})",
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
    _rule(  # the password runs to the host's @, the last before the path: it may hold # and @
        "basic-auth-url",
        ("://",),
        r"://[^\s:/?#@\"'<>]*:(?P<secret>[^\s/?\"'<>]+)@[^\s/?#@\"'<>]*(?![^\s/?#\"'<>]*@)",
        _check_not_placeholder,
    ),
    _rule(  # mysql -pS3cret, sshpass -p pw, curl -u user:pw, redis-cli -a pw
        "command-line-password",
        ("mysql", "mariadb", "sshpass", "curl", "redis-cli"),
        r"""(?:(?:mysql(?:dump|admin)?|mariadb)\b(?:[^\n;&|]|\\\n)*?\s-p  # \⏎ continues
             |sshpass\s+-p\s*
             |curl\b(?:[^\n;&|]|\\\n)*?\s(?:-u\s*|--user[\s=]+)(?P<uq>["']?)[^\s:"']+:
             |redis-cli\b(?:[^\n;&|]|\\\n)*?\s-a\s+)
            (?P<q>["']?)(?P<secret>[^\s"']+)(?P=q)""",
        _check_command,
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
        r"""(?:bearer[\ \t]+  # any scheme but Basic, which basic-auth-header judges
               |authorization:[\ \t]*(?:(?!basic[\ \t])[a-z][a-z0-9-]*[\ \t]+)?)
            (?P<secret>[a-z0-9._~+/-]{16,}=*)(?![a-z0-9._~+/=-])""",
        _check_bearer,
        lowercase=True,
    ),
    _rule(  # key="Password" value="…" (XML config), "name": "DB_PASSWORD", "value": "…" (JSON)
        "named-value",
        ('key="', "key='", 'key"', 'name="', "name='", 'name"'),
        r"""(?:key|name)["']?[\ \t]*[:=][\ \t]*["'](?P<name>[\w.-]{1,64})["'][\ \t]*,?[\ \t]*
            ["']?value["']?[\ \t]*[:=][\ \t]*(?P<q>["'])(?P<secret>[^"'\n]+)(?P=q)""",
        _check_named_value,
        lowercase=True,
    ),
    _rule(  # before secret-assignment: password= then several words, up to a separator
        "passphrase-assignment",
        ("pass", "pwd"),
        r"""(?P<word>pass(?:word|wd|phrase)?|pwd)(?![a-z0-9_.-])\\?["']?[\ \t]*=[\ \t]*
            (?P<secret>[a-z]+(?:\ [a-z]+)+)                     # words of letters, spaced
            (?=[\s"'`,;&<>(){}\[\]\\]|$)""",
        _check_passphrase,
        lowercase=True,
    ),
    _rule(
        "secret-assignment",
        ("pass", "pwd", "pw", "pat", "secret", "token", "key", "credential"),
        r"""(?P<word>pass(?:word|wd|phrase)?|pwd?|pat|secret|token|key|credentials?)
            (?![a-z0-9_.-])                             # the word ends the name
            (?P<nq>\\?["'`])?                            # the closing quote of a quoted key
            (?:\[\d*\])?(?:[\ \t]+(?:string|str|bytes))?  # char secret[25], var t string
            (?:[\ \t]*(?P<op>:{1,3}=|[?.+]=|=>|[!=]==?|[=:,])[\ \t]*  # = := ::= ?= .= => == :
               |[\ \t]+                                  # a space (--flag value, .netrc)
               |(?P<xml>>)\s*)                           # <apiToken>value</apiToken>
            @?\\?(?P<q>["'`])?
            (?P<secret>(?(q)(?:(?!\\?(?P=q)).)+          # quoted: up to the closing quote
                           |[^\s"'`,;&<>(){}\[\]\\]+))    # bare: up to a separator
        """,
        _check_assignment,
        lowercase=True,
    ),
)
"""The rules in priority order: on overlap, the earlier rule's finding is kept."""
