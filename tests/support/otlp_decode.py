"""OTLP protobuf -> plain python, for tests: what :class:`tests.support.otlp_receiver.OtlpReceiver` stores.

One dict per log record (``decode_log_record``) or span (``decode_span``), with its resource
attributes and scope name, so tests assert on values rather than protobuf classes.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = [
    "any_value_to_python",
    "attributes_to_dict",
    "decode_log_record",
    "decode_span",
    "flatten_logs",
    "flatten_spans",
]


def any_value_to_python(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as plain python: str, bool, int, float, bytes, list, dict, or None."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return bytes(value.bytes_value)
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    raise ValueError(f"unknown AnyValue kind {kind!r}")


def attributes_to_dict(attributes: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` field as ``{key: python value}`` (a later duplicate key wins)."""
    return {kv.key: any_value_to_python(kv.value) for kv in attributes}


def _hex(raw: bytes) -> str:
    return raw.hex() if raw else ""


def decode_log_record(record: LogRecord, resource: dict[str, Any], scope: str) -> dict[str, Any]:
    return {
        "resource": resource,
        "scope": scope,
        "time_unix_nano": record.time_unix_nano,
        "observed_time_unix_nano": record.observed_time_unix_nano,
        "severity_number": int(record.severity_number),
        "severity_text": record.severity_text,
        "body": any_value_to_python(record.body),
        "attributes": attributes_to_dict(record.attributes),
        "trace_id": _hex(record.trace_id),
        "span_id": _hex(record.span_id),
        "event_name": record.event_name,
    }


def decode_span(span: Span, resource: dict[str, Any], scope: str) -> dict[str, Any]:
    return {
        "resource": resource,
        "scope": scope,
        "trace_id": _hex(span.trace_id),
        "span_id": _hex(span.span_id),
        "parent_span_id": _hex(span.parent_span_id),
        "name": span.name,
        "kind": int(span.kind),
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "attributes": attributes_to_dict(span.attributes),
        "events": [
            {
                "name": event.name,
                "time_unix_nano": event.time_unix_nano,
                "attributes": attributes_to_dict(event.attributes),
            }
            for event in span.events
        ],
        "status": {"code": int(span.status.code), "message": span.status.message},
        "dropped_events_count": span.dropped_events_count,
    }


def flatten_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> list[dict[str, Any]]:
    out = []
    for resource_logs in request.resource_logs:
        resource = attributes_to_dict(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                out.append(decode_log_record(record, dict(resource), scope_logs.scope.name))
    return out


def flatten_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict[str, Any]]:
    out = []
    for resource_spans in request.resource_spans:
        resource = attributes_to_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(decode_span(span, dict(resource), scope_spans.scope.name))
    return out
