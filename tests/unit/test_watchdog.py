"""The systemd watchdog is pinged only while polls and drains make progress; SIGTERM wakes BlueKing backoffs.

:class:`exporter.sdnotify.Watchdog` on an injected clock and ping; then its wiring in the daemon
(:class:`exporter.scheduler.Daemon`, on a real App and state file, no sockets): which events count
as progress, the bounds taken from the config, and the stop that reaches the BlueKing client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config import config_from_dict
from exporter.errors import BkTransportError
from exporter.scheduler import Daemon, watchdog_bounds
from exporter.sdnotify import Watchdog
from exporter.sources.bkmonitor import BkMonitorSource


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Pings:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> bool:
        self.count += 1
        return True


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pings() -> Pings:
    return Pings()


def watchdog(clock: Clock, pings: Pings, interval: float | None = 10.0) -> Watchdog:
    return Watchdog(interval, {"poll": 100.0, "send": 30.0}, clock=clock, ping=pings)


def run_for(dog: Watchdog, clock: Clock, seconds: int, *, progress: tuple[str, ...] = ("poll", "send")) -> None:
    """``seconds`` control-job ticks, one a second, the named activities progressing every second."""
    for _ in range(seconds):
        clock.now += 1
        for name in progress:
            dog.progressed(name)
        dog.tick()


def test_pings_once_per_interval_while_everything_progresses(clock: Clock, pings: Pings) -> None:
    dog = watchdog(clock, pings)
    run_for(dog, clock, 60)
    assert pings.count == 6
    assert dog.stalled() == []


def test_a_stalled_poll_holds_the_pings_back_logs_once_then_resumes(
    clock: Clock, pings: Pings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.sdnotify")
    dog = watchdog(clock, pings)
    run_for(dog, clock, 100, progress=("send",))  # the poll's bound (100 s) is not yet past
    assert pings.count == 10
    run_for(dog, clock, 300, progress=("send",))  # the poll job is stuck: no ping at all
    assert pings.count == 10
    assert [name for name, _, _ in dog.stalled()] == ["poll"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "poll: no progress for 101s (limit 100s)" in warnings[0].getMessage()
    assert "send" not in warnings[0].getMessage()
    run_for(dog, clock, 1)  # it completes a step: the ping due since long goes out at once
    assert pings.count == 11
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "systemd watchdog: progress again, pinging"
    ]


def test_each_activity_has_its_own_bound(clock: Clock, pings: Pings) -> None:
    dog = watchdog(clock, pings)
    run_for(dog, clock, 30, progress=("poll",))
    assert pings.count == 3
    run_for(dog, clock, 1, progress=("poll",))  # send: 31 s without progress, bound 30 s
    run_for(dog, clock, 20, progress=("poll",))
    assert pings.count == 3
    assert dog.stalled() == [("send", 51.0, 30.0)]


def test_restart_counts_as_progress_and_unknown_names_are_ignored(clock: Clock, pings: Pings) -> None:
    dog = watchdog(clock, pings)
    clock.now += 1000
    dog.progressed("discover")
    assert {name for name, _, _ in dog.stalled()} == {"poll", "send"}
    dog.restart()
    assert dog.stalled() == []
    assert dog.tick() is True


def test_not_watched_never_pings(clock: Clock, pings: Pings) -> None:
    dog = watchdog(clock, pings, interval=None)
    run_for(dog, clock, 100)
    assert pings.count == 0


def test_new_bounds_keep_the_progress_seen(clock: Clock, pings: Pings) -> None:
    dog = watchdog(clock, pings)
    clock.now += 50
    dog.set_bounds({"poll": 40.0, "send": 60.0})
    assert dog.stalled() == [("poll", 50.0, 40.0)]


# -- in the daemon ---------------------------------------------------------------------------------------


def make_config(tmp_path: Path, **over: object) -> object:
    raw: dict[str, object] = {
        "bkmonitor": {"base_url": "https://paas.example.com", "app_code": "bk-app", "app_secret": "s3cr3t"},
        "alarms": {"ids": ["17180000005819837"]},
        "state": {"path": str(tmp_path / "s.db")},
        "export": {"endpoint": "http://127.0.0.1:4317"},
        **over,
    }
    return config_from_dict(raw, env={})


@pytest.fixture
def daemon(tmp_path: Path, clock: Clock, pings: Pings) -> Iterator[Daemon]:
    d = Daemon(make_config(tmp_path))  # type: ignore[arg-type]
    d._watchdog = Watchdog(10.0, watchdog_bounds(d.config), clock=clock, ping=pings)
    yield d
    d.app.close()


def test_bounds_come_from_the_config(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    # poll: 3 x poll.interval (30 s) + bkmonitor.timeout (35 s on the ESB) + 5 x bkmonitor.retry.max_backoff (30 s)
    assert watchdog_bounds(config) == {"poll": 275.0, "send": 33.0}  # type: ignore[arg-type]
    other = make_config(
        tmp_path / "o",
        poll={"interval": "10s"},
        bkmonitor={"base_url": "https://x", "app_code": "a", "app_secret": "s", "retry": {"max_backoff": "2s"}},
        export={"endpoint": "http://127.0.0.1:4317", "timeout": "4s"},
    )
    assert watchdog_bounds(other) == {"poll": 30.0 + 35.0 + 10.0, "send": 15.0}  # type: ignore[arg-type]


def test_requests_exports_and_job_runs_are_progress(daemon: Daemon, clock: Clock) -> None:
    clock.now += 10_000
    daemon.app.metrics.api_request("search_alert", "ok", 0.1)  # discovery is not polling
    assert {name for name, _, _ in daemon._watchdog.stalled()} == {"poll", "send"}
    daemon.app.metrics.api_request("get_event_log", "retryable", 0.1)  # a step inside a long poll
    assert {name for name, _, _ in daemon._watchdog.stalled()} == {"send"}
    daemon.app.metrics.export_attempt(signal="logs", ok=False, seconds=2.0)  # a step inside a drain
    assert daemon._watchdog.stalled() == []
    clock.now += 10_000

    def boom() -> None:
        raise RuntimeError("a failing run still ended")

    daemon._guard("poll", boom)()
    daemon._guard("send", lambda: None)()
    assert daemon._watchdog.stalled() == []


def test_the_control_job_pings_only_while_progressing(daemon: Daemon, clock: Clock, pings: Pings) -> None:
    daemon._control_job()
    assert pings.count == 1
    clock.now += 300
    daemon._control_job()  # poll bound 270 s, send 33 s: both past
    assert pings.count == 1
    daemon._guard("poll", lambda: None)()
    daemon._guard("send", lambda: None)()
    daemon._control_job()
    assert pings.count == 2


def test_stop_wakes_the_blueking_client(daemon: Daemon) -> None:
    source = daemon.app.source
    assert isinstance(source, BkMonitorSource)
    daemon.request_stop()  # what SIGTERM does
    assert daemon.app.stop.is_set()
    with pytest.raises(BkTransportError, match="client closed"):
        source.api.get_event_log("17180000005819837")  # no request sent, no backoff waited out
