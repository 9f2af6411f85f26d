"""The investigator's console over HTTP, as any client reads it: login, pages, errors.

The browser's side (verification in the page, screenshots) is tests/test_console_browser.py.
"""

from __future__ import annotations

import http.cookiejar
import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from affidavit.console import reads
from affidavit.merkle import keys
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.ids import uuid7
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.consoleproc import ConsoleProcess
from tests.consolestory import COMMIT, Story, story, tell
from tests.serverproc import ServerFactory

__all__ = ["story"]  # the fixture, used by name


class Reader:
    """A person at the console, without a browser: cookies kept, redirects followed."""

    def __init__(self, story: Story) -> None:
        self.story = story
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(status, final URL, body) of GET path, or of POST data to it."""
        body = None if data is None else urllib.parse.urlencode(data).encode()
        try:
            with self.opener.open(self.story.console.url(path), body, timeout=60) as r:
                return r.status, r.url, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.url, e.read().decode()

    def login(self, token: str | None = None, log_key: str | None = None) -> tuple[int, str, str]:
        s = self.story
        return self.get(
            "/login",
            {
                "token": s.server.auditor_token if token is None else token,
                "log_key": s.server.verifier_key if log_key is None else log_key,
                "witness_keys": s.witness_key,
                "quorum": "1",
            },
        )


def test_pages_need_a_login(story: Story) -> None:
    status, url, body = Reader(story).get("/search?verdict=out-of-scope")
    assert status == 200 and url.endswith("/console/login")
    assert "Log in to the console" in body


def test_a_wrong_token_gets_a_clear_page_and_is_never_echoed(story: Story) -> None:
    wrong = "afv_" + "x" * 43
    status, _, body = Reader(story).login(token=wrong)
    assert status == 401
    assert "did not accept this auditor token" in body
    assert wrong not in body
    status, url, _ = Reader(story).get("/")
    assert url.endswith("/login")


def test_a_wrong_log_key_is_refused_at_login(story: Story) -> None:
    other = keys.generate_key("example.com/test", keys.ALG_ED25519)[1]
    status, _, body = Reader(story).login(log_key=other)
    assert status == 401
    assert "does not verify under the key you pinned" in body
    status, _, body = Reader(story).login(log_key="not a key")
    assert status == 401 and "not usable" in body


def test_the_log_page_shows_the_checkpoint_and_witnesses(story: Story) -> None:
    reader = Reader(story)
    status, url, body = reader.login()
    assert status == 200 and url.endswith("/console/"), body
    assert "example.com/test" in body
    assert "witness-1.example" in body
    size = story.server.checkpoint().size
    assert f'<dd id="size">{size}</dd>' in body
    # The token is held server-side: never in a page, and the cookie is only a session id.
    assert story.server.auditor_token not in body
    assert all(story.server.auditor_token not in (c.value or "") for c in reader.jar)


def test_search_finds_the_out_of_scope_attempt_and_pages(story: Story) -> None:
    reader = Reader(story)
    reader.login()
    _, _, body = reader.get("/search?verdict=out-of-scope")
    assert story.stray_action[:13] in body
    assert "shell.exec" in body and "OUT_OF_SCOPE" in body
    assert story.pr_action[:13] not in body
    _, _, page1 = reader.get("/search?actor=code-agent&page_size=2")
    assert 'id="next"' in page1 and "more follow" in page1
    start = page1.split('id="next" href="')[1].split('"')[0].split("start=")[1].split("&")[0]
    _, _, page2 = reader.get(f"/search?actor=code-agent&page_size=2&start={start}")
    rows1 = page1.count("<tr data-leaf-hash")
    rows2 = page2.count("<tr data-leaf-hash")
    assert rows1 == 2 and rows2 == 2  # the agent made 4 statements: 2 INTENTs, 2 OUTCOMEs
    assert 'id="next"' not in page2
    status, _, body = reader.get("/search?verdict=maybe")
    assert status == 400 and "verdict must be one of" in body


def test_the_action_page_shows_the_chain_and_embeds_the_evidence(story: Story) -> None:
    reader = Reader(story)
    reader.login()
    status, _, body = reader.get(f"/action/{story.pr_action}")
    assert status == 200
    assert "IN_SCOPE" in body
    assert "alice@example.com" in body and story.grant_id in body
    assert "bound to these parameters" in body
    assert COMMIT in body
    evidence = json.loads(
        body.split('<script type="application/json" id="evidence">')[1].split("</script>")[0]
    )
    assert evidence["format"] == "affidavit-bundle/1"
    assert len(evidence["entries"]) >= 4  # identities, grant, approval, INTENT, OUTCOME
    _, _, stray = reader.get(f"/action/{story.stray_action}")
    assert 'data-bad="tool-not-granted"' in stray and "OUT_OF_SCOPE" in stray


def test_evidence_downloads_as_the_bundle(story: Story) -> None:
    reader = Reader(story)
    reader.login()
    status, _, body = reader.get(f"/evidence/{story.pr_action}")
    assert status == 200
    assert json.loads(body)["format"] == "affidavit-bundle/1"


def test_unknown_things_get_clear_pages(story: Story) -> None:
    reader = Reader(story)
    reader.login()
    status, _, body = reader.get(f"/action/{uuid7()}")
    assert status == 404 and "Not in the log" in body and "Traceback" not in body
    status, _, body = reader.get("/entry/999999")
    assert status == 404 and "has no entry 999999" in body
    status, _, body = reader.get("/entry/abc")
    assert status == 404
    status, _, body = reader.get("/identity/nobody")
    assert status == 404
    status, _, body = reader.get("/no/such/page")
    assert status == 404 and "no page" in body


def test_session_identity_and_entry_pages(story: Story) -> None:
    reader = Reader(story)
    reader.login()
    status, _, body = reader.get(f"/session/{story.session_id}")
    assert status == 200
    assert body.count("<tr data-leaf-hash") == 4 and 'class="gap"' not in body
    status, _, body = reader.get("/identity/code-agent")
    assert status == 200 and "alice@example.com" in body and "active" in body
    status, _, body = reader.get("/entry/0")
    assert status == 200 and "REGISTER" in body


def test_an_expired_login_is_told_so(
    story: Story, tmp_path_factory: pytest.TempPathFactory
) -> None:
    console = ConsoleProcess(story.server.address, "--session-timeout", "1").start()
    try:
        reader = Reader(Story(**{**story.__dict__, "console": console}))
        assert reader.login()[1].endswith("/console/")
        time.sleep(1.5)  # the console's idle timeout, in real time: it is a real process
        _, url, body = reader.get("/")
        assert url.endswith("/login?expired=1") and "expired" in body
    finally:
        console.stop()


def test_a_log_that_stops_mid_session_gets_a_clear_page(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    signer, verifier = keys.generate_key("witness-2.example", keys.ALG_COSIGNATURE_V1)
    factory = ServerFactory(tmp_path_factory.mktemp("console-stop"))
    try:
        server = factory("--witness-key", verifier, entry_format="statements")
        s = tell(server, verifier)
        s.witness_signer = signer
        s.cosign()
        s.console.start()
        reader = Reader(s)
        assert reader.login()[0] == 200
        server.stop()
        status, _, body = reader.get(f"/action/{s.pr_action}")
        assert status == 503 and "cannot be reached" in body and "Traceback" not in body
        s.console.stop()
    finally:
        factory.cleanup()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), unique=True, max_size=25),
    st.sampled_from(["agent-a", "agent-b"]),
)
def test_session_chains_show_exactly_the_missing_sequences(present: list[int], issuer: str) -> None:
    """Gaps in a session are exactly the sequence numbers with no statement, in runs."""
    items = []
    for n, seq in enumerate(sorted(present, reverse=True)):  # any arrival order
        statement = pb.Statement(header=pb.Header(issuer=issuer, sequence=seq))
        items.append((statement, reads.row_of(n, _leaf(statement))))
    (chain,) = reads.chains(items) if items else (reads.Chain(issuer, (), ()),)
    shown: list[int] = []
    for item in chain.items:
        if isinstance(item, reads.Gap):
            assert item.first <= item.last
            shown.extend(range(item.first, item.last + 1))
        else:
            shown.append(item.sequence)
    expected = list(range(max(present) + 1)) if present else []
    assert shown == expected
    gaps = [i for i in chain.items if isinstance(i, reads.Gap)]
    assert all(a.last + 1 < b.first for a, b in itertools.pairwise(gaps))  # maximal runs
    assert sum(g.last - g.first + 1 for g in gaps) == len(expected) - len(present)


def _leaf(statement: pb.Statement) -> bytes:
    return pb.SignedStatement(statement=statement.SerializeToString()).SerializeToString()
