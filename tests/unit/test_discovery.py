"""Discovery windows, paging, capping and the API-economy decisions, against a scripted search_alert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from exporter.errors import BkUnavailableError
from exporter.metrics import Metrics
from exporter.pipeline.discovery import CHECKPOINT, Discoverer, DiscoverySettings
from exporter.pipeline.lifecycle import severity_in
from exporter.sources.bkmonitor import BkMonitorSource, SearchSettings
from exporter.sources.bkmonitor.alerts import parse_alert
from exporter.state.base import PollCommit
from exporter.state.sqlite import SqliteStateStore

NOW = 1_718_000_000.0


def alert(i: int, *, status: str = "ABNORMAL", update: int = 1, severity: int = 2, biz: int = 2) -> dict[str, Any]:
    return {
        "id": f"17179990{i:09d}",
        "alert_name": f"a{i}",
        "status": status,
        "severity": severity,
        "bk_biz_id": biz,
        "strategy_id": 7,
        "strategy_name": "s",
        "update_time": update,
        "begin_time": 1717999000,
        "create_time": 1717999000,
        "end_time": None,
        "dimensions": [{"key": "ip", "value": "10.0.0.1", "display_key": "IP", "display_value": "10.0.0.1"}],
    }


class Search:
    def __init__(self, alerts: list[dict[str, Any]], cap: int | None = None) -> None:
        self.alerts = alerts
        self.cap = cap
        self.bodies: list[dict[str, Any]] = []
        self.fail: Exception | None = None

    def search_alert(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.bodies.append(dict(body))
        if self.fail:
            raise self.fail
        start, end = body["start_time"], body["end_time"]
        hits = [a for a in self.alerts if start <= a["begin_time"] <= end or a.get("open", True)]
        if self.cap is not None and len(hits) > self.cap:
            hits_in = [a for a in self.alerts if start <= a["begin_time"] < end]
            if len(hits_in) > self.cap:
                return {"alerts": hits_in[: body["page_size"]], "total": 10000, "total_relation": "gte"}
            hits = hits_in
        size, page = body["page_size"], body["page"]
        return {"alerts": hits[(page - 1) * size : page * size], "total": len(hits), "total_relation": "eq"}


def make(store: SqliteStateStore, search: Search, clock: list[float], **kw: Any) -> Discoverer:
    source = BkMonitorSource(search, search=SearchSettings(bk_biz_ids=(2, 3), page_size=kw.pop("page_size", 2)))
    return Discoverer(source, store, Metrics(), DiscoverySettings(**kw), clock=lambda: clock[0])


def test_request_body_is_economical_and_explicit(store: SqliteStateStore) -> None:
    search = Search([alert(1)])
    make(store, search, [NOW]).run()
    body = search.bodies[0]
    assert body["bk_biz_ids"] == [2, 3]
    assert body["show_overview"] is False and body["show_aggs"] is False
    assert body["ordering"] == ["-create_time", "-seq_id"]
    assert body["end_time"] == int(NOW) and body["start_time"] == int(NOW) - 3600
    assert body["status"] == ["ABNORMAL", "RECOVERED", "CLOSED"]


def test_windows_overlap_the_previous_one_and_since_reaches_back(store: SqliteStateStore) -> None:
    search = Search([])
    clock = [NOW]
    d = make(store, search, clock, overlap=600)
    d.run()
    clock[0] += 60
    d.run()
    assert search.bodies[1]["start_time"] == int(NOW) - 600 and search.bodies[1]["end_time"] == int(NOW) + 60
    assert store.get_meta(CHECKPOINT) == str(int(NOW) + 60)
    d.run(since=86400)
    assert search.bodies[2]["start_time"] == int(NOW) + 60 - 86400


def test_pages_to_the_end(store: SqliteStateStore) -> None:
    search = Search([alert(i) for i in range(5)])
    report = make(store, search, [NOW]).run()
    assert report.alerts == 5 and report.new == 5 and report.requests == 3
    assert [b["page"] for b in search.bodies] == [1, 2, 3]


def test_capped_result_splits_the_window(store: SqliteStateStore) -> None:
    alerts = [alert(i) | {"begin_time": int(NOW) - 3000 + i * 500, "open": False} for i in range(6)]
    search = Search(alerts, cap=3)
    report = make(store, search, [NOW], page_size=10).run()
    assert report.alerts == 6
    assert len({(b["start_time"], b["end_time"]) for b in search.bodies}) > 1


def test_economy_only_changed_alarms_become_due(store: SqliteStateStore) -> None:
    alerts = [alert(i) for i in range(10)]
    search = Search(alerts)
    clock = [NOW]
    d = make(store, search, clock, page_size=100, full_reread_interval=1800)
    assert d.run().new == 10
    for a in store.claim_due(NOW, 100):  # pretend they were all read now
        store.commit_poll(PollCommit(a.alarm_id, NOW, next_poll=NOW + 1800, full_read=True))
    clock[0] += 30
    alerts[3]["update_time"] = 2
    alerts[7]["status"] = "RECOVERED"
    report = d.run()
    assert (report.new, report.changed, report.safety_net) == (0, 2, 0)
    assert {a.alarm_id for a in store.claim_due(clock[0], 100)} == {alerts[3]["id"], alerts[7]["id"]}
    # the safety net: after full_reread_interval everything unchanged is re-read once
    clock[0] += 1800 * 1.2  # the safety net is spread over a fifth of its interval, per alarm
    assert d.run().safety_net == 10


def test_reopened_retired_alarm_is_followed_again(store: SqliteStateStore) -> None:
    alerts = [alert(1, status="RECOVERED")]
    search = Search(alerts)
    clock = [NOW]
    d = make(store, search, clock)
    d.run()
    store.commit_poll(PollCommit(alerts[0]["id"], NOW, phase="retired"))
    clock[0] += 60
    d.run()  # unchanged and terminal: stays retired
    assert store.get_alarm(alerts[0]["id"]).phase == "retired"  # type: ignore[union-attr]
    alerts[0].update(status="ABNORMAL", update_time=9)
    clock[0] += 60
    assert d.run().reopened == 1
    alarm = store.get_alarm(alerts[0]["id"])
    assert alarm is not None and alarm.phase == "active" and alarm.next_poll <= clock[0]


def test_an_expired_alarm_that_discovery_lists_again_is_followed_again(store: SqliteStateStore) -> None:
    """get_event_log answered 3324002 (BlueKing had not indexed it yet), search_alert lists it:
    it is polled again, although its change token did not move."""
    alerts = [alert(1)]
    clock = [NOW]
    d = make(store, Search(alerts), clock)
    d.run()
    alarm_id = alerts[0]["id"]
    store.commit_poll(PollCommit(alarm_id, NOW, phase="expired", next_poll=NOW + 30, last_error="3324002"))
    assert store.claim_due(float("inf"), 10) == []
    clock[0] += 60
    report = d.run()
    assert (report.revived, report.reopened, report.changed) == (1, 0, 0)
    alarm = store.get_alarm(alarm_id)
    assert alarm is not None and (alarm.phase, alarm.retired_at) == ("active", None)
    assert [a.alarm_id for a in store.claim_due(clock[0], 10)] == [alarm_id]


def test_a_change_in_the_second_of_the_last_read_is_read_again(store: SqliteStateStore) -> None:
    """update_time has one-second resolution: a record added after our read, in the same second,
    leaves the token unchanged; the alarm is read once more, then left alone."""
    alerts = [alert(1, update=int(NOW))]
    clock = [NOW]
    d = make(store, Search(alerts), clock, page_size=100)
    d.run()
    store.commit_poll(PollCommit(alerts[0]["id"], NOW + 0.3, next_poll=NOW + 1800, full_read=True))
    clock[0] += 30
    assert d.run().changed == 1  # same token, but updated in the second of the last read
    store.commit_poll(PollCommit(alerts[0]["id"], clock[0], next_poll=clock[0] + 1800, full_read=True))
    clock[0] += 30
    assert d.run().changed == 0


def test_failure_keeps_the_checkpoint(store: SqliteStateStore) -> None:
    search = Search([alert(1)])
    search.fail = BkUnavailableError("down", code=1306201)
    report = make(store, search, [NOW]).run()
    assert report.error and "1306201" in report.error
    assert store.get_meta(CHECKPOINT) is None


def test_alert_parsing_is_tolerant() -> None:
    ctx = parse_alert(
        {
            "id": 17180000005819837,
            "severity": "1",
            "bk_biz_id": "2",
            "strategy_id": "",
            "dimensions": {"ip": "1.1.1.1"},
            "end_time": None,
        }
    )
    assert ctx.alarm_id == "17180000005819837" and ctx.severity == 1 and ctx.bk_biz_id == 2
    assert ctx.strategy_id is None and ctx.dimensions == (("ip", "1.1.1.1"),)
    with pytest.raises(ValueError):
        parse_alert({"id": "abc"})


@pytest.mark.parametrize(
    ("message", "level"),
    [
        ("收到了更高级别的事件，告警级别上升为：致命", 1),
        ("告警级别上升为：预警", 2),
        ("Severity raised to Fatal", 1),
        ("nothing here", None),
    ],
)
def test_severity_up_messages(message: str, level: int | None) -> None:
    assert severity_in(message) == level
