"""OpenTelemetry: record the GenAI `execute_tool` spans an agent already emits.

    from affidavit.adapters.otel import AuditSpanExporter
    provider.add_span_processor(BatchSpanProcessor(AuditSpanExporter(actor, grant_ids=[g])))

Spans following the GenAI semantic conventions (`gen_ai.operation.name = execute_tool`, with
`gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.tool.call.arguments`,
`gen_ai.tool.call.result`, `gen_ai.agent.id`) become an INTENT and an OUTCOME with the span's
trace and span ids; other spans are ignored. Spans arrive after the tool ran, so these records
are observe-only (enforcement_point "observe-only") and prove only that the producer said so;
the log still gives its verdict, so an out-of-scope call shows up in every search and audit.

`affidavit otlp-bridge` (adapters/otlp.py) takes the same spans over OTLP/HTTP from an existing
OpenTelemetry Collector. Both paths go through `record_span` here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from affidavit.adapters.recording import Recorder, Target, ToolCall, default_target
from affidavit.adapters.spool import Spool
from affidavit.client.actor import Actor
from affidavit.client.errors import ClientError
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

EXECUTE_TOOL = "execute_tool"


@dataclass(frozen=True)
class ToolSpan:
    """What an execute_tool span says about one tool call, whichever way it arrived."""

    call: ToolCall
    failed: bool
    error_type: str
    result: Any


def _arguments(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return {"arguments": value}  # not JSON: kept as text (still redacted)
    return value


def tool_span(
    name: str,
    attributes: Mapping[str, Any],
    trace_id: str,
    span_id: str,
    *,
    failed: bool,
) -> ToolSpan | None:
    """The tool call in a span, or None for a span that is not a GenAI execute_tool span."""
    operation = attributes.get("gen_ai.operation.name")
    if operation != EXECUTE_TOOL and not (operation is None and name.startswith(EXECUTE_TOOL)):
        return None
    tool = attributes.get("gen_ai.tool.name") or name.removeprefix(EXECUTE_TOOL).strip()
    if not tool:
        return None
    call = ToolCall(
        str(tool),
        _arguments(attributes.get("gen_ai.tool.call.arguments")),
        call_id=str(attributes.get("gen_ai.tool.call.id") or ""),
        trace_id=trace_id,
        span_id=span_id,
    )
    error_type = str(attributes.get("error.type") or "")
    return ToolSpan(
        call,
        failed or bool(error_type),
        error_type or ("ToolError" if failed else ""),
        attributes.get("gen_ai.tool.call.result"),
    )


def record_span(recorder: Recorder, span: ToolSpan) -> None:
    """INTENT then OUTCOME for a tool call that already happened (observe-only)."""
    pending = recorder.intent(span.call)
    if span.failed:
        recorder.outcome(pending, error=span.error_type)
    else:
        recorder.outcome(pending, result=span.result)


def observer(
    actor: Actor,
    *,
    grant_ids: Iterable[str] = (),
    target: Callable[[ToolCall], Target] = default_target,
    spool: Spool | None = None,
    adapter: str = "otel",
) -> Recorder:
    """The observe-only recorder both OpenTelemetry paths use."""
    return Recorder(
        actor,
        grant_ids=grant_ids,
        target=target,
        spool=spool,
        adapter=adapter,
        framework="opentelemetry",
        observe_only=True,
    )


class AuditSpanExporter(SpanExporter):
    """A SpanExporter recording each GenAI execute_tool span (observe-only).

    export() answers FAILURE when the log cannot be reached and there is no spool: the SDK's
    processor then reports the loss; give a spool to keep every span's record instead."""

    def __init__(
        self,
        actor: Actor,
        *,
        grant_ids: Iterable[str] = (),
        target: Callable[[ToolCall], Target] = default_target,
        spool: Spool | None = None,
    ) -> None:
        self.recorder = observer(actor, grant_ids=grant_ids, target=target, spool=spool)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                context = span.get_span_context()
                if context is None:
                    continue
                found = tool_span(
                    span.name,
                    dict(span.attributes or {}),
                    format(context.trace_id, "032x"),
                    format(context.span_id, "016x"),
                    failed=span.status.status_code == StatusCode.ERROR,
                )
                if found is None:
                    continue
                try:
                    record_span(self.recorder, found)
                except ClientError:
                    return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
