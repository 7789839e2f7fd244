"""The sender at the edges: signals on their own, too-large splitting, partial success, Retry-After,
byte-bounded batches, and a sink swap that waits for one request only.

Real SQLite store, a scripted sink (no sockets), a settable clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from exporter.config import config_from_dict
from exporter.destinations import sender_settings
from exporter.metrics import Metrics
from exporter.model import AlarmContext, LogEvent, SpanRecord
from exporter.pipeline.sender import Sender, SenderSettings, estimated_bytes
from exporter.sinks.base import Batch, ExportOutcome, ExportResult
from exporter.sinks.otlp_encoding import FixedResource, encode_request
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.sqlite import SqliteStateStore
from tests.support.pipeline import Clock

Decide = Callable[[str, Batch], ExportResult]


class ScriptedSink:
    """Answers each export with ``decide(signal, batch)`` (default SUCCESS) and keeps what it accepted."""

    def __init__(self, decide: Decide | None = None, name: str = "scripted") -> None:
        self.name = name
        self.decide = decide or (lambda signal, batch: ExportResult(ExportOutcome.SUCCESS))
        self.calls: list[tuple[str, list[str]]] = []
        self.accepted: list[str] = []

    def export(self, signal: str, batch: Batch) -> ExportResult:
        self.calls.append((signal, [item.uid for item in batch]))
        result = self.decide(signal, batch)
        if result.ok:
            self.accepted.extend(item.uid for item in batch)
        return result

    def shutdown(self) -> None:
        return None


def log_event(uid: str, body: str = "b") -> LogEvent:
    return LogEvent(uid, "1", 10**18, 10**18, "ACTION", body, 9, "INFO", {"log.record.uid": uid})


def span_record(uid: str) -> SpanRecord:
    return SpanRecord(uid, "1", 1, 2, "span", 10**18, 10**18 + 1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    s = SqliteStateStore(tmp_path / "s.db")
    s.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    yield s
    s.close()


def enqueue(store: SqliteStateStore, items: list[LogEvent | SpanRecord]) -> None:
    rows = [QueuedRecord("logs" if isinstance(i, LogEvent) else "spans", i.uid, i.to_json()) for i in items]
    store.commit_poll(PollCommit("1", 1.0, seen=[i.uid for i in items], queued=rows))


def sender(store: SqliteStateStore, sink: ScriptedSink, clock: Clock, **settings: object) -> tuple[Sender, Metrics]:
    metrics = Metrics(clock=clock)
    values: dict[str, object] = {"signals": ("logs",), "batch_size": 8, "max_batch_bytes": 0, **settings}
    return Sender(store, sink, metrics, SenderSettings(**values), clock=clock, rng=lambda: 1.0), metrics  # type: ignore[arg-type]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def retry(detail: str = "down", retry_after: float | None = None) -> ExportResult:
    return ExportResult(ExportOutcome.RETRY, detail, retry_after=retry_after)


# -- signals on their own -------------------------------------------------------------------------


def test_a_failing_signal_never_holds_the_other_back(store: SqliteStateStore) -> None:
    clock = Clock()
    sink = ScriptedSink(
        lambda signal, batch: retry("no traces service") if signal == "spans" else ExportResult(ExportOutcome.SUCCESS)
    )
    s, _ = sender(store, sink, clock, signals=("spans", "logs"), batch_size=4)
    enqueue(store, [span_record("s1"), *[log_event(f"l{i}") for i in range(10)]])

    report = s.drain()
    assert sorted(sink.accepted) == sorted(f"l{i}" for i in range(10))  # every batch of logs, past the failing spans
    assert report.failed and report.exported == 10
    assert s.backing_off("spans") and not s.backing_off("logs")

    enqueue(store, [log_event("late")])
    sink.calls.clear()
    s.drain()  # spans still backing off: not tried; logs go on
    assert sink.calls == [("logs", ["late"])]
    assert store.outbox_stats().by_kind == {"spans": 1}


def test_each_signal_backs_off_and_recovers_on_its_own(store: SqliteStateStore) -> None:
    clock = Clock()
    down = {"logs"}
    sink = ScriptedSink(lambda signal, batch: retry() if signal in down else ExportResult(ExportOutcome.SUCCESS))
    s, _ = sender(store, sink, clock, signals=("logs", "spans"), initial_backoff=10.0, max_backoff=10.0)
    enqueue(store, [log_event("l1"), span_record("s1")])
    s.drain()
    assert sink.accepted == ["s1"] and s.backing_off("logs") and s.in_outage
    down.clear()
    clock.t += 11
    s.drain()
    assert sink.accepted == ["s1", "l1"] and not s.in_outage


def test_retry_after_is_honoured_up_to_max_backoff(store: SqliteStateStore) -> None:
    clock = Clock()
    answer = [retry("HTTP 429", retry_after=30.0)]
    sink = ScriptedSink(lambda signal, batch: answer[0])
    s, _ = sender(store, sink, clock, initial_backoff=1.0, max_backoff=60.0)
    enqueue(store, [log_event("l1")])
    s.drain()
    clock.t += 29
    assert s.backing_off("logs")
    clock.t += 2
    assert not s.backing_off("logs")

    answer[0] = retry("HTTP 503", retry_after=3600.0)  # capped: never longer than max_backoff
    s.drain()
    clock.t += 61
    assert not s.backing_off("logs")


# -- too large ----------------------------------------------------------------------------------------


def test_too_large_splits_until_accepted_and_parks_a_record_too_large_alone(
    store: SqliteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    def decide(signal: str, batch: Batch) -> ExportResult:
        if len(batch) > 2 or any(item.uid == "giant" for item in batch):
            return ExportResult(ExportOutcome.TOO_LARGE, "gRPC RESOURCE_EXHAUSTED: received message larger than max")
        return ExportResult(ExportOutcome.SUCCESS)

    clock = Clock()
    sink = ScriptedSink(decide)
    s, metrics = sender(store, sink, clock, batch_size=8)
    events = [log_event(f"l{i}") for i in range(7)]
    events.insert(3, log_event("giant"))
    enqueue(store, events)
    with caplog.at_level(logging.ERROR, logger="exporter.pipeline.sender"):
        report = s.drain()
    assert sorted(sink.accepted) == sorted(f"l{i}" for i in range(7))
    assert report.parked == 1 and report.exported == 7 and not report.failed
    assert store.outbox_stats().depth == 0 and store.outbox_stats().parked == 1
    assert counter(metrics, "bk_otel_records_parked_total", signal="logs") == 1
    [line] = [r.getMessage() for r in caplog.records if "parked" in r.getMessage()]
    assert "giant" in line and "too large to be accepted even alone" in line


def test_batches_are_cut_by_estimated_encoded_bytes(store: SqliteStateStore) -> None:
    clock = Clock()
    sink = ScriptedSink()
    events = [log_event(f"l{i}", "x" * 1000) for i in range(10)]
    size = estimated_bytes(events[0])
    s, _ = sender(store, sink, clock, batch_size=10, max_batch_bytes=3 * size + 10)
    enqueue(store, events)
    assert s.drain().exported == 10
    assert [len(uids) for _, uids in sink.calls] == [3, 3, 3, 1]


def test_a_signal_s_own_batch_bounds_cut_its_batches_and_only_its_own(store: SqliteStateStore) -> None:
    """``export.logs.batch_size`` / ``export.spans.max_batch_bytes`` bound that signal's requests;
    the other signal keeps ``export:``'s bounds."""
    bk = {"base_url": "https://paas.example.com", "app_code": "a", "app_secret": "s"}
    config = config_from_dict(
        {
            "bkmonitor": bk,
            "export": {
                "signals": ["logs", "spans"],
                "batch_size": 8,
                "logs": {"batch_size": 3},
                "spans": {"max_batch_bytes": 2048},
            },
        },
        env={},
    )
    settings = sender_settings(config)
    assert settings.bounds("logs") == (3, config.export.max_batch_bytes)
    assert settings.bounds("spans") == (8, 2048)
    assert sender_settings(config_from_dict({"bkmonitor": bk}, env={})).signal_bounds == ()
    clock = Clock()
    sink = ScriptedSink()
    s, _ = sender(store, sink, clock, signals=("logs", "spans"), signal_bounds=(("logs", 3, 0),))
    enqueue(store, [*(log_event(f"l{i}") for i in range(7)), *(span_record(f"s{i}") for i in range(10))])
    assert s.drain(force=True).exported == 17
    assert [len(uids) for signal, uids in sink.calls if signal == "logs"] == [3, 3, 1]
    assert [len(uids) for signal, uids in sink.calls if signal == "spans"] == [8, 2]


@pytest.mark.parametrize("body", ["plain ascii message", "磁盘使用率超过 90%，请尽快处理" * 20])
def test_estimated_bytes_is_above_the_encoded_size(body: str) -> None:
    event = LogEvent(
        "0123456789abcdef0123456789abcdef",
        "17180000005819837",
        10**18,
        10**18,
        "CONVERGE",
        body,
        13,
        "WARN",
        {"bk.alarm.id": "17180000005819837", "bk.biz.id": 2, "bk.alarm.dimension.ip": "10.0.0.1", "ratio": 0.5},
        trace_id=2**127,
        span_id=2**63,
    )
    resource = FixedResource({"service.name": "bk-otel-exporter"})
    one = len(encode_request("logs", [event], resource).SerializeToString())
    many = len(encode_request("logs", [event] * 100, resource).SerializeToString())
    assert estimated_bytes(event) >= (many - one) / 99  # what one more record adds
    assert estimated_bytes(event) <= 3 * one


# -- partial success ------------------------------------------------------------------------------------


def test_partial_success_is_acknowledged_counted_and_logged_rate_limited(
    store: SqliteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    refused = ExportResult(ExportOutcome.SUCCESS, "2 records older than the retention", rejected=2)
    sink = ScriptedSink(lambda signal, batch: refused)
    s, metrics = sender(store, sink, clock, batch_size=4, report_every=60.0)
    with caplog.at_level(logging.WARNING, logger="exporter.pipeline.sender"):
        for n in range(3):  # three answers in a minute: one line
            enqueue(store, [log_event(f"a{n}-{i}") for i in range(4)])
            report = s.drain()
            assert report.exported == 4 and report.refused == 2
            clock.t += 10
        clock.t += 60
        enqueue(store, [log_event("b")])
        s.drain()  # after a minute: one line summing what was refused meanwhile
    assert store.outbox_stats().depth == 0 and len(sink.calls) == 4  # nothing resent
    assert counter(metrics, "bk_otel_records_refused_total", signal="logs") == 8
    assert counter(metrics, "bk_otel_records_exported_total", signal="logs") == 13
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "refused 2 of its records: 2 records older than the retention" in lines[0]
    assert "refused 6 of its records (summed over the last 60s)" in lines[1]


# -- a swap waits for one request, a stop ends the drain ----------------------------------------------


def test_replace_sink_waits_for_the_request_in_flight_not_for_the_backlog(store: SqliteStateStore) -> None:
    clock = Clock()
    gates = {"old": threading.Event(), "new": threading.Event()}
    started = threading.Event()

    def gated(name: str) -> Decide:
        def decide(signal: str, batch: Batch) -> ExportResult:
            started.set()
            gates[name].wait(10)
            return ExportResult(ExportOutcome.SUCCESS)

        return decide

    old, new = ScriptedSink(gated("old"), "old"), ScriptedSink(gated("new"), "new")
    s, _ = sender(store, old, clock, batch_size=2)
    enqueue(store, [log_event(f"l{i:02d}") for i in range(20)])
    drain = threading.Thread(target=s.drain)
    drain.start()
    assert started.wait(10)  # the first request is in flight on the old sink
    swapped: list[object] = []
    swap = threading.Thread(target=lambda: swapped.append(s.replace_sink(new)))
    swap.start()
    threading.Timer(0.2, gates["old"].set).start()
    swap.join(10)
    try:
        assert swapped == [old]  # the swap is done while the drain still has 18 records to go
        assert drain.is_alive() and len(old.calls) == 1
    finally:
        gates["new"].set()
        drain.join(10)
    assert len(new.calls) == 9 and store.outbox_stats().depth == 0


def test_a_batch_claimed_before_a_reload_is_claimed_again_under_the_new_settings(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that lands between a claim and its request: the batch was cut by the old settings
    (batch_size 8), so it goes back and is sent in the new sink's batches (2), none to the old sink."""
    clock = Clock()
    old, new = ScriptedSink(name="old"), ScriptedSink(name="new")
    s, _ = sender(store, old, clock, batch_size=8)
    enqueue(store, [log_event(f"l{i}") for i in range(8)])
    claim = store.claim_outbox

    def claim_then_reload(*args: Any, **kwargs: Any) -> Any:
        items = claim(*args, **kwargs)
        if s.sink is old:
            s.settings = replace(s.settings, batch_size=2)
            assert s.replace_sink(new) is old  # no request in flight: at once
        return items

    monkeypatch.setattr(store, "claim_outbox", claim_then_reload)
    report = s.drain()
    assert old.calls == []
    assert [len(uids) for _, uids in new.calls] == [2, 2, 2, 2]
    assert report.exported == 8 and not report.failed and store.outbox_stats().depth == 0


def test_a_stop_ends_the_drain_at_the_next_request(store: SqliteStateStore) -> None:
    clock = Clock()
    stop = threading.Event()

    def decide(signal: str, batch: Batch) -> ExportResult:
        stop.set()
        return ExportResult(ExportOutcome.SUCCESS)

    sink = ScriptedSink(decide)
    s = Sender(store, sink, Metrics(clock=clock), SenderSettings(batch_size=2), clock=clock, stop=stop)
    enqueue(store, [log_event(f"l{i}") for i in range(10)])
    assert s.drain().exported == 2
    assert store.outbox_stats().depth == 8
    assert s.drain(force=True, deadline=clock.t + 5).exported == 8  # the shutdown flush still runs
