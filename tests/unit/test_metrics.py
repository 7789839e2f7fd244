"""Metrics: counters and gauges move as reported; liveness and readiness rules, on an injected clock."""

from __future__ import annotations

import pytest

from exporter.metrics import METRIC_NAMES, Metrics


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(clock=clock, poll_stale_after=120, export_stale_after=300)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_counters_and_histograms_move(metrics: Metrics) -> None:
    metrics.api_request("get_event_log", "ok", 0.2)
    metrics.api_request("get_event_log", "ok", 0.4)
    metrics.api_request("search_alert", "rate_limited", 1.5)
    metrics.poll_cycle(ok=True, alarms_polled=3, seconds=0.9)
    metrics.poll_cycle(ok=False, alarms_polled=2, seconds=2.0)
    metrics.records_fetched(10)
    metrics.records_enqueued(7)
    metrics.records_skipped(2, "malformed")
    metrics.records_skipped(1, "overflow")
    metrics.records_exported(5, "logs")
    metrics.records_exported(1, "spans")
    metrics.records_parked(2, "logs")
    metrics.export_attempt(signal="logs", ok=True, seconds=0.05)
    metrics.export_attempt(signal="logs", ok=False, seconds=10.0)

    assert value(metrics, "bk_otel_api_requests_total", api_endpoint="get_event_log", outcome="ok") == 2
    assert value(metrics, "bk_otel_api_requests_total", api_endpoint="search_alert", outcome="rate_limited") == 1
    assert value(metrics, "bk_otel_api_request_duration_seconds_count", api_endpoint="get_event_log") == 2
    assert value(metrics, "bk_otel_api_request_duration_seconds_sum", api_endpoint="get_event_log") == pytest.approx(
        0.6
    )
    assert value(metrics, "bk_otel_api_request_duration_seconds_bucket", api_endpoint="search_alert", le="1.0") == 0
    assert value(metrics, "bk_otel_api_request_duration_seconds_bucket", api_endpoint="search_alert", le="2.5") == 1
    assert value(metrics, "bk_otel_polls_total", outcome="ok") == 1
    assert value(metrics, "bk_otel_polls_total", outcome="error") == 1
    assert value(metrics, "bk_otel_alarm_polls_total") == 5
    assert value(metrics, "bk_otel_poll_duration_seconds_count") == 2
    assert value(metrics, "bk_otel_records_fetched_total") == 10
    assert value(metrics, "bk_otel_records_enqueued_total") == 7
    assert value(metrics, "bk_otel_records_skipped_total", reason="malformed") == 2
    assert value(metrics, "bk_otel_records_skipped_total", reason="overflow") == 1
    assert value(metrics, "bk_otel_records_exported_total", signal="logs") == 5
    assert value(metrics, "bk_otel_records_exported_total", signal="spans") == 1
    assert value(metrics, "bk_otel_records_parked_total", signal="logs") == 2
    assert value(metrics, "bk_otel_records_parked_total", signal="spans") == 0
    assert value(metrics, "bk_otel_export_attempts_total", signal="logs", outcome="ok") == 1
    assert value(metrics, "bk_otel_export_attempts_total", signal="logs", outcome="error") == 1
    assert value(metrics, "bk_otel_export_duration_seconds_count", signal="logs") == 2


def test_known_label_values_start_at_zero(metrics: Metrics) -> None:
    assert value(metrics, "bk_otel_polls_total", outcome="error") == 0
    assert value(metrics, "bk_otel_records_skipped_total", reason="malformed") == 0
    assert value(metrics, "bk_otel_records_exported_total", signal="spans") == 0
    assert value(metrics, "bk_otel_export_attempts_total", signal="spans", outcome="error") == 0


def test_zero_and_negative_counts_are_ignored(metrics: Metrics) -> None:
    metrics.records_fetched(0)
    metrics.records_exported(-3, "logs")
    assert value(metrics, "bk_otel_records_fetched_total") == 0
    assert value(metrics, "bk_otel_records_exported_total", signal="logs") == 0


def test_gauges_and_timestamps(metrics: Metrics, clock: Clock) -> None:
    assert value(metrics, "bk_otel_last_successful_poll_timestamp_seconds") == 0
    metrics.set_outbox(depth=42, oldest_age_seconds=12.5, parked=3)
    metrics.set_alarms_followed(9)
    metrics.poll_cycle(ok=True, alarms_polled=1, seconds=0.1)
    clock.advance(5)
    metrics.poll_cycle(ok=False, alarms_polled=1, seconds=0.1)  # a failure does not move the timestamp
    metrics.export_attempt(signal="spans", ok=True, seconds=0.1)

    assert value(metrics, "bk_otel_outbox_depth") == 42
    assert value(metrics, "bk_otel_outbox_oldest_age_seconds") == 12.5
    assert value(metrics, "bk_otel_outbox_parked") == 3
    assert value(metrics, "bk_otel_alarms_followed") == 9
    assert value(metrics, "bk_otel_last_successful_poll_timestamp_seconds") == clock.now - 5
    assert value(metrics, "bk_otel_last_successful_export_timestamp_seconds") == clock.now

    metrics.set_outbox(depth=0, oldest_age_seconds=99, parked=3)
    assert value(metrics, "bk_otel_outbox_oldest_age_seconds") == 0  # nothing waits, nothing is old


def test_instances_do_not_share_a_registry(clock: Clock) -> None:
    a, b = Metrics(clock=clock), Metrics(clock=clock)
    a.records_fetched(3)
    assert value(a, "bk_otel_records_fetched_total") == 3
    assert value(b, "bk_otel_records_fetched_total") == 0


def test_render_has_every_metric_name(metrics: Metrics) -> None:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_live_follows_the_scheduler(metrics: Metrics) -> None:
    ok, details = metrics.live()
    assert (ok, details["status"], details["scheduler_running"]) == (False, "fail", False)
    metrics.set_scheduler_running(True)
    ok, details = metrics.live()
    assert (ok, details["status"]) == (True, "ok")
    assert value(metrics, "bk_otel_up") == 1
    metrics.set_scheduler_running(False)
    assert metrics.live()[0] is False
    assert value(metrics, "bk_otel_up") == 0


def test_not_ready_until_the_scheduler_runs(metrics: Metrics) -> None:
    ok, details = metrics.ready()
    assert not ok
    assert details["reasons"] == ["scheduler not running"]


def test_startup_grace_then_stale_without_a_successful_poll(metrics: Metrics, clock: Clock) -> None:
    clock.advance(1000)  # time before the scheduler starts does not count
    metrics.set_scheduler_running(True)
    clock.advance(119)
    assert metrics.ready()[0]
    metrics.poll_cycle(ok=False, alarms_polled=4, seconds=1)  # failures alone do not end the grace early
    assert metrics.ready()[0]
    clock.advance(2)
    ok, details = metrics.ready()
    assert not ok
    assert "no successful poll since start" in details["reasons"][0]
    assert details["last_poll_failure_age_seconds"] == 2
    assert value(metrics, "bk_otel_ready") == 0


def test_stale_poll(metrics: Metrics, clock: Clock) -> None:
    metrics.set_scheduler_running(True)
    metrics.poll_cycle(ok=True, alarms_polled=0, seconds=0.01)  # an idle cycle counts as a success
    clock.advance(120)
    assert metrics.ready()[0]
    clock.advance(1)
    ok, details = metrics.ready()
    assert not ok
    assert details["reasons"] == ["last successful poll 121s ago (limit 120s)"]
    assert details["last_poll_success_age_seconds"] == 121
    metrics.poll_cycle(ok=True, alarms_polled=2, seconds=0.3)
    assert metrics.ready()[0]


def test_auth_failure_makes_unready_until_cleared(metrics: Metrics) -> None:
    metrics.set_scheduler_running(True)
    metrics.poll_cycle(ok=True, alarms_polled=1, seconds=0.1)
    metrics.auth_failure("get_event_log: app auth failed code=1306000")
    ok, details = metrics.ready()
    assert not ok
    assert details["auth_failure"] == "get_event_log: app auth failed code=1306000"
    assert details["reasons"] == ["BlueKing authentication failing: get_event_log: app auth failed code=1306000"]
    assert value(metrics, "bk_otel_auth_failing") == 1
    assert metrics.live()[0]  # alive all the same: restarting would not fix credentials
    metrics.auth_failure(None)
    assert metrics.ready()[0]
    assert value(metrics, "bk_otel_auth_failing") == 0


def test_empty_outbox_is_not_an_export_failure(metrics: Metrics, clock: Clock) -> None:
    metrics.set_scheduler_running(True)
    for _ in range(10):  # an hour of polls with nothing to send, no export ever
        clock.advance(60)
        metrics.poll_cycle(ok=True, alarms_polled=1, seconds=0.1)
        metrics.set_outbox(depth=0, oldest_age_seconds=0, parked=0)
    assert metrics.ready()[0]


def test_non_empty_outbox_needs_a_recent_export(metrics: Metrics, clock: Clock) -> None:
    metrics.set_scheduler_running(True)

    def tick(seconds: float) -> None:
        clock.advance(seconds)
        metrics.poll_cycle(ok=True, alarms_polled=1, seconds=0.1)

    tick(1000)
    metrics.export_attempt(signal="logs", ok=True, seconds=0.1)
    metrics.set_outbox(depth=0, oldest_age_seconds=0, parked=0)
    tick(1000)
    # Records arrive long after the last export: the window starts now, not at that export.
    metrics.set_outbox(depth=5, oldest_age_seconds=0, parked=0)
    assert metrics.ready()[0]
    metrics.export_attempt(signal="logs", ok=False, seconds=10)  # one failure is not an outage
    tick(100)
    metrics.set_outbox(depth=8, oldest_age_seconds=100, parked=0)
    assert metrics.ready()[0]
    tick(201)
    ok, details = metrics.ready()
    assert not ok
    assert details["reasons"] == ["8 records waiting, no successful export for 301s (limit 300s)"]
    assert details["outbox_depth"] == 8
    metrics.export_attempt(signal="logs", ok=True, seconds=0.2)
    assert metrics.ready()[0]
    tick(301)
    assert not metrics.ready()[0]  # still records waiting, backend down again
    metrics.set_outbox(depth=0, oldest_age_seconds=0, parked=8)  # drained (or parked): ready again
    assert metrics.ready()[0]


def test_stranded_rows_never_make_it_unready(metrics: Metrics, clock: Clock) -> None:
    """Rows of a signal no longer exported wait for ever by design: readiness waits only on what
    the sender can send (the gauge still shows every waiting row)."""
    metrics.set_scheduler_running(True)
    metrics.set_outbox(depth=7, oldest_age_seconds=5000, parked=0, sendable=0)
    for _ in range(4):
        clock.advance(200)
        metrics.poll_cycle(ok=True, alarms_polled=1, seconds=0.1)
    assert metrics.ready()[0]
    assert metrics.registry.get_sample_value("bk_otel_outbox_depth") == 7
    metrics.set_outbox(depth=9, oldest_age_seconds=5000, parked=0, sendable=2)  # two can be sent
    clock.advance(301)
    metrics.poll_cycle(ok=True, alarms_polled=1, seconds=0.1)
    ok, details = metrics.ready()
    assert not ok and details["reasons"] == ["2 records waiting, no successful export for 301s (limit 300s)"]


def test_scheduler_restart_restarts_the_grace(metrics: Metrics, clock: Clock) -> None:
    metrics.set_scheduler_running(True)
    clock.advance(500)
    assert not metrics.ready()[0]
    metrics.set_scheduler_running(False)
    metrics.set_scheduler_running(True)
    assert metrics.ready()[0]
