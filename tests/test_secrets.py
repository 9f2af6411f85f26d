"""The secret guard (statements.secrets): rules, spans, redaction markers, and a measured corpus.

Every credential below is fake: built from repeated filler so it is structurally valid and
obviously not a real secret. tests/vectors/secrets-corpus.json holds random-looking fakes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from affidavit.statements.secret_rules import RULES, Rule
from affidavit.statements.secrets import Finding, Redaction, fingerprint, redact, scan
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "vectors" / "secrets-corpus.json"
KEY = b"affidavit-test-fingerprint-key!!"  # 32 bytes
MARKER = re.compile(r"«redacted:([a-z0-9-]+):([0-9a-f]{8})»")

# The ids are part of the log's record (markers and rejection messages carry them): renaming
# one is a format change, so the list is spelled out here rather than read from RULES.
RULE_IDS = [
    "private-key-block",
    "note-signer-key",
    "jwt",
    "aws-access-key-id",
    "aws-secret-access-key",
    "github-token",
    "gitlab-token",
    "slack-webhook",
    "slack-token",
    "stripe-key",
    "sourcegraph-token",
    "google-api-key",
    "google-oauth-token",
    "anthropic-key",
    "openai-key",
    "huggingface-token",
    "npm-token",
    "pypi-token",
    "sendgrid-key",
    "azure-storage-key",
    "azure-sas-signature",
    "basic-auth-url",
    "command-line-password",
    "basic-auth-header",
    "bearer-token",
    "named-value",
    "passphrase-assignment",
    "secret-assignment",
]


def load_corpus() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CORPUS.read_text(encoding="utf-8"))
    return data


def filler(n: int, alphabet: str = "aB3dE5fG7hJ9kL2mN4pQ6rS8tU0vW1xY") -> str:
    """n characters cycling through ``alphabet``: high entropy, plainly not a real secret."""
    return (alphabet * (n // len(alphabet) + 1))[:n]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(header: bytes, payload: bytes = b'{"sub":"agent-7"}', signature: str = "") -> str:
    return f"{b64url(header)}.{b64url(payload)}.{signature or filler(43)}"


PEM_BODY = "\n".join(filler(64) for _ in range(3))
RSA_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
TRUNCATED_KEY = RSA_KEY[: RSA_KEY.index("-----END")]
JWT = jwt(b'{"alg":"HS256","typ":"JWT"}')
BASIC = base64.b64encode(b"deploy:Zx9mQ2kLw8").decode()

NOTE_KEY = f"PRIVATE+KEY+log.example+1a2b3c4d+{filler(44)}"
UNSIGNED_JWT = jwt(b'{"typ":"JWT","alg":"none"}', signature="-")
GH_PAT = f"github_pat_{filler(22)}_{filler(59)}"
WEBHOOK = f"T0ABCDEFG/B0ABCDEFGHI/{filler(24)}"
SLACK = f"xoxb-1234567890-1234567890123-{filler(24)}"
ANTHROPIC = f"sk-ant-api03-{filler(93)}AA"
HF = f"hf_{filler(34, 'aBcDeFgHjK')}"
PYPI = f"pypi-AgEIcHlwaS5vcmc{filler(60)}"
SAS = f"{filler(43)}%3D"
HEX40 = filler(40, "0123456789abcdef")

# (rule, text, the secret in it): each text must yield exactly one finding, on that secret.
EXAMPLES: list[tuple[str, str, str]] = [
    ("private-key-block", f"cat deploy.pem\n{RSA_KEY}\nEOF", RSA_KEY),
    ("private-key-block", TRUNCATED_KEY, TRUNCATED_KEY),  # cut off: the body is still a key
    ("note-signer-key", f"KEY={NOTE_KEY}", NOTE_KEY),
    ("jwt", f"Authorization: Bearer {JWT}", JWT),
    ("jwt", f"?id_token={UNSIGNED_JWT}&x=1", UNSIGNED_JWT),
    ("aws-access-key-id", "AWS_ACCESS_KEY_ID=AKIAQWERTY234567ABCD", "AKIAQWERTY234567ABCD"),
    ("aws-access-key-id", '{"AccessKeyId": "ASIAQWERTY234567ABCD"}', "ASIAQWERTY234567ABCD"),
    ("aws-secret-access-key", f"aws_secret_access_key = {filler(38)}+/", filler(38) + "+/"),
    ("aws-secret-access-key", f'{{"SecretAccessKey": "{filler(40)}"}}', filler(40)),
    ("github-token", f"git clone https://ghp_{filler(36)}@github.com/a/b", f"ghp_{filler(36)}"),
    ("github-token", f"GH_TOKEN={GH_PAT}", GH_PAT),
    ("gitlab-token", f"PRIVATE-TOKEN: glpat-{filler(20)}", f"glpat-{filler(20)}"),
    ("slack-webhook", f"POST https://hooks.slack.com/services/{WEBHOOK}", WEBHOOK),
    ("slack-token", f"SLACK_BOT_TOKEN={SLACK}", SLACK),
    ("stripe-key", f"Stripe key sk_live_{filler(24)}.", f"sk_live_{filler(24)}"),
    ("google-api-key", f"maps?key=AIza{filler(35)}&q=berlin", f"AIza{filler(35)}"),
    ("google-oauth-token", f"token: ya29.a0{filler(40)}", f"ya29.a0{filler(40)}"),
    ("anthropic-key", f"ANTHROPIC_API_KEY={ANTHROPIC}", ANTHROPIC),
    ("openai-key", f"OPENAI_API_KEY=sk-proj-{filler(48)}", f"sk-proj-{filler(48)}"),
    ("huggingface-token", f"huggingface-cli login --token {HF}", HF),
    ("npm-token", f"//registry.npmjs.org/:_authToken=npm_{filler(36)}", f"npm_{filler(36)}"),
    ("pypi-token", f"twine upload -p {PYPI} dist/*", PYPI),
    ("sendgrid-key", f"SG.{filler(22)}.{filler(43)}", f"SG.{filler(22)}.{filler(43)}"),
    ("azure-storage-key", f"AccountName=a;AccountKey={filler(86)}==;Suffix=x", filler(86) + "=="),
    ("azure-sas-signature", f"https://a.blob.core.windows.net/c?sv=2022-11-02&sig={SAS}", SAS),
    ("basic-auth-url", "postgres://app:Zx9mQ2kLw8@db:5432/orders", "Zx9mQ2kLw8"),
    ("basic-auth-header", f"Authorization: Basic {BASIC}", BASIC),
    ("bearer-token", f"authorization: bearer {filler(32)}", filler(32)),
    ("bearer-token", f"Authorization: token {HEX40}", HEX40),
    ("secret-assignment", "password=hunter2xyz!", "hunter2xyz!"),
    ("secret-assignment", "DB_PASS=letmein1", "letmein1"),  # 2.75 bits per character
    ("secret-assignment", '{"client_secret": "s3cr3t-V4lue-9"}', "s3cr3t-V4lue-9"),
    ("secret-assignment", "mysql --password Qw3rty!9x -h db", "Qw3rty!9x"),
    ("secret-assignment", "machine db\n  login ops\n  password Qw3rty!9x", "Qw3rty!9x"),
    ("secret-assignment", "X-Api-Key: k3y-Zx9mQ2kLw8", "k3y-Zx9mQ2kLw8"),
    ("secret-assignment", 'passphrase = "correct horse battery 7"', "correct horse battery 7"),
    ("secret-assignment", "password: correcthorsebattery", "correcthorsebattery"),
    ("secret-assignment", "DB_PASSWORD,Zx9mQ2kLw8", "Zx9mQ2kLw8"),
    ("secret-assignment", '{"pat": "Zx9mQ2kLw8vB"}', "Zx9mQ2kLw8vB"),
    (
        "secret-assignment",
        f'api_key = "{filler(24, "aBcDeFgHjKmNpQrStUvWxYz")}"',
        filler(24, "aBcDeFgHjKmNpQrStUvWxYz"),
    ),
    ("basic-auth-url", "postgres://app:p@ss#w0rd9@db.internal:5432/x", "p@ss#w0rd9"),
    ("command-line-password", "mysql -u root -pS3cretPw9 orders", "S3cretPw9"),
    ("command-line-password", "curl -u admin:Sup3rS3cret https://api", "Sup3rS3cret"),
    ("command-line-password", "sshpass -p 'Zx9mQ2kLw8' ssh ops@db", "Zx9mQ2kLw8"),
    ("command-line-password", "redis-cli -h cache -a Zx9mQ2kLw8 ping", "Zx9mQ2kLw8"),
    (
        "passphrase-assignment",
        "password=correct horse battery staple",
        "correct horse battery staple",
    ),
    ("sourcegraph-token", f"SRC_ACCESS_TOKEN=sgp_local_{HEX40}", f"sgp_local_{HEX40}"),
    ("named-value", '<add key="ClearTextPassword" value="Zx9mQ2kLw8" />', "Zx9mQ2kLw8"),
    ("named-value", '{"name": "DB_PASSWORD", "value": "tangerine-walrus"}', "tangerine-walrus"),
    ("bearer-token", f"Authorization: Api-Token {HEX40}", HEX40),
]


@pytest.mark.parametrize(("rule", "text", "secret"), EXAMPLES)
def test_rule_finds_its_example_with_the_exact_span(rule: str, text: str, secret: str):
    start = text.index(secret)
    assert scan(text) == [Finding(rule, start, start + len(secret))]


def test_rule_ids_are_stable_unique_and_kebab_case():
    assert [r.id for r in RULES] == RULE_IDS
    assert all(re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", i) for i in RULE_IDS)


def test_every_rule_has_an_example():
    assert {rule for rule, _, _ in EXAMPLES} == set(RULE_IDS)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_match_begins_with_a_keyword(rule: Rule):
    """scan tries a pattern only at its keywords: a match elsewhere would be silently lost."""
    assert rule.keywords and all(k == k.lower() for k in rule.keywords)
    corpus = load_corpus()
    texts = [t for _, t, _ in EXAMPLES] + [s["text"] for s in corpus["secrets"]]
    for text in texts + [b["text"] for b in corpus["benign"]]:
        subject = text.lower() if rule.lowercase else text
        for m in rule.pattern.finditer(subject):
            assert subject.lower().startswith(rule.keywords, m.start()), (rule.id, m)


# Near misses: each looks like a rule's target but is not a secret.
NEAR_MISSES = [
    "AKIAQWERTY234567ABC",  # one character short
    "AKIAQWERTY234567ABCDE",  # one too long
    "akiaqwerty234567abcd",  # lowercase
    "xAKIAQWERTY234567ABCD",  # inside a longer token
    "-----BEGIN RSA PRIVATE KEY----- must never be committed",  # a header without a body
    f"-----BEGIN PUBLIC KEY-----\n{PEM_BODY}\n-----END PUBLIC KEY-----",
    b64url(b'{"alg":"HS256"}'),  # a JWT header alone
    jwt(b'{"typ":"JWT","kid":"k1"}'),  # no "alg": not a JWS header
    f"eyJ{filler(20)}.{filler(20)}.{filler(20)}",  # the header is not base64 of JSON
    f"ghp_{'x' * 36}",  # a mask: too little entropy
    f"pk_live_{filler(24)}",  # publishable: public by design
    "sk-learn-inference-gateway-worker-7d9f8c6b5d",  # a kebab-case name
    "hf_hub_download(repo_id='x')",
    "https://user@example.com/path",  # user, no password
    "https://user:****@registry.example/v2/",
    "postgres://app:${DB_PASS}@db/orders",
    "git@github.com:acme/app.git",
    "Basic authentication is disabled",
    "Authorization: Basic bm8gY29sb24gaGVyZQ==",  # "no colon here": not user:password
    "Authorization: Bearer <token>",
    "Authorization: Bearer ${ACCESS_TOKEN}",
    "The bearer of this request was the deploy bot.",
    "password=changeme",
    "password=<redacted>",
    "password: ********",
    "PASSWORD=${PASSWORD}",
    "DB_PASSWORD=$DB_PASSWORD",
    "password: required",
    "token: TokenResponse",
    "password: Hunter",  # short, letters only
    "password=abab1212",  # 2 bits per character
    "key: reports/2024-05/q1-summary.csv",  # a key, not an api_key or secret_key
    "password: 12345678",  # digits only
    "api_key = os.environ['VENDOR_API_KEY']",
    "client = OpenAI(api_key=settings.OPENAI_API_KEY)",
    "password = getpass.getpass()",
    "PWD=/home/alice/src/affidavit",
    "max_tokens: 4096",
    "token_type: bearer",
    "password_file: /run/secrets/db_password",
    "tokenizer=bert-base-uncased",
    f"next_page_token: {filler(32)}",
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db/password-Ab12Cd",
    "The token expired; the password reset link was sent.",
    "password hash mismatch for user 4711",
    f"commit {filler(40, '0123456789abcdef')}",
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "«redacted:github-token:1a2b3c4d»",
    "see https://hooks.slack.com/services/ for the setup",
    "sk_test_abc123",  # too short for a Stripe key
    "SG.Ltd annual report",
    "npm_config_cache=/tmp/npm",
    "pypi-AgE is the prefix of PyPI tokens",
    "AccountKey=<key>;EndpointSuffix=core.windows.net",
    "https://a.blob.core.windows.net/c?sig=abc",
    "AIzaSy is how Google API keys start",
    "PRIVATE+KEY+ starts a signer key; a verifier key has no such prefix",
    "glpat-xxxx is a GitLab token prefix",
    "xoxb- tokens belong to Slack bots",
    "aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_not_secrets(text: str):
    assert scan(text) == []


def test_specific_rules_win_over_generic_ones():
    gh = f"ghp_{filler(36)}"
    assert [f.rule for f in scan(f"token={gh}")] == ["github-token"]
    assert [f.rule for f in scan(f"https://x-access-token:{gh}@github.com")] == ["github-token"]
    assert [f.rule for f in scan(f"Authorization: Bearer {JWT}")] == ["jwt"]
    assert [f.rule for f in scan(f"api_key=sk-proj-{filler(48)}")] == ["openai-key"]


def test_findings_are_ordered_and_non_overlapping():
    text = f"a=AKIAQWERTY234567ABCD password=hunter2xyz! b=ghp_{filler(36)} {RSA_KEY}"
    assert [f.rule for f in scan(text)] == [
        "aws-access-key-id",
        "secret-assignment",
        "github-token",
        "private-key-block",
    ]


def test_a_finding_can_free_its_neighbour():
    """The JWT runs into the SAS signature, so it is no whole token until that is found."""
    text = f"https://a.blob.core.windows.net/c?sig={SAS}{JWT}"
    assert [f.rule for f in scan(text)] == ["azure-sas-signature", "jwt"]
    assert scan(redact(text, KEY)[0]) == []


def test_a_rule_resumes_after_its_match():
    assert scan("password=password=hunter2xyz!") == [Finding("secret-assignment", 9, 29)]


def test_findings_do_not_depend_on_the_hash_seed():
    """Server, client and auditor run in different processes: they must agree."""
    program = (
        "import json, sys; from statements.secrets import scan; "
        "texts = [s['text'] for s in json.load(open(sys.argv[1]))['secrets']]; "
        "print([scan(t) for t in texts])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", program, str(CORPUS)],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_offsets_survive_letters_that_lowercase_to_two_characters():
    text = "İstanbul İzmir password=hunter2xyz!"  # "İ".lower() is two characters
    start = text.index("hunter2xyz!")
    assert scan(text) == [Finding("secret-assignment", start, start + len("hunter2xyz!"))]


def test_a_name_judges_a_value_stored_apart_from_its_key():
    assert scan("hunter2xyz!", name="password") == [Finding("secret-assignment", 0, 11)]
    assert scan("hunter2xyz!", name="db.password") == [Finding("secret-assignment", 0, 11)]
    assert scan("hunter2xyz!", name="password_hint") == []
    assert scan("Bearer", name="token_type") == []
    assert scan("changeme", name="password") == []
    gh = f"ghp_{filler(36)}"
    assert scan(f"x {gh}", name="token") == [Finding("github-token", 2, 2 + len(gh))]


# --- fingerprints and redaction ----------------------------------------------------------------


def test_fingerprint_is_the_first_8_hex_of_hmac_sha256():
    expected = hmac.new(KEY, b"hunter2xyz!", hashlib.sha256).hexdigest()[:8]
    assert fingerprint("hunter2xyz!", KEY) == expected == "1e3083b2"
    assert fingerprint(b"hunter2xyz!", KEY) == expected
    assert fingerprint("hunter2xyz!", bytes(range(32))) == "7516e227"
    assert fingerprint("é", KEY) == fingerprint("é".encode(), KEY)  # str is hashed as UTF-8


def test_fingerprint_refuses_a_short_key():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        fingerprint("hunter2xyz!", b"short")


def test_redaction_marker_format_and_spans():
    gh = f"ghp_{filler(36)}"
    text = f"password=hunter2xyz! and {gh}."
    out, redactions = redact(text, KEY)
    pw_fp = hmac.new(KEY, b"hunter2xyz!", hashlib.sha256).hexdigest()[:8]
    gh_fp = hmac.new(KEY, gh.encode(), hashlib.sha256).hexdigest()[:8]
    assert out == (
        f"password=«redacted:secret-assignment:{pw_fp}» and «redacted:github-token:{gh_fp}»."
    )
    assert redactions == [
        Redaction("secret-assignment", pw_fp, 9, 9 + len(f"«redacted:secret-assignment:{pw_fp}»")),
        Redaction("github-token", gh_fp, out.index("«redacted:github"), len(out) - 1),
    ]
    for r in redactions:
        assert out[r.start : r.end] == f"«redacted:{r.rule}:{r.fingerprint}»"


def test_redaction_with_a_name_replaces_the_whole_value():
    out, _ = redact("hunter2xyz!", KEY, name="password")
    assert out == f"«redacted:secret-assignment:{fingerprint('hunter2xyz!', KEY)}»"
    assert scan(out, name="password") == []
    assert redact(out, KEY, name="password") == (out, [])


def test_the_same_secret_gets_the_same_marker_under_one_key_only():
    a, _ = redact("password=hunter2xyz!", KEY)
    b, _ = redact("PASSWORD: 'hunter2xyz!'", KEY)
    c, _ = redact("password=hunter2xyz!", bytes(range(32)))
    assert MARKER.findall(a) == MARKER.findall(b) != MARKER.findall(c)


def test_text_inside_a_well_formed_marker_is_opaque():
    assert scan("password=«redacted:secret-assignment:0f1e2d3c» user=admin") == []
    # A malformed marker is ordinary text: it cannot hide a secret.
    gh = f"ghp_{filler(36)}"
    assert [f.rule for f in scan(f"«redacted:x:{gh}»")] == ["github-token"]


def test_every_example_redacts_to_clean_text_and_redaction_is_idempotent():
    for rule, text, _ in EXAMPLES:
        out, redactions = redact(text, KEY)
        assert [r.rule for r in redactions] == [rule]
        assert MARKER.search(out) is not None
        assert scan(out) == [], (rule, out)
        assert redact(out, KEY) == (out, [])


# --- the measured corpus -----------------------------------------------------------------------


def test_corpus_recall_and_false_positive_rate():
    corpus = load_corpus()
    positives, negatives = corpus["secrets"], corpus["benign"]
    assert len(positives) >= 60 and len(negatives) >= 100
    assert {s["rule"] for s in positives} == set(RULE_IDS)  # every rule is measured
    missed = []
    for s in positives:
        text, value = s["text"], s["secret"]
        start = text.index(value)
        if Finding(s["rule"], start, start + len(value)) not in scan(text):
            missed.append((s["rule"], s["context"]))
    false_positives = [(b["kind"], scan(b["text"])) for b in negatives if scan(b["text"])]
    recall = 1 - len(missed) / len(positives)
    fpr = len(false_positives) / len(negatives)
    print(
        f"secret guard: recall {recall:.3f} ({len(positives)} secrets), "
        f"false-positive rate {fpr:.3f} ({len(negatives)} benign)"
    )
    assert recall >= 0.95, missed
    assert fpr <= 0.02, false_positives


def test_every_corpus_secret_redacts_to_clean_text():
    for s in load_corpus()["secrets"]:
        out, _ = redact(s["text"], KEY)
        assert s["secret"] not in out
        assert scan(out) == []
        assert redact(out, KEY) == (out, [])


# --- properties --------------------------------------------------------------------------------

_PIECES = [s["text"] for s in load_corpus()["secrets"]] + [t for _, t, _ in EXAMPLES]
# Pieces of keywords, values and separators, glued without spaces: secrets that run into each
# other and into markers are where the rules' boundaries are tested.
_FRAGMENTS = [
    *("password", "PASSWORD", "api_", "key", "token", "secret", "--", "=", ":", '"', "'"),
    *(" ", "\n", "_", "-", ".", "://", "u:", "@", "?", "&", "sig=", "(", "[", "$", "{"),
    *("Bearer ", "Basic ", "eyJ", "ghp_", "glpat-", "xoxb-", "123-", "sk-", "hf_", "SG."),
    *("AccountKey=", "AKIAQWERTY234567ABCD", "hunter2xyz!", filler(36), filler(88), JWT),
    *("«", "»", "«redacted:jwt:12345678»", RSA_KEY, "-----BEGIN RSA PRIVATE KEY-----"),
]
_texts = st.lists(
    st.one_of(
        st.sampled_from(_PIECES),
        st.sampled_from(NEAR_MISSES),
        st.sampled_from(_FRAGMENTS),
        st.text(max_size=8),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(_texts)
def test_findings_are_sorted_disjoint_spans_of_known_rules(text: str):
    findings = scan(text)
    assert all(f.rule in RULE_IDS and 0 <= f.start < f.end <= len(text) for f in findings)
    assert all(a.end <= b.start for a, b in itertools.pairwise(findings))


@settings(max_examples=200, deadline=None)
@given(_texts)
def test_redacted_text_scans_clean_and_redacts_to_itself(text: str):
    out, redactions = redact(text, KEY)
    assert scan(out) == []
    assert redact(out, KEY) == (out, [])
    # Everything but the secrets is kept, in place.
    expected, last = [], 0
    for f, r in zip(scan(text), redactions, strict=True):
        expected += [text[last : f.start], out[r.start : r.end]]
        last = f.end
    assert "".join(expected) + text[last:] == out


@pytest.mark.parametrize(
    "text",
    [
        "password=" * 30_000,
        "eyJ" * 80_000,
        "sk-" * 80_000,
        "key: " * 50_000,
        'key="' * 50_000,
        "://a:" * 50_000,
        "-----BEGIN A " * 20_000,
        ("a" * 60 + "password=hunter2xyz! ") * 3_000,
    ],
    ids=lambda t: repr(t[:12]),
)
def test_repetitive_input_is_scanned_in_linear_time(text: str):
    """Each of these took minutes when a repeated keyword re-scanned the rest of the text."""
    findings = scan(text)
    assert all(f.end <= len(text) for f in findings)


@pytest.mark.parametrize("name", ["Authorization", "cookie", "Set-Cookie", "proxy_authorization"])
@pytest.mark.parametrize("value", ["session=abc; theme=dark", "sid=1", "x"])
def test_credential_carriers_are_redacted_whole(name: str, value: str):
    text, found = redact(value, KEY, name)
    assert [f.rule for f in scan(value, name)] == ["credential-carrier"]
    assert value not in text and text.startswith("«redacted:credential-carrier:")
    assert [r.rule for r in found] == ["credential-carrier"]
    assert redact(text, KEY, name) == (text, [])  # idempotent
    assert scan(value, "authorized_by") == []  # only the carriers' own names


def test_a_carrier_holding_a_known_token_is_redacted_by_its_rule():
    bearer = f"Bearer ghp_{filler(36)}"
    text, found = redact(bearer, KEY, "Authorization")
    assert [r.rule for r in found] == ["github-token"] and text.startswith("Bearer «")
    assert redact(text, KEY, "Authorization") == (text, [])
