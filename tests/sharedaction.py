"""Two agents' actions under one action id, recorded with the CLI in tests/cliproc.py's shared
log, for the tests of what names an action by its id (an action is its agent's action id).

`share_an_action_id(log)`: the admin registers bot-2, a second agent of alice's, and alice grants
it what she granted bot. bot and then bot-2 record an INTENT with the action id SHARED_ID, on
different repositories, and then each its OUTCOME (different effects), each from its own
--trust-dir (tests/test_action_identity_cli.py shares one). An action id only bot
uses (SOLO_ID) is recorded too, to show a single agent's id needs no --agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.cliproc import Log, sh, write_identity

SHARED_ID = "call_1"
SOLO_ID = "call_solo"
AGENTS = ("bot", "bot-2")
RESOURCE = {"bot": "repo:acme/web", "bot-2": "repo:acme/api"}
EFFECT = {"bot": "commit:aaaa1111", "bot-2": "commit:bbbb2222"}
BOTH = "2 agents recorded an action call_1 (bot, bot-2)"
"""What every face says, in its own words around it, of SHARED_ID asked without its agent."""


@dataclass
class Shared:
    """Each agent's grant id, and what the CLI answered (--json): each agent's INTENT and
    OUTCOME of SHARED_ID."""

    grants: dict[str, str]
    intents: dict[str, dict[str, Any]]
    outcomes: dict[str, dict[str, Any]]


def add_second_agent(log: Log) -> str:
    """Register bot-2 (alice's agent) and grant it bot's scope; the grant's id."""
    cli = log.cli
    write_identity(log.work, "bot-2")
    cli.ok(
        *sh("identity add bot-2 --kind agent --owner alice --public-key @bot-2.pub"),
        *("--key", "admin.key"),
    )
    grant = cli.json(
        *sh("grant bot-2 --tool github.* --resource repo:acme/* --access create --access read"),
        *sh("--ticket CHG-2001 --key alice.key"),
    )
    grant_id: str = grant["grant_id"]
    return grant_id


def intent_args(agent: str, grant_id: str, action_id: str, resource: str) -> tuple[str, ...]:
    """`affidavit append` of an in-scope INTENT by agent with this action id."""
    return (
        *sh(f"append --key {agent}.key --tool github.create_issue --access create"),
        *("--resource", resource, "--grant", grant_id, "--action-id", action_id),
    )


def _own(agent: str) -> dict[str, str | None]:
    return {"AFFIDAVIT_TRUST_DIR": f"trust-{agent}"}


def share_an_action_id(log: Log) -> Shared:
    grants = {"bot": log.grant_id, "bot-2": add_second_agent(log)}
    cli = log.cli
    intents = {
        agent: cli.json(
            *intent_args(agent, grants[agent], SHARED_ID, RESOURCE[agent]), env=_own(agent)
        )
        for agent in AGENTS
    }
    outcomes = {
        agent: cli.json(
            *sh(f"append --key {agent}.key --outcome {SHARED_ID} --effect-ref {EFFECT[agent]}"),
            env=_own(agent),
        )
        for agent in AGENTS
    }
    solo = cli.json(*intent_args("bot", log.grant_id, SOLO_ID, "repo:acme/web"))
    assert solo["verdict"] == "IN_SCOPE"
    return Shared(grants, intents, outcomes)
