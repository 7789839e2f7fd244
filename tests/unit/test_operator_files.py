"""The operator's files: the Grafana dashboards, the compose example, the ServiceMonitor and
PodMonitor, the systemd unit and drop-in, the image's OCI labels. (The alert rules and the
dashboards' PromQL run on a real Prometheus in tests/integration/test_prometheus.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "config" / "recipes"
DASHBOARDS = sorted((ROOT / "config" / "grafana").glob("*.json"))


def walk(node: Any) -> list[Any]:
    out = [node]
    if isinstance(node, dict):
        for value in node.values():
            out += walk(value)
    elif isinstance(node, list):
        for value in node:
            out += walk(value)
    return out


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_are_current_and_portable(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["schemaVersion"] >= 39
    assert doc["uid"] is None and doc["id"] is None  # Grafana gives them on import
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    # every data source is chosen through a variable, never a hard-coded uid
    refs = [n["datasource"] for n in walk(doc) if isinstance(n, dict) and isinstance(n.get("datasource"), dict)]
    assert refs
    for ref in refs:
        if ref["type"] == "grafana":
            continue
        match = re.fullmatch(r"\$\{(\w+)\}", ref["uid"])
        assert match, ref
        assert variables[match[1]]["type"] == "datasource" and variables[match[1]]["query"] == ref["type"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == "loki":
                assert '{service_name=~"$service"}' in target["expr"], target["expr"]
            if target["datasource"]["type"] == "prometheus":
                assert 'job=~"$job", instance=~"$instance"' in target["expr"], target["expr"]


def test_the_health_dashboard_shows_the_alarms_from_loki() -> None:
    doc = json.loads((ROOT / "config" / "grafana" / "bk-otel-exporter.json").read_text(encoding="utf-8"))
    loki = {
        p["title"]: [t["expr"] for t in p["targets"]]
        for p in doc["panels"]
        if p.get("datasource", {}).get("type") == "loki"
    }
    assert any("by (bk_alarm_operate)" in e for e in loki["Records by operate"])
    assert any("by (bk_biz_id)" in e for e in loki["Records by business"])
    assert any("by (severity_text)" in e for e in loki["Records by severity"])
    assert any("unless" in e for e in loki["Open alarms"])
    recover = " ".join(loki["Time to recover (mean, max)"])
    assert 'bk_alarm_operate="CREATE"' in recover and "RECOVER" in recover and "unwrap ts" in recover


def test_compose_runs_the_exporter_beside_a_collector() -> None:
    doc = yaml.safe_load((RECIPES / "compose" / "compose.yaml").read_text(encoding="utf-8"))
    exporter, otelcol = doc["services"]["exporter"], doc["services"]["otelcol"]
    assert exporter["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otelcol:4317"
    assert exporter["environment"]["BK_APP_SECRET_FILE"] == "/run/secrets/bk_app_secret"
    assert "BK_APP_SECRET" not in exporter["environment"]  # the secret is a file, never in the environment
    assert exporter["volumes"] == ["state:/var/lib/bk-otel-exporter"]
    assert int(exporter["stop_grace_period"].rstrip("s")) > 15  # above shutdown_timeout
    assert (ROOT / "config" / "recipes" / "compose" / exporter["build"] / "Dockerfile").resolve().is_file()
    mounted = otelcol["volumes"][0].split(":")[0]
    collector = yaml.safe_load((RECIPES / "compose" / mounted).read_text(encoding="utf-8"))
    assert "4317" in collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]


def alert_job() -> str:
    jobs = set(re.findall(r'job="([^"]+)"', (ROOT / "config" / "prometheus" / "alerts.yaml").read_text()))
    (job,) = jobs
    return job


@pytest.mark.parametrize("name", ["servicemonitor", "podmonitor"])
def test_the_operator_objects_scrape_the_sidecar_as_the_alerts_expect(name: str) -> None:
    monitor = yaml.safe_load((RECIPES / "kubernetes" / f"{name}.yaml").read_text(encoding="utf-8"))
    sidecar = {d["kind"]: d for d in yaml.safe_load_all((RECIPES / "kubernetes" / "sidecar.yaml").read_text())}
    if name == "servicemonitor":
        assert monitor["kind"] == "ServiceMonitor"
        target = sidecar["Service"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= target["metadata"]["labels"].items()
        ports = {p["name"] for p in target["spec"]["ports"]}
        (endpoint,) = monitor["spec"]["endpoints"]
    else:
        assert monitor["kind"] == "PodMonitor"
        pod = sidecar["Deployment"]["spec"]["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": alert_job()} in endpoint["relabelings"]


def test_the_documented_prometheusrule_holds_the_rules() -> None:
    text = (RECIPES / "kubernetes" / "servicemonitor.yaml").read_text(encoding="utf-8")
    lines = [line[4:] for line in text.splitlines() if line.startswith("#   { printf") or line.startswith("#     sed")]
    command = "\n".join(lines).replace("| kubectl -n observability apply -f -", "")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert done.returncode == 0, done.stderr
    rule = yaml.safe_load(done.stdout)
    assert rule["kind"] == "PrometheusRule"
    alerts = yaml.safe_load((ROOT / "config" / "prometheus" / "alerts.yaml").read_text())
    assert rule["spec"] == alerts


def unit_lines(path: Path) -> dict[str, list[str]]:
    section, out = "", {}
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(f"{section}.{key}", []).append(value)
    return out


def test_the_unit_does_not_restart_a_bad_config_and_the_drop_in_is_notify_reload() -> None:
    unit = unit_lines(ROOT / "systemd" / "bk-otel-exporter.service")
    assert unit["Service.RestartPreventExitStatus"] == ["2"]  # exit 2 = bad config
    assert unit["Service.Restart"] == ["on-failure"]
    drop_in = unit_lines(ROOT / "systemd" / "notify-reload.conf")
    assert drop_in["Service.Type"] == ["notify-reload"]
    assert drop_in["Service.ExecReload"] == [""]  # systemd sends the SIGHUP itself: not a second one
    assert drop_in["Service.ReloadSignal"] == ["SIGHUP"]


def test_the_image_carries_oci_version_revision_and_source() -> None:
    text = (ROOT / "Dockerfile").read_text()
    runtime = text[text.rindex("\nFROM ") :]
    for arg, label in (("VERSION", "version"), ("REVISION", "revision"), ("SOURCE", "source")):
        assert re.search(rf"^ARG {arg}=", runtime, re.M), arg
        assert f'org.opencontainers.image.{label}="${{{arg}}}"' in runtime, label
