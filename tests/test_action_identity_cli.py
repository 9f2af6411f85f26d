"""An action is its agent's action id, through the CLI as a user runs it (tests/cliproc.py's
shared log, with tests/sharedaction.py's two agents sharing an action id): `affidavit export`
and `who-authorised` answer for the agent --agent names; without it, an id several agents used
is refused naming them, and an agent with no such action is not found (exit 6, as
bundle.ExportError is: the log holds no one action by what was given).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cliproc import EXIT_NOT_FOUND, Log, log
from tests.sharedaction import (
    AGENTS,
    EFFECT,
    RESOURCE,
    SHARED_ID,
    SOLO_ID,
    Shared,
    share_an_action_id,
)

__all__ = ["log"]  # the module-scoped fixture, shared with this module

BOTH = "2 agents recorded an action call_1 (bot, bot-2)"


@pytest.fixture(scope="module")
def shared(log: Log) -> Shared:
    return share_an_action_id(log)


# export and who-authorised.


def test_export_answers_for_the_agent_named(log: Log, shared: Shared, tmp_path: Path) -> None:
    cli = log.cli
    for agent, other in (AGENTS, AGENTS[::-1]):
        out = tmp_path / f"{agent}.json"
        data = cli.json("export", SHARED_ID, "--agent", agent, "--out", str(out))
        assert (data["agent"], data["action_id"], data["in_scope"]) == (agent, SHARED_ID, True)
        assert data["intent"]["operation"]["resource"] == RESOURCE[agent]
        assert data["outcome"]["outcome"]["effect_ref"] == EFFECT[agent]
        indices = {e["index"] for e in json.loads(out.read_text())["entries"]}
        assert {shared.intents[agent]["index"], shared.outcomes[agent]["index"]} <= indices
        assert not {shared.intents[other]["index"], shared.outcomes[other]["index"]} & indices
        assert cli.json("verify-bundle", str(out))["agent"] == agent


def test_export_of_a_shared_id_without_agent_names_the_agents(log: Log, shared: Shared) -> None:
    out = log.work / "both.json"
    line = log.cli.fails(EXIT_NOT_FOUND, "export", SHARED_ID, "--out", str(out))
    assert BOTH in line and "name the agent" in line
    assert not out.exists()
    line = log.cli.fails(
        EXIT_NOT_FOUND, "export", SHARED_ID, "--agent", "nobody", "--out", str(out)
    )
    assert "no INTENT of nobody's action call_1" in line
    assert not out.exists()
    # An id one agent used needs no --agent.
    assert log.cli.json("export", SOLO_ID, "--out", str(out))["agent"] == "bot"


def test_who_authorised_answers_for_the_agent_named(log: Log, shared: Shared) -> None:
    cli = log.cli
    for agent in AGENTS:
        data = cli.json("who-authorised", SHARED_ID, "--agent", agent)
        assert (data["agent"], data["in_scope"]) == (agent, True)
        assert data["intent"]["operation"]["resource"] == RESOURCE[agent]
        assert [a["grant_id"] for a in data["authority"]] == [shared.grants[agent]]
        assert agent in cli.ok("who-authorised", SHARED_ID, "--agent", agent).stdout
    line = cli.fails(EXIT_NOT_FOUND, "who-authorised", SHARED_ID)
    assert BOTH in line
    line = cli.fails(EXIT_NOT_FOUND, "who-authorised", SHARED_ID, "--agent", "nobody")
    assert "no INTENT of nobody's action call_1" in line
    line = cli.fails(EXIT_NOT_FOUND, "who-authorised", SOLO_ID, "--agent", "bot-2")
    assert "no INTENT of bot-2's action call_solo" in line
