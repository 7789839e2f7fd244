"""The deployment recipes under config/recipes: well-formed, within the config contract, no secrets.

``${VAR}`` / ``${VAR:-default}`` (and the collector's ``${env:VAR}``) are substituted here the way
the loaders do it, before YAML parsing, so files whose lists come from the environment parse too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import load_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "config" / "recipes"
EXPORTER_CONFIGS = sorted(RECIPES.glob("*/exporter.yaml"))
COLLECTOR_CONFIGS = sorted(RECIPES.glob("*/otelcol.yaml"))

# The option names of the configuration reference (docs/reference.md, "Configuration file"), section by section.
CONTRACT: dict[str, Any] = {
    "bkmonitor": {
        "base_url", "app_code", "app_secret", "app_secret_file", "username", "bk_token", "auth_in",
        "timezone", "language", "timeout", "verify_tls", "ca_file", "max_concurrency", "rate_limit",
        "retry",
    },
    "alarms": {"ids", "recent"},
    "poll": {"interval", "retire_after", "jitter"},
    "export": {
        "signals", "endpoint", "protocol", "headers", "compression", "timeout", "insecure", "ca_file",
        "client_cert_file", "client_key_file", "batch_size", "service_name", "resource_attributes",
        "console", "logs", "spans", "filter",
    },
    "destinations": None,
    "state": {"path", "url", "lease", "max_queued_records"},
    "server": {"listen"},
    "logging": {"level", "format"},
    "shutdown_timeout": None,
}  # fmt: skip
RECENT_KEYS = {
    "enabled",
    "bk_biz_ids",
    "lookback",
    "status",
    "query_string",
    "conditions",
    "page_size",
    "interval",
}
SECRET_KEYS = {"app_secret", "bk_token"}

_VAR = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(text: str, env: dict[str, str] | None = None) -> str:
    env = env or {}
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(2) if m.group(2) is not None else "placeholder"), text)


def check_exporter_config(doc: dict[str, Any], raw: str, where: str) -> None:
    assert set(doc) <= set(CONTRACT), f"{where}: unknown sections {set(doc) - set(CONTRACT)}"
    for section, value in doc.items():
        keys = CONTRACT[section]
        if keys is None:
            continue
        assert isinstance(value, dict), f"{where}: {section} must be a mapping"
        assert set(value) <= keys, f"{where}: unknown {section} options {set(value) - keys}"
    recent = doc.get("alarms", {}).get("recent") or {}
    assert set(recent) <= RECENT_KEYS, where
    # Secrets only through ${VAR} substitution (or a file), never written into the recipe.
    for line in raw.splitlines():
        key, _, value = line.strip().partition(":")
        if key in SECRET_KEYS or key == "Authorization":
            assert "${" in value, f"{where}: {line.strip()!r} must take its secret from ${{VAR}}"
    assert doc["state"]["path"].startswith("/var/lib/bk-otel-exporter/"), where
    assert set(doc["export"].get("signals", ["logs"])) <= {"logs", "spans"}, where


@pytest.mark.parametrize("path", EXPORTER_CONFIGS, ids=lambda p: p.parent.name)
def test_exporter_recipes_stay_within_the_contract(path: Path) -> None:
    raw = path.read_text()
    check_exporter_config(yaml.safe_load(substitute(raw)), raw, str(path))


RECIPE_ENV = {
    "BK_APP_CODE": "my-app",
    "BK_APP_SECRET": "not-a-real-secret",
    "BK_BASE_URL": "https://paas.example.com",
    "ELASTIC_APM_API_KEY": "not-a-real-key",
}


@pytest.mark.parametrize("path", EXPORTER_CONFIGS, ids=lambda p: p.parent.name)
def test_exporter_recipes_load_with_the_real_loader(path: Path) -> None:
    config = load_config(path, env=RECIPE_ENV)
    assert str(config.state.path).startswith("/var/lib/bk-otel-exporter/")


def test_every_backend_has_a_recipe() -> None:
    assert {p.parent.name for p in EXPORTER_CONFIGS} >= {"grafana", "jaeger", "elastic", "container"}
    assert {p.parent.name for p in COLLECTOR_CONFIGS} >= {"grafana", "elastic"}


def test_jaeger_gets_spans_only() -> None:
    doc = yaml.safe_load(substitute((RECIPES / "jaeger" / "exporter.yaml").read_text()))
    assert doc["export"]["signals"] == ["spans"]
    assert doc["export"]["endpoint"].endswith(":4317")


def test_container_config_comes_from_the_environment() -> None:
    raw = (RECIPES / "container" / "exporter.yaml").read_text()
    env = {"BK_ALARM_IDS": "1001,1002", "BK_OTEL_SIGNALS": "logs,spans", "BK_DISCOVERY_ENABLED": "true"}
    doc = yaml.safe_load(substitute(raw, env))
    assert doc["alarms"]["ids"] == [1001, 1002]
    assert doc["alarms"]["recent"]["enabled"] is True
    assert doc["export"]["signals"] == ["logs", "spans"]
    assert doc["server"]["listen"] == "0.0.0.0:9464"  # probes come from outside the container
    defaults = yaml.safe_load(substitute(raw))
    assert defaults["alarms"]["ids"] == []
    assert defaults["export"]["signals"] == ["logs"]
    assert defaults["bkmonitor"]["app_secret_file"] is None


def check_collector(doc: dict[str, Any], where: str) -> None:
    pipelines = doc["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in doc[kind], f"{where}: pipeline {name} uses undefined {kind[:-1]} {component}"
    for extension in doc["service"].get("extensions", []):
        assert extension in doc["extensions"], where
    assert "otlp" in doc["receivers"], where


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.parent.name)
def test_collector_recipes_are_wired(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())  # the collector substitutes ${env:...} itself
    check_collector(doc, str(path))


def test_grafana_collector_targets_loki_otlp_and_tempo() -> None:
    doc = yaml.safe_load((RECIPES / "grafana" / "otelcol.yaml").read_text())
    assert doc["exporters"]["otlphttp/loki"]["endpoint"] == "http://loki:3100/otlp"
    assert doc["service"]["pipelines"]["logs"]["exporters"] == ["otlphttp/loki"]
    assert doc["service"]["pipelines"]["traces"]["exporters"] == ["otlp/tempo"]


def test_elastic_collector_authenticates_from_the_environment() -> None:
    doc = yaml.safe_load((RECIPES / "elastic" / "otelcol.yaml").read_text())
    exporter = doc["exporters"]["otlp/elastic"]
    assert exporter["headers"]["Authorization"] == "ApiKey ${env:ELASTIC_APM_API_KEY}"
    raw = (RECIPES / "elastic" / "exporter.yaml").read_text()
    assert "Authorization: ApiKey ${ELASTIC_APM_API_KEY}" in raw


def test_loki_and_tempo_directly_each_signal_its_own_endpoint() -> None:
    config = load_config(RECIPES / "loki-tempo" / "exporter.yaml", env=RECIPE_ENV)
    logs, spans = config.export.for_signal("logs"), config.export.for_signal("spans")
    assert (logs.endpoint, logs.protocol) == ("http://loki:3100/otlp/v1/logs", "http/protobuf")
    assert (spans.endpoint, spans.protocol) == ("http://tempo:4317", "grpc")
    assert config.export.signals == ("logs", "spans") and not config.destinations


def test_fanout_to_loki_and_elastic_with_a_filtered_chatops() -> None:
    raw = (RECIPES / "fanout" / "exporter.yaml").read_text()
    assert "Authorization: ApiKey ${ELASTIC_APM_API_KEY}" in raw
    config = load_config(RECIPES / "fanout" / "exporter.yaml", env=RECIPE_ENV)
    elastic, chatops = config.destinations
    assert (elastic.name, elastic.sink, elastic.signals) == ("elastic", "otlp", ("logs", "spans"))
    assert dict(elastic.options.headers) == {"Authorization": "ApiKey not-a-real-key"}
    assert chatops.filter.operates == ("CREATE", "RECOVER", "CLOSE") and config.export.filter.everything
    for destination in yaml.safe_load(substitute(raw))["destinations"]:
        assert set(destination) <= {"name", "sink", "signals", "options", "filter"}


def test_kubernetes_sidecar(tmp_path: Path) -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((RECIPES / "kubernetes" / "sidecar.yaml").read_text())}
    assert {"ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"} <= set(docs)
    data = docs["ConfigMap"]["data"]
    raw = data["exporter.yaml"]
    exporter_cfg = yaml.safe_load(substitute(raw))
    check_exporter_config(exporter_cfg, raw, "sidecar ConfigMap exporter.yaml")
    secret_file = tmp_path / "app_secret"
    secret_file.write_text("not-a-real-secret\n")
    copy = tmp_path / "exporter.yaml"
    copy.write_text(raw.replace(exporter_cfg["bkmonitor"]["app_secret_file"], str(secret_file)))
    load_config(copy, env=RECIPE_ENV)  # the real loader accepts it
    assert exporter_cfg["server"]["listen"] == "0.0.0.0:9464"
    check_collector(yaml.safe_load(data["otelcol.yaml"]), "sidecar ConfigMap otelcol.yaml")

    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # one writer of the state store
    pod = spec["template"]["spec"]
    (exporter,) = [c for c in pod["containers"] if c["name"] == "exporter"]
    assert exporter["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"] for m in exporter["volumeMounts"]}
    assert "/var/lib/bk-otel-exporter" in mounts
    assert exporter_cfg["bkmonitor"]["app_secret_file"].startswith(tuple(mounts))
    assert exporter["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    collectors = [c for c in pod.get("initContainers", []) + pod["containers"] if "otelcol" in c["name"]]
    assert len(collectors) == 1
    assert pod["terminationGracePeriodSeconds"] > 15  # more than shutdown_timeout
