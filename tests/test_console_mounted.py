"""The console a log serves itself: `affidavit serve --http-listen` mounts it under /console/.

The console tests' key flows (login, search, action, evidence, error pages) run here against
the mounted console of a real serve process (the same test functions as tests/test_console.py,
with this module's story), then what is particular to mounting: every link and asset under the
prefix, the tlog-tiles API still at the root, --no-console, the log's own mTLS, and one real
browser that logs in at /console/ and sees the action page verify (screenshots beside the
standalone console's).
"""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from affidavit.client.client import Tls
from affidavit.merkle import keys
from playwright.sync_api import Browser

from tests.consoleproc import MountedConsole
from tests.consolestory import Story, tell
from tests.serverproc import AFFIDAVIT, ServerFactory, clean_env
from tests.test_console import (
    Reader,
    test_a_wrong_token_gets_a_clear_page_and_is_never_echoed,
    test_evidence_downloads_as_the_bundle,
    test_pages_need_a_login,
    test_search_finds_the_out_of_scope_attempt_and_pages,
    test_session_identity_and_entry_pages,
    test_the_action_page_shows_the_chain_and_embeds_the_evidence,
    test_the_log_page_shows_the_checkpoint_and_witnesses,
    test_unknown_things_get_clear_pages,
)
from tests.test_console_browser import browser, log_in, shot, verification
from tests.tlspki import Pki, TlsServer, pki

__all__ = [  # the shared tests and fixtures, collected and used here by name
    "browser",
    "pki",
    "test_a_wrong_token_gets_a_clear_page_and_is_never_echoed",
    "test_evidence_downloads_as_the_bundle",
    "test_pages_need_a_login",
    "test_search_finds_the_out_of_scope_attempt_and_pages",
    "test_session_identity_and_entry_pages",
    "test_the_action_page_shows_the_chain_and_embeds_the_evidence",
    "test_the_log_page_shows_the_checkpoint_and_witnesses",
    "test_unknown_things_get_clear_pages",
]

_LINK = re.compile(r'(?:href|src|action)="([^"]*)"')


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """The README's story in a log serving HTTP, its console mounted (the default)."""
    signer, verifier = keys.generate_key("witness-1.example", keys.ALG_COSIGNATURE_V1)
    tmp = tmp_path_factory.mktemp("console-mounted")
    factory = ServerFactory(tmp)
    try:
        report = tmp / "audit.json"  # written by a test; the console reads it per page
        server = factory(
            "--witness-key",
            verifier,
            "--http-listen",
            "127.0.0.1:0",
            "--console-audit-report",
            str(report),
            entry_format="statements",
        )
        assert "console at /console/" in server.stderr
        s = tell(server, verifier)
        s.console = MountedConsole(server.http_url)
        s.witness_signer = signer
        s.cosign()
        yield s
    finally:
        factory.cleanup()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_every_link_and_asset_is_under_the_prefix(story: Story) -> None:
    reader = Reader(story)
    _, _, login = reader.get("/login")
    reader.login()
    pages = [login] + [
        reader.get(path)[2]
        for path in ("/", "/search?verdict=out-of-scope", f"/action/{story.pr_action}")
    ]
    links = {link for body in pages for link in _LINK.findall(body)}
    local = {link for link in links if link.startswith("/")}
    assert local and all(link.startswith("/console/") for link in local), sorted(local)
    assets = {link for link in local if "/static/" in link}
    assert {"console.css", "login.js", "verify.js"} <= {
        a.split("/")[-1].split("?")[0] for a in assets
    }
    for asset in assets:
        status, _ = _get(story.server.http_url + asset)
        assert status == 200, asset


def test_the_tiles_api_stays_at_the_root(story: Story) -> None:
    status, body = _get(story.server.http_url + "/checkpoint")
    assert status == 200 and body.startswith("example.com/test\n")
    status, _ = _get(story.server.http_url + "/console")  # the prefix without its slash
    assert status in (200, 404)


def test_the_log_page_shows_the_audit_report_serve_was_given(story: Story) -> None:
    reader = Reader(story)
    reader.login()
    assert "no audit report given" in reader.get("/")[2]
    env = {
        "AFFIDAVIT_SERVER": story.server.address,
        "AFFIDAVIT_LOG_KEY": story.server.verifier_key,
        "AFFIDAVIT_TOKEN": story.server.auditor_token,
    }
    report = story.server.data_dir.parent / "audit.json"  # the fixture's --console-audit-report
    audit = subprocess.run(
        [str(AFFIDAVIT), "audit", "--json"],
        cwd=report.parent,  # the client's trust dir (.affidavit) goes there
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode in (0, 1), audit.stderr  # 1: findings (the out-of-scope attempt)
    report.write_text(audit.stdout)
    body = reader.get("/")[2]
    audit_box = body.split('<dd id="audit">')[1].split("</dd>")[0]
    assert str(report) in audit_box and "up to size" in audit_box, audit_box


def test_no_console_leaves_it_out(server_factory_tmp: ServerFactory) -> None:
    server = server_factory_tmp("--http-listen", "127.0.0.1:0", "--no-console")
    assert "console" not in server.stderr.split("affidavit HTTP at")[1].splitlines()[0]
    status, _ = _get(server.http_url + "/console/login")
    assert status == 404
    assert _get(server.http_url + "/checkpoint")[0] == 200


@pytest.fixture
def server_factory_tmp(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


def test_the_console_reads_the_log_over_its_own_mtls(
    server_factory_tmp: ServerFactory, pki: Pki
) -> None:
    mtls = Tls(pki.ca, pki.client_cert, pki.client_key)
    flags = ("--tls-client-ca", str(pki.ca), "--http-listen", "127.0.0.1:0")
    console_tls = (
        "--console-tls-ca",
        str(pki.ca),
        "--console-tls-cert",
        str(pki.client_cert),
        "--console-tls-key",
        str(pki.client_key),
    )
    server = TlsServer(
        server_factory_tmp.new_dir(),
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        *flags,
        *console_tls,
        entry_format="statements",
    )
    server.tls = mtls
    server_factory_tmp.servers.append(server)
    server.start()
    reader = Reader(Story(server, MountedConsole(server.http_url), "", "", "", "", "", "", ""))
    status, url, body = reader.get(
        "/login",
        {"token": server.auditor_token, "log_key": server.verifier_key, "quorum": "0"},
    )
    assert status == 200 and url.endswith("/console/"), body
    assert "example.com/test" in body
    # Without a client certificate of its own, the console could not read an mTLS log:
    # serve refuses to start, saying what to give.
    r = subprocess.run(
        [
            str(AFFIDAVIT),
            "serve",
            "--data-dir",
            str(server_factory_tmp.new_dir()),
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            str(pki.server_cert),
            "--tls-key",
            str(pki.server_key),
            *flags,
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0 and "--console-tls-cert" in r.stderr and "--no-console" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_browser_logs_in_at_console_and_sees_the_action_verified(
    story: Story, browser: Browser
) -> None:
    page = browser.new_page()
    log_in(page, story, story.server.http_url)
    page.wait_for_selector("#origin")
    assert page.url == story.console.url("/")
    shot(page, "mounted-01-log")
    page.goto(story.console.url(f"/action/{story.pr_action}"))
    assert verification(page) == "verified", page.text_content("#verification")
    assert "Verified in your browser" in (page.text_content("#verification") or "")
    shot(page, "mounted-02-action-verified")
    page.close()
