"""Issue 3 end to end: discovery, context, lifecycle and API economy over the simulated clock.

The pipeline runs in-process on the simulator's clock (so hours pass in milliseconds) but every
hop is real: HTTP to the simulator, OTLP/gRPC through rotel to the decoding receiver. A last test
runs the daemon as a subprocess with discovery on, in real time.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.app import App
from exporter.config import Config, config_from_dict
from exporter.simulator import SimAlarm, SimClock, Simulator
from exporter.sources.bkmonitor.records import parse_event_log
from tests.support.daemon import Daemon, write_config
from tests.support.rotel import RotelCollector
from tests.support.secrets import APP_SECRET

pytestmark = pytest.mark.integration

T0 = 1_718_000_000.0
SECRET = APP_SECRET  # tests/support/secrets.py: the session-wide leak check looks for it


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(app_code="bk-otel-test", app_secret=SECRET, clock=SimClock(T0)) as s:
        s.biz_names.update({3: "payments", 4: "sandbox"})
        yield s


def make_config(sim: Simulator, endpoint: str, state: Path, **extra: Any) -> Config:
    raw: dict[str, Any] = {
        "bkmonitor": {
            "base_url": sim.base_url,
            "app_code": "bk-otel-test",
            "app_secret": SECRET,
            "rate_limit": 0,
            "retry": {"initial_backoff": "50ms", "max_backoff": "200ms"},
        },
        "alarms": {
            "recent": {"enabled": True, "bk_biz_ids": [2, 3], "lookback": "1h", "interval": "30s", "page_size": 2}
        },
        "poll": {"interval": "30s", "retire_after": "2m", "jitter": 0, "full_reread_interval": "10m"},
        "export": {"endpoint": endpoint, "protocol": "grpc", "timeout": "5s"},
        "state": {"path": str(state)},
        "server": {"listen": ""},
    }
    raw.update(extra)
    return config_from_dict(raw, env={})


def cycle(app: App) -> None:
    app.discover()
    app.poll()
    assert not app.send(force=True).failed


def visible_uids(sim: Simulator, alarm: SimAlarm) -> set[str]:
    data = sim.visible_records(alarm.id)
    return {r.uid for r in parse_event_log(alarm.id, data, tz=ZoneInfo("Asia/Shanghai"), observed_ns=0).records}


def test_three_businesses_two_followed_lifecycle_and_economy(
    sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path
) -> None:
    rotel, receiver = rotel_collector
    clock = sim.clock
    config = make_config(sim, rotel.grpc_endpoint, tmp_path / "s.db")
    cpu = sim.add_alarm(bk_biz_id=2, name="CPU", severity=2, dimensions={"ip": "10.0.0.1"})
    pay = sim.add_alarm(bk_biz_id=3, name="Payments latency", severity=3, strategy_id=99, strategy_name="p99")
    sandbox = sim.add_alarm(bk_biz_id=4, name="Sandbox noise", severity=1)
    app = App(config, clock=clock.now)
    try:
        cycle(app)
        # 30 s later: changes, and a new alarm appears in business 2
        clock.advance(30)
        cpu.converge("cpu 91%")
        pay.ack("admin", "looking")
        sandbox.converge("noise")
        disk = sim.add_alarm(bk_biz_id=2, name="Disk", severity=2)
        cycle(app)
        clock.advance(30)
        cpu.set_severity(1)
        cpu.recover()
        disk.log("ACTION", "notified admin")
        cycle(app)
        # a late notification inside retire_after is still taken
        clock.advance(30)
        cpu.log("ACTION", "recovery notified")
        cycle(app)
        for _ in range(6):  # past retire_after: cpu retires
            clock.advance(30)
            cycle(app)
        assert app.store.get_alarm(cpu.id).phase == "retired"  # type: ignore[union-attr]
        calls_after_retire = sim.calls("get_event_log", alarm_id=cpu.id)
        for _ in range(30):  # 15 simulated minutes: past the safety-net interval too
            clock.advance(30)
            cycle(app)
        assert sim.calls("get_event_log", alarm_id=cpu.id) == calls_after_retire, "retired: no more reads"
        assert sim.calls("get_event_log", alarm_id=sandbox.id) == 0
        # unchanged open alarms are re-read only by the safety net (every 10 min), not every 30 s
        assert sim.calls("get_event_log", alarm_id=pay.id) <= 6
    finally:
        app.close()

    want = visible_uids(sim, cpu) | visible_uids(sim, pay) | visible_uids(sim, disk)
    logs = receiver.wait_for_logs(len(want), timeout=10)
    uids = [r["attributes"]["log.record.uid"] for r in logs]
    assert sorted(uids) == sorted(want), "every record of businesses 2 and 3 exactly once"
    assert not visible_uids(sim, sandbox) & set(uids), "none of business 4"
    by_alarm: dict[str, list[dict[str, Any]]] = {}
    for r in logs:
        by_alarm.setdefault(r["attributes"]["bk.alarm.id"], []).append(r)
    for r in by_alarm[pay.id]:
        a = r["attributes"]
        assert (a["bk.biz.id"], a["bk.alarm.name"], a["bk.strategy.id"], a["bk.strategy.name"]) == (
            3,
            "Payments latency",
            99,
            "p99",
        )
        assert a["bk.alarm.severity"] == 3 and a["bk.alarm.status"] == "ABNORMAL"
    cpu_logs = {r["event_name"]: r for r in by_alarm[cpu.id]}
    assert cpu_logs["CREATE"]["attributes"]["bk.alarm.dimension.ip"] == "10.0.0.1"
    assert cpu_logs["CONVERGE"]["severity_text"] == "WARN"  # severity 2 at the time
    assert cpu_logs["RECOVER"]["severity_text"] == "INFO"
    assert cpu_logs["SEVERITY_UP"]["attributes"]["bk.alarm.severity"] == 1
    # discovery asked economically
    searches = [r for r in sim.requests if r.endpoint == "search_alert"]
    assert searches and sim.heavy_searches == 0
    assert all(r.json["bk_biz_ids"] == [2, 3] for r in searches)


def test_restart_does_not_reread_history_or_reannounce(
    sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path
) -> None:
    rotel, receiver = rotel_collector
    config = make_config(sim, rotel.grpc_endpoint, tmp_path / "s.db")
    alarms = [sim.add_alarm(bk_biz_id=2, name=f"a{i}") for i in range(3)]
    sim.clock.advance(2)  # read after the second they changed in (a read in that second is read again)
    app = App(config, clock=sim.clock.now)
    try:
        cycle(app)
    finally:
        app.close()
    first = len(receiver.wait_for_logs(3, timeout=10))
    reads = sim.calls("get_event_log")
    sim.clock.advance(30)
    app = App(config, clock=sim.clock.now)
    try:
        cycle(app)
        sim.clock.advance(30)
        alarms[0].converge("again")
        cycle(app)
    finally:
        app.close()
    logs = receiver.wait_for_logs(first + 1, timeout=10)
    assert len(logs) == first + 1
    assert sim.calls("get_event_log") == reads + 1, "only the changed alarm is read after the restart"


def test_daemon_with_discovery_delivers_context(rotel_collector: RotelCollector, tmp_path: Path) -> None:
    rotel, receiver = rotel_collector
    with Simulator(app_code="bk-otel-test", app_secret=SECRET, clock=SimClock.real()) as sim:
        a = sim.add_alarm(bk_biz_id=2, name="CPU", severity=1)
        sim.add_alarm(bk_biz_id=9, name="elsewhere")
        cfg = {
            "bkmonitor": {"base_url": sim.base_url, "app_code": "bk-otel-test", "app_secret": SECRET},
            "alarms": {"recent": {"enabled": True, "bk_biz_ids": [2], "interval": "1s"}},
            "poll": {"interval": "1s", "jitter": 0},
            "export": {"endpoint": rotel.grpc_endpoint},
            "state": {"path": str(tmp_path / "s.db")},
            "server": {"listen": ""},
        }
        with Daemon(write_config(tmp_path / "c.yaml", cfg)) as daemon:
            (created,) = receiver.wait_for_logs(1, timeout=15)
            a.recover()
            receiver.wait_for_logs(2, timeout=15)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(20) == 0, daemon.output()
    assert created["attributes"]["bk.alarm.name"] == "CPU"
    assert created["severity_text"] == "FATAL"
    assert {r["attributes"]["bk.alarm.id"] for r in receiver.logs()} == {a.id}
    assert "discovery:" in daemon.output()
