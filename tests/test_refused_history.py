"""Refused attempts in an investigation, on a real server: identity history, search, OCSF.

The stolen-key story: an admin registers alice (human) and bot (agent); alice grants bot; bot
acts; a thief copies bot's key. The key is rotated: the thief's next attempts with the old key
are refused — the first on the record at once, the rest counted and recorded when the log's
refusal window closes, as one aggregate. Then bot is revoked, and its new key's attempts are
refused too. `identity history bot` must show every one of those attempts (the records
proven and checked against the log's key), `search --refused` must find them by the claimed
identity and key together, and their OCSF events must validate against our schema.
"""

from __future__ import annotations

import http.cookiejar
import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from affidavit.client.actor import Actor
from affidavit.client.client import Client
from affidavit.client.errors import RefusedError, VerificationError
from affidavit.client.history import refusal_of
from affidavit.client.proven import ProvenEntry
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import keys
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.signing import IdentityKey

from affidavit import merkle
from tests import serverproc
from tests.consoleproc import ConsoleProcess
from tests.serverproc import RPC_TIMEOUT, ServerProcess
from tests.test_ocsf import errors

WINDOW_S = 0.5
"""The server's refusal window: short, so the counted remainder reaches the record quickly."""
OLD_KEY_TRIES = 6
NEW_KEY_TRIES = 2
RECORD_WAIT_S = 60.0


@dataclass
class Story:
    server: ServerProcess
    work: Path
    old_key: str
    new_key: str
    grant_id: str

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        env = {
            "AFFIDAVIT_SERVER": self.server.address,
            "AFFIDAVIT_LOG_KEY": self.server.verifier_key,
            "AFFIDAVIT_TOKEN": self.server.auditor_token,
        }
        r = subprocess.run(
            [str(serverproc.AFFIDAVIT), *args],
            cwd=self.work,
            env=serverproc.clean_env(env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in r.stderr, r.stderr
        assert r.returncode == code, r.stderr
        return r

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


def _attempt(thief: Actor, grant_id: str) -> None:
    """One refused action by the thief (each a new statement, so a new leaf)."""
    with pytest.raises(RefusedError):
        thief.submit(
            thief.action(
                "github.push", "repo:acme/web", pb.UPDATE, {"force": True}, grant_ids=[grant_id]
            ).intent
        )


def _refused_attempts(server: ServerProcess) -> int:
    """Attempts on the record so far (the records' counts summed)."""
    response = server.stub.Search(pb.SearchRequest(refused=True), timeout=RPC_TIMEOUT)
    total = 0
    for hit in response.hits:
        (entry,) = server.all_entries(hit.index, hit.index + 1)
        total += build.statement_of(entry.data).refusal.count
    return total


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    tmp = tmp_path_factory.mktemp("refused")
    server = ServerProcess(
        tmp / "srv",
        "--refusal-window",
        str(WINDOW_S),
        origin="example.com/refused",
        entry_format="statements",
    )
    try:
        server.start()
        policy = TrustPolicy(server.verifier_key)
        alice, bot = IdentityKey.generate("alice"), IdentityKey.generate("bot")
        bot2 = IdentityKey.generate("bot")
        with Client(server.address, policy, timeout=RPC_TIMEOUT) as client:
            admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
            admin.register("alice", pb.HUMAN, alice.public_key)
            admin.register("bot", pb.AGENT, bot.public_key, owner="alice")
            grant = Actor(client, alice).grant(
                "bot", tools=["github.*"], resources=["repo:acme/*"], access=[pb.UPDATE]
            )
            grant_id = grant.statement_id
            with Actor(client, bot).action(
                "github.push", "repo:acme/web", pb.UPDATE, {}, grant_ids=[grant_id]
            ):
                pass
            Actor(client, alice).revoke_grant(grant_id, reason="bot's key was copied")
            admin.rotate("bot", bot2.public_key)
        # The thief, from its own connection (one source), with the old key.
        with Client(server.address, policy, timeout=RPC_TIMEOUT, retries=0) as client:
            thief = Actor(client, bot)
            for _ in range(OLD_KEY_TRIES):
                _attempt(thief, grant_id)
        with Client(server.address, policy, timeout=RPC_TIMEOUT) as client:
            Actor(client, IdentityKey.load(server.data_dir / "admin.key")).revoke("bot")
        with Client(server.address, policy, timeout=RPC_TIMEOUT, retries=0) as client:
            thief = Actor(client, bot2)
            for _ in range(NEW_KEY_TRIES):
                _attempt(thief, grant_id)
        deadline = time.monotonic() + RECORD_WAIT_S
        while _refused_attempts(server) < OLD_KEY_TRIES + NEW_KEY_TRIES:
            assert time.monotonic() < deadline, "the refused attempts never reached the record"
            time.sleep(0.2)
        yield Story(server, tmp, bot.key_id, bot2.key_id, grant_id)
    finally:
        server.kill()


def test_identity_history_shows_every_refused_attempt(story: Story) -> None:
    h = story.json("identity", "history", "bot")
    old, new = h["keys"]
    assert (old["key_id"], new["key_id"]) == (story.old_key, story.new_key)
    assert (old["ended_by"], new["ended_by"]) == ("rotation", "revocation")
    refused = h["refused"]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in refused:
        assert r["claimed_issuer"] == "bot" and r["reason"] == "key-retired"
        by_key.setdefault(r["claimed_key_id"], []).append(r)
    old_records = by_key[story.old_key]
    # The first attempt at once; the rest counted, then recorded as one aggregate.
    assert [r["count"] for r in old_records] == [1, OLD_KEY_TRIES - 1]
    assert old_records[1]["first_ms"] <= old_records[1]["last_ms"]
    assert sum(r["count"] for r in by_key[story.new_key]) == NEW_KEY_TRIES
    # Each after the key's span ended; counted in the key table.
    assert all(r["index"] > old["valid_until_index"] for r in old_records)
    assert all(r["index"] > new["valid_until_index"] for r in by_key[story.new_key])
    assert (old["refused_attempts"], new["refused_attempts"]) == (OLD_KEY_TRIES, NEW_KEY_TRIES)
    assert all(r["source"].startswith("ipv4:127.0.0.1:") for r in refused)
    text = story.run("identity", "history", "bot").stdout
    attempts = OLD_KEY_TRIES + NEW_KEY_TRIES
    assert f"refused attempts: {attempts} in {len(refused)} record(s) signed by the log" in text
    assert "key-retired" in text and "CLAIMED KEY" in text
    # Alice was never claimed by anyone refused.
    alice = story.json("identity", "history", "alice")
    assert alice["refused"] == []
    assert (
        "refused attempts: none on the record" in story.run("identity", "history", "alice").stdout
    )


def test_search_refused_by_claimed_identity_and_key(story: Story) -> None:
    def hits(*criteria: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = story.json("search", "--refused", *criteria)["hits"]
        return found

    everything = hits()
    by_actor = hits("--actor", "bot")
    assert by_actor == everything and all(h["kind"] == "refusal" for h in by_actor)
    old = hits("--actor", "bot", "--key-id", story.old_key)
    new = hits("--key-id", story.new_key)
    assert old and new and sorted(h["index"] for h in old + new) == [h["index"] for h in everything]
    assert hits("--actor", "alice") == []
    assert hits("--actor", "alice", "--key-id", story.old_key) == []  # both must hold
    # Without --refused, what an identity or key signed: never the log's records.
    signed = story.json("search", "--key-id", story.old_key)["hits"]
    assert signed and all(h["kind"] != "refusal" for h in signed)


def test_ocsf_lines_of_refusals_and_grant_revocations_validate(story: Story) -> None:
    story.run("export", "--format", "ocsf", "--out", "events.jsonl")
    events = [json.loads(x) for x in (story.work / "events.jsonl").read_text().splitlines()]
    for document in events:
        assert errors(document) == [], document
    refusals = [e for e in events if e["unmapped"]["affidavit"]["statement_kind"] == "refusal"]
    assert sum(e["count"] for e in refusals) == OLD_KEY_TRIES + NEW_KEY_TRIES
    for e in refusals:
        assert (e["activity_name"], e["status"], e["status_detail"]) == (
            "Create",
            "Failure",
            "key-retired",
        )
        assert e["actor"]["user"]["uid"] == "bot" and e["is_alert"] is True
        assert e["actor"]["user"]["credential_uid"] in (story.old_key, story.new_key)
        assert e["src_endpoint"]["ip"] == "127.0.0.1" and e["src_endpoint"]["port"] > 0
        assert e["start_time"] <= e["end_time"]
    (revocation,) = [e for e in events if e["api"]["operation"] == "grant.revoke"]
    assert (revocation["activity_name"], revocation["actor"]["user"]["uid"]) == ("Delete", "alice")
    assert revocation["resources"] == [{"uid": f"grant:{story.grant_id}", "type": "grant"}]
    assert all(e["activity_id"] != 99 or e["api"]["operation"] == "session.close" for e in events)
    # The refusals alone, as a selection (each proven included).
    out = story.run("export", "--format", "ocsf", "--refused").stdout.splitlines()
    assert [json.loads(x)["metadata"]["uid"] for x in out] == [
        e["metadata"]["uid"] for e in refusals
    ]


def test_a_refusal_not_signed_by_the_log_does_not_verify(story: Story) -> None:
    """What identity history shows of a refusal is checked against the log's key: a record
    signed by anyone else (here an admin's key, as a log operator without the log key might
    forge one) is a VerificationError, never shown."""
    public = keys.parse_verifier_key(story.server.verifier_key).public_key
    forger = IdentityKey.generate("log")
    leaf = build.SessionSigner(forger).sign(
        pb.Refusal(key_id=story.old_key, identity_id="bot", reason="key-retired", count=1)
    )
    forged = ProvenEntry(0, leaf, merkle.leaf_hash(leaf), (), 0, "")
    with pytest.raises(VerificationError, match="not the log's own"):
        refusal_of(forged, public)


def test_the_console_identity_page_shows_the_refused_attempts(story: Story) -> None:
    """The console reads an identity as `identity history` does (one reading, client.history):
    each key's refused-attempt count and the log's records, and none for alice."""
    console = ConsoleProcess(story.server.address).start()
    try:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = {"token": story.server.auditor_token, "log_key": story.server.verifier_key}
        with opener.open(console.url("/login"), urllib.parse.urlencode(form).encode()) as r:
            assert r.status == 200 and r.url.endswith("/console/")

        def page(path: str) -> str:
            with opener.open(console.url(path), timeout=60) as r:
                assert r.status == 200
                text: str = r.read().decode()
                return text

        bot, alice = page("/identity/bot"), page("/identity/alice")
    finally:
        console.stop()
    records = story.json("identity", "history", "bot")["refused"]
    table = bot.split('<table id="refused">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr><td>") == len(records)
    for r in records:
        assert f'/entry/{r["index"]}"' in table
    assert table.count("key-retired") == len(records)
    keys = bot.split('<table id="keys">', 1)[1].split("</table>", 1)[0]
    assert f'<span class="badge bad">{OLD_KEY_TRIES}</span>' in keys
    assert f'<span class="badge bad">{NEW_KEY_TRIES}</span>' in keys
    assert 'id="refused-none"' in alice and '<table id="refused">' not in alice
