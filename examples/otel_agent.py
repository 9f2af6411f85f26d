"""An agent instrumented with OpenTelemetry whose tool spans are recorded in an affidavit log.

Tool calls are traced as GenAI `execute_tool` spans (semantic conventions); affidavit records
them after the fact (observe-only). Two ways in:

    # in-process: the SDK exports straight to the log
    python examples/otel_agent.py exporter
    # over OTLP/HTTP, e.g. through a Collector, to `affidavit otlp-bridge`
    affidavit otlp-bridge --listen 127.0.0.1:4318 --key agent.key --grant <grant id> &
    python examples/otel_agent.py otlp http://127.0.0.1:4318/v1/traces

(with AFFIDAVIT_LOG, AFFIDAVIT_LOG_KEY, AFFIDAVIT_KEY, AFFIDAVIT_GRANT set for `exporter`).
The tests run `run_tools` with both exporters.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affidavit.adapters.otel import AuditSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode

from affidavit import Actor, Client, IdentityKey, TrustPolicy


def create_issue(repo: str, title: str, token: str) -> str:
    return f"opened issue '{title}' in {repo}"


def delete_repository(repo: str) -> str:
    return f"deleted {repo}"


TOOLS: dict[str, Callable[..., str]] = {
    "create_issue": create_issue,
    "delete_repository": delete_repository,
}


def run_tools(
    calls: list[tuple[str, dict[str, Any]]], agent_id: str, *exporters: SpanExporter
) -> list[str]:
    """Run each tool call inside an execute_tool span (GenAI conventions); the results."""
    provider = TracerProvider(resource=Resource.create({"service.name": agent_id}))
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("example-agent")
    results = []
    for i, (name, args) in enumerate(calls):
        with tracer.start_as_current_span(f"execute_tool {name}") as span:
            span.set_attribute("gen_ai.operation.name", "execute_tool")
            span.set_attribute("gen_ai.tool.name", name)
            span.set_attribute("gen_ai.tool.call.id", f"call-{i}")
            span.set_attribute("gen_ai.tool.call.arguments", json.dumps(args))
            span.set_attribute("gen_ai.agent.id", agent_id)
            try:
                result = TOOLS[name](**args)
            except Exception as e:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", type(e).__name__)
                raise
            span.set_attribute("gen_ai.tool.call.result", result)
            results.append(result)
    provider.shutdown()
    return results


def main() -> None:
    calls = [("create_issue", {"repo": "acme/web", "title": "Flaky test", "token": "x"})]
    if sys.argv[1] == "otlp":
        exporter: SpanExporter = OTLPSpanExporter(endpoint=sys.argv[2])
        print(run_tools(calls, "code-agent", exporter))
        return
    log_key = os.environ["AFFIDAVIT_LOG_KEY"]
    if log_key.startswith("@"):
        log_key = Path(log_key[1:]).read_text().strip()
    with Client(os.environ.get("AFFIDAVIT_LOG", "127.0.0.1:7420"), TrustPolicy(log_key)) as c:
        actor = Actor(c, IdentityKey.load(Path(os.environ["AFFIDAVIT_KEY"])))
        exporter = AuditSpanExporter(actor, grant_ids=[os.environ["AFFIDAVIT_GRANT"]])
        print(run_tools(calls, actor.identity_id, exporter))


if __name__ == "__main__":
    main()
