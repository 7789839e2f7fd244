"""Issue 5, case 5: BlueKing refuses our credentials (ESB 1306000, gateway 1640001).

Reported clearly (the BlueKing code, its message and the request id, once, not per call),
readiness goes false (``/readyz`` 503 naming the cause, ``bk_otel_auth_failing`` 1), and no
retry storm: refused credentials fail every call alike, so the exporter does not retry the
call and probes with one alarm once per poll interval. When the credentials work again (a
reload with the right secret, or the gateway accepting them again) every record is delivered
exactly once and the daemon is ready again.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from tests.support.daemon import write_config
from tests.support.rotel import RotelCollector
from tests.support.secrets import APP_SECRET
from tests.support.wait import wait_until

from ._harness import Run, Story, assert_exactly_once, exporter_config, simulator, wait_delivered
from .conftest import StoreChoice

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WATCH_SECONDS = 4.0


def _refusal_line(run: Run) -> str:
    output = run.wait_for("BlueKing refused our credentials", 20)
    return next(line for line in output.splitlines() if "BlueKing refused our credentials" in line)


def _assert_unready_without_storm(run: Run, calls: object, code: str) -> None:
    wait_until(lambda: run.get("/readyz")[0] == 503, 10, "/readyz 503")
    status, body = run.get("/readyz")
    reasons = " ".join(json.loads(body)["reasons"])
    assert "BlueKing authentication failing" in reasons and f"code={code}" in reasons, reasons
    assert run.metric("bk_otel_auth_failing") == 1
    assert run.get("/healthz")[0] == 200  # alive: only not ready
    before = calls()  # type: ignore[operator]
    time.sleep(WATCH_SECONDS)
    made = calls() - before  # type: ignore[operator]
    # poll.interval is 1 s: one probe a second, not one call per alarm per tick (6 alarms, 2 ticks/s)
    assert made <= WATCH_SECONDS + 2, f"{made} get_event_log calls in {WATCH_SECONDS:.0f}s while refused"
    assert run.output().count("BlueKing refused our credentials") == 1  # reported once, not per call


def test_wrong_secret_1306000_reported_unready_no_storm_then_fixed_by_reload(
    tmp_path: Path, rotel_collector: RotelCollector, store: StoreChoice
) -> None:
    rotel, receiver = rotel_collector
    secret_file = tmp_path / "bk_app_secret"
    secret_file.write_text("an-outdated-app-secret-0000\n", encoding="utf-8")
    with simulator() as sim:
        story = Story(sim, seed=4)
        story.add_alarms(6, records=4)
        config = exporter_config(sim, rotel.grpc_endpoint, tmp_path / "s.db", story.ids, store=store)
        del config["bkmonitor"]["app_secret"]
        config["bkmonitor"]["app_secret_file"] = str(secret_file)
        path = write_config(tmp_path / "c.yaml", config)
        run = Run(path)
        try:
            line = _refusal_line(run)
            assert "code=1306000" in line and "APP Secret verification failed" in line, line
            assert re.search(r"request_id=[0-9a-f]{32}\b", line), line  # the ESB's request id
            _assert_unready_without_storm(run, lambda: sim.calls("get_event_log"), "1306000")
            assert receiver.logs() == []

            secret_file.write_text(APP_SECRET + "\n", encoding="utf-8")
            run.daemon.signal(signal.SIGHUP)
            run.wait_for("configuration reloaded", 20)
            want = story.expected_uids()
            assert_exactly_once(wait_delivered(receiver, want), want)
            assert run.metric("bk_otel_auth_failing") == 0
            run.finish(ready=True)
        finally:
            run.stop_quietly()


def test_gateway_refusal_1640001_reported_unready_no_storm_then_recovers(
    tmp_path: Path, rotel_collector: RotelCollector, store: StoreChoice
) -> None:
    rotel, receiver = rotel_collector
    with simulator(seed=8) as sim:
        story = Story(sim, seed=8)
        story.add_alarms(6, records=4)
        path = write_config(
            tmp_path / "c.yaml", exporter_config(sim, rotel.grpc_endpoint, tmp_path / "s.db", story.ids, store=store)
        )
        sim.fault_kinds = ["auth_1640001"]
        sim.fault_rate = 1.0  # the gateway refuses every call until the test says otherwise
        run = Run(path)
        try:
            line = _refusal_line(run)
            assert "code=1640001" in line and "INVALID_ARGS" in line and "bk_app_secret is incorrect" in line, line
            # the gateway's X-Bkapi-Request-ID (a UUID with dashes)
            assert re.search(r"request_id=[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", line), line
            _assert_unready_without_storm(run, lambda: sim.calls("get_event_log"), "1640001")

            sim.fault_rate = 0.0
            want = story.expected_uids()
            assert_exactly_once(wait_delivered(receiver, want), want)
            run.finish(ready=True)
        finally:
            run.stop_quietly()
