"""MCP: a recording proxy in front of any MCP server, built on the official `mcp` SDK.

    affidavit mcp-proxy --key agent.key --grant G -- npx @acme/github-mcp

The proxy is an MCP server (stdio, or streamable HTTP with --listen) whose tools are the
upstream server's, listed unchanged; every `tools/call` is recorded — INTENT (tool, arguments
redacted, the call's `_meta.traceparent` as trace and span ids, the upstream server as
tool_server) before it is forwarded, OUTCOME (status, a commitment to the result) after.
Under enforce a call the log judges OUT_OF_SCOPE or NO_GRANT is not forwarded: the client gets
a tool error (`isError`) naming the verdict. With the log unreachable the call is not forwarded
either, unless a spool makes the proxy fail open.

Approval: tools named in --approval-required run only with a human's APPROVAL of their exact
arguments. The MCP client (which has the human) names the action id the human approved and the
APPROVAL statement's id in the call's _meta (`io.affidavit/action-id`,
`io.affidavit/approval-id`, e.g. after `affidavit approve ACTION_ID --params ...`); the INTENT
carries them with decision ALLOW_IF_APPROVED and the log checks the arguments' digest.

The upstream is the SDK's ClientSession over stdio (the proxy starts the command and owns its
life); the downstream is the SDK's low-level Server with `on_list_tools` / `on_call_tool`.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import mcp_types as types
from affidavit.adapters.recording import Recorder, ToolCall
from affidavit.client.errors import NotAuthorisedError, UnavailableError
from affidavit.proto import affidavit_pb2 as pb
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

ACTION_ID_META = "io.affidavit/action-id"
APPROVAL_ID_META = "io.affidavit/approval-id"
"""A tools/call's _meta keys naming the action id a human approved and that APPROVAL
statement's id (for tools the proxy runs only with approval)."""

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def trace_ids(meta: Any) -> tuple[str, str]:
    """(trace id, span id) from a W3C `traceparent` in a request's _meta; ("", "") without a
    valid one (all-zero ids are invalid by the W3C spec)."""
    value = meta.get("traceparent") if isinstance(meta, dict) else None
    m = _TRACEPARENT.match(value.strip().lower()) if isinstance(value, str) else None
    if m is None or set(m[1]) == {"0"} or set(m[2]) == {"0"}:
        return "", ""
    return m[1], m[2]


def _refusal(why: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=f"tool call not executed: {why}")], is_error=True
    )


class RecordingProxy:
    """The downstream server's handlers: list upstream's tools, record and forward calls."""

    def __init__(
        self,
        recorder: Recorder,
        upstream: ClientSession,
        tool_server: str,
        approval_required: frozenset[str] = frozenset(),
    ) -> None:
        self.recorder = recorder
        self.upstream = upstream
        self.tool_server = tool_server
        self.approval_required = approval_required

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return await self.upstream.list_tools(params=params)

    def _approval_of(self, params: types.CallToolRequestParams) -> dict[str, Any]:
        """A gated tool's INTENT names the approval the client passed in _meta (the log checks
        it covers these exact arguments); without one the log finds it missing."""
        if params.name not in self.approval_required:
            return {}
        meta: Any = params.meta or {}
        fields: dict[str, Any] = {"decision": pb.ALLOW_IF_APPROVED}
        action_id, approval_id = meta.get(ACTION_ID_META), meta.get(APPROVAL_ID_META)
        if isinstance(action_id, str) and isinstance(approval_id, str):
            fields.update(action_id=action_id, approval_id=approval_id)
        return fields

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        trace_id, span_id = trace_ids(params.meta)
        call = ToolCall(
            params.name,
            arguments,
            call_id=str(ctx.request_id),
            tool_server=self.tool_server,
            trace_id=trace_id,
            span_id=span_id,
        )
        try:
            pending = await self.recorder.aintent(call, **self._approval_of(params))
        except NotAuthorisedError as e:
            return _refusal(str(e))
        except UnavailableError as e:
            return _refusal(f"the audit log is unreachable ({e})")
        try:
            result = await self.upstream.call_tool(params.name, arguments, meta=params.meta)
        except BaseException as e:
            await self.recorder.aoutcome(pending, error=e)
            raise
        await self.recorder.aoutcome(
            pending,
            result=result.model_dump(mode="json", by_alias=True, exclude_none=True),
            error="ToolError" if result.is_error else None,
        )
        return result


async def serve(
    recorder: Recorder,
    command: Sequence[str],
    *,
    listen: tuple[str, int] | None = None,
    approval_required: frozenset[str] = frozenset(),
) -> None:
    """Start the upstream server, then serve the recording proxy until the client leaves
    (stdio) or the process is stopped (--listen)."""
    upstream_params = StdioServerParameters(command=command[0], args=list(command[1:]))
    async with AsyncExitStack() as stack:
        read, write = await stack.enter_async_context(stdio_client(upstream_params))
        upstream = await stack.enter_async_context(ClientSession(read, write))
        init = await upstream.initialize()
        info = init.server_info
        proxy = RecordingProxy(recorder, upstream, info.name, approval_required)
        server: Server[Any] = Server(
            info.name,
            version=info.version,
            instructions=init.instructions,
            on_list_tools=proxy.list_tools,
            on_call_tool=proxy.call_tool,
        )
        if listen is None:
            async with stdio_server() as (down_read, down_write):
                await server.run(down_read, down_write, server.create_initialization_options())
            return
        await _serve_http(server, *listen)


async def _serve_http(server: Server[Any], host: str, port: int) -> None:
    """Streamable HTTP at http://HOST:PORT/mcp (the SDK's app, on uvicorn, which the SDK
    brings); the bound address goes to stderr (port 0 picks a free one)."""
    import uvicorn

    app = server.streamable_http_app(host=host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening before saying so: a client that connects as soon as it reads the address
    # waits in the backlog until uvicorn accepts, instead of being refused.
    sock.listen(socket.SOMAXCONN)
    bound = sock.getsockname()[1]
    print(f"affidavit mcp-proxy listening on http://{host}:{bound}/mcp", file=sys.stderr)
    sys.stderr.flush()
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()


def run(
    recorder: Recorder,
    command: Sequence[str],
    *,
    listen: tuple[str, int] | None = None,
    approval_required: frozenset[str] = frozenset(),
) -> None:
    anyio.run(lambda: serve(recorder, command, listen=listen, approval_required=approval_required))
