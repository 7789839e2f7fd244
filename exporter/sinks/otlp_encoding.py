"""LogEvent / SpanRecord -> OTLP requests through the SDK's ReadableLogRecord / ReadableSpan and encoders.

The sink uses this for spans (and the SDK is imported only then); log records are encoded once
at poll time without the SDK (:mod:`exporter.mapping.otlp`), which tests compare with
:func:`encode_request`'s output.

Pure conversion, kept apart from the transport (:mod:`exporter.sinks.otlp_transport`): no I/O, no
state beyond the resource a sink builds once. :func:`encode_request` is what the sink sends: an
``ExportLogsServiceRequest`` or ``ExportTraceServiceRequest`` built by the SDK's OTLP encoders
(``opentelemetry-exporter-otlp-proto-common``), which keep the SDK's Resource rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import Message
from opentelemetry import trace as trace_api
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from exporter import __version__
from exporter.mapping.otlp import SCOPE_NAME
from exporter.model import LogEvent, SpanRecord

__all__ = [
    "SCOPE",
    "FixedResource",
    "encode_request",
    "log_record",
    "readable_span",
]

SCOPE = InstrumentationScope(SCOPE_NAME, __version__)


class FixedResource(Resource):
    """A Resource whose hash is computed once. The OTLP encoders group records by resource, so
    they hash it for every record, and ``Resource.__hash__`` JSON-encodes all its attributes each
    time (~7 µs a record, about a tenth of encoding a log record); ours never changes."""

    def __init__(self, attributes: Mapping[str, str]) -> None:
        super().__init__(dict(attributes))
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def _context(trace_id: int | None, span_id: int | None) -> Any:
    if not trace_id or not span_id:
        return None
    span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace_api.set_span_in_context(NonRecordingSpan(span_context))


def log_record(event: LogEvent, resource: Resource) -> ReadableLogRecord:
    """A LogEvent as the SDK's ReadableLogRecord, under ``resource`` and the exporter's scope."""
    record = LogRecord(
        timestamp=event.timestamp_ns,
        observed_timestamp=event.observed_ns,
        context=_context(event.trace_id, event.span_id),
        severity_text=event.severity_text,
        severity_number=SeverityNumber(event.severity_number),
        body=event.body,
        attributes=dict(event.attributes),
        event_name=event.event_name,
    )
    return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=SCOPE)


class _Span(ReadableSpan):
    """A ReadableSpan that says how many events were left out (the SDK counts only its own drops)."""

    def __init__(self, *, dropped_events: int, **kw: Any) -> None:
        super().__init__(**kw)
        self._dropped = dropped_events

    @property
    def dropped_events(self) -> int:
        return self._dropped


def readable_span(span: SpanRecord, resource: Resource) -> ReadableSpan:
    """A SpanRecord as the SDK's ReadableSpan, under ``resource`` and the exporter's scope."""
    flags = TraceFlags(TraceFlags.SAMPLED)
    parent = (
        SpanContext(span.trace_id, span.parent_span_id, is_remote=False, trace_flags=flags)
        if span.parent_span_id
        else None
    )
    status = {
        "OK": Status(StatusCode.OK),
        "ERROR": Status(StatusCode.ERROR, span.status_message or None),
    }.get(span.status_code, Status(StatusCode.UNSET))
    return _Span(
        dropped_events=max(0, span.dropped_events),
        name=span.name,
        context=SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=flags),
        parent=parent,
        resource=resource,
        attributes=dict(span.attributes),
        events=[Event(e.name, dict(e.attributes), e.timestamp_ns) for e in span.events],
        kind=SpanKind.INTERNAL,
        status=status,
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=SCOPE,
    )


def encode_request(signal: str, batch: Sequence[LogEvent | SpanRecord], resource: Resource) -> Message:
    """The OTLP request carrying ``batch`` (``logs``: LogEvents, ``spans``: SpanRecords) under ``resource``.

    Raises whatever the encoder raises for data OTLP cannot carry (the sink calls that a rejection).
    """
    if signal == "logs":
        return encode_logs([log_record(e, resource) for e in batch if isinstance(e, LogEvent)])
    return encode_spans([readable_span(s, resource) for s in batch if isinstance(s, SpanRecord)])
