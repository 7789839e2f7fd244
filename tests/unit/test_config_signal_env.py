"""``OTEL_EXPORTER_OTLP_LOGS_*`` / ``OTEL_EXPORTER_OTLP_TRACES_*`` per the OpenTelemetry
specification: a signal's variable wins over the generic one, the file wins over both, a signal's
endpoint is the full URL (used as-is); ``check-config`` says which value came from which variable.
The OTLP sink then sends each signal where its keys say."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.config import config_from_dict, render_effective
from exporter.errors import ConfigError
from exporter.sinks.builtin import otlp_sink

BASE: dict[str, Any] = {"bkmonitor": {"base_url": "https://paas.example.com", "app_code": "a", "app_secret": "s"}}


def test_signal_variables_fill_their_signal_and_win_over_the_generic_ones() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://loki:3100/otlp/v1/logs",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-scope=all",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "x-scope=logs",
    }
    config = config_from_dict({**BASE, "export": {"signals": ["logs", "spans"]}}, env=env)
    export = config.export
    logs, spans = export.for_signal("logs"), export.for_signal("spans")
    assert export.endpoint == "http://collector:4318"
    assert (logs.endpoint, logs.protocol, dict(logs.headers)) == (
        "http://loki:3100/otlp/v1/logs",
        "http/protobuf",
        {"x-scope": "logs"},
    )
    assert (spans.endpoint, spans.timeout, dict(spans.headers)) == (
        "http://tempo:4318/v1/traces",
        2.5,
        {"x-scope": "all"},
    )
    shown = render_effective(config)
    assert "#   export.logs.endpoint: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT" in shown
    assert "#   export.spans.timeout: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" in shown
    assert "#   export.endpoint: OTEL_EXPORTER_OTLP_ENDPOINT" in shown
    assert "x-scope=logs" not in shown  # header values are secrets


def test_the_file_wins_over_both_variables() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://env-logs:4318/v1/logs",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://g:4317",
    }
    config = config_from_dict({**BASE, "export": {"logs": {"endpoint": "http://file-logs:4317"}}}, env=env)
    assert config.export.for_signal("logs").endpoint == "http://file-logs:4317"
    assert config.export.endpoint == "http://g:4317"
    assert "export.logs.endpoint" not in config.from_env
    # no signal variable and no block: the signal follows export
    assert config.export.for_signal("spans") is config.export


def test_a_bad_signal_variable_names_itself_and_the_option() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({**BASE}, env={"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon"})
    assert any(
        p.startswith("export.spans.timeout:") and "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" in p for p in info.value.problems
    )


def test_the_otlp_sink_sends_each_signal_to_its_own_url() -> None:
    config = config_from_dict(
        {
            **BASE,
            "export": {
                "signals": ["logs", "spans"],
                "endpoint": "http://collector:4318",
                "protocol": "http/protobuf",
                "logs": {"endpoint": "http://gateway:8080/ingest/otlp-logs"},
                "spans": {"headers": {"x-tenant": "t1"}},
            },
        },
        env={},
    )
    sink: Any = otlp_sink(config.export, "i")
    try:
        logs, spans = sink.sinks["logs"], sink.sinks["spans"]
        assert logs._transport._urls["logs"] == "http://gateway:8080/ingest/otlp-logs"  # as-is, no /v1/logs
        assert spans._transport._urls["spans"] == "http://collector:4318/v1/traces"  # export's, path appended
        assert spans.settings.headers == {"x-tenant": "t1"} and logs.settings.headers == {}
    finally:
        sink.shutdown()
    single: Any = otlp_sink(config.export.model_copy(update={"logs": None, "spans": None}), "i")
    try:
        assert not hasattr(single, "sinks")
    finally:
        single.shutdown()
