"""LogEvent <-> OTLP ``LogRecord`` bytes: a record is encoded once, at poll time, and sent as is.

The poller stores each mapped log record in the outbox as the serialized opentelemetry-proto
``LogRecord`` (:func:`encode_log`, framed as the one record of a ``ScopeLogs``), in the
transaction that marks it seen. The OTLP sink builds its request from those bytes
(:func:`logs_request`): the resource and scope are a destination's business and are added then,
and the records are merged into the request's one ``ScopeLogs`` by protobuf itself (concatenated
length-delimited fields of a message are its repeated field's elements: the documented merge), so
no record is rebuilt from JSON or through SDK objects at send time.

The bytes are the same ``LogRecord`` the SDK's encoder makes of the same LogEvent (a test
compares them); sinks that want values, not bytes (console, jsonl, plugins), get the LogEvent
back from :func:`decode_log`, without loss: every LogEvent field has its place in the message,
and the uid and alarm id are outbox columns.

Only opentelemetry-proto's messages are used here (no SDK): importing this module costs little.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from exporter import __version__
from exporter.model import AttrValue, LogEvent

__all__ = [
    "SCOPE_NAME",
    "add_key_values",
    "decode_log",
    "default_resource_attributes",
    "encode_log",
    "logs_request",
    "resource_message",
    "set_value",
    "stored_log",
]

SCOPE_NAME = "bk-otel-exporter"
_SAMPLED = 1  # W3C trace flags: the alarm's trace is always recorded


def set_value(target: AnyValue, value: Any) -> None:
    """Write ``value`` into the AnyValue ``target`` by the SDK's rules (bool before int; lists and
    tuples as arrays, mappings as key/value lists). Fields are set in place: building messages
    from keyword arguments costs about three times as much on this hot path.

    Raises TypeError for what OTLP cannot carry (the record is then sent, and refused, the old way).
    """
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        target.int_value = value
    elif kind is float:
        target.double_value = value
    elif isinstance(value, bool):
        target.bool_value = bool(value)
    elif isinstance(value, str):
        target.string_value = str(value)
    elif isinstance(value, int):
        target.int_value = int(value)
    elif isinstance(value, float):
        target.double_value = float(value)
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, (list, tuple)):
        values = target.array_value.values
        target.array_value.SetInParent()
        for item in value:
            set_value(values.add(), item)
    elif isinstance(value, Mapping):
        target.kvlist_value.SetInParent()
        add_key_values(target.kvlist_value.values, value)
    else:
        raise TypeError(f"an OTLP attribute cannot hold {kind.__name__}")


def add_key_values(target: Any, attributes: Mapping[str, Any]) -> None:
    """Append ``attributes`` to the repeated KeyValue field ``target``."""
    add = target.add
    for key, value in attributes.items():
        kv = add()
        kv.key = key
        set_value(kv.value, value)


def _python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _python(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


def encode_log(event: LogEvent) -> bytes:
    """``event`` as the outbox keeps it: a serialized ``ScopeLogs`` holding just its ``LogRecord``
    (protobuf's own framing of one ``log_records`` element: concatenated, they are the records
    of one ScopeLogs)."""
    holder = ScopeLogs()
    record = holder.log_records.add()
    record.time_unix_nano = event.timestamp_ns
    record.observed_time_unix_nano = event.observed_ns
    record.severity_number = event.severity_number
    record.severity_text = event.severity_text
    set_value(record.body, event.body)
    add_key_values(record.attributes, event.attributes)
    record.event_name = event.event_name
    if event.trace_id and event.span_id:
        record.trace_id = event.trace_id.to_bytes(16, "big")
        record.span_id = event.span_id.to_bytes(8, "big")
        record.flags = _SAMPLED
    return holder.SerializeToString()


def stored_log(event: LogEvent) -> bytes | str:
    """What the outbox keeps of ``event``: its OTLP bytes, or its JSON when OTLP cannot carry it
    (a mapper plugin's value of an unknown type): that row is then encoded at send time, refused
    there and parked with the reason, as any record the backend cannot take."""
    try:
        return encode_log(event)
    except (TypeError, ValueError):
        return event.to_json()


def decode_log(uid: str, alarm_id: str, data: bytes) -> LogEvent:
    """The LogEvent a stored ``LogRecord`` was encoded from (``uid`` and ``alarm_id``: its row's)."""
    records = ScopeLogs.FromString(data).log_records
    if len(records) != 1:
        raise ValueError(f"an outbox log row holds {len(records)} records, not 1")
    record = records[0]
    attributes: dict[str, AttrValue] = {kv.key: _python(kv.value) for kv in record.attributes}
    body = _python(record.body)
    return LogEvent(
        uid=uid,
        alarm_id=alarm_id,
        timestamp_ns=record.time_unix_nano,
        observed_ns=record.observed_time_unix_nano,
        event_name=record.event_name,
        body="" if body is None else body,
        severity_number=record.severity_number,
        severity_text=record.severity_text,
        attributes=attributes,
        trace_id=int.from_bytes(record.trace_id, "big") if record.trace_id else None,
        span_id=int.from_bytes(record.span_id, "big") if record.span_id else None,
    )


def default_resource_attributes(service_name: str, instance_id: str) -> dict[str, str]:
    """The resource of every request unless configured otherwise (docs/reference.md)."""
    return {
        "service.name": service_name,
        "service.version": __version__,
        "service.instance.id": instance_id,
        "host.name": socket.gethostname(),
    }


def resource_message(attributes: Mapping[str, str]) -> Resource:
    resource = Resource()
    add_key_values(resource.attributes, attributes)
    return resource


def logs_request(records: Iterable[bytes], resource: Resource) -> bytes:
    """The serialized ``ExportLogsServiceRequest`` carrying the stored ``records`` under
    ``resource`` and the exporter's scope. Raises DecodeError for bytes that are not ScopeLogs."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.CopyFrom(resource)
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.CopyFrom(InstrumentationScope(name=SCOPE_NAME, version=__version__))
    scope_logs.MergeFromString(b"".join(records))
    return request.SerializeToString()
