"""OpenTelemetry: the SDK's tracer emitting GenAI execute_tool spans (examples/otel_agent.py),
recorded in-process (AuditSpanExporter) and over a real OTLP/HTTP export to
`affidavit otlp-bridge`; every check reads the log back as the auditor."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from affidavit.adapters.otel import AuditSpanExporter
from affidavit.adapters.recording import Target, ToolCall
from affidavit.proto import affidavit_pb2 as pb
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.adapterlog import (
    GITHUB_TOKEN,
    AdapterLog,
    check_intent,
    intent_and_outcome,
    load_example,
    running_log,
)
from tests.serverproc import AFFIDAVIT, START_TIMEOUT, clean_env

example = load_example("otel_agent")
GRANT = {"tools": ["create_issue"], "resources": ["repo:acme/*"], "access": [pb.CREATE]}
CALLS = [
    ("create_issue", {"repo": "acme/web", "title": "Flaky", "token": GITHUB_TOKEN}),
    ("delete_repository", {"repo": "acme/web"}),
]
MAPPING = [
    "--resource",
    "create_issue=repo:{repo}",
    "--access",
    "create_issue=create",
    "--resource",
    "delete_repository=repo:{repo}",
    "--access",
    "delete_repository=delete",
]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdapterLog]:
    with running_log(tmp_path_factory, "otel") as log:
        yield log


def check_trail(log: AdapterLog, agent: str, grant_id: str, spans: InMemorySpanExporter) -> None:
    """Both calls recorded after the fact: the in-scope one and the out-of-scope one (which
    ran: observe-only), each with its span's trace and span ids."""
    finished = {(s.attributes or {})["gen_ai.tool.name"]: s for s in spans.get_finished_spans()}
    trail = log.trail(agent)
    for (tool, args), verdict, access in zip(
        CALLS, ["IN_SCOPE", "OUT_OF_SCOPE"], [pb.CREATE, pb.DELETE], strict=True
    ):
        intent, outcome = intent_and_outcome(trail, tool)
        check_intent(
            intent,
            tool=tool,
            resource="repo:acme/web",
            arguments=args,
            grant_id=grant_id,
            verdict=verdict,
        )
        assert intent.action.operation.access == access
        assert intent.action.authorization.enforcement_point == "observe-only"
        context = finished[tool].get_span_context()
        assert context is not None
        assert intent.action.correlation.trace_id == format(context.trace_id, "032x")
        assert intent.action.correlation.span_id == format(context.span_id, "016x")
        assert outcome.action.outcome.status == pb.OK
        [entry] = log.auditor.entries(intent.hit.index, intent.hit.index + 1)
        assert GITHUB_TOKEN.encode() not in entry.data


def test_the_span_exporter_records_tool_spans(log: AdapterLog) -> None:
    actor = log.agent("otel-exporter")
    grant_id = log.grant("otel-exporter", **GRANT)
    spans = InMemorySpanExporter()
    exporter = AuditSpanExporter(actor, grant_ids=[grant_id], target=example_target)
    results = example.run_tools(CALLS, "otel-exporter", exporter, spans)
    assert len(results) == 2  # observe-only: both ran
    check_trail(log, "otel-exporter", grant_id, spans)


def example_target(call: ToolCall) -> Target:
    kind = pb.DELETE if call.tool == "delete_repository" else pb.CREATE
    return Target(f"repo:{call.arguments['repo']}", kind)


class Bridge:
    """`affidavit otlp-bridge` as a process, on a free port."""

    def __init__(self, log: AdapterLog, agent: str, grant_id: str, *flags: str, address: str = ""):
        self.proc = subprocess.Popen(
            [
                str(AFFIDAVIT),
                "otlp-bridge",
                "--listen",
                "127.0.0.1:0",
                *log.agent_flags(agent, grant_id, address),
                *MAPPING,
                *flags,
            ],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr.append(line)
                if m := re.search(r"listening on (\S+)", line):
                    self.url = m[1]
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        assert found.wait(START_TIMEOUT) and self.url, "".join(self.stderr)

    def post(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": content_type}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def close(self) -> None:
        self.proc.terminate()
        try:
            assert self.proc.wait(timeout=30) == 0, "".join(self.stderr)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_the_otlp_bridge_records_an_otlp_http_export(log: AdapterLog) -> None:
    log.agent("otel-bridge")
    grant_id = log.grant("otel-bridge", **GRANT)
    bridge = Bridge(log, "otel-bridge", grant_id)
    try:
        spans = InMemorySpanExporter()
        example.run_tools(CALLS, "otel-bridge", OTLPSpanExporter(endpoint=bridge.url), spans)
        check_trail(log, "otel-bridge", grant_id, spans)

        # OTLP/JSON, ids in hex; a span that is not a tool call is accepted and ignored.
        before = len(log.trail("otel-bridge"))
        attrs = [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
            {"key": "gen_ai.tool.name", "value": {"stringValue": "create_issue"}},
            {"key": "gen_ai.tool.call.arguments", "value": {"stringValue": '{"repo":"acme/x"}'}},
        ]
        span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "t", "attributes": attrs}
        other = {"traceId": "ab" * 16, "spanId": "ef" * 8, "name": "chat"}
        body = {"resourceSpans": [{"scopeSpans": [{"spans": [span, other]}]}]}
        status, _ = bridge.post(json.dumps(body).encode(), "application/json")
        assert status == 200
        trail = log.trail("otel-bridge")
        assert len(trail) == before + 2
        assert trail[-2].action.correlation.trace_id == "ab" * 16
        assert trail[-2].action.operation.resource == "repo:acme/x"

        # Bad input: a clear 4xx, nothing recorded.
        status, text = bridge.post(b"\x0a\xff\xff", "application/x-protobuf")
        assert status == 400 and b"protobuf" in text
        status, text = bridge.post(b"{", "application/json")
        assert status == 400 and b"JSON" in text
        status, _ = bridge.post(b"x", "text/plain")
        assert status == 415
        assert len(log.trail("otel-bridge")) == before + 2
    finally:
        bridge.close()


def test_the_bridge_with_the_log_down_asks_for_a_retry_or_spools(
    log: AdapterLog, tmp_path: Path
) -> None:
    log.agent("otel-down")
    grant_id = log.grant("otel-down", **GRANT)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
        {"key": "gen_ai.tool.name", "value": {"stringValue": "create_issue"}},
    ]
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "t", "attributes": attrs}
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()

    bridge = Bridge(log, "otel-down", grant_id, address=dead)
    try:
        status, text = bridge.post(body, "application/json")
        assert status == 503 and b"unreachable" in text  # the exporter retries: nothing lost
    finally:
        bridge.close()
    spool = tmp_path / "spool"
    bridge = Bridge(log, "otel-down", grant_id, "--spool", str(spool), address=dead)
    try:
        status, _ = bridge.post(body, "application/json")
        assert status == 200 and len(list(spool.iterdir())) == 2
    finally:
        bridge.close()
