"""The OTLP test harness itself: SDK exporters -> rotel -> OtlpReceiver, decoded.

These tests pin what the exporter's integration tests rely on: that records survive a real
collector field for field (event_name included), that the receiver's fault modes fail an
exporter the way a backend would, and how rotel behaves when its backend fails or when it is
killed and restarted (see the docstring of tests/support/rotel.py).
"""

from __future__ import annotations

import gzip
import http.client
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace as trace_api
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from tests.support.otlp_receiver import OtlpReceiver, any_value_to_python
from tests.support.rotel import Rotel, RotelCollector

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.support.fixtures"]  # otlp_receiver, rotel_collector

TRACE_ID = 0x5B8EFFF798038103D269B633813FC60C
SPAN_ID = 0xEEE19B7EC3C1B174
PARENT_ID = 0x0102030405060708
T0 = 1_700_000_000_123_456_789
RESOURCE = Resource({"service.name": "bk-otel-exporter-test", "deployment.environment": "ci"})
SCOPE = InstrumentationScope("bk_otel_exporter.test", "1.2.3")
LOG_ATTRIBUTES: dict[str, Any] = {
    "bk.alert.id": "a-1",
    "bk.event.id": 42,
    "bk.ratio": 0.5,
    "bk.converged": True,
    "bk.receivers": ["alice", "bob"],
    "bk.levels": [1, 2, 3],
}


def _context(trace_id: int = TRACE_ID, span_id: int = SPAN_ID) -> Any:
    span = trace_api.NonRecordingSpan(
        SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    return trace_api.set_span_in_context(span)


def make_log(body: Any = "CPU usage above 90%", *, event_name: str = "bk.alarm.created", **kw: Any):
    record = LogRecord(
        timestamp=kw.pop("timestamp", T0),
        observed_timestamp=kw.pop("observed_timestamp", T0 + 1_000),
        context=kw.pop("context", _context()),
        severity_text=kw.pop("severity_text", "WARN"),
        severity_number=kw.pop("severity_number", SeverityNumber.WARN),
        body=body,
        attributes=kw.pop("attributes", LOG_ATTRIBUTES),
        event_name=event_name,
    )
    assert not kw, kw
    return ReadableLogRecord(record, resource=RESOURCE, instrumentation_scope=SCOPE)


def make_span(name: str = "bk.alarm", **kw: Any) -> ReadableSpan:
    return ReadableSpan(
        name,
        context=SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        parent=SpanContext(TRACE_ID, PARENT_ID, is_remote=True),
        resource=RESOURCE,
        attributes=kw.pop("attributes", {"bk.alert.id": "a-1", "bk.strategy.ids": [7, 8]}),
        events=(
            Event("CREATE", {"bk.event.id": 1, "bk.operator": "system"}, timestamp=T0 + 10),
            Event("ACK", {"bk.event.id": 2, "bk.receivers": ["alice"]}, timestamp=T0 + 20),
        ),
        kind=SpanKind.INTERNAL,
        status=kw.pop("status", Status(StatusCode.ERROR, "alarm still firing")),
        start_time=T0,
        end_time=T0 + 60_000_000_000,
        instrumentation_scope=SCOPE,
    )


ExporterFactory = Callable[..., Any]


@pytest.fixture
def exporters() -> Iterator[dict[str, ExporterFactory]]:
    """Factories for the SDK's OTLP exporters, all shut down (channels closed) after the test."""

    def factory(grpc_class: Any, http_class: Any, path: str) -> ExporterFactory:
        def make(protocol: str, base: str, *, gzip_: bool = False, timeout: float = 5.0) -> Any:
            if protocol == "grpc":
                compression = grpc.Compression.Gzip if gzip_ else grpc.Compression.NoCompression
                exporter = grpc_class(endpoint=base, insecure=True, compression=compression, timeout=timeout)
            else:
                compression = HttpCompression.Gzip if gzip_ else HttpCompression.NoCompression
                exporter = http_class(endpoint=base + path, compression=compression, timeout=timeout)
            made.append(exporter)
            return exporter

        return make

    made: list[Any] = []

    yield {
        "logs": factory(GrpcLogExporter, HttpLogExporter, "/v1/logs"),
        "spans": factory(GrpcSpanExporter, HttpSpanExporter, "/v1/traces"),
    }
    for exporter in made:
        exporter.shutdown()


def _endpoint(target: Rotel | OtlpReceiver, protocol: str) -> str:
    return target.grpc_endpoint if protocol == "grpc" else target.http_endpoint


def _assert_log_fields(log: dict[str, Any]) -> None:
    assert log["body"] == "CPU usage above 90%"
    assert log["event_name"] == "bk.alarm.created"
    assert log["attributes"] == LOG_ATTRIBUTES
    assert log["time_unix_nano"] == T0
    assert log["observed_time_unix_nano"] == T0 + 1_000
    assert log["severity_number"] == SeverityNumber.WARN.value
    assert log["severity_text"] == "WARN"
    assert log["trace_id"] == f"{TRACE_ID:032x}"
    assert log["span_id"] == f"{SPAN_ID:016x}"
    assert log["resource"]["service.name"] == "bk-otel-exporter-test"
    assert log["resource"]["deployment.environment"] == "ci"
    assert log["scope"] == "bk_otel_exporter.test"


def _assert_span_fields(span: dict[str, Any]) -> None:
    assert span["name"] == "bk.alarm"
    assert span["trace_id"] == f"{TRACE_ID:032x}"
    assert span["span_id"] == f"{SPAN_ID:016x}"
    assert span["parent_span_id"] == f"{PARENT_ID:016x}"
    assert span["kind"] == 1  # SPAN_KIND_INTERNAL
    assert span["start_time_unix_nano"] == T0
    assert span["end_time_unix_nano"] == T0 + 60_000_000_000
    assert span["attributes"] == {"bk.alert.id": "a-1", "bk.strategy.ids": [7, 8]}
    create = {"bk.event.id": 1, "bk.operator": "system"}
    ack = {"bk.event.id": 2, "bk.receivers": ["alice"]}
    assert span["events"] == [
        {"name": "CREATE", "time_unix_nano": T0 + 10, "attributes": create},
        {"name": "ACK", "time_unix_nano": T0 + 20, "attributes": ack},
    ]
    assert span["status"] == {"code": 2, "message": "alarm still firing"}  # STATUS_CODE_ERROR
    assert span["resource"]["service.name"] == "bk-otel-exporter-test"
    assert span["scope"] == "bk_otel_exporter.test"


# ------------------------------------------------------------------------------------------
# through rotel


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_logs_survive_rotel(rotel_collector: RotelCollector, exporters, protocol: str) -> None:
    rotel, receiver = rotel_collector
    exporter = exporters["logs"](protocol, _endpoint(rotel, protocol), gzip_=True)
    other = make_log({"alarm": "disk", "values": [1, 2.5, "x"], "ok": False}, event_name="bk.alarm.folded")

    assert exporter.export([make_log(), other]) is LogRecordExportResult.SUCCESS

    first, second = receiver.wait_for_logs(2, timeout=5)
    _assert_log_fields(first)
    assert second["body"] == {"alarm": "disk", "values": [1, 2.5, "x"], "ok": False}
    assert second["event_name"] == "bk.alarm.folded"
    # rotel forwards over gRPC with gzip by default
    assert {(r.transport, r.compressed, r.accepted) for r in receiver.requests} == {("grpc", True, True)}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_survive_rotel(rotel_collector: RotelCollector, exporters, protocol: str) -> None:
    rotel, receiver = rotel_collector
    exporter = exporters["spans"](protocol, _endpoint(rotel, protocol), gzip_=protocol == "http")

    assert exporter.export([make_span()]) is SpanExportResult.SUCCESS

    [span] = receiver.wait_for_spans(1, timeout=5)
    _assert_span_fields(span)
    assert receiver.logs() == []


def test_rotel_can_forward_over_http(otlp_receiver: OtlpReceiver, exporters) -> None:
    with Rotel(receiver=otlp_receiver, exporter_protocol="http") as rotel:
        logs = exporters["logs"]("grpc", rotel.grpc_endpoint)
        spans = exporters["spans"]("grpc", rotel.grpc_endpoint)
        assert logs.export([make_log()]) is LogRecordExportResult.SUCCESS
        assert spans.export([make_span()]) is SpanExportResult.SUCCESS
        [log] = otlp_receiver.wait_for_logs(1, timeout=5)
        [span] = otlp_receiver.wait_for_spans(1, timeout=5)
    _assert_log_fields(log)
    _assert_span_fields(span)
    requests = otlp_receiver.requests
    assert {(r.transport, r.signal) for r in requests} == {("http", "logs"), ("http", "traces")}
    assert all(r.compressed and r.headers["content-type"] == "application/x-protobuf" for r in requests)


def test_rotel_forwards_promptly(rotel_collector: RotelCollector, exporters) -> None:
    rotel, receiver = rotel_collector
    exporter = exporters["logs"]("grpc", rotel.grpc_endpoint)
    for i in range(3):
        assert exporter.export([make_log(f"record {i}")]) is LogRecordExportResult.SUCCESS
        sent = time.monotonic()
        receiver.wait_for_logs(i + 1, timeout=5)
        assert time.monotonic() - sent < 1.0  # batch timeout is 50 ms
    assert [log["body"] for log in receiver.logs()] == ["record 0", "record 1", "record 2"]


def test_rotel_acks_upstream_and_drops_when_the_backend_rejects(rotel_collector, exporters) -> None:
    rotel, receiver = rotel_collector
    receiver.mode = "reject"
    exporter = exporters["logs"]("grpc", rotel.grpc_endpoint)

    # rotel answers its client before forwarding: the client cannot see the backend's verdict
    assert exporter.export([make_log()]) is LogRecordExportResult.SUCCESS
    receiver.wait_for_requests(1, timeout=5, where=lambda r: r.status == "INVALID_ARGUMENT")
    receiver.mode = "ok"
    time.sleep(0.5)  # several retry periods: rotel does not retry a permanent error
    assert receiver.logs() == []
    assert len(receiver.requests) == 1
    assert "dropping data" in rotel.output()


def test_rotel_retries_while_the_backend_is_unavailable(rotel_collector, exporters) -> None:
    rotel, receiver = rotel_collector
    receiver.mode = "unavailable"
    exporter = exporters["logs"]("http", rotel.http_endpoint)

    assert exporter.export([make_log()]) is LogRecordExportResult.SUCCESS
    refused = receiver.wait_for_requests(2, timeout=5, where=lambda r: r.status == "UNAVAILABLE")
    assert not any(r.accepted for r in refused)
    receiver.mode = "ok"
    [log] = receiver.wait_for_logs(1, timeout=5)
    _assert_log_fields(log)
    time.sleep(0.2)
    assert len(receiver.logs()) == 1  # delivered once


def test_rotel_flushes_its_batch_on_sigterm(otlp_receiver: OtlpReceiver, exporters) -> None:
    rotel = Rotel(receiver=otlp_receiver, batch_timeout="30s").start()
    try:
        exporter = exporters["logs"]("grpc", rotel.grpc_endpoint)
        assert exporter.export([make_log()]) is LogRecordExportResult.SUCCESS
        time.sleep(0.1)
        assert otlp_receiver.logs() == []  # still batched
    finally:
        rotel.stop()
    assert rotel.returncode == 0
    [log] = otlp_receiver.wait_for_logs(1, timeout=2)
    _assert_log_fields(log)


def test_rotel_killed_and_restarted_on_the_same_ports(rotel_collector, exporters) -> None:
    rotel, receiver = rotel_collector
    ports = (rotel.grpc_port, rotel.http_port)
    grpc_logs = exporters["logs"]("grpc", rotel.grpc_endpoint, timeout=0.5)
    http_logs = exporters["logs"]("http", rotel.http_endpoint, timeout=0.5)
    assert grpc_logs.export([make_log("before")]) is LogRecordExportResult.SUCCESS
    receiver.wait_for_logs(1, timeout=5)

    rotel.kill()
    assert not rotel.running
    assert rotel.returncode == -9
    assert grpc_logs.export([make_log("while down")]) is LogRecordExportResult.FAILURE
    assert http_logs.export([make_log("while down")]) is LogRecordExportResult.FAILURE

    rotel.restart()
    assert rotel.running
    assert (rotel.grpc_port, rotel.http_port) == ports
    assert rotel.starts == 2
    # the SDK's gRPC channel reconnects with backoff: give this exporter time for one retry
    grpc_again = exporters["logs"]("grpc", rotel.grpc_endpoint, timeout=5)
    assert grpc_again.export([make_log("after")]) is LogRecordExportResult.SUCCESS
    assert http_logs.export([make_log("after, http")]) is LogRecordExportResult.SUCCESS
    bodies = [log["body"] for log in receiver.wait_for_logs(3, timeout=5)]
    assert sorted(bodies) == ["after", "after, http", "before"]


def test_rotel_start_failure_shows_its_output(otlp_receiver: OtlpReceiver) -> None:
    rotel = Rotel(receiver=otlp_receiver, extra_args=["--no-such-flag"], startup_timeout=3)
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 2 during start-up.*no-such-flag"):
        rotel.start()
    assert not rotel.running


# ------------------------------------------------------------------------------------------
# the receiver on its own


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_receiver_decodes_and_sees_gzip(otlp_receiver: OtlpReceiver, exporters, protocol: str) -> None:
    endpoint = _endpoint(otlp_receiver, protocol)
    # big enough to compress: grpc-core sends a message uncompressed when gzip would not shrink it
    big = make_log("x" * 500)
    gzip_logs = exporters["logs"](protocol, endpoint, gzip_=True)
    gzip_spans = exporters["spans"](protocol, endpoint, gzip_=True)
    assert gzip_logs.export([big]) is LogRecordExportResult.SUCCESS
    assert exporters["logs"](protocol, endpoint).export([make_log()]) is LogRecordExportResult.SUCCESS
    assert gzip_spans.export([make_span()]) is SpanExportResult.SUCCESS

    gzipped, plain = otlp_receiver.wait_for_logs(2, timeout=5)
    assert gzipped["body"] == "x" * 500
    _assert_log_fields(plain)
    _assert_span_fields(otlp_receiver.wait_for_spans(1, timeout=5)[0])
    assert [(r.transport, r.signal, r.compressed, r.items) for r in otlp_receiver.requests] == [
        (protocol, "logs", True, 1),
        (protocol, "logs", False, 1),
        (protocol, "traces", True, 1),
    ]
    assert "OTel-OTLP-Exporter-Python" in otlp_receiver.requests[0].headers["user-agent"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize(
    ("mode", "grpc_status", "http_status"),
    [("reject", "INVALID_ARGUMENT", "400"), ("unavailable", "UNAVAILABLE", "503")],
)
def test_receiver_modes_fail_the_exporter(
    otlp_receiver: OtlpReceiver, exporters, protocol: str, mode: str, grpc_status: str, http_status: str
) -> None:
    otlp_receiver.mode = mode  # type: ignore[assignment]
    endpoint = _endpoint(otlp_receiver, protocol)
    # timeout below the SDK's first backoff (~1 s): a retryable error fails at once
    logs = exporters["logs"](protocol, endpoint, timeout=0.5)
    spans = exporters["spans"](protocol, endpoint, timeout=0.5)

    assert logs.export([make_log()]) is LogRecordExportResult.FAILURE
    assert spans.export([make_span()]) is SpanExportResult.FAILURE
    assert otlp_receiver.logs() == [] and otlp_receiver.spans() == []
    expected = grpc_status if protocol == "grpc" else http_status
    assert [(r.signal, r.accepted, r.status, r.items) for r in otlp_receiver.requests] == [
        ("logs", False, expected, 1),
        ("traces", False, expected, 1),
    ]

    otlp_receiver.mode = "ok"
    assert logs.export([make_log()]) is LogRecordExportResult.SUCCESS
    _assert_log_fields(otlp_receiver.wait_for_logs(1, timeout=5)[0])


def test_receiver_refuses_what_is_not_otlp_protobuf(otlp_receiver: OtlpReceiver) -> None:
    def post(path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", otlp_receiver.http_port, timeout=5)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    protobuf = {"Content-Type": "application/x-protobuf"}
    gzipped = {**protobuf, "Content-Encoding": "gzip"}
    assert post("/v1/metrics", b"", protobuf)[0] == 404
    assert post("/v1/logs", b"{}", {"Content-Type": "application/json"})[0] == 415
    assert post("/v1/logs", b"not gzip", gzipped)[0] == 400
    assert post("/v1/logs", gzip.compress(b"\xff\xff\xff"), gzipped)[0] == 400
    status, body = post("/v1/logs", gzip.compress(b""), gzipped)
    assert (status, body) == (200, b"")  # an empty ExportLogsServiceResponse
    assert [(r.status, r.accepted, bool(r.error)) for r in otlp_receiver.requests] == [
        ("415", False, True),
        ("400", False, True),
        ("400", False, True),
        ("200", True, False),
    ]


def test_wait_for_logs_times_out_with_a_useful_message(otlp_receiver: OtlpReceiver, exporters) -> None:
    otlp_receiver.mode = "reject"
    exporters["logs"]("http", otlp_receiver.http_endpoint, timeout=0.5).export([make_log()])
    with pytest.raises(AssertionError, match=r"(?s)waiting for 1 log records.*mode='reject'.*status=400"):
        otlp_receiver.wait_for_logs(1, timeout=0.1)


def test_mode_is_validated(otlp_receiver: OtlpReceiver) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        otlp_receiver.mode = "down"  # type: ignore[assignment]


def test_any_value_to_python() -> None:
    value = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="s", value=AnyValue(string_value="text")),
                KeyValue(key="b", value=AnyValue(bool_value=False)),
                KeyValue(key="i", value=AnyValue(int_value=-7)),
                KeyValue(key="d", value=AnyValue(double_value=1.5)),
                KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\x01")),
                KeyValue(
                    key="list",
                    value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue()])),
                ),
            ]
        )
    )
    assert any_value_to_python(value) == {
        "s": "text",
        "b": False,
        "i": -7,
        "d": 1.5,
        "raw": b"\x00\x01",
        "list": [1, None],
    }
    assert any_value_to_python(AnyValue()) is None
