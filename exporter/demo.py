"""``bk-otel-exporter demo``: the whole pipeline against the built-in simulator, no network needed.

A scripted storyline of three alarms plays out on a simulator on 127.0.0.1 over about fifteen
seconds (created, notified, converged, severity raised, acknowledged, recovered, closed); the
real daemon (scheduler, client, state store in a temporary directory, sender) polls it every
second and prints every produced record as one JSON line on stdout. With ``--endpoint`` the records
also go to that OTLP endpoint. It stops by itself once every alarm is retired and the outbox is
empty, or after ``duration`` seconds.

``api="apigw"`` (``demo --api apigw``) plays the same story on a simulated gateway-only, multi-tenant
BlueKing: no ESB (every ESB path answers 1640401), the app of the global tenant must send
``X-Bk-Tenant-Id`` (``bkmonitor.tenant_id``), and the flow records are synthesised from alert and
action search (no CONVERGE records there; see "BlueKing versions" in the README).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.app import App
from exporter.config import Config, config_from_dict
from exporter.logsetup import setup_logging
from exporter.scheduler import Daemon
from exporter.simulator import SimAlarm, SimClock, Simulator
from exporter.sinks.base import Sink
from exporter.sinks.console import ConsoleSink

__all__ = ["STORY", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Beat:
    at: float  # seconds after the start
    alarm: int  # index into the alarms
    action: str  # a SimAlarm method name, or "log"
    args: tuple[Any, ...] = ()


ALARMS = (
    dict(
        bk_biz_id=2,
        name="CPU usage high on web-01",
        severity=1,
        strategy_id=41868,
        strategy_name="CPU usage",
        dimensions={"ip": "10.0.0.1", "bk_cloud_id": "0"},
    ),
    dict(
        bk_biz_id=2,
        name="Disk space low on db-01",
        severity=2,
        strategy_id=41870,
        strategy_name="Disk usage",
        dimensions={"ip": "10.0.0.7", "mount_point": "/data"},
    ),
    dict(
        bk_biz_id=3,
        name="Ping loss on gw-01",
        severity=3,
        strategy_id=52001,
        strategy_name="Ping loss",
        dimensions={"ip": "10.0.1.1"},
    ),
)

STORY = (
    Beat(1, 0, "log", ("ACTION", "Notified admin by mail and WeCom (alarm raised)")),
    Beat(2, 0, "log", ("CONVERGE", "AVG(CPU usage) >= 80.0%, current value 93.1%")),
    Beat(3, 1, "log", ("CONVERGE", "disk usage >= 90%, current value 91.2%")),
    Beat(4, 0, "log", ("CONVERGE", "AVG(CPU usage) >= 80.0%, current value 95.4%")),
    Beat(5, 1, "set_severity", (1,)),
    Beat(6, 0, "ack", ("admin", "looking into it")),
    Beat(7, 2, "log", ("RECOVERING", "condition not met in the last check period; alarm is recovering")),
    Beat(8, 0, "log", ("CONVERGE", "AVG(CPU usage) >= 80.0%, current value 88.0%")),
    Beat(10, 2, "log", ("SYSTEM_RECOVER", "delayed-recovery window over; alarm recovered")),
    Beat(11, 0, "recover", ()),
    Beat(12, 0, "log", ("ACTION", "Notified admin by mail (alarm recovered)")),
    Beat(13, 1, "close", ()),
)


def _play(sim: Simulator, alarms: list[SimAlarm], start: float, stop: threading.Event) -> None:
    for beat in STORY:
        if stop.wait(max(0.0, start + beat.at - time.time())):
            return
        alarm = alarms[beat.alarm]
        if beat.action == "log":
            alarm.log(*beat.args)
        else:
            getattr(alarm, beat.action)(*beat.args)


DEMO_TENANT = "system"


def _config(
    sim: Simulator, alarm_ids: list[str], state_dir: str, endpoint: str | None, protocol: str, api: str = "esb"
) -> Config:
    bkmonitor: dict[str, Any] = {
        "base_url": sim.base_url,
        "app_code": sim.app_code,
        "app_secret": sim.app_secret,
        "rate_limit": 0,
        "retry": {"initial_backoff": "200ms", "max_backoff": "1s"},
    }
    if api == "apigw":
        bkmonitor.update(api="apigw", tenant_id=DEMO_TENANT)
    raw: dict[str, Any] = {
        "bkmonitor": bkmonitor,
        # the first alarm is followed by id, the others are found by discovery (search_alert)
        "alarms": {"ids": alarm_ids[:1], "recent": {"enabled": True, "bk_biz_ids": [2, 3], "interval": "1s"}},
        "poll": {"interval": "1s", "retire_after": "2s", "jitter": 0},
        "export": {
            "endpoint": endpoint or "http://127.0.0.1:4317",
            "protocol": protocol,
            "console": True,
            "retry": {"initial_backoff": "500ms", "max_backoff": "2s"},
        },
        "state": {"path": f"{state_dir}/demo.db"},
        "server": {"listen": ""},
        "logging": {"level": "INFO"},
        "shutdown_timeout": "5s",
    }
    return config_from_dict(raw, env={})


def _finished(app: App) -> bool:
    return not app.store.list_alarms() and app.store.outbox_stats().depth == 0


def run_demo(*, endpoint: str | None = None, protocol: str = "grpc", duration: float = 20.0, api: str = "esb") -> int:
    setup_logging("INFO", "text")
    stop = threading.Event()
    gateway = api == "apigw"
    with (
        Simulator(clock=SimClock.real(), gateway_only=gateway, tenant_id=DEMO_TENANT if gateway else None) as sim,
        tempfile.TemporaryDirectory(prefix="bk-otel-demo-") as state_dir,
    ):
        alarms = [sim.add_alarm(**spec) for spec in ALARMS]  # type: ignore[arg-type]
        config = _config(sim, [a.id for a in alarms], state_dir, endpoint, protocol, api)
        factory: Callable[[Config], App] = App if endpoint else (lambda c: App(c, sink=_console_only()))
        daemon = Daemon(config, app_factory=factory)
        start = time.time()
        log.info(
            "demo: %s simulator on %s with %d alarms; storyline of %d beats over %.0fs; records on stdout",
            "gateway-only (multi-tenant) BlueKing" if gateway else "BlueKing (ESB)",
            sim.base_url,
            len(alarms),
            len(STORY),
            STORY[-1].at,
        )
        player = threading.Thread(target=_play, args=(sim, alarms, start, stop), name="storyline", daemon=True)
        player.start()

        def watch() -> None:
            deadline = start + duration
            while not stop.wait(0.5):
                story_over = time.time() > start + STORY[-1].at
                if time.time() >= deadline or (story_over and _finished(daemon.app)):
                    break
            daemon.request_stop()

        watcher = threading.Thread(target=watch, name="demo-watch", daemon=True)
        watcher.start()
        try:
            code = daemon.run()
        finally:
            stop.set()
            player.join(2)
            watcher.join(2)
        log.info("demo: done in %.1fs; %d requests served by the simulator", time.time() - start, sim.calls())
        return code


def _console_only() -> Sink:
    return ConsoleSink()
