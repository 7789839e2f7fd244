"""The environment conventions of OpenTelemetry and the Collector: who names the service, and the
``${env:VAR}`` spelling of a reference in the config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.config import config_from_dict, load_config, substitute_env
from exporter.errors import ConfigError
from exporter.sinks.builtin import otlp_resource

BK = {"base_url": "https://paas.example.com", "app_code": "bk-app", "app_secret": "S3cr3t-app-VALUE"}


def service_name(export: dict[str, Any] | None, env: dict[str, str]) -> tuple[str, str]:
    """(export.service_name, the resource's service.name) for this file section and environment."""
    raw: dict[str, Any] = {"bkmonitor": BK}
    if export is not None:
        raw["export"] = export
    config = config_from_dict(raw, env=env)
    return config.export.service_name, otlp_resource(config.export, "i-1")["service.name"]


@pytest.mark.parametrize(
    ("export", "env", "expected"),
    [
        (None, {}, "bk-otel-exporter"),  # the built-in default
        (None, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=obs"}, "from-attrs"),
        (None, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs", "OTEL_SERVICE_NAME": "from-var"}, "from-var"),
        (None, {"OTEL_SERVICE_NAME": "from-var"}, "from-var"),
        ({"resource_attributes": {"service.name": "file-attrs"}}, {}, "file-attrs"),
        (
            {"resource_attributes": {"service.name": "file-attrs"}},
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=env-attrs"},
            "file-attrs",  # the file's attributes win over the variable's, as for every key
        ),
        (
            {"service_name": "file-name"},
            {"OTEL_SERVICE_NAME": "v", "OTEL_RESOURCE_ATTRIBUTES": "service.name=a"},
            "file-name",
        ),
        (
            {"service_name": "file-name", "resource_attributes": {"service.name": "file-attrs"}},
            {},
            "file-name",
        ),
    ],
)
def test_who_names_the_service(export: dict[str, Any] | None, env: dict[str, str], expected: str) -> None:
    assert service_name(export, env) == (expected, expected)


def test_the_resource_keeps_the_other_attributes_and_the_built_in_ones() -> None:
    config = config_from_dict({"bkmonitor": BK}, env={"OTEL_RESOURCE_ATTRIBUTES": "service.name=x,team=obs"})
    resource = otlp_resource(config.export, "i-1")
    assert resource["service.name"] == "x"
    assert resource["team"] == "obs"
    assert resource["service.instance.id"] == "i-1"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("a: ${env:A}", {"A": "1"}, "a: 1"),
        ("${env:A}${B}", {"A": "x", "B": "y"}, "xy"),
        ("${env:A:-fallback}", {}, "fallback"),
        ("${env:A:-fallback}", {"A": ""}, "fallback"),
        ("${env:A:-fallback}", {"A": "set"}, "set"),
        ("$${env:A}", {"A": "1"}, "${env:A}"),  # $$ still escapes
        ("${A}", {"A": "${env:B}"}, "${env:B}"),  # substituted values are not scanned again
    ],
)
def test_the_collector_spelling_of_a_reference(text: str, env: dict[str, str], expected: str) -> None:
    assert substitute_env(text, env) == expected


@pytest.mark.parametrize("reference", ["${env:}", "${env:1A}", "${other:A}", "${env:A-x}"])
def test_malformed_collector_references_are_refused(reference: str) -> None:
    with pytest.raises(ConfigError, match="invalid reference"):
        substitute_env(f"a: {reference}", {"A": "1"})


def test_an_unset_env_reference_is_reported_at_its_option(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "bkmonitor:\n  base_url: https://paas.example.com\n  app_code: ${env:CODE}\n  app_secret: ${env:SECRET}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"SECRET": "S3cr3t-app-VALUE"})
    assert caught.value.problems == ["bkmonitor.app_code: environment variable CODE is not set"]
    config = load_config(path, env={"SECRET": "S3cr3t-app-VALUE", "CODE": "0123"})
    assert config.bkmonitor.app_code == "0123"  # a whole substituted value stays a string
