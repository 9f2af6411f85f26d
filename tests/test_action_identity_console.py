"""An action is its agent's action id, in the console over HTTP (a real `affidavit console`
beside tests/cliproc.py's log, with tests/sharedaction.py's two agents sharing an action id):
each row and entry page links /action/<id>?agent=<agent> (or /action?id=<id>&agent=<agent>
for the ids "." and "..", which no path segment carries), and that page and its evidence
download are that agent's action; without ?agent= a shared id is a question about no one
action (400, naming the agents and ?agent=, linking each one's page), and an agent with no
such action is not found (404, as console.reads.NotFound is).
"""

from __future__ import annotations

import html
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.cliproc import Log, log
from tests.consoleproc import ConsoleProcess
from tests.sharedaction import (
    AGENTS,
    BOTH,
    EFFECT,
    RESOURCE,
    SHARED_ID,
    SOLO_ID,
    Shared,
    intent_args,
    share_an_action_id,
)

__all__ = ["log"]  # the module-scoped fixture, shared with this module


@dataclass
class Reader:
    """A person logged in at the console, without a browser (cookies kept)."""

    console: ConsoleProcess
    opener: urllib.request.OpenerDirector

    def get(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str]:
        """(status, body, HTML entities decoded) of GET path, or of POST data to it."""
        body = None if data is None else urllib.parse.urlencode(data).encode()
        url = path if path.startswith("http") else self.console.url(path)
        try:
            with self.opener.open(url, body, timeout=60) as r:
                return r.status, html.unescape(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, html.unescape(e.read().decode())


@pytest.fixture(scope="module")
def console(log: Log) -> Iterator[tuple[Shared, Reader]]:
    shared = share_an_action_id(log)
    process = ConsoleProcess(log.server.address).start()
    try:
        jar = http.cookiejar.CookieJar()
        reader = Reader(
            process, urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        )
        status, _ = reader.get(
            "/login", {"token": log.server.auditor_token, "log_key": log.server.verifier_key}
        )
        assert status == 200
        yield shared, reader
    finally:
        process.stop()


def _links(body: str, action_id: str) -> list[str]:
    """The action pages body links for action_id."""
    return re.findall(rf'href="([^"]*/action/{re.escape(action_id)}\?agent=[^"]*)"', body)


def test_rows_link_each_agents_action_to_its_own_page(console: tuple[Shared, Reader]) -> None:
    shared, reader = console
    status, body = reader.get("/search?tool=github.create_issue")
    assert status == 200
    links = sorted(set(_links(body, SHARED_ID)))
    assert links == [f"/console/action/{SHARED_ID}?agent={agent}" for agent in AGENTS]
    for agent, other in (AGENTS, AGENTS[::-1]):
        status, page = reader.get(links[AGENTS.index(agent)].removeprefix("/console"))
        assert status == 200, page
        assert RESOURCE[agent] in page and EFFECT[agent] in page
        assert RESOURCE[other] not in page and EFFECT[other] not in page
        [download] = re.findall(r'id="download" href="([^"]*)"', page)
        assert download == f"/console/evidence/{SHARED_ID}?agent={agent}"
        status, text = reader.get(download.removeprefix("/console"))
        assert status == 200
        indices = {e["index"] for e in json.loads(text)["entries"]}
        assert {shared.intents[agent]["index"], shared.outcomes[agent]["index"]} <= indices
        assert not {shared.intents[other]["index"], shared.outcomes[other]["index"]} & indices
        # An entry's page links its action the same way.
        status, entry = reader.get(f"/entry/{shared.outcomes[agent]['index']}")
        assert status == 200 and _links(entry, SHARED_ID) == [links[AGENTS.index(agent)]]


def test_a_shared_id_without_agent_is_refused_naming_the_agents(
    console: tuple[Shared, Reader],
) -> None:
    _, reader = console
    for page in ("action", "evidence"):
        for asked in (f"/{page}/{SHARED_ID}", f"/{page}?id={SHARED_ID}"):
            status, body = reader.get(asked)
            assert status == 400 and BOTH in body and "?agent=<agent id>" in body, body
            choices = re.findall(r'<li><a href="([^"]*)">', body)
            assert choices == [f"/console/{page}/{SHARED_ID}?agent={agent}" for agent in AGENTS]
        status, body = reader.get(f"/{page}/{SHARED_ID}?agent=nobody")
        assert status == 404 and "no INTENT of nobody's action call_1" in body, body
        status, body = reader.get(f"/{page}/{SOLO_ID}?agent=bot-2")
        assert status == 404 and "no INTENT of bot-2's action call_solo" in body, body
    # An id one agent used needs no ?agent=.
    status, body = reader.get(f"/action/{SOLO_ID}")
    assert status == 200 and "repo:acme/web" in body


@pytest.mark.parametrize("action_id", ["x/y", "../z", "a b?c=d&e#f"])
def test_an_id_with_path_characters_links_to_its_own_page(
    log: Log, console: tuple[Shared, Reader], action_id: str
) -> None:
    """An action id is the producer's string: "/", "..", "?", "&", "#" and spaces in it stay in
    the one path segment its links give, and the page it reaches is that action's."""
    _, reader = console
    resource = f"repo:acme/odd-{len(action_id)}"
    log.cli.json(*intent_args("bot", log.grant_id, action_id, resource))
    status, body = reader.get(f"/search?resource_prefix={urllib.parse.quote(resource)}")
    assert status == 200
    segment = urllib.parse.quote(action_id, safe="")
    links = set(_links(body, segment))
    assert links == {f"/console/action/{segment}?agent=bot"}, body
    status, page = reader.get(links.pop().removeprefix("/console"))
    assert status == 200 and resource in page, page
    [download] = re.findall(r'id="download" href="([^"]*)"', page)
    assert download == f"/console/evidence/{segment}?agent=bot"
    status, text = reader.get(download.removeprefix("/console"))
    assert status == 200 and json.loads(text)["entries"], text


@pytest.mark.parametrize("action_id", [".", ".."])
def test_an_id_no_path_segment_carries_links_through_the_query(
    log: Log, console: tuple[Shared, Reader], action_id: str
) -> None:
    """A browser resolves a path segment "." or ".." (escaped or not) before asking, so
    /action/.. would be the console's front page: these ids link by ?id=, and the page that
    link reaches, resolved as a browser resolves it, is that action's."""
    _, reader = console
    resource = f"repo:acme/dots-{len(action_id)}"
    log.cli.json(*intent_args("bot", log.grant_id, action_id, resource))
    search = f"/search?resource_prefix={urllib.parse.quote(resource)}"
    status, body = reader.get(search)
    assert status == 200
    expected = f"/console/action?id={urllib.parse.quote(action_id)}&agent=bot"
    assert re.findall(r'href="([^"]*/action[?/][^"]*)"', body) == [expected], body
    status, page = reader.get(urllib.parse.urljoin(reader.console.url(search), expected))
    assert status == 200 and resource in page, page
    [download] = re.findall(r'id="download" href="([^"]*)"', page)
    assert download == f"/console/evidence?id={urllib.parse.quote(action_id)}&agent=bot"
    status, text = reader.get(urllib.parse.urljoin(reader.console.url(search), download))
    assert status == 200 and json.loads(text)["entries"], text
    status, body = reader.get("/action?agent=bot")  # no id at all
    assert status == 400 and "name the action: ?id=<action id>" in body, body
    # The path form of the same id loses it once resolved ("." to /action/, ".." to /).
    resolved = urllib.parse.urljoin(reader.console.url(search), f"/console/action/{action_id}")
    assert urllib.parse.urlsplit(resolved).path in ("/console/action/", "/console/")
