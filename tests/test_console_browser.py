"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright.

The README's story, walked through the console: log in, search for the out-of-scope attempt,
open the pull request's action, see its chain of authority (Alice's grant, her approval bound
to the PR's parameters), watch the page verify it with WebCrypto, download the evidence and
check it with `affidavit verify-bundle`. Then the same page served through a proxy that flips
one byte of the evidence must turn red. Screenshots of each page go to build/console-screenshots
(or $AFFIDAVIT_ARTIFACTS): look at them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from affidavit.client.actor import Actor
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.ids import uuid7
from aiohttp import ClientSession, web
from playwright.sync_api import Browser, Page, sync_playwright

from tests.consoleproc import chromium
from tests.consolestory import COMMIT, Story, story
from tests.serverproc import AFFIDAVIT, ROOT, clean_env

__all__ = ["story"]  # the fixture, used by name

SHOTS = Path(os.environ.get("AFFIDAVIT_ARTIFACTS", ROOT / "build")) / "console-screenshots"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in(page: Page, story: Story, base: str, *, token: str | None = None) -> None:
    page.goto(f"{base}/console/")
    page.fill("#token", story.server.auditor_token if token is None else token)
    page.fill("#log_key", story.server.verifier_key)
    page.fill("#witness_keys", story.witness_key)
    page.fill("#quorum", "1")
    page.click("button[type=submit]")


def verification(page: Page) -> str:
    """The verification box's final state: "verified" or "failed"."""
    page.wait_for_selector(".verification.verified, .verification.failed", timeout=WAIT_MS)
    box = page.locator("#verification")
    return "verified" if "verified" in (box.get_attribute("class") or "") else "failed"


def test_the_readme_story_through_the_console(
    story: Story, browser: Browser, tmp_path: Path
) -> None:
    page = browser.new_page(accept_downloads=True)
    log_in(page, story, story.console.base)
    page.wait_for_selector("#origin")
    assert page.text_content("#origin") == "example.com/test"
    shot(page, "01-log")

    page.click("text=Search")
    page.select_option("#verdict", "out-of-scope")
    page.click("#search button[type=submit]")
    page.wait_for_selector("#results")
    results = page.text_content("#results") or ""
    assert "shell.exec" in results and "OUT_OF_SCOPE" in results
    assert "github.create_pull_request" not in results
    shot(page, "02-search-out-of-scope")

    page.goto(story.console.url(f"/action/{story.pr_action}"))
    assert verification(page) == "verified", page.text_content("#verification")
    assert "Verified in your browser" in (page.text_content("#verification") or "")
    chain = page.locator("#chain")
    text = chain.text_content() or ""
    assert "alice@example.com" in text and story.grant_id in text
    assert "bound to these parameters" in text
    assert page.locator("#chain g.node.bad").count() == 0
    assert page.text_content("#effect") == COMMIT
    shot(page, "03-action-verified")

    with page.expect_download() as download:
        page.click("#download")
    bundle = tmp_path / "evidence.json"
    download.value.save_as(bundle)
    checked = subprocess.run(
        [
            str(AFFIDAVIT),
            "verify-bundle",
            str(bundle),
            "--log-key",
            story.server.verifier_key,
            "--witness-key",
            story.witness_key,
            "--quorum",
            "1",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert story.pr_action in checked.stdout

    page.goto(story.console.url(f"/action/{story.stray_action}"))
    assert verification(page) == "verified"  # recorded faithfully: the evidence holds
    bad = page.locator("#chain g.node.bad")
    assert bad.count() == 1 and bad.get_attribute("data-bad") == "tool-not-granted"
    assert page.text_content("#verdict") == "OUT_OF_SCOPE"
    shot(page, "04-action-out-of-scope")

    page.goto(story.console.url(f"/session/{story.session_id}"))
    assert page.locator("table.timeline tr[data-leaf-hash]").count() == 4
    shot(page, "05-session")
    page.goto(story.console.url("/identity/code-agent"))
    assert "active" in (page.text_content("#status") or "")
    shot(page, "06-identity")
    page.goto(story.console.url(f"/action/{uuid7()}"))
    assert page.text_content("#error-title") == "Not in the log"
    shot(page, "07-unknown-action")
    page.close()


def test_an_action_with_id_dot_dot_opens_from_its_row(story: Story, browser: Browser) -> None:
    """A browser resolves a path segment ".." (escaped or not) before it asks, so /action/..
    would open the log's page: the row of an action whose id is ".." links it by ?id=
    (console.filters.action_href), and clicked it opens that action, verified."""
    assert story.agent is not None
    policy = TrustPolicy(story.server.verifier_key, (story.witness_key,), 0)
    client = Client(story.server.address, policy, token=story.server.auditor_token)
    with Actor(client, story.agent).action(
        "github.get_file",
        "repo:acme/dots",
        pb.READ,
        {"path": "README.md"},
        grant_ids=[story.grant_id],
        action_id="..",
    ):
        pass
    client.close()
    story.cosign()
    page = browser.new_page()
    log_in(page, story, story.console.base)
    page.wait_for_selector("#origin")
    page.goto(story.console.url("/search?resource_prefix=repo%3Aacme%2Fdots"))
    page.wait_for_selector("#results")
    page.locator('#results a:text-is("..")').first.click()
    assert verification(page) == "verified", page.text_content("#verification")
    assert page.url.endswith("/console/action?id=..&agent=code-agent"), page.url
    assert "repo:acme/dots" in (page.text_content("main") or "")
    shot(page, "10-action-dot-dot")
    page.close()


def test_a_wrong_token_gets_a_clear_page(story: Story, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, story, story.console.base, token="afv_not-the-token")
    page.wait_for_selector("#login-error")
    assert "did not accept this auditor token" in (page.text_content("#login-error") or "")
    shot(page, "08-wrong-token")
    page.close()


def test_without_pinned_keys_nothing_shows_green(story: Story, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    log_in(page, story, story.console.base)
    page.wait_for_selector("#origin")
    page.evaluate("localStorage.clear()")  # as if logged in from elsewhere: nothing pinned here
    page.goto(story.console.url(f"/action/{story.pr_action}"))
    assert verification(page) == "failed"
    assert "no log key is pinned" in (page.text_content("#verification") or "")
    context.close()


class FlippingProxy:
    """An HTTP proxy in front of the console that changes one character of every action
    page's embedded evidence (a base64 character of its first leaf), as a tampering server
    or network would."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.base = ""
        self.flipped = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _flip(self, html: str) -> str:
        marker = html.find('id="evidence"')
        at = html.find('"leaf": "', marker) + len('"leaf": "') + 8 if marker >= 0 else -1
        if marker < 0 or at < 8:
            return html
        self.flipped += 1
        swapped = "B" if html[at] != "B" else "C"
        return html[:at] + swapped + html[at + 1 :]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                data=await request.read(),
                allow_redirects=False,
            ) as r,
        ):
            body = await r.read()
            if request.path.startswith("/console/action/"):
                body = self._flip(body.decode()).encode()
            headers = {
                k: v
                for k, v in r.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            return web.Response(status=r.status, body=body, headers=headers)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> FlippingProxy:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def test_a_flipped_byte_turns_the_page_red(story: Story, browser: Browser) -> None:
    with FlippingProxy(story.console.base) as proxy:
        context = browser.new_context()
        page = context.new_page()
        log_in(page, story, proxy.base)
        page.wait_for_selector("#origin")
        page.goto(f"{proxy.base}/console/action/{story.pr_action}")
        assert proxy.flipped == 1
        assert verification(page) == "failed"
        text = page.text_content("#verification") or ""
        assert "NOT VERIFIED" in text and "not included in the checkpoint" in text
        shot(page, "09-tampered")
        context.close()
