"""The thin OTLP transport and the sink around it, without sockets: how each answer is read.

HTTP answers are real ``requests.Response`` objects handed to the transport by a fake session;
gRPC failures are fake ``grpc.RpcError`` calls, as grpcio raises them.
"""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import grpc
import pytest
import requests
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from exporter.model import LogEvent, SpanEventData, SpanRecord
from exporter.sinks.base import ExportOutcome, ExportResult
from exporter.sinks.otlp import OtlpSettings, OtlpSink
from exporter.sinks.otlp_transport import GrpcTransport, HttpTransport, grpc_metadata, retry_after_seconds

ENDPOINT = "http://collector.example:4318"


def response(status: int, body: bytes = b"", **headers: str) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    r._content_consumed = True  # as requests leaves a response read without stream=True
    r.headers.update(headers)
    return r


class FakeSession:
    def __init__(self, answer: requests.Response | Exception) -> None:
        self.answer = answer
        self.posts: list[dict[str, Any]] = []

    def post(self, url: str, **kw: Any) -> requests.Response:
        self.posts.append({"url": url, **kw})
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self) -> None:
        return None


def http(answer: requests.Response | Exception, **kw: Any) -> tuple[HttpTransport, FakeSession]:
    transport = HttpTransport(ENDPOINT, headers={"Authorization": "Bearer t"}, compression="gzip", timeout=3.0, **kw)
    session = FakeSession(answer)
    transport._session = session  # type: ignore[assignment]
    return transport, session


# -- HTTP ------------------------------------------------------------------------------------------


def test_http_posts_gzipped_protobuf_and_never_follows_a_redirect() -> None:
    transport, session = http(response(200))
    body = logs_service_pb2.ExportLogsServiceRequest().SerializeToString() + b"\x0a\x00"
    assert transport.send("spans", body).outcome is ExportOutcome.SUCCESS
    [post] = session.posts
    assert post["url"] == ENDPOINT + "/v1/traces"
    assert post["allow_redirects"] is False and post["timeout"] == 3.0
    assert gzip.decompress(post["data"]) == body
    assert post["headers"]["Content-Type"] == "application/x-protobuf"
    assert post["headers"]["Content-Encoding"] == "gzip"
    assert post["headers"]["Authorization"] == "Bearer t"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_http_redirect_is_a_retry_naming_the_location(status: int) -> None:
    transport, _ = http(response(status, b"<html>moved</html>", Location="https://sso.example.com/login?next=/x&t=1"))
    result = transport.send("logs", b"")
    assert result.outcome is ExportOutcome.RETRY
    assert f"HTTP {status} redirect to https://sso.example.com/login?…" in result.detail
    assert "only a 2xx answer is" in result.detail and "t=1" not in result.detail


def test_http_redirect_without_location() -> None:
    transport, _ = http(response(302))
    assert "redirect without a Location" in transport.send("logs", b"").detail


def test_http_partial_success_is_read() -> None:
    answer = logs_service_pb2.ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records = 3
    answer.partial_success.error_message = "3 records too old"
    transport, _ = http(response(200, answer.SerializeToString(), **{"Content-Type": "application/x-protobuf"}))
    assert transport.send("logs", b"") == ExportResult(ExportOutcome.SUCCESS, "3 records too old", rejected=3)

    spans = trace_service_pb2.ExportTraceServiceResponse()
    spans.partial_success.rejected_spans = 2
    transport, _ = http(response(200, spans.SerializeToString()))
    assert transport.send("spans", b"").rejected == 2


@pytest.mark.parametrize("body", [b"", b"{}", b"\xff\xfe not protobuf"])
def test_http_2xx_without_a_readable_answer_is_a_plain_success(body: bytes) -> None:
    transport, _ = http(response(202, body))
    assert transport.send("logs", body) == ExportResult(ExportOutcome.SUCCESS)


def test_http_status_classification() -> None:
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad attribute").SerializeToString()
    cases = {
        400: (ExportOutcome.REJECTED, None),
        413: (ExportOutcome.TOO_LARGE, None),
        401: (ExportOutcome.RETRY, None),
        404: (ExportOutcome.RETRY, None),
        500: (ExportOutcome.RETRY, None),
        429: (ExportOutcome.RETRY, 7.0),
        502: (ExportOutcome.RETRY, 7.0),
        503: (ExportOutcome.RETRY, 7.0),
        504: (ExportOutcome.RETRY, 7.0),
    }
    for code, (outcome, wait) in cases.items():
        transport, _ = http(response(code, status, **{"Content-Type": "application/x-protobuf", "Retry-After": "7"}))
        result = transport.send("logs", b"")
        assert (result.outcome, result.retry_after) == (outcome, wait), code
        assert result.detail == f"HTTP {code} from {ENDPOINT}/v1/logs: bad attribute"


def test_http_no_answer_is_a_retry() -> None:
    transport, _ = http(requests.ConnectionError("refused"))
    result = transport.send("logs", b"")
    assert (
        result.outcome is ExportOutcome.RETRY and result.detail == f"no answer from {ENDPOINT}/v1/logs: ConnectionError"
    )


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after_seconds("120") == 120.0
    now = 1_718_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 90, tz=timezone.utc), usegmt=True)
    assert retry_after_seconds(date, now=lambda: now) == pytest.approx(90.0)
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


# -- gRPC ------------------------------------------------------------------------------------------


class FakeCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, Any], ...] = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def grpc_failed(signal: str, call: FakeCall) -> ExportResult:
    transport = GrpcTransport.__new__(GrpcTransport)  # no channel: only the classification
    transport.where = "http://collector.example:4317"
    return transport._failed(signal, call)


def test_grpc_metadata_names_are_lowercased() -> None:
    assert grpc_metadata({"Authorization": "Bearer t", "X-Tenant": "a"}) == (
        ("authorization", "Bearer t"),
        ("x-tenant", "a"),
    )


def test_grpc_status_classification() -> None:
    c = grpc.StatusCode
    assert grpc_failed("logs", FakeCall(c.INVALID_ARGUMENT, "bad")).outcome is ExportOutcome.REJECTED
    size = FakeCall(c.RESOURCE_EXHAUSTED, "grpc: received message larger than max (5242880 vs. 4194304)")
    assert grpc_failed("logs", size).outcome is ExportOutcome.TOO_LARGE
    busy = FakeCall(c.RESOURCE_EXHAUSTED, "memory limiter: data refused")
    assert grpc_failed("logs", busy).outcome is ExportOutcome.RETRY  # busy, not too big: never split
    for code in (c.UNAVAILABLE, c.DEADLINE_EXCEEDED, c.UNAUTHENTICATED, c.INTERNAL, c.PERMISSION_DENIED):
        assert grpc_failed("logs", FakeCall(code, "x")).outcome is ExportOutcome.RETRY


def test_grpc_unimplemented_names_the_missing_service_of_that_signal() -> None:
    result = grpc_failed("spans", FakeCall(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"))
    assert result.outcome is ExportOutcome.RETRY
    assert "has no OTLP traces service (gRPC UNIMPLEMENTED)" in result.detail
    assert "remove spans from export.signals" in result.detail


def test_grpc_retry_info_is_read() -> None:
    info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=2, nanos=500_000_000))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="later")
    status.details.add().Pack(info)
    trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    result = grpc_failed("logs", FakeCall(grpc.StatusCode.UNAVAILABLE, "later", trailing))
    assert result.retry_after == 2.5


# -- the sink --------------------------------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, signal: str, body: bytes) -> ExportResult:
        self.sent.append((signal, body))
        return ExportResult(ExportOutcome.SUCCESS)

    def close(self) -> None:
        return None


def sink(**kw: Any) -> tuple[OtlpSink, FakeTransport]:
    s = OtlpSink(OtlpSettings(endpoint="http://127.0.0.1:9", protocol="http/protobuf", **kw))
    fake = FakeTransport()
    s._transport = fake  # type: ignore[assignment]
    return s, fake


def test_sink_sends_one_encoded_request_per_batch() -> None:
    s, fake = sink(resource={"service.name": "svc"})
    events = [LogEvent(f"u{i}", "1", 1, 2, "CREATE", f"body {i}", 9, "INFO", {"k": i}) for i in range(3)]
    assert s.export("logs", events).ok
    [(signal, body)] = fake.sent
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    [resource_logs] = request.resource_logs
    assert resource_logs.resource.attributes[0].value.string_value == "svc"
    assert [r.body.string_value for r in resource_logs.scope_logs[0].log_records] == ["body 0", "body 1", "body 2"]


def test_sink_refuses_a_request_over_max_batch_bytes_without_sending_it() -> None:
    s, fake = sink(max_batch_bytes=4096)
    events = [LogEvent(f"u{i}", "1", 1, 2, "CREATE", "x" * 1000, 9, "INFO") for i in range(5)]
    result = s.export("logs", events)
    assert result.outcome is ExportOutcome.TOO_LARGE and fake.sent == []
    assert (
        "5 records encode to" in result.detail
        and "over max_batch_bytes (4096; set in export:, export.logs: or" in result.detail
    )
    assert s.export("logs", events[:3]).ok and len(fake.sent) == 1


def test_sink_encodes_the_spans_dropped_events_count() -> None:
    s, fake = sink()
    span = SpanRecord("u", "1", 1, 2, "n", 1, 2, events=(SpanEventData("CREATE", 1, {}),), dropped_events=1500)
    assert s.export("spans", [span]).ok
    [(_, body)] = fake.sent
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    assert request.resource_spans[0].scope_spans[0].spans[0].dropped_events_count == 1500
