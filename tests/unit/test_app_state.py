"""What the App does with the state store beyond one cycle: parked retention, stranded rows,
configured alarms that expired. The App is built on an injected SQLite store and a memory sink;
nothing here opens a socket (BlueKing is never called)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.app import App
from exporter.config import config_from_dict
from exporter.model import AlarmContext, SpanRecord
from exporter.sinks.memory import MemorySink
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.sqlite import SqliteStateStore
from tests.support.records import queued_log

BK = {"base_url": "http://127.0.0.1:9", "app_code": "app", "app_secret": "s"}
ALARM = "17180000005819837"
DAY = 86400.0
NOW = 1_718_000_000.0


def spans_row(uid: str) -> QueuedRecord:
    record = SpanRecord(uid=uid, alarm_id=ALARM, trace_id=1, span_id=2, name="alarm", start_ns=1, end_ns=2)
    return QueuedRecord("spans", uid, record.to_json())


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "s.db"


def make_app(path: Path, clock: list[float], **over: Any) -> App:
    raw: dict[str, Any] = {"bkmonitor": BK, "state": {"path": str(path)}, **over}
    store = SqliteStateStore(path, exclusive=True)
    return App(config_from_dict(raw, env={}), sink=MemorySink(), store=store, clock=lambda: clock[0])


@pytest.fixture
def seeded(path: Path) -> Iterator[Path]:
    """A state file left by an earlier configuration: 3 queued logs (one parked 40 days ago, one
    parked 10 days ago) and 4 queued spans."""
    store = SqliteStateStore(path)
    try:
        store.upsert_alarm(AlarmContext(ALARM), source="config", now=NOW, due=True)
        logs = ["a", "b", "c"]
        store.commit_poll(
            PollCommit(
                ALARM,
                NOW,
                seen=logs,
                queued=[queued_log(u, ALARM) for u in logs],
                extra_queued=[spans_row(f"s{i}") for i in range(4)],
            )
        )
        a, b, _ = store.claim_outbox("logs", 10)
        store.park([a.seq], "HTTP 400", NOW - 40 * DAY)
        store.park([b.seq], "HTTP 400", NOW - 10 * DAY)
    finally:
        store.close()
    yield path


def test_maintain_deletes_records_parked_longer_than_parked_retention(
    seeded: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [NOW]
    app = make_app(seeded, clock, export={"signals": ["logs", "spans"]})
    try:
        with caplog.at_level(logging.WARNING, logger="exporter.app"):
            app.maintain()
        stats = app.store.outbox_stats()
        assert (stats.parked, stats.depth) == (1, 5)  # the 40-day-old one went; queued rows stay
        assert any("deleted 1 parked records" in r.getMessage() for r in caplog.records)
        clock[0] += 25 * DAY
        app.maintain()
        assert app.store.outbox_stats().parked == 0
    finally:
        app.close()


def test_parked_retention_zero_keeps_them_for_ever(seeded: Path) -> None:
    app = make_app(seeded, [NOW + 1000 * DAY], state={"path": str(seeded), "parked_retention": 0})
    try:
        app.maintain()
        assert app.store.outbox_stats().parked == 2
    finally:
        app.close()


def test_start_up_warns_about_rows_of_a_signal_no_longer_exported(
    seeded: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter.app"):
        app = make_app(seeded, [NOW])  # export.signals: [logs] (the default)
    try:
        (line,) = [r.getMessage() for r in caplog.records if "stranded" in r.getMessage()]
        assert "4 queued spans records are stranded" in line
        assert "export.signals" in line and "bk-otel-exporter purge --signal spans" in line
        assert app.queued() == 5 and app.queued(exported_only=True) == 1
        caplog.clear()
        app.apply(config_from_dict({"bkmonitor": BK, "state": {"path": str(seeded)}, "export": {"signals": ["spans"]}}))
        (line,) = [r.getMessage() for r in caplog.records if "stranded" in r.getMessage()]
        assert "1 queued logs records are stranded" in line  # said again on reload, for the new list
    finally:
        app.close()


def test_no_warning_when_every_queued_signal_is_exported(seeded: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter.app"):
        app = make_app(seeded, [NOW], export={"signals": ["logs", "spans"]})
    app.close()
    assert not [r for r in caplog.records if "stranded" in r.getMessage()]


def test_a_configured_alarm_that_expired_is_read_again_at_start_up(path: Path) -> None:
    clock = [NOW]
    app = make_app(path, clock, alarms={"ids": [ALARM]})
    try:
        app.sync_configured_alarms()
        app.store.commit_poll(PollCommit(ALARM, NOW, phase="expired", next_poll=NOW + 30, last_error="3324002"))
        assert app.store.claim_due(float("inf"), 10) == []
        clock[0] += 60
        app.sync_configured_alarms()  # a start, or a reload, with the alarm still in alarms.ids
        alarm = app.store.get_alarm(ALARM)
        assert alarm is not None and alarm.phase == "active"
        assert [a.alarm_id for a in app.store.claim_due(clock[0], 10)] == [ALARM]
    finally:
        app.close()
