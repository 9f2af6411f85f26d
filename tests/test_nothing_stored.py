"""Nothing a real log stores holds a planted secret or confirms a guess of a redacted value.

A real server (LevelDB on disk) records an approved action whose parameters carry secrets and
whose result is a four-digit PIN, and is offered statements with secrets in clear (refused).
Then every byte the log keeps — every LevelDB key and value (entries, tiles, checkpoints,
statement state, the search index) and every file in its data directory — is searched for each
planted secret, and for the SHA-256 (hex and raw) of every guess in a small dictionary applied
to each redacted field and to the result, under both canonical forms a guesser might try. The
server's own log lines are searched for the secrets and for the parameters themselves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel
import pytest
from affidavit.client.actor import Actor
from affidavit.client.client import Client
from affidavit.client.errors import RefusedError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.canonical import canonical_json
from affidavit.statements.signing import IdentityKey

from tests.clientworld import policy_of
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess

GITHUB_TOKEN = "ghp_" + "Zq8rT2wX9vB4nM6kL1pY3hJ5gF7dS0aQ2eR4"
DB_PASSWORD = "Tr0ub4dor&3"
DSN_PASSWORD = "hunter2pw9"
PIN = "4821"
STRIPE_KEY = "rk_live_" + "Lq7Wm2Xr9Tz4Kv8Nb3Hc6Jd"
WRAPPED = base64.b64encode(STRIPE_KEY.encode()).decode()
PARAMS: dict[str, Any] = {
    "repo": "acme/web",
    "title": "Rotate the deploy credentials",
    "auth": {"token": GITHUB_TOKEN},
    "db": {"user": "app", "password": DB_PASSWORD},
    "dsn": f"postgres://app:{DSN_PASSWORD}@db.internal:5432/payments",
    "env": [{"name": "STRIPE_SECRET", "value": WRAPPED}],
}
RESULT = {"pin": PIN, "ok": True}
PLANTED = (GITHUB_TOKEN, DB_PASSWORD, DSN_PASSWORD, STRIPE_KEY, WRAPPED)
REFUSED_SECRET = "ghp_" + "Refused0Secret1In2Clear3Text4Here5678"

DICTIONARY = ("password", "123456", "hunter2", "letmein", "Tr0ub4dor", "admin", "changeme")
"""Common guesses; each redacted field is also guessed right, as an attacker eventually does."""


def _with(value: Any, path: tuple[str, ...], leaf: Any) -> Any:
    if not path:
        return leaf
    return {**value, path[0]: _with(value[path[0]], path[1:], leaf)}


def _guesses() -> Iterator[bytes]:
    """Every text a guesser would hash: each field's guesses, whole parameter sets holding
    them (in RFC 8785 form and in Python's sorted-keys form), the result's PIN guesses."""
    fields = {
        ("auth", "token"): (*DICTIONARY, GITHUB_TOKEN),
        ("db", "password"): (*DICTIONARY, DB_PASSWORD),
        ("dsn",): tuple(
            f"postgres://app:{g}@db.internal:5432/payments" for g in (*DICTIONARY, DSN_PASSWORD)
        ),
    }
    for path, guesses in fields.items():
        for guess in guesses:
            yield guess.encode()
            params = _with(PARAMS, path, guess)
            yield canonical_json(params).encode()
            yield json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    for pin in [f"{n:04d}" for n in range(0, 10_000, 97)] + [PIN]:
        result = {**RESULT, "pin": pin}
        yield pin.encode()
        yield canonical_json(result).encode()
        yield json.dumps(result, sort_keys=True, separators=(",", ":")).encode()


def _stored_bytes(data_dir: Path) -> bytes:
    """Every key and value of the log's LevelDB (decompressed), then every file as it is."""
    parts: list[bytes] = []
    db = plyvel.DB(str(data_dir / "db") if (data_dir / "db").exists() else str(data_dir))
    try:
        for key, value in db.iterator():
            parts += (key, value)
    finally:
        db.close()
    parts += (p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file())
    return b"\x00".join(parts)


def _hex_windows(blob: bytes) -> set[bytes]:
    """Every 64-character window of every run of lowercase hex in blob."""
    windows: set[bytes] = set()
    for run in re.findall(rb"[0-9a-f]{64,}", blob):
        windows.update(run[i : i + 64] for i in range(len(run) - 63))
    return windows


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("stored")
    factory = ServerFactory(tmp)
    try:
        s = factory(entry_format="statements")
        with Client(s.address, policy_of(s), token=s.auditor_token, timeout=RPC_TIMEOUT) as client:
            admin = Actor(client, IdentityKey.load(s.data_dir / "admin.key"))
            alice_key, bot_key = IdentityKey.generate("alice"), IdentityKey.generate("bot")
            admin.register("alice", pb.HUMAN, alice_key.public_key)
            admin.register("bot", pb.AGENT, bot_key.public_key, owner="alice")
            alice, bot = Actor(client, alice_key), Actor(client, bot_key)
            grant = alice.grant(
                "bot", tools=["db.*"], resources=["secret:prod/payments/*"], access=[pb.UPDATE]
            )
            approval = alice.approve("rotate-1", PARAMS, agent_id="bot", comment="rotate now")
            with bot.action(
                "db.rotate_credentials",
                "secret:prod/payments/db",
                pb.UPDATE,
                PARAMS,
                grant_ids=[grant.statement_id],
                action_id="rotate-1",
                approval_id=approval.statement_id,
                decision=pb.ALLOW_IF_APPROVED,
            ) as act:
                act.result = RESULT
                act.effect_ref = "secret:prod/payments/db@v8"
            assert act.intent_recorded is not None
            # The approval of the real parameters binds the redacted INTENT.
            assert act.intent_recorded.receipt.verdict == "IN_SCOPE"
            # A statement with a secret in clear, signed by hand, is refused and kept nowhere.
            leaf = build.SessionSigner(alice_key).sign(
                pb.Grant(
                    grantee="bot",
                    tools=["db.*"],
                    resources=["db:x"],
                    access=[pb.READ],
                    justification=f"use {REFUSED_SECRET}",
                )
            )
            with pytest.raises(RefusedError) as refused:
                client.append_opaque(leaf)
            assert REFUSED_SECRET[4:12] not in refused.value.message
        assert s.stop() == 0
        yield s
    finally:
        factory.cleanup()


def test_no_planted_secret_is_stored(recorded: ServerProcess) -> None:
    blob = _stored_bytes(recorded.data_dir)
    assert b"acme/web" in blob  # the search reads the real store: what is shown is there
    for secret in (*PLANTED, REFUSED_SECRET):
        for form in (secret, secret[: len(secret) // 2], secret[len(secret) // 2 :]):
            assert form.encode() not in blob


def test_no_stored_digest_confirms_a_guess(recorded: ServerProcess) -> None:
    blob = _stored_bytes(recorded.data_dir)
    hex_stored = _hex_windows(blob)
    checked = 0
    for guess in _guesses():
        h = hashlib.sha256(guess)
        assert h.hexdigest().encode() not in hex_stored, guess
        assert h.digest() not in blob, guess
        checked += 1
    assert checked > 300


def test_server_log_lines_hold_no_parameters(recorded: ServerProcess) -> None:
    lines = recorded.all_output
    assert "affidavit serving" in lines
    for text in (*PLANTED, REFUSED_SECRET, PARAMS["title"], PIN + '"'):
        assert text not in lines
