"""Log records encoded once, at poll time (exporter.mapping.otlp), and the requests built from them.

The reference is the SDK's own encoder (``exporter.sinks.otlp_encoding.encode_request``, which the
sink used for every batch before): the request assembled from stored bytes must be the same
message.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from exporter.mapping.otlp import decode_log, encode_log, logs_request, resource_message, stored_log
from exporter.model import LogEvent, OutboxItem
from exporter.sinks.base import ExportOutcome, StoredBatch
from exporter.sinks.otlp import OtlpSettings, OtlpSink
from exporter.sinks.otlp_encoding import FixedResource, encode_request
from tests.support.otlp_receiver import OtlpReceiver

RESOURCE = {"service.name": "bk-otel-exporter", "service.instance.id": "i-1", "host.name": "h"}


def event(uid: str, **over: Any) -> LogEvent:
    fields: dict[str, Any] = {
        "uid": uid,
        "alarm_id": "17180000005819837",
        "timestamp_ns": 1_780_000_000_123_456_789,
        "observed_ns": 1_780_000_001_000_000_000,
        "event_name": "CONVERGE",
        "body": "告警收敛 CPU使用率 92%",
        "severity_number": 13,
        "severity_text": "WARN",
        "attributes": {"bk.alarm.id": "17180000005819837", "bk.biz_id": 2, "log.record.uid": uid},
    }
    fields.update(over)
    return LogEvent(**fields)


SAMPLES = [
    event("plain"),
    event("traced", trace_id=(1 << 127) + 12345, span_id=(1 << 63) + 7),
    event("trace-only", trace_id=5, span_id=None),  # no span id: no trace context, like the SDK
    event(
        "typed",
        attributes={
            "s": "x",
            "i": -(2**63),
            "big": 2**63 - 1,
            "f": 0.25,
            "t": True,
            "no": False,
            "strs": ["a", "b"],
            "ints": [1, 2, 3],
            "floats": [1.5],
            "bools": [True, False],
            "empty": [],
            "tuple": ("p", "q"),
        },
    ),
    event("empty", body="", event_name="", severity_text="", severity_number=0, attributes={}),
]


def test_a_request_from_stored_bytes_is_the_message_the_sdk_encoder_makes() -> None:
    ours = ExportLogsServiceRequest.FromString(
        logs_request([encode_log(e) for e in SAMPLES], resource_message(RESOURCE))
    )
    sdk = encode_request("logs", SAMPLES, FixedResource(RESOURCE))
    assert ours == sdk
    assert len(ours.resource_logs[0].scope_logs[0].log_records) == len(SAMPLES)


def test_stored_bytes_decode_to_the_event_they_were_encoded_from() -> None:
    for e in SAMPLES:
        back = decode_log(e.uid, e.alarm_id, encode_log(e))
        want = e if e.uid != "typed" else event("typed", attributes={**e.attributes, "tuple": ["p", "q"]})
        assert back == (want if e.uid != "trace-only" else event("trace-only"))


_values = st.one_of(
    st.text(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.lists(st.text(), max_size=3),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(
    body=st.text(),
    attributes=st.dictionaries(st.text(min_size=1), _values, max_size=8),
    traced=st.booleans(),
)
def test_any_event_survives_the_round_trip_and_matches_the_sdk(
    body: str, attributes: dict[str, Any], traced: bool
) -> None:
    try:
        body.encode("utf-8")
        for key, value in attributes.items():
            key.encode("utf-8")
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    item.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates never get this far: the source replaces them when it parses
    e = event("p", body=body, attributes=attributes, trace_id=3 if traced else None, span_id=4 if traced else None)
    assert decode_log(e.uid, e.alarm_id, encode_log(e)) == e
    ours = ExportLogsServiceRequest.FromString(logs_request([encode_log(e)], resource_message(RESOURCE)))
    assert ours == encode_request("logs", [e], FixedResource(RESOURCE))


def test_a_record_otlp_cannot_carry_is_kept_as_json_and_parked_at_send_with_the_reason() -> None:
    odd = event("odd", attributes={"k": {"nested": None}})  # None has no OTLP value
    stored = stored_log(odd)
    assert isinstance(stored, str) and LogEvent.from_json(stored) == odd
    fine = event("fine")
    assert isinstance(stored_log(fine), bytes)
    sink = OtlpSink(OtlpSettings(endpoint="http://127.0.0.1:9", insecure=True, timeout=0.5))
    try:
        result = sink.export("logs", StoredBatch([OutboxItem(1, "logs", "odd", odd.alarm_id, text=stored)]))
    finally:
        sink.shutdown()
    assert result.outcome is ExportOutcome.REJECTED
    assert "cannot be encoded" in result.detail and "NoneType" in result.detail


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_sink_sends_stored_bytes_without_decoding_them(protocol: str) -> None:
    items = [OutboxItem(n, "logs", e.uid, e.alarm_id, encoded=encode_log(e)) for n, e in enumerate(SAMPLES)]
    old = event("queued-as-json")
    items.append(OutboxItem(99, "logs", old.uid, old.alarm_id, text=old.to_json()))  # an older version's row
    with OtlpReceiver() as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        sink = OtlpSink(OtlpSettings(endpoint=endpoint, protocol=protocol, insecure=True, resource=RESOURCE))
        try:
            result = sink.export("logs", StoredBatch(items))
        finally:
            sink.shutdown()
        assert result.ok, result.detail
        got = receiver.logs()
    assert [r["attributes"].get("log.record.uid", "") for r in got] == [
        e.attributes.get("log.record.uid", "") for e in [*SAMPLES, old]
    ]
    assert all(r["resource"] == RESOURCE for r in got)
    assert all("payload" not in vars(i) for i in items[:-1]), "a stored record was decoded to be sent"
