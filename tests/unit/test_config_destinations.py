"""``destinations:``, the filters and the per-signal OTLP keys: every new option validated with
its option path."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.config import config_from_dict
from exporter.config.otlp import OtlpOptions
from exporter.errors import ConfigError

BASE: dict[str, Any] = {"bkmonitor": {"base_url": "https://paas.example.com", "app_code": "a", "app_secret": "s"}}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict({**BASE, **raw}, env={})
    return info.value.problems


def test_destinations_are_validated_by_their_sink() -> None:
    config = config_from_dict(
        {
            **BASE,
            "export": {"signals": ["logs", "spans"]},
            "destinations": [
                {"name": "tempo", "sink": "otlp", "signals": "spans", "options": {"endpoint": "http://t:4317"}},
                {"name": "audit-1", "sink": "console"},
            ],
        },
        env={},
    )
    tempo, audit = config.destinations
    assert isinstance(tempo.options, OtlpOptions) and tempo.options.endpoint == "http://t:4317"
    assert tempo.signals == ("spans",)
    assert audit.signals == ("logs", "spans")  # default: export.signals
    assert audit.filter.everything


@pytest.mark.parametrize(
    ("destination", "line"),
    [
        ({"name": "Bad Name", "sink": "otlp"}, "destinations.0.name: string should match pattern"),
        ({"name": "x", "sink": "nope"}, "destinations.0.sink: unknown sink 'nope'"),
        ({"name": "x", "sink": "otlp", "options": {"endpoint": "ftp://x"}}, "destinations.0.options.endpoint: must be"),
        ({"name": "x", "sink": "otlp", "options": {"timeot": 1}}, "destinations.0.options.timeot: unknown option"),
        ({"name": "x", "sink": "otlp", "options": {"batch_size": 0}}, "destinations.0.options.batch_size: must be ≥ 1"),
        (
            {"name": "x", "sink": "otlp", "options": {"client_cert_file": __file__}},
            "destinations.0.options.client_key_file: required together with client_cert_file",
        ),
        ({"name": "x", "sink": "jsonl", "options": {"max_bytes": "x"}}, "destinations.0.options.max_bytes: must be an"),
        ({"name": "x", "sink": "console", "options": {"a": 1}}, "destinations.0.options.a: unknown option"),
        ({"name": "x", "sink": "otlp", "signals": ["metrics"]}, "destinations.0.signals.0: must be one of"),
        (
            {"name": "x", "sink": "otlp", "filter": {"severities": [4]}},
            "destinations.0.filter.severities.0: must be ≤ 3",
        ),
        ({"name": "x", "sink": "otlp", "filter": {"operates": ["NO PE"]}}, "destinations.0.filter.operates: must be"),
        (
            {"name": "x", "sink": "otlp", "filter": {"sevrities": [1]}},
            "destinations.0.filter.sevrities: unknown option",
        ),
        ({"name": "default", "sink": "otlp"}, "destinations.0.name: 'default' is the name of export:"),
    ],
)
def test_each_destination_option_is_checked_with_its_path(destination: dict[str, Any], line: str) -> None:
    found = problems({"destinations": [destination]})
    assert any(p.startswith(line) for p in found), found


def test_destination_names_are_unique() -> None:
    found = problems({"destinations": [{"name": "a", "sink": "console"}, {"name": "a", "sink": "console"}]})
    assert found == ["destinations.1.name: 'a' is used twice; names must be unique"]


def test_export_filter_and_its_paths() -> None:
    config = config_from_dict({**BASE, "export": {"filter": {"operates": "create, close", "bk_biz_ids": [2]}}}, env={})
    assert config.export.filter.operates == ("CREATE", "CLOSE") and config.export.filter.bk_biz_ids == (2,)
    assert config_from_dict(BASE, env={}).export.filter.everything
    assert problems({"export": {"filter": {"bk_biz_ids": ["x"]}}}) == ["export.filter.bk_biz_ids.0: must be an integer"]


def test_per_signal_keys_override_export() -> None:
    config = config_from_dict(
        {
            **BASE,
            "export": {
                "endpoint": "http://collector:4317",
                "headers": {"x-a": "1"},
                "logs": {"endpoint": "http://loki:3100/otlp/v1/logs", "protocol": "http/protobuf"},
                "spans": {},
            },
        },
        env={},
    )
    logs = config.export.for_signal("logs")
    assert (logs.endpoint, logs.protocol, dict(logs.headers)) == (
        "http://loki:3100/otlp/v1/logs",
        "http/protobuf",
        {"x-a": "1"},
    )
    assert config.export.for_signal("spans") is config.export  # {} = as export:
    assert problems({"export": {"spans": {"compression": "zip"}}})[0].startswith(
        "export.spans.compression: must be one of"
    )
    assert problems({"export": {"logs": {"endpoint": "nope"}}})[0].startswith("export.logs.endpoint: must be")


def test_destination_headers_are_secrets() -> None:
    config = config_from_dict(
        {
            **BASE,
            "destinations": [{"name": "x", "sink": "otlp", "options": {"headers": {"authorization": "Bearer zz9"}}}],
        },
        env={},
    )
    assert "Bearer zz9" in config.secrets()
