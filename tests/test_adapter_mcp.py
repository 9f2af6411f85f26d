"""`affidavit mcp-proxy` in front of a real MCP server process (examples/mcp_server.py),
driven by the official SDK's client; every check reads the log back as the auditor."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from affidavit.adapters.mcp import ACTION_ID_META, APPROVAL_ID_META
from affidavit.adapters.spool import Spool
from affidavit.client.actor import Actor
from affidavit.client.client import Client
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.canonical import canonical_json, commitment
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from affidavit import merkle
from tests.adapterlog import (
    GITHUB_TOKEN,
    AdapterLog,
    check_intent,
    intent_and_outcome,
    running_log,
)
from tests.serverproc import AFFIDAVIT, ROOT, RPC_TIMEOUT, ServerFactory, clean_env, run_cli

UPSTREAM = [sys.executable, str(ROOT / "examples" / "mcp_server.py")]
TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
GRANT = {
    "tools": ["create_issue", "create_release", "delete_repository"],
    "resources": ["repo:acme/*"],
}


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdapterLog]:
    with running_log(tmp_path_factory, "mcp") as log:
        yield log


def proxy(
    log: AdapterLog, agent: str, grant_id: str, effects: Path, *flags: str, address: str = ""
) -> StdioServerParameters:
    """The MCP client's view: the proxy command, the real server's command after --."""
    args = [
        "mcp-proxy",
        *log.agent_flags(agent, grant_id, address),
        "--resource",
        "create_issue=repo:{repo}",
        "--access",
        "create_issue=create",
        "--resource",
        "delete_repository=repo:{repo}",
        "--access",
        "delete_repository=delete",
        "--resource",
        "create_release=repo:{repo}",
        "--access",
        "create_release=create",
        "--approval-required",
        "create_release",
        *flags,
        "--",
        *UPSTREAM,
        "--effects",
        str(effects),
    ]
    return StdioServerParameters(command=str(AFFIDAVIT), args=args, env=clean_env())


async def session_calls(
    params: StdioServerParameters,
    *calls: tuple[str, dict[str, Any]],
    **meta: str | tuple[str | None, ...],
) -> tuple[types.ListToolsResult, list[types.CallToolResult]]:
    """Connect with the SDK's client, list the tools, make the calls (with a traceparent and
    any other _meta given, each call its own when meta values are tuples)."""
    with anyio.fail_after(120):
        async with stdio_client(params) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            tools = await session.list_tools()
            results = []
            for i, (name, args) in enumerate(calls):
                picked = {k: v[i] if isinstance(v, tuple) else v for k, v in meta.items()}
                extra = {k: v for k, v in picked.items() if v is not None}
                call_meta: Any = {"traceparent": f"00-{TRACE}-{SPAN}-01", **extra}
                results.append(await session.call_tool(name, args, meta=call_meta))
    return tools, results


def did(effects: Path) -> list[str]:
    return effects.read_text().splitlines() if effects.exists() else []


def test_calls_are_recorded_and_the_tools_listed_unchanged(log: AdapterLog, tmp_path: Path):
    log.agent("mcp-recorded")
    grant_id = log.grant("mcp-recorded", access=[pb.CREATE], **GRANT)
    effects = tmp_path / "effects"
    args = {"repo": "acme/web", "title": "Flaky", "token": GITHUB_TOKEN}
    # create_release needs a human's approval of its exact arguments, named in _meta.
    release = {"repo": "acme/web", "tag": "v2.0"}
    action_id, other_id = uuid7(), uuid7()
    approval = log.alice.approve(action_id, release, agent_id="mcp-recorded", ticket="CHG-9")
    approval_id = approval.statement_id
    listed, [result, *releases] = anyio.run(
        lambda: session_calls(
            proxy(log, "mcp-recorded", grant_id, effects),
            ("create_issue", args),
            ("create_release", release),
            ("create_release", {**release, "tag": "v3.0"}),  # not what was approved
            ("create_release", release),  # no approval named at all
            **{
                ACTION_ID_META: (None, action_id, other_id, None),
                APPROVAL_ID_META: (None, approval_id, approval_id, None),
            },
        )
    )
    direct = StdioServerParameters(command=UPSTREAM[0], args=UPSTREAM[1:], env=clean_env())
    upstream, _ = anyio.run(session_calls, direct)
    assert [t.model_dump() for t in listed.tools] == [t.model_dump() for t in upstream.tools]
    assert not result.is_error
    assert [r.is_error for r in releases] == [False, True, True]
    assert did(effects) == ["issue:acme/web:Flaky", "release:acme/web:v2.0"]
    assert "approval-mismatch" in str(releases[1].content)
    assert "approval-missing" in str(releases[2].content)

    intent, outcome = intent_and_outcome(log.trail("mcp-recorded"), "create_issue")
    check_intent(
        intent,
        tool="create_issue",
        resource="repo:acme/web",
        arguments=args,
        grant_id=grant_id,
        verdict="IN_SCOPE",
    )
    op, correlation = intent.action.operation, intent.action.correlation
    assert op.tool_server == "acme-tools" and op.access == pb.CREATE
    assert (correlation.trace_id, correlation.span_id) == (TRACE, SPAN)
    assert intent.statement.header.producer.adapter == "affidavit-mcp-proxy/1"
    assert (
        GITHUB_TOKEN not in op.parameters_json and "«redacted:github-token:" in op.parameters_json
    )
    for r in (intent, outcome):
        [entry] = log.auditor.entries(r.hit.index, r.hit.index + 1)
        assert GITHUB_TOKEN.encode() not in entry.data
    assert outcome.action.outcome.status == pb.OK
    # A commitment to the result the client got, opened by the agent's key for this action.
    opening = Actor(log.auditor, IdentityKey.load(log.key_path("mcp-recorded"))).result_opening(
        intent.action.action_id
    )
    returned = canonical_json(result.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert outcome.action.outcome.result_digest == commitment(opening, returned)

    released = [
        r
        for r in log.trail("mcp-recorded")
        if r.action.phase == pb.AgentAction.INTENT
        and r.action.operation.tool_name == "create_release"
    ]
    assert [(r.verdict, r.hit.verdict_reason) for r in released] == [
        ("IN_SCOPE", ""),
        ("OUT_OF_SCOPE", "approval-mismatch"),
        ("OUT_OF_SCOPE", "approval-missing"),
    ]
    assert released[0].action.action_id == action_id
    assert released[0].action.approval_id == approval_id
    assert released[0].action.authorization.decision == pb.ALLOW_IF_APPROVED


def test_an_out_of_scope_call_is_not_forwarded(log: AdapterLog, tmp_path: Path):
    log.agent("mcp-blocked")
    grant_id = log.grant("mcp-blocked", access=[pb.CREATE], **GRANT)
    effects = tmp_path / "effects"
    _, [result] = anyio.run(
        session_calls,
        proxy(log, "mcp-blocked", grant_id, effects),
        ("delete_repository", {"repo": "acme/web"}),
    )
    assert result.is_error and did(effects) == []
    [text] = result.content
    assert isinstance(text, types.TextContent) and "OUT_OF_SCOPE" in text.text

    intent, outcome = intent_and_outcome(log.trail("mcp-blocked"), "delete_repository")
    check_intent(
        intent,
        tool="delete_repository",
        resource="repo:acme/web",
        arguments={"repo": "acme/web"},
        grant_id=grant_id,
        verdict="OUT_OF_SCOPE",
    )
    assert outcome.action.outcome.status == pb.DENIED

    # --no-enforce, over streamable HTTP (--listen): recorded with the same verdict, forwarded.
    params = proxy(log, "mcp-blocked", grant_id, effects, "--no-enforce", "--listen", "127.0.0.1:0")
    listening = subprocess.Popen(
        [params.command, *params.args],
        env=params.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening.stderr is not None
        url = ""
        for line in listening.stderr:  # it says where it listens before serving
            if "listening on" in line:
                url = line.rsplit(" ", 1)[-1].strip()
                break
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp"), url
        # Once it has said where, it takes connections (it said so only after listening).
        socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0]))).close()
        [result] = anyio.run(http_calls, url, ("delete_repository", {"repo": "acme/web"}))
    finally:
        listening.terminate()
        listening.wait(timeout=30)
    assert not result.is_error and did(effects) == ["deleted:acme/web"]
    trail = log.trail("mcp-blocked")
    assert [r.verdict for r in trail if r.action.phase == pb.AgentAction.INTENT] == [
        "OUT_OF_SCOPE",
        "OUT_OF_SCOPE",
    ]
    assert trail[-1].action.outcome.status == pb.OK


async def http_calls(url: str, *calls: tuple[str, dict[str, Any]]) -> list[types.CallToolResult]:
    with anyio.fail_after(120):
        async with streamable_http_client(url) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            return [await session.call_tool(n, a) for n, a in calls]


def test_the_log_down_stops_the_call_or_spools_it_in_order(tmp_path: Path):
    factory = ServerFactory(tmp_path)
    try:
        own = AdapterLog.start(factory, tmp_path)
        own.agent("mcp-down")
        grant_id = own.grant("mcp-down", access=[pb.CREATE], **GRANT)
        address = own.server.address
        own.server.kill()
        effects = tmp_path / "effects"
        args = {"repo": "acme/web", "title": "t"}

        _, [result] = anyio.run(
            session_calls,
            proxy(own, "mcp-down", grant_id, effects, address=address),
            ("create_issue", args),
        )
        assert result.is_error and did(effects) == []  # fail closed
        [text] = result.content
        assert isinstance(text, types.TextContent) and "unreachable" in text.text

        spool = tmp_path / "spool"
        _, results = anyio.run(
            session_calls,
            proxy(own, "mcp-down", grant_id, effects, "--spool", str(spool), address=address),
            ("create_issue", args),
        )
        assert not results[0].is_error and did(effects) == ["issue:acme/web:t"]
        waiting = [p.read_bytes() for p in sorted(spool.iterdir())]
        assert len(waiting) == 2  # INTENT, OUTCOME

        own.server.start()
        own.auditor = Client(
            own.server.address, own.policy, token=own.server.auditor_token, timeout=RPC_TIMEOUT
        )
        with own.client() as client:
            receipts = Spool(spool).replay(client)
        assert [r.leaf_hash for r in receipts] == [merkle.leaf_hash(leaf) for leaf in waiting]
        intent, outcome = intent_and_outcome(own.trail("mcp-down"), "create_issue")
        assert intent.verdict == "IN_SCOPE" and outcome.action.outcome.status == pb.OK
        own.close()
    finally:
        factory.cleanup()


def test_a_missing_key_is_a_one_line_usage_error(tmp_path: Path):
    done = run_cli("mcp-proxy", "--key", str(tmp_path / "none.key"), "--grant", "g", "--", "x")
    assert done.returncode == 2 and "none.key" in done.stderr
    assert "Traceback" not in done.stderr
