"""An action is its agent's action id, through the CLI as a user runs it (tests/cliproc.py's
shared log, with tests/sharedaction.py's two agents sharing an action id):

- `affidavit export` and `who-authorised` answer for the agent --agent names; without it, an id
  several agents used is a usage error (exit 2) naming them and --agent (the question names no
  one action), and an agent with no such action is not found (exit 6, as bundle.ExportError
  is);
- `append` keeps a pending INTENT under --trust-dir/intents/ by (agent, action id), under a
  digest name whatever the id holds, and an INTENT kept by an older `append` under
  intents/<action id>.leaf is found by its own agent only, and moved to the new name.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from affidavit.client.cli.actions import _pending_path
from affidavit.statements.schema_walk import MAX_STRING
from hypothesis import given
from hypothesis import strategies as st

from tests.cliproc import (
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Cli,
    Log,
    closed_port,
    log,
    sh,
)
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


@pytest.fixture(scope="module")
def shared(log: Log) -> Shared:
    return share_an_action_id(log)


def _pending(trust: Path, agent: str, action_id: str) -> Path:
    """Where `append` keeps the INTENT of agent's action action_id (the rule, written out)."""
    digest = hashlib.sha256(agent.encode() + b"\x00" + action_id.encode()).hexdigest()
    return trust / "intents" / f"{digest}.leaf"


def _leaves(root: Path) -> list[Path]:
    return sorted(root.rglob("*.leaf"))


def _outcome_answers(cli: Cli, outcome: dict[str, object], intent: dict[str, object]) -> None:
    """The OUTCOME recorded (in scope) is of exactly the INTENT `append` answered with."""
    assert outcome["verdict"] == "IN_SCOPE", outcome
    action = cli.json("get", str(outcome["index"]))["statement"]["action"]
    assert (action["phase"], action["action_id"]) == ("OUTCOME", intent["action_id"])
    assert bytes.fromhex(action["intent_leaf_hash"]) == bytes.fromhex(str(intent["leaf_hash"]))


# Two agents, one trust dir, one action id.


def test_agents_sharing_a_trust_dir_and_an_id_each_answer_their_own_intent(
    log: Log, shared: Shared, tmp_path: Path
) -> None:
    """From one --trust-dir, bot and bot-2 each record an INTENT with one action id, then each
    its OUTCOME without an auditor token: from the INTENT kept there, its own."""
    cli, trust = log.cli, tmp_path / "trust"
    env = {"AFFIDAVIT_TOKEN": None, "AFFIDAVIT_TRUST_DIR": str(trust)}
    intents = {
        agent: cli.json(
            *intent_args(agent, shared.grants[agent], "call_2", RESOURCE[agent]), env=env
        )
        for agent in AGENTS
    }
    assert _leaves(trust) == sorted(_pending(trust, agent, "call_2") for agent in AGENTS)
    for agent in AGENTS:
        outcome = cli.json("append", "--key", f"{agent}.key", "--outcome", "call_2", env=env)
        _outcome_answers(cli, outcome, intents[agent])
        action = cli.json("get", str(outcome["index"]))["statement"]["action"]
        assert action["actor"]["agent_id"] == agent
    assert _leaves(trust) == []


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
    line = log.cli.fails(EXIT_USAGE, "export", SHARED_ID, "--out", str(out))
    assert BOTH in line and "--agent <id>" in line, line
    assert usage_json(log.cli, "export", SHARED_ID, "--out", str(out))
    assert not out.exists()
    line = log.cli.fails(
        EXIT_NOT_FOUND, "export", SHARED_ID, "--agent", "nobody", "--out", str(out)
    )
    assert "no INTENT of nobody's action call_1" in line
    assert not out.exists()
    # An id one agent used needs no --agent.
    assert log.cli.json("export", SOLO_ID, "--out", str(out))["agent"] == "bot"


def usage_json(cli: Cli, *args: str) -> bool:
    """Whether the command, with --json, exits 2 with one JSON error line naming the agents
    and --agent."""
    r = cli(*args, "--json")
    error = json.loads(r.stderr)["error"]
    return (r.returncode, error["exit_code"], error["kind"]) == (
        EXIT_USAGE,
        EXIT_USAGE,
        "usage",
    ) and (BOTH in error["message"] and "--agent <id>" in error["message"])


def test_who_authorised_answers_for_the_agent_named(log: Log, shared: Shared) -> None:
    cli = log.cli
    for agent in AGENTS:
        data = cli.json("who-authorised", SHARED_ID, "--agent", agent)
        assert (data["agent"], data["in_scope"]) == (agent, True)
        assert data["intent"]["operation"]["resource"] == RESOURCE[agent]
        assert [a["grant_id"] for a in data["authority"]] == [shared.grants[agent]]
        assert agent in cli.ok("who-authorised", SHARED_ID, "--agent", agent).stdout
    line = cli.fails(EXIT_USAGE, "who-authorised", SHARED_ID)
    assert BOTH in line and "--agent <id>" in line, line
    assert usage_json(cli, "who-authorised", SHARED_ID)
    line = cli.fails(EXIT_NOT_FOUND, "who-authorised", SHARED_ID, "--agent", "nobody")
    assert "no INTENT of nobody's action call_1" in line
    line = cli.fails(EXIT_NOT_FOUND, "who-authorised", SOLO_ID, "--agent", "bot-2")
    assert "no INTENT of bot-2's action call_solo" in line


# Pending INTENTs whatever the action id holds.


HOSTILE_IDS = ("../x", "a/b", "/etc/passwd", "..", "x" * MAX_STRING, "\u00e9" * MAX_STRING)
"""Action ids that, as file names, escape intents/, make a subdirectory, or are too long for
one (the schema's limit is MAX_STRING characters; 2 bytes each in UTF-8 for the last)."""


def test_a_hostile_action_id_is_kept_under_its_digest(
    log: Log, shared: Shared, tmp_path: Path
) -> None:
    cli, trust = log.cli, tmp_path / "trust"
    env = {"AFFIDAVIT_TOKEN": None, "AFFIDAVIT_TRUST_DIR": str(trust)}
    for action_id in HOSTILE_IDS:
        intent = cli.json(*intent_args("bot", log.grant_id, action_id, "repo:acme/web"), env=env)
        assert intent["action_id"] == action_id
        assert _leaves(tmp_path) == [_pending(trust, "bot", action_id)], action_id
        outcome = cli.json("append", "--key", "bot.key", "--outcome", action_id, env=env)
        _outcome_answers(cli, outcome, intent)
        assert _leaves(tmp_path) == []
        # Not kept here (nor, as a file name, under an older `append`'s name): not found here.
        line = cli.fails(EXIT_USAGE, "append", "--key", "bot.key", "--outcome", action_id, env=env)
        assert "was not recorded from here" in line
    # One character more than the schema allows: not sent (the log's rule), nothing kept.
    too_long = "x" * (MAX_STRING + 1)
    line = cli.fails(
        EXIT_USAGE, *intent_args("bot", log.grant_id, too_long, "repo:acme/web"), env=env
    )
    assert f"not sent: action.action_id is {MAX_STRING + 1} characters" in line
    assert _leaves(tmp_path) == []


@given(
    agent=st.from_regex(r"[a-z][a-z0-9.@-]{0,40}", fullmatch=True),
    action_id=st.text(min_size=1, max_size=MAX_STRING),
    other_id=st.text(min_size=1, max_size=MAX_STRING),
)
def test_a_pending_intent_is_one_file_name_in_intents(
    agent: str, action_id: str, other_id: str
) -> None:
    trust = Path("/trust")
    path = _pending_path(trust, agent, action_id)
    assert path.parent == trust / "intents"
    assert re.fullmatch(r"[0-9a-f]{64}\.leaf", path.name)
    assert (path == _pending_path(trust, agent, other_id)) == (action_id == other_id)
    assert path != _pending_path(trust, agent + "x", action_id)


# INTENTs kept by an older `append`, as intents/<action id>.leaf.


def test_an_intent_kept_under_the_old_name_is_its_agents_and_moves(
    log: Log, shared: Shared, tmp_path: Path
) -> None:
    cli, trust = log.cli, tmp_path / "trust"
    env = {"AFFIDAVIT_TOKEN": None, "AFFIDAVIT_TRUST_DIR": str(trust)}
    kept = _pending(trust, "bot-2", "legacy_1")
    old = trust / "intents" / "legacy_1.leaf"
    intent = cli.json(
        *intent_args("bot-2", shared.grants["bot-2"], "legacy_1", "repo:acme/api"), env=env
    )
    leaf = kept.read_bytes()
    kept.rename(old)  # where an `append` before (agent, action id) kept it
    # bot-2's INTENT is not bot's: bot has none by that id here, and the file stays.
    line = cli.fails(EXIT_USAGE, *sh("append --key bot.key --outcome legacy_1"), env=env)
    assert "was not recorded from here" in line
    assert _leaves(trust) == [old]
    # bot-2's own: found and moved to its new name (and kept while the log is unreachable).
    unreachable = {**env, "AFFIDAVIT_SERVER": f"127.0.0.1:{closed_port()}"}
    cli.fails(EXIT_UNREACHABLE, *sh("append --key bot-2.key --outcome legacy_1"), env=unreachable)
    assert _leaves(trust) == [kept] and kept.read_bytes() == leaf
    outcome = cli.json(*sh("append --key bot-2.key --outcome legacy_1"), env=env)
    _outcome_answers(cli, outcome, intent)
    assert _leaves(trust) == []


def test_an_old_name_is_read_only_as_one_file_of_its_agents_intent(
    log: Log, shared: Shared, tmp_path: Path
) -> None:
    cli, trust = log.cli, tmp_path / "trust"
    env = {"AFFIDAVIT_TOKEN": None, "AFFIDAVIT_TRUST_DIR": str(trust)}
    # An id with a '/' made a subdirectory (or left intents/): such a path is not read.
    cli.json(*intent_args("bot", log.grant_id, "c/d", "repo:acme/web"), env=env)
    nested = trust / "intents" / "c" / "d.leaf"
    nested.parent.mkdir()
    _pending(trust, "bot", "c/d").rename(nested)
    # Bytes that are no INTENT are not used.
    junk = trust / "intents" / "legacy_2.leaf"
    junk.write_bytes(b"not a statement")
    for action_id in ("c/d", "legacy_2"):
        line = cli.fails(EXIT_USAGE, "append", "--key", "bot.key", "--outcome", action_id, env=env)
        assert "was not recorded from here" in line
    assert _leaves(trust) == sorted([junk, nested])
    assert junk.read_bytes() == b"not a statement"
