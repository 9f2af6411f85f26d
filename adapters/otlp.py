"""`affidavit otlp-bridge`: an OTLP/HTTP trace receiver that records GenAI tool spans.

    affidavit otlp-bridge --listen 127.0.0.1:4318 --key agent.key --grant G

Point an OpenTelemetry Collector's `otlphttp` exporter (or any OTLP/HTTP exporter) at it:
`POST /v1/traces` with an ExportTraceServiceRequest as protobuf (`application/x-protobuf`) or
JSON (`application/json`, ids in hex as OTLP/JSON says), gzip or not. Each execute_tool span
becomes an observe-only INTENT and OUTCOME (adapters/otel.py); other spans are accepted and
ignored. Answers follow OTLP/HTTP: 200 with an ExportTraceServiceResponse in the request's
encoding; 400 for a body that does not decode (nothing recorded); 415 for another content type;
503 with Retry-After while the log is unreachable and there is no spool, so the exporter
retries and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
from collections.abc import Iterator
from typing import Any

from affidavit.adapters.otel import ToolSpan, record_span, tool_span
from affidavit.adapters.recording import Recorder
from affidavit.client.errors import RefusedError, UnavailableError
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

PROTOBUF, JSON = "application/x-protobuf", "application/json"
MAX_BODY = 16 << 20
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def value_of(v: AnyValue) -> Any:
    """An OTLP attribute value as a plain Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex; protobuf's JSON mapping expects base64."""
    if isinstance(node, dict):
        return {
            k: (
                base64.b64encode(bytes.fromhex(v)).decode()
                if k in _ID_FIELDS and isinstance(v, str)
                else _hex_ids_to_base64(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(x) for x in node]
    return node


def decode(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The request in either OTLP/HTTP encoding; ValueError naming what is wrong."""
    request = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as e:
            raise ValueError(f"not an OTLP ExportTraceServiceRequest in protobuf: {e}") from None
        return request
    try:
        json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), request)
    except (ValueError, json_format.ParseError) as e:
        raise ValueError(f"not an OTLP ExportTraceServiceRequest in JSON: {e}") from None
    return request


def tool_spans(request: ExportTraceServiceRequest) -> Iterator[ToolSpan]:
    """The execute_tool spans of a request, in order."""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found = tool_span(
                    span.name,
                    {kv.key: value_of(kv.value) for kv in span.attributes},
                    span.trace_id.hex(),
                    span.span_id.hex(),
                    failed=span.status.code == Status.STATUS_CODE_ERROR,
                )
                if found is not None:
                    yield found


def record_spans(recorder: Recorder, spans: list[ToolSpan]) -> None:
    for span in spans:
        record_span(recorder, span)


def _answer(content_type: str) -> web.Response:
    response = ExportTraceServiceResponse()
    if content_type == PROTOBUF:
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)
    return web.json_response(json_format.MessageToDict(response))


def app(recorder: Recorder) -> web.Application:
    """The receiver: POST /v1/traces."""
    lock = asyncio.Lock()  # one batch at a time: the session chain is a sequence

    async def traces(request: web.Request) -> web.Response:
        content_type = request.content_type
        if content_type not in (PROTOBUF, JSON):
            raise web.HTTPUnsupportedMediaType(
                text=f"send {PROTOBUF} or {JSON}, not {content_type or 'no content type'}"
            )
        try:
            spans = list(tool_spans(decode(await request.read(), content_type)))
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        async with lock:
            try:
                await asyncio.to_thread(record_spans, recorder, spans)
            except RefusedError as e:  # retrying will not help: say why, once
                raise web.HTTPBadRequest(text=f"refused by the audit log: {e}") from None
            except UnavailableError as e:
                raise web.HTTPServiceUnavailable(
                    text=f"the audit log is unreachable ({e}); retry later",
                    headers={"Retry-After": "5"},
                ) from None
        return _answer(content_type)

    application = web.Application(client_max_size=MAX_BODY)
    application.router.add_post("/v1/traces", traces)
    return application


async def serve(recorder: Recorder, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; the bound address goes to stderr (port 0: any free)."""
    runner = web.AppRunner(app(recorder))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"affidavit otlp-bridge listening on http://{host}:{bound}/v1/traces", file=sys.stderr)
    sys.stderr.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(recorder: Recorder, host: str, port: int) -> None:
    asyncio.run(serve(recorder, host, port))
