"""The alert rules and the dashboard against a real Prometheus scraping real exporters.

Five daemons run against the BlueKing simulator, each driven into trouble of its own, beside a
scrape target where nothing listens:

* ``backlog``: its OTLP endpoint refuses connections while a thread keeps adding records in
  BlueKing: exports fail, the outbox grows and ages, while its second destination (``audit``)
  takes its records;
* ``refused``: a wrong app secret: BlueKing refuses it, polls fail, the daemon is unready;
* ``parked``: its backend refuses every record for good (INVALID_ARGUMENT): records are parked;
* ``full``: an outbox cap of 3 and an unreachable backend: the cap is reached, records are left in
  BlueKing;
* ``flaky``: a simulator of its own answers a third of the calls with a gateway 429: the calls are
  retried (and succeed), everything is delivered.

Prometheus scrapes them every second and evaluates config/prometheus/alerts.yaml every second. Every
alert expression, and every PromQL query of the Grafana dashboard, must then return a series
through Prometheus's HTTP API, and every alert must be pending or firing there (their ``for:`` is
minutes long: pending is what a real Prometheus shows after seconds of trouble; the firing side of
``for:`` is proved by ``promtool test rules`` on config/prometheus/alerts.test.yaml).
Where an expression cannot be true within seconds, the table below says how it is run instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.faults._harness import ENV, Grower, Run, Story, exporter_config, http_get, simulator
from tests.support.daemon import write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.prometheus import PrometheusServer, free_port, promtool, require_prometheus
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "prometheus" / "alerts.yaml"
RULE_TESTS = REPO / "config" / "prometheus" / "alerts.test.yaml"
DASHBOARD = REPO / "config" / "grafana" / "bk-otel-exporter.json"
JOB = "bk-otel-exporter"

#: Alerts whose threshold needs more time than a test has: run with this part of the expression
#: replaced (the rest, metric and functions, exactly as in the rules file).
LOWERED = {"BkOtelOutboxStale": ("> 900", "> 1")}  # 15 minutes of waiting -> 1 second
#: True only when no exporter is scraped at all: checked after every daemon stopped.
AT_THE_END = {"BkOtelExporterAbsent"}


def alert_rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"]}


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus target of the dashboard."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            if (target.get("datasource") or panel["datasource"])["type"] == "prometheus":
                out.append((panel["title"], target["expr"]))
    return out


def substitute(expr: str) -> str:
    """The dashboard's variables as Grafana would fill them in for this Prometheus."""
    text = expr.replace("$__rate_interval", "5s").replace("$job", JOB).replace("$instance", ".+")
    assert "$" not in text, f"a variable the test does not know in {expr!r}"
    return text


def about_only(
    prom: PrometheusServer, name: str, expr: str, where: dict[str, str], must: set[str], may: set[str]
) -> None:
    """``expr`` comes to name every daemon of ``must`` (by its instance), and then none but those
    and ``may``."""

    def about() -> set[str]:
        return {where[r["metric"].get("instance", "")] for r in prom.query(expr)}

    wait_until(lambda: must <= about(), 30, lambda: f"{name} about {sorted(must)}, not {sorted(about())}")
    assert about() <= must | may, (name, about())


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    bindir = require_prometheus()
    checked = promtool(bindir, "check", "rules", str(RULES))
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool(bindir, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    # every alert of the rules file has a unit test that expects it firing and one that expects it silent
    doc = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    cases = [case for test in doc["tests"] for case in test["alert_rule_test"]]
    for name in alert_rules():
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no test where it stays silent"


def test_every_alert_and_dashboard_query_returns_a_series_from_real_exporters(tmp_path: Path) -> None:
    bindir = require_prometheus()
    rules = alert_rules()
    panels = dashboard_queries(DASHBOARD)
    assert len(panels) >= 20 and set(LOWERED) | AT_THE_END <= set(rules)
    with simulator() as sim, simulator() as flaky_sim, OtlpReceiver(mode="reject") as refusing, OtlpReceiver() as ok:
        story = Story(sim)
        story.add_alarms(3, records=5)
        ids = story.ids
        flaky = Story(flaky_sim)
        flaky.add_alarms(3, records=5)
        flaky_sim.fault_kinds, flaky_sim.fault_rate = ["gateway_429"], 0.33
        nowhere = f"http://127.0.0.1:{free_port()}"
        audit = {"name": "audit", "sink": "otlp", "options": {"endpoint": ok.grpc_endpoint, "timeout": "2s"}}

        def config(name: str, endpoint: str, **over: Any) -> Path:
            raw = exporter_config(
                over.pop("simulator", sim), endpoint, tmp_path / f"{name}.db", over.pop("ids", ids), **over
            )
            return write_config(tmp_path / f"{name}.yaml", raw)

        runs = {
            "backlog": Run(config("backlog", nowhere, destinations=[audit]), env=ENV),
            "refused": Run(config("refused", nowhere, bkmonitor={"app_secret": "not-the-app-secret"}), env=ENV),
            "parked": Run(config("parked", refusing.grpc_endpoint), env=ENV),
            "full": Run(config("full", nowhere, state={"max_queued_records": 3}), env=ENV),
            "flaky": Run(config("flaky", ok.grpc_endpoint, simulator=flaky_sim, ids=flaky.ids), env=ENV),
        }
        grower = Grower(story, every=0.2)
        grower.start()
        down = f"127.0.0.1:{free_port()}"
        try:
            targets = [run.base.removeprefix("http://") for run in runs.values()] + [down]
            with PrometheusServer(bindir, tmp_path, {JOB: targets}, [RULES]) as prom:
                wait_until(
                    lambda: len(prom.target_health()) == 6 and set(prom.target_health().values()) == {"up", "down"},
                    30,
                    lambda: f"every target scraped once: {prom.target_health()}",
                )
                expected: dict[str, str] = {}
                for name, rule in rules.items():
                    if name in AT_THE_END:
                        continue
                    expr = rule["expr"]
                    if name in LOWERED:
                        old, new = LOWERED[name]
                        assert expr.count(old) == 1, (name, expr)
                        expr = expr.replace(old, new)
                    expected[f"alert {name}"] = expr
                for title, expr in panels:
                    expected[f"panel {title!r}: {expr}"] = substitute(expr)

                def empty() -> list[str]:
                    return [what for what, expr in expected.items() if not prom.query(expr)]

                wait_until(lambda: not empty(), 90, lambda: "a series from each of: " + "; ".join(empty()))

                # Who is in which state: each alert is about the daemon that was driven into it.
                where = {run.base.removeprefix("http://"): name for name, run in runs.items()}
                where[down] = "down"
                # (the daemons an alert must be about, those it may also be about): the healthy
                # side of each expression is that it names no other daemon.
                driven: dict[str, tuple[set[str], set[str]]] = {
                    "BkOtelExporterDown": ({"down"}, set()),
                    "BkOtelBlueKingAuthFailing": ({"refused"}, set()),
                    "BkOtelExporterNotReady": ({"refused"}, set()),
                    "BkOtelPollsFailing": ({"refused"}, {"flaky"}),  # five 429s in a row fail a poll
                    "BkOtelRecordsParked": ({"parked"}, set()),
                    "BkOtelOutboxFull": ({"full"}, set()),
                    "BkOtelOutboxNearlyFull": ({"full"}, set()),
                    "BkOtelOutboxGrowing": ({"backlog"}, {"full"}),  # full grew from 0 to its cap at the start
                    # a refusal is a failed export; backlog's logs exports to audit succeed (until
                    # its first one they may not)
                    "BkOtelExportsFailing": ({"full", "parked"}, {"backlog"}),
                    "BkOtelDestinationDown": ({"backlog"}, set()),  # the others have export: alone
                    "BkOtelBlueKingRetriesClimbing": ({"flaky"}, set()),
                }
                for name, (must, may) in driven.items():
                    about_only(prom, name, expected[f"alert {name}"], where, must, may)

                # The real rule evaluation: loaded, evaluated without error, the alerts pending.
                def pending() -> set[str]:
                    return {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]}

                awaited = set(rules) - AT_THE_END - set(LOWERED)
                wait_until(lambda: awaited <= pending(), 30, lambda: f"pending alerts {sorted(awaited - pending())}")
                groups = prom.api("rules")["groups"]
                health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
                assert set(health) == set(rules)
                assert all(h == "ok" for h, _ in health.values()), health

                status, exposition = http_get(runs["backlog"].base + "/metrics")
                assert status == 200
                retried = prom.query(f'bk_otel_api_retries_total{{job="{JOB}", api_endpoint="get_event_log"}}')
                assert "flaky" in {where[r["metric"]["instance"]] for r in retried}
                assert "1642903" in {r["metric"]["code"] for r in retried}  # the gateway's rate-limit code

                # The dashboard's variables.
                assert prom.api("label/job/values", **{"match[]": "bk_otel_build_info"}) == [JOB]

                # The exposition itself: promtool's linter, no *_created series, process and python collectors.
                linted = promtool(bindir, "check", "metrics", stdin=exposition)
                assert linted.returncode == 0, linted.stdout + linted.stderr
                assert not re.search(r"^\w+_created[ {]", exposition, re.M)
                for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
                    assert re.search(rf"^{family}[ {{]", exposition, re.M), family
                assert "exported_endpoint" not in json.dumps(prom.query("bk_otel_api_requests_total"))
                assert prom.query(f'bk_otel_api_requests_total{{job="{JOB}", api_endpoint="get_event_log"}}')

                # Everything stops: nothing of the job is scraped any more.
                grower.stop()
                for run in runs.values():
                    run.daemon.stop(30)
                absent = rules["BkOtelExporterAbsent"]["expr"]
                wait_until(lambda: bool(prom.query(absent)), 30, f"{absent} to return a series")
        finally:
            grower.stop()
            for run in runs.values():
                run.stop_quietly()
