"""Discovery that cannot explode: partial answers, and more open alarms than the result window.

Real HTTP to the simulator (its ``search_alert`` matches windows by overlap, so an open alarm is in
every sub-window) with Elasticsearch's result window lowered to 100 alerts, through the real
client, source and discoverer on a SQLite store. Before this, a capped window was halved down to
1 s leaves: for a 1 h window whose cap comes from open alarms, about 2 x 3600 calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.metrics import Metrics
from exporter.pipeline.discovery import Discoverer, DiscoverySettings
from exporter.simulator import SimClock, Simulator
from exporter.sources.bkmonitor import BkClient, BkClientSettings, BkMonitorSource, SearchSettings
from exporter.state.sqlite import SqliteStateStore
from tests.support.sim import simulator

pytestmark = pytest.mark.integration

NOW = 1_718_000_000
CAP = 100
OPEN, CLOSED = 350, 60
REASON = "shard [3] of index [bkfta_alert_20240610] timed out"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with simulator(clock=SimClock(NOW)) as s:
        s.result_window = CAP
        for i in range(OPEN):  # open across every sub-window of the last hour
            s.add_alarm(name=f"open {i}", begin_time=NOW - 86400 + i * 200, create=False)
        for i in range(CLOSED):
            a = s.add_alarm(name=f"closed {i}", begin_time=NOW - 3000 + i * 40, create=False)
            a.recover(at=NOW - 2900 + i * 40)
        yield s


class Partial:
    """Marks the next ``times`` search_alert answers partial, as Elasticsearch's timeouts do."""

    def __init__(self) -> None:
        self.times = 0

    def __call__(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        if endpoint == "search_alert" and self.times > 0:
            self.times -= 1
            data = payload["data"]
            data.update(is_partial=True, partial_reasons=[REASON], total_relation="gte")
            data["alerts"] = data["alerts"][:3]
        return payload


def test_partial_and_capped_answers_stay_bounded_and_every_alarm_is_found(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    partial = Partial()
    sim.response_hook = partial
    settings = BkClientSettings(
        base_url=sim.base_url, app_code=sim.app_code, app_secret=sim.app_secret, rate_limit=0, max_attempts=1
    )
    store = SqliteStateStore(str(tmp_path / "s.db"))
    client = BkClient(settings)
    search = SearchSettings(bk_biz_ids=(2,), page_size=50, result_window=CAP)
    source = BkMonitorSource(client, search=search)
    discoverer = Discoverer(source, store, Metrics(), DiscoverySettings(lookback=3600), clock=lambda: float(NOW))
    caplog.set_level(logging.DEBUG, logger="exporter.sources.bkmonitor.alertsearch")
    try:
        # rounds 1 and 2: Elasticsearch keeps timing out. Asked three times, never split, reported.
        for _ in range(2):
            partial.times = 3
            before = sim.calls("search_alert")
            report = discoverer.run()
            assert report.error is not None and REASON in report.error and "partial" in report.error
            assert sim.calls("search_alert") - before == 3, "a partial answer is retried, never split"
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and "is_partial" in r.getMessage()]
        assert len(warned) == 1 and REASON in warned[0].getMessage(), "logged once, with its reason"
        assert not store.list_alarms(), "nothing taken from a partial answer; the window is asked again"

        # round 3: one more partial answer, then whole ones; more open alarms than the cap
        partial.times = 1
        before = sim.calls("search_alert")
        report = discoverer.run()
        calls = sim.calls("search_alert") - before
    finally:
        client.close()
    assert report.error is None, report.error
    found = {a.alarm_id for a in store.list_alarms()}
    assert found == {a.id for a in sim.alarms()}, "every alarm, open or closed, is found"
    # the figure (measured: 25 calls for 410 alarms, 9 pages at the least): 1 retry, the capped window,
    # its 2 halves (both capped: split by create_time instead), the oldest create_time, then a
    # create_time bisection whose leaves page the 410 alerts by 50
    assert report.requests == calls
    assert calls <= 40, f"{calls} search_alert calls for {OPEN + CLOSED} alarms"
    texts = [r.getMessage() for r in caplog.records]
    assert any("splitting it by create_time instead" in t for t in texts)
    store.close()


def test_the_calls_per_round_are_capped(sim: Simulator) -> None:
    settings = BkClientSettings(base_url=sim.base_url, app_code=sim.app_code, app_secret=sim.app_secret, rate_limit=0)
    with BkClient(settings) as client:
        search = SearchSettings(bk_biz_ids=(2,), page_size=50, result_window=CAP, max_calls=5)
        source = BkMonitorSource(client, search=search)
        before = sim.calls("search_alert")
        with pytest.raises(Exception, match="discovery stopped after 5 search_alert calls"):
            source.discover(NOW - 3600, NOW)
    assert sim.calls("search_alert") - before == 5
