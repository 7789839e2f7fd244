"""Poller and sender over the real SQLite store, a scripted source and the memory sink."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import BkAuthError, BkNotFoundError, BkUnavailableError, StateError
from exporter.sinks.base import ExportOutcome
from exporter.state.sqlite import SqliteStateStore
from tests.support.pipeline import Rig, row


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Rigs over a store of their own each, following alarms as severity 1 (FATAL problem records)."""
    rigs: list[Rig] = []

    def make(*, max_queued: int = 1000, **settings: Any) -> Rig:
        store = SqliteStateStore(tmp_path / f"s{len(rigs)}.db", max_queued=max_queued)
        rigs.append(Rig(store, follow_context={"severity": 1}, **settings))
        return rigs[-1]

    yield make
    for r in rigs:
        r.store.close()


def test_new_records_delivered_once_in_time_order(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.follow("1")
    r.source.data["1"] = [row("ACTION", "2024-06-10 14:13:51"), row("CREATE", "2024-06-10 14:13:50")]
    report = r.cycle()
    assert report.new_records == 2 and report.ok
    assert [e.event_name for e in r.sink.logs] == ["CREATE", "ACTION"]
    assert r.sink.logs[0].severity_text == "FATAL"
    # the next poll sees one more record: only it is sent
    r.clock.t += 31
    r.source.data["1"].insert(0, row("ACK", "2024-06-10 14:20:00"))
    r.cycle()
    assert [e.event_name for e in r.sink.logs] == ["CREATE", "ACTION", "ACK"]
    assert r.store.outbox_stats().depth == 0


def test_refolded_converge_rows_do_not_duplicate(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.follow("1")
    r.source.data["1"] = [
        row("CONVERGE", "2024-06-10 14:16:50", "m210"),
        row("CONVERGE", "2024-06-10 14:15:50", "m150"),
        row("CREATE", "2024-06-10 14:13:50"),
    ]
    r.cycle()
    r.clock.t += 31
    r.source.data["1"] = [
        row("CONVERGE", "2024-06-10 14:18:20", "m300"),
        row("CONVERGE", "2024-06-10 14:16:50", "m210"),
        row("CREATE", "2024-06-10 14:13:50"),
    ]
    r.cycle()
    assert sorted(e.body for e in r.sink.logs) == ["m", "m150", "m210", "m300"]


def test_not_due_alarms_are_not_read(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.follow("1")
    r.source.data["1"] = [row("CREATE", "2024-06-10 14:13:50")]
    r.cycle()
    r.clock.t += 10
    r.cycle()
    assert r.source.calls == ["1"]
    r.clock.t += 25
    r.cycle()
    assert r.source.calls == ["1", "1"]


def test_terminal_record_then_retire_after(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.follow("1")
    r.clock.t = 1718000400.0  # 14:20:00 Shanghai
    r.source.data["1"] = [row("RECOVER", "2024-06-10 14:20:00"), row("CREATE", "2024-06-10 14:13:50")]
    r.cycle()
    alarm = r.store.get_alarm("1")
    assert alarm is not None and alarm.phase == "closing" and alarm.terminal_at == 1718000400.0
    # late notification arrives during retire_after
    r.clock.t += 300
    r.source.data["1"].insert(0, row("ACTION", "2024-06-10 14:24:00", "notified"))
    r.cycle()
    r.clock.t += 301
    r.cycle()
    assert r.store.get_alarm("1").phase == "retired"  # type: ignore[union-attr]
    calls = len(r.source.calls)
    r.clock.t += 3600
    r.cycle()
    assert len(r.source.calls) == calls  # retired: no more reads
    assert [e.event_name for e in r.sink.logs] == ["CREATE", "RECOVER", "ACTION"]


def test_unknown_alarm_is_expired_not_retried(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.follow("1")
    r.source.data["1"] = BkNotFoundError("gone", code=3324002)
    r.cycle()
    assert r.store.get_alarm("1").phase == "expired"  # type: ignore[union-attr]
    r.clock.t += 3600
    r.cycle()
    assert r.source.calls == ["1"]


def test_api_failure_keeps_others_going(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.follow("1", "2")
    r.source.data["1"] = BkUnavailableError("down", code=1306201)
    r.source.data["2"] = [row("CREATE", "2024-06-10 14:13:50")]
    report = r.cycle()
    assert report.failed == 1 and report.polled == 2 and not report.ok
    assert len(r.sink.logs) == 1
    assert "1306201" in (r.store.get_alarm("1").last_error or "")  # type: ignore[union-attr]


def test_a_store_that_refuses_commits_fails_the_alarms_not_the_cycle(
    rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk: every commit fails. The cycle reports it (one rate-limited ERROR), raises
    nothing, and once the store takes commits again every record is delivered."""
    r = rig()
    r.follow("1", "2")
    r.source.data["1"] = [row("CREATE", "2024-06-10 14:13:50")]
    r.source.data["2"] = [row("CREATE", "2024-06-10 14:13:51")]
    commit = r.store.commit_poll

    def full(*args: Any, **kwargs: Any) -> Any:
        raise StateError("state store s0.db: database or disk is full")

    monkeypatch.setattr(r.store, "commit_poll", full)
    with caplog.at_level(logging.ERROR, logger="exporter.pipeline.poller"):
        report = r.cycle()
        r.cycle()
    assert report.failed == 2 and report.polled == 0 and not report.ok
    assert report.store_error is not None and "disk is full" in report.store_error
    assert len([m for m in caplog.messages if "state store refused" in m]) == 1
    monkeypatch.setattr(r.store, "commit_poll", commit)
    assert r.cycle().new_records == 2
    assert sorted(e.alarm_id for e in r.sink.logs) == ["1", "2"]


def test_auth_failure_stops_the_cycle_and_marks_unready(rig: Callable[..., Rig]) -> None:
    r = rig(max_concurrency=1)
    r.follow("1", "2", "3")
    for i in "123":
        r.source.data[i] = BkAuthError("refused", code=1306000, request_id="rid")
    report = r.cycle()
    assert report.auth_error and "1306000" in report.auth_error
    assert len(r.source.calls) == 1  # no retry storm across alarms
    assert r.metrics.ready()[0] is False


def test_malformed_items_counted_once_and_skipped(rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    r = rig()
    r.follow("1")
    r.source.data["1"] = [row("CREATE", "2024-06-10 14:13:50"), {"operate": "ACK", "create_time": "never"}, 7]
    assert r.cycle().malformed == 2
    r.clock.t += 31
    assert r.cycle().malformed == 0  # logged and counted once
    assert len(r.sink.logs) == 1
    assert sum("malformed" in m and "alarm 1" in m for m in caplog.messages) == 2


def test_backend_outage_keeps_records_queued(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.follow("1")
    r.source.data["1"] = [row("CREATE", "2024-06-10 14:13:50")]
    r.sink.fail_with = ExportOutcome.RETRY
    r.cycle()
    assert r.store.outbox_stats().depth == 1 and r.sink.logs == []
    assert r.sender.in_outage
    skipped = r.sender.drain()  # backing off: not even tried
    assert skipped.skipped
    r.sink.fail_with = None
    r.clock.t += 120
    assert r.sender.drain().exported == 1
    assert not r.sender.in_outage and r.store.outbox_stats().depth == 0


def test_rejected_records_are_isolated_and_parked(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.follow("1")
    rows = [row("ACTION", f"2024-06-10 14:14:{s:02d}", f"n{s}") for s in range(10)]
    r.source.data["1"] = rows
    bad_uid: list[str] = []

    def poison() -> None:
        batch = r.store.claim_outbox("logs", 100)
        bad_uid.append(batch[6].payload.uid)
        r.sink.poison.add(bad_uid[0])

    r.poller.run_cycle()
    poison()
    report = r.sender.drain(force=True)
    assert report.parked == 1 and report.exported == 9
    assert bad_uid[0] not in {e.uid for e in r.sink.logs}
    assert r.store.outbox_stats().parked == 1


def test_outbox_full_leaves_records_in_bluekings_hands(rig: Callable[..., Rig]) -> None:
    r = rig(max_queued=3)
    r.follow("0")
    r.sink.fail_with = ExportOutcome.RETRY
    r.source.data["0"] = [row("CREATE", "2024-06-10 14:13:50")]
    r.cycle()
    r.follow("1")
    r.source.data["1"] = [row("ACTION", f"2024-06-10 14:14:{s:02d}", f"n{s}") for s in range(5)]
    report = r.cycle()
    assert report.overflow == 5 and r.store.outbox_stats().depth == 1
    r.sink.fail_with = None
    r.clock.t += 31
    r.cycle()  # the queue drained first; then the empty outbox takes the 5 whole, above the cap
    r.clock.t += 31
    r.cycle()
    assert len(r.sink.logs) == 6


def follow_with_a_record(r: Rig, count: int) -> list[str]:
    """Follow alarms ``1`` to ``count``, each with one CREATE record; their ids."""
    ids = [str(n) for n in range(1, count + 1)]
    r.follow(*ids)
    for alarm_id in ids:
        r.source.data[alarm_id] = [row("CREATE", "2024-06-10 14:13:50")]
    return ids


def test_concurrent_workers_poll_every_alarm_once_without_a_task_per_alarm(
    rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.pipeline.poller as poller_module

    submitted: list[object] = []
    real_submit = poller_module.ThreadPoolExecutor.submit

    def counting_submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        submitted.append(fn)
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(poller_module.ThreadPoolExecutor, "submit", counting_submit)
    r = rig(max_concurrency=4)
    ids = follow_with_a_record(r, 40)
    report = r.cycle()
    assert report.polled == 40 and report.new_records == 40 and report.ok
    assert sorted(r.source.calls, key=int) == ids  # each alarm read exactly once
    assert len(submitted) == 4  # one task per worker, not one future per alarm (memory at 10k alarms)


def test_a_cycle_claims_due_alarms_page_by_page_and_polls_each_once(
    rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory holds one page of claimed alarms, not every followed one; every due alarm is still
    read once a cycle, forced or not."""
    import exporter.pipeline.poller as poller_module

    monkeypatch.setattr(poller_module, "CLAIM_PAGE", 7)
    r = rig(max_concurrency=3)
    claims: list[int] = []
    real_claim = r.store.claim_due

    def claim_due(now: float, limit: int, after: Any = None) -> list[Any]:
        claims.append(limit)
        return real_claim(now, limit, after)

    monkeypatch.setattr(r.store, "claim_due", claim_due)
    ids = follow_with_a_record(r, 23)
    report = r.cycle()
    assert report.polled == 23 and report.new_records == 23 and report.ok
    assert sorted(r.source.calls, key=int) == ids
    assert claims == [7, 7, 7, 7]  # 7 + 7 + 7 + 2
    # the next cycle: nothing is due yet
    claims.clear()
    r.source.calls.clear()
    assert r.cycle().polled == 0 and claims == [7]
    # forced (once): every alarm, still page by page; the polled ones come round again (they are
    # "due" to a forced cycle) and are not read twice
    claims.clear()
    assert r.cycle(force=True).polled == 23 and max(claims) == 7
    assert sorted(r.source.calls, key=int) == ids


def test_the_next_page_is_claimed_while_the_last_polls_of_a_page_run(
    rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker waits for a page's slowest poll: the next page is claimed as soon as the last
    alarm of a page is taken. Alarm 1 is held until the second page is claimed: with pages polled
    one after the other, it would wait for ever (here: 10 s, then fail)."""
    import threading

    import exporter.pipeline.poller as poller_module

    monkeypatch.setattr(poller_module, "CLAIM_PAGE", 3)
    r = rig(max_concurrency=2)
    second_claim = threading.Event()
    real_claim = r.store.claim_due

    def claim_due(now: float, limit: int, after: Any = None) -> list[Any]:
        if after is not None:
            second_claim.set()
        return real_claim(now, limit, after)

    monkeypatch.setattr(r.store, "claim_due", claim_due)
    ids = follow_with_a_record(r, 7)
    real_fetch = r.source.get_event_log

    def get_event_log(alarm_id: str) -> list[Any]:
        if alarm_id == "1" and not second_claim.wait(10):
            raise AssertionError("the second page was not claimed while alarm 1 was in flight")
        return real_fetch(alarm_id)

    monkeypatch.setattr(r.source, "get_event_log", get_event_log)
    report = r.cycle()
    assert report.ok and report.polled == 7, report.errors
    assert sorted(r.source.calls, key=int) == ids


def test_an_unexpected_error_in_a_worker_still_fails_the_cycle(rig: Callable[..., Rig]) -> None:
    r = rig(max_concurrency=4)
    r.follow("1", "2", "3", "4", "5")
    for alarm_id in "12345":
        r.source.data[alarm_id] = [row("CREATE", "2024-06-10 14:13:50")]

    def broken(alarm: Any) -> Any:
        raise RuntimeError("a bug in the poll path")

    r.poller.poll_alarm = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug in the poll path"):
        r.poller.run_cycle()
