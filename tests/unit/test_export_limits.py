"""Limits at the OTLP edge: span events per span, ``export.max_batch_bytes`` (sizes), header names."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.config import config_from_dict
from exporter.config.render import redacted_dict
from exporter.config.types import format_size, parse_size
from exporter.errors import ConfigError
from exporter.mapping.spans import MAX_SPAN_EVENTS, alarm_span, slice_span
from exporter.model import SpanEventData
from tests.support.secrets import OTLP_AUTH_HEADER

S = 1_000_000_000
T0 = 1_718_000_000


def events(n: int, *, recover: bool = True) -> list[SpanEventData]:
    out = [SpanEventData("CREATE", T0 * S, {"message": "created"})]
    out += [SpanEventData("CONVERGE", (T0 + i) * S, {"message": f"#{i}"}) for i in range(1, n - 1)]
    if recover:
        out.append(SpanEventData("RECOVER", (T0 + n) * S, {"message": "recovered"}))
    return out


# -- span events -------------------------------------------------------------------------------------


def test_an_alarm_span_keeps_the_first_and_last_events_and_counts_the_others() -> None:
    many = events(2500)
    span = alarm_span("1", None, many, end_ns=0)
    assert len(span.events) == MAX_SPAN_EVENTS == 1000
    assert span.dropped_events == 1500
    assert span.events[: MAX_SPAN_EVENTS // 2] == tuple(many[: MAX_SPAN_EVENTS // 2])
    assert span.events[MAX_SPAN_EVENTS // 2 :] == tuple(many[-MAX_SPAN_EVENTS // 2 :])
    # start, end and status come from every record, the dropped ones included
    assert (span.start_ns, span.end_ns, span.status_code) == (T0 * S, (T0 + 2500) * S, "OK")


def test_a_slice_span_is_capped_the_same_way() -> None:
    many = events(1801, recover=False)  # CREATE and 1799 CONVERGE
    span = slice_span("1", None, many)
    assert len(span.events) == MAX_SPAN_EVENTS and span.dropped_events == 800
    assert span.end_ns == many[-1].timestamp_ns and span.events[-1] == many[-1]


def test_spans_at_the_cap_lose_nothing() -> None:
    span = alarm_span("1", None, events(MAX_SPAN_EVENTS), end_ns=0)
    assert len(span.events) == MAX_SPAN_EVENTS and span.dropped_events == 0


def test_dropped_events_survive_the_outbox() -> None:
    span = alarm_span("1", None, events(1200), end_ns=0)
    assert type(span).from_json(span.to_json()) == span
    # a row written before the field existed still reads
    old = span.to_json().replace(',"dropped_events":200', "")
    assert type(span).from_json(old).dropped_events == 0


# -- sizes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("512KiB", 512 * 1024), ("4MiB", 4 * 1024**2), ("1GiB", 1024**3), ("3MB", 3_000_000), ("100B", 100)]
    + [("4096", 4096), (4096, 4096), (" 1.5 KiB ", 1536), ("3mib", 3 * 1024**2)],
)
def test_sizes(text: Any, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["-1", "1.5", "x", "4 MiBs", True, 1.5, "", None, [1]])
def test_bad_sizes(text: Any) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def config(env: dict[str, str] | None = None, **export: Any) -> Any:
    raw = {"bkmonitor": {"base_url": "https://paas.example.com", "app_code": "a", "app_secret": "s"}, "export": export}
    return config_from_dict(raw, env=env or {})


def problems(env: dict[str, str] | None = None, **export: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(env, **export)
    return [str(p) for p in info.value.problems]


def test_max_batch_bytes_default_and_rendering() -> None:
    assert config().export.max_batch_bytes == 3 * 1024**2
    assert redacted_dict(config(max_batch_bytes="512KiB"))["export"]["max_batch_bytes"] == "512KiB"
    assert problems(max_batch_bytes="1 parsec") == [
        "export.max_batch_bytes: invalid size '1 parsec' (use 512KiB, 4MiB, 1GiB or a number of bytes)"
    ]
    assert problems(max_batch_bytes=100) == ["export.max_batch_bytes: must be ≥ 1024"]


# -- header names ------------------------------------------------------------------------------------


def test_upper_case_header_names_are_fine_for_both_transports() -> None:
    for protocol in ("grpc", "http/protobuf"):
        assert dict(config(protocol=protocol, headers={"Authorization": OTLP_AUTH_HEADER}).export.headers) == {
            "Authorization": OTLP_AUTH_HEADER
        }


@pytest.mark.parametrize(
    ("protocol", "name", "why"),
    [
        ("grpc", "X Token", "not a valid header name"),
        ("http/protobuf", "X Token", "not a valid header name"),
        ("http/protobuf", "x-token:a", "not a valid header name"),
        ("http/protobuf", "tëst", "not a valid header name"),
        ("grpc", "x-token!", "gRPC metadata names hold only"),
        ("grpc", "grpc-timeout", "gRPC reserves names"),
        ("grpc", "x-trace-bin", "gRPC reserves names"),
    ],
)
def test_header_names_no_transport_can_send_are_refused(protocol: str, name: str, why: str) -> None:
    [problem] = problems(protocol=protocol, headers={name: OTLP_AUTH_HEADER})
    assert problem.startswith(f"export.headers: header {name!r}: {why}")
    assert OTLP_AUTH_HEADER not in problem


def test_header_names_are_checked_when_they_come_from_the_environment() -> None:
    [problem] = problems({"OTEL_EXPORTER_OTLP_HEADERS": "X Token=secret-value"})
    assert "header 'X Token'" in problem and "(from OTEL_EXPORTER_OTLP_HEADERS)" in problem
    assert "secret-value" not in problem


def test_header_values_that_cannot_be_sent_are_refused_without_showing_them() -> None:
    for protocol, value in (("grpc", "Bearer é"), ("http/protobuf", "a\r\nX-Injected: 1"), ("grpc", " Zq7-token")):
        [problem] = problems(protocol=protocol, headers={"authorization": value})
        assert "value not shown" in problem and value.strip() not in problem


def test_grpc_header_names_must_differ_in_more_than_case() -> None:
    [problem] = problems(headers={"X-Tenant": "a", "x-tenant": "b"})
    assert "gRPC sends them lower-cased" in problem
    assert config(protocol="http/protobuf", headers={"X-Tenant": "a", "X-Other": "b"})
