"""SpanPlanner through the real pipeline: Poller + SqliteStateStore + Sender + MemorySink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.mapping.ids import alarm_span_id, alarm_trace_id
from exporter.model import AlarmContext, SpanEventData
from exporter.pipeline.spans import SENT_MARKER, event_from_json, event_to_json
from exporter.state.base import CommitResult, PollCommit
from exporter.state.sqlite import SqliteStateStore
from tests.support.pipeline import Rig, row

# 2024-06-10 14:13:50 Asia/Shanghai = 1718000030
CREATED = 1_718_000_030
S = 1_000_000_000


class RecordingStore(SqliteStateStore):
    """The real store, remembering commits (to replay them) and able to fail the next one (a crash)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits: list[PollCommit] = []
        self.crash_next = False

    def commit_poll(self, commit: PollCommit) -> CommitResult:
        if self.crash_next:
            self.crash_next = False
            raise RuntimeError("killed before the commit")
        self.commits.append(commit)
        return super().commit_poll(commit)


def planner_rig(path: Path, signals: frozenset[str] = frozenset({"logs", "spans"})) -> Rig[RecordingStore]:
    """A minute after CREATED, retire_after 60 s, each cycle moving the clock on by 31 s."""
    return Rig(RecordingStore(path), now=CREATED + 60.0, signals=signals, advance=31.0, retire_after=60)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig[RecordingStore]]:
    r = planner_rig(tmp_path / "state.db")
    yield r
    r.store.close()


def lifecycle(r: Rig) -> None:
    """CREATE + CONVERGE; ACK; a quiet poll; RECOVER; a quiet poll; a late notification as
    retire_after (60 s) passes; one more cycle (retired: not read)."""
    r.source.data["1"] = [row("CONVERGE", CREATED + 30, "c1"), row("CREATE", CREATED, "created")]
    r.cycle()  # t = +60
    r.source.data["1"].insert(0, row("ACK", CREATED + 70, "acked"))
    r.cycle()  # +91
    r.cycle()  # +122: nothing new, no slice
    r.source.data["1"].insert(0, row("RECOVER", CREATED + 150, "recovered"))
    r.cycle()  # +153: closing until +210
    r.cycle()  # +184
    r.source.data["1"].insert(0, row("ACTION", CREATED + 200, "notified"))
    r.cycle()  # +215: retires
    r.cycle()


def test_event_json_round_trip() -> None:
    ev = SpanEventData("CONVERGE", 5 * S, {"a.b": 1, "l": ["x", "y"], "f": 0.5, "t": True, "message": "中文"})
    assert event_from_json(event_to_json(ev)) == ev


def test_slices_while_open_then_exactly_one_alarm_span(rig: Rig) -> None:
    rig.follow("1", name="CPU usage alarm", severity=2)
    lifecycle(rig)
    assert rig.phase() == "retired"
    slices = rig.slices()
    # one slice per poll that found records, in the order found; the RECOVER poll (closing,
    # not yet retired) gets one too; the retiring poll's record goes into the alarm span only
    assert [[e.name for e in s.events] for s in slices] == [["CREATE", "CONVERGE"], ["ACK"], ["RECOVER"]]
    for piece in slices:
        assert piece.trace_id == alarm_trace_id("1") and piece.parent_span_id == alarm_span_id("1")
        assert piece.name == "CPU usage alarm · records" and piece.status_code == "UNSET"
    assert len({s.span_id for s in slices}) == 3
    [span] = rig.alarm_spans()
    assert (span.trace_id, span.span_id) == (alarm_trace_id("1"), alarm_span_id("1"))
    assert [(e.name, e.timestamp_ns, e.attributes["message"]) for e in span.events] == [
        ("CREATE", CREATED * S, "created"),
        ("CONVERGE", (CREATED + 30) * S, "c1"),
        ("ACK", (CREATED + 70) * S, "acked"),
        ("RECOVER", (CREATED + 150) * S, "recovered"),
        ("ACTION", (CREATED + 200) * S, "notified"),
    ]
    assert (span.start_ns, span.end_ns) == (CREATED * S, (CREATED + 150) * S)
    assert span.status_code == "OK" and span.attributes["bk.alarm.status"] == "RECOVERED"
    # every event is a delivered log record
    assert sorted(str(e.attributes["log.record.uid"]) for e in span.events) == sorted(x.uid for x in rig.sink.logs)
    assert rig.store.outbox_stats().depth == 0


def test_logs_carry_the_alarm_span_ids_when_both_signals_are_on(rig: Rig) -> None:
    rig.follow("1")
    lifecycle(rig)
    [span] = rig.alarm_spans()
    assert len(rig.sink.logs) == 5
    assert {(x.trace_id, x.span_id) for x in rig.sink.logs} == {(span.trace_id, span.span_id)}


def test_logs_only_have_no_trace_and_no_spans(tmp_path: Path) -> None:
    r = planner_rig(tmp_path / "s.db", signals=frozenset({"logs"}))
    try:
        r.follow("1")
        lifecycle(r)
        assert r.sink.spans == [] and len(r.sink.logs) == 5
        assert {(x.trace_id, x.span_id) for x in r.sink.logs} == {(None, None)}
        assert r.store.span_events("1") == []
    finally:
        r.store.close()


def test_spans_only(tmp_path: Path) -> None:
    r = planner_rig(tmp_path / "s.db", signals=frozenset({"spans"}))
    try:
        r.follow("1")
        lifecycle(r)
        assert r.sink.logs == []
        assert len(r.alarm_spans()) == 1 and len(r.slices()) == 3
    finally:
        r.store.close()


def test_replayed_retiring_commit_queues_one_alarm_span(rig: Rig) -> None:
    rig.follow("1")
    rig.source.data["1"] = [row("RECOVER", CREATED + 10), row("CREATE", CREATED)]
    rig.clock.t = CREATED + 3600  # long over: the first read retires it
    rig.poller.run_cycle()
    [retiring] = [c for c in rig.store.commits if c.phase == "retired"]
    assert [q.uid for q in retiring.extra_queued] == ["alarm:1"]
    assert rig.store.commit_poll(retiring).inserted == 0  # the outbox refuses the second copy
    rig.sender.drain(force=True)
    assert len(rig.alarm_spans()) == 1 and rig.slices() == []
    # retired: never polled again, so never built again
    rig.clock.t += 3600
    rig.cycle()
    assert len(rig.alarm_spans()) == 1


def test_crash_before_the_retiring_commit_redoes_it_once(rig: Rig) -> None:
    rig.follow("1")
    rig.source.data["1"] = [row("CREATE", CREATED)]
    rig.cycle()
    rig.source.data["1"].insert(0, row("CLOSE", CREATED + 40, "strategy deleted"))
    rig.clock.t = CREATED + 3600
    rig.store.crash_next = True
    with pytest.raises(RuntimeError, match="killed"):
        rig.poller.poll_alarm(rig.store.claim_due(rig.clock(), 10)[0])
    assert rig.phase() == "active" and rig.alarm_spans() == []
    rig.cycle()
    rig.cycle()
    [span] = rig.alarm_spans()
    assert [e.name for e in span.events] == ["CREATE", "CLOSE"]
    assert (span.status_code, span.status_message) == ("ERROR", "CLOSE: strategy deleted")
    assert span.attributes["bk.alarm.status"] == "CLOSED"


def test_alarm_span_survives_a_restart_and_a_backend_outage(tmp_path: Path) -> None:
    from exporter.sinks.base import ExportOutcome

    first = planner_rig(tmp_path / "s.db")
    first.follow("1")
    first.source.data["1"] = [row("CREATE", CREATED, "created")]
    first.cycle()
    [before] = first.slices()
    first.store.close()
    # a new process on the same state file; the backend is down when the alarm retires
    second = planner_rig(tmp_path / "s.db")
    try:
        second.clock.t = CREATED + 3600
        second.source.data["1"] = [row("RECOVER", CREATED + 100), row("CREATE", CREATED, "created")]
        second.sink.fail_with = ExportOutcome.RETRY
        second.cycle()
        assert second.store.outbox_stats().by_kind == {"logs": 1, "spans": 1}
        second.sink.fail_with = None
        second.clock.t += 120
        second.sender.drain()
        [span] = second.alarm_spans()
        assert [e.name for e in span.events] == ["CREATE", "RECOVER"]
        assert (span.trace_id, span.span_id) == (before.trace_id, before.parent_span_id)
        assert span.events[0] == before.events[0]  # the record stored before the restart
    finally:
        second.store.close()


def test_reopened_alarm_keeps_its_one_alarm_span(rig: Rig) -> None:
    rig.follow("1")
    rig.source.data["1"] = [row("RECOVER", CREATED + 10), row("CREATE", CREATED)]
    rig.clock.t = CREATED + 3600
    rig.cycle()
    assert len(rig.alarm_spans()) == 1 and rig.phase() == "retired"
    # discovery reports it changed: followed again; the next read finds one more record (and
    # the old RECOVER, so it retires again at once)
    rig.store.upsert_alarm(AlarmContext("1"), source="discovered", now=rig.clock(), due=True)
    rig.source.data["1"].insert(0, row("ACTION", CREATED + 3000, "late"))
    rig.cycle()
    assert rig.phase() == "retired"
    assert len(rig.alarm_spans()) == 1  # immutable, its id taken: later records travel in slices
    [piece] = rig.slices()
    assert [e.name for e in piece.events] == ["ACTION"]  # not the records already in the alarm span
    assert piece.parent_span_id == rig.alarm_spans()[0].span_id
    stored = {s.uid: s for s in rig.store.span_events("1")}
    assert SENT_MARKER in stored and all(s.sliced for s in stored.values() if s.uid != SENT_MARKER)


def test_expired_alarm_sends_no_alarm_span(rig: Rig) -> None:
    from exporter.errors import BkNotFoundError

    rig.follow("1")
    rig.source.data["1"] = [row("CREATE", CREATED)]
    rig.cycle()

    def gone(alarm_id: str) -> list[Any]:
        raise BkNotFoundError("gone", code=3324002)

    rig.source.get_event_log = gone  # type: ignore[method-assign]
    rig.cycle()
    assert rig.phase() == "expired"
    assert len(rig.slices()) == 1 and rig.alarm_spans() == []


def test_extend_info_leaves_on_events(rig: Rig) -> None:
    rig.follow("1")
    info = {"anomaly_count": 2, "process_time": {"max": 9, "min": 1}}
    rig.source.data["1"] = [row("CONVERGE", CREATED + 5, "c", info), row("CREATE", CREATED)]
    rig.cycle()
    [piece] = rig.slices()
    converge = piece.events[1]
    assert converge.name == "CONVERGE"
    assert {k: converge.attributes[k] for k in ("anomaly_count", "process_time.max", "message")} == {
        "anomaly_count": 2,
        "process_time.max": 9,
        "message": "c",
    }
