"""docs/reference.md "As spans": flow records -> span events, the alarm span and slice spans, table-driven."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from exporter.mapping.spans import alarm_span, alarm_status, epoch_ns, slice_span, span_event
from exporter.model import AlarmContext, FlowRecord, SpanEventData, SpanRecord
from tests.support.records import ALARM, alarm_context

S = 1_000_000_000  # ns per second
T0 = 1_718_000_000


def documented_trace_id(alarm_id: str) -> int:
    """README "Traces", written out independently of exporter.mapping.ids."""
    return int.from_bytes(hashlib.sha256(f"bk-otel-exporter/trace/{alarm_id}".encode()).digest()[:16], "big")


def documented_span_id(alarm_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"bk-otel-exporter/span/{alarm_id}".encode()).digest()[:8], "big")


def documented_slice_id(alarm_id: str, first_uid: str) -> int:
    digest = hashlib.sha256(f"bk-otel-exporter/slice/{alarm_id}/{first_uid}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def record(operate: str = "CREATE", at: int = T0, **over: Any) -> FlowRecord:
    base: dict[str, Any] = dict(
        alarm_id=ALARM,
        operate=operate,
        message=f"{operate.lower()} text",
        status="SUCCESS",
        event_id=ALARM,
        create_time_ns=at * S,
        create_time_raw="2024-06-10 14:13:20",
        extend_info={},
        uid=hashlib.md5(f"{operate}{at}".encode(), usedforsecurity=False).hexdigest(),
        observed_ns=(T0 + 999) * S,
    )
    base.update(over)
    return FlowRecord(**base)


def event(operate: str, at: int, message: str = "") -> SpanEventData:
    return span_event(record(operate, at, message=message or f"{operate.lower()} text"))


CTX = alarm_context(begin_time=T0 - 30)
BARE = AlarmContext(alarm_id=ALARM)


# -- span events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extend_info", "message", "expected"),
    [
        ({}, "hello", {"message": "hello"}),
        ("", "hello", {"message": "hello"}),
        (None, "hello", {"message": "hello"}),
        (
            {"anomaly_count": 3, "process_time": {"max": 5, "min": 1}},
            "m",
            {"anomaly_count": 3, "process_time.max": 5, "process_time.min": 1, "message": "m"},
        ),
        ({"receivers": ["a", "b"]}, "m", {"receivers": ["a", "b"], "message": "m"}),
        ("odd", "m", {"extend_info": "odd", "message": "m"}),
        # the exporter's own names win over clashing leaves
        ({"message": "leaf", "log.record.uid": "leaf"}, "m", {"message": "m"}),
    ],
)
def test_span_event(extend_info: Any, message: str, expected: dict[str, Any]) -> None:
    rec = record("CONVERGE", T0 + 60, extend_info=extend_info, message=message)
    ev = span_event(rec)
    assert ev.name == "CONVERGE"
    assert ev.timestamp_ns == (T0 + 60) * S
    assert dict(ev.attributes) == {**expected, "log.record.uid": rec.uid}


def test_span_event_passes_unknown_operates_through() -> None:
    assert span_event(record("SOMETHING_NEW")).name == "SOMETHING_NEW"


# -- the alarm span ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "ctx", "events", "end_ns", "start", "end"),
    [
        ("create to recover", CTX, [("CREATE", 0), ("CONVERGE", 60), ("RECOVER", 400)], 0, 0, 400),
        ("order of input does not matter", CTX, [("RECOVER", 400), ("CREATE", 0), ("ACK", 90)], 0, 0, 400),
        ("no CREATE: begin_time", CTX, [("CONVERGE", 60), ("CLOSE", 300)], 0, -30, 300),
        ("no CREATE, no begin_time: earliest", BARE, [("CONVERGE", 60), ("CLOSE", 300)], 0, 60, 300),
        ("no terminal record: end_ns", CTX, [("CREATE", 0), ("ACK", 60)], (T0 + 500) * S, 0, 500),
        ("last terminal record wins", CTX, [("CREATE", 0), ("RECOVER", 100), ("CLOSE", 200)], 0, 0, 200),
        ("late records do not move the end", CTX, [("CREATE", 0), ("RECOVER", 100), ("ACTION", 150)], 0, 0, 100),
        ("never ends before it starts", BARE, [("CREATE", 100), ("RECOVER", 50)], 0, 100, 100),
        ("end_ns before start", CTX, [("CREATE", 100)], (T0 + 50) * S, 100, 100),
        ("no events at all", BARE, [], (T0 + 7) * S, 7, 7),
        # a begin_time no OTLP timestamp can hold (garbage from the API) is ignored
        ("begin_time far too late", AlarmContext(ALARM, begin_time=33871299629796568), [("ACK", 60)], 0, 60, 60),
        ("begin_time negative", AlarmContext(ALARM, begin_time=-5), [("ACK", 60)], 0, 60, 60),
    ],
)
def test_alarm_span_times(
    title: str, ctx: AlarmContext, events: list[tuple[str, int]], end_ns: int, start: int, end: int
) -> None:
    span = alarm_span(ALARM, ctx, [event(op, T0 + dt) for op, dt in events], end_ns=end_ns)
    assert (span.start_ns, span.end_ns) == ((T0 + start) * S, (T0 + end) * S), title


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, None), (0, None), (-1, None), (T0, T0 * S), (1.5, 1_500_000_000), (2**63 // S + 1, None)],
)
def test_epoch_ns(seconds: float | None, expected: int | None) -> None:
    assert epoch_ns(seconds) == expected


def test_alarm_span_fields() -> None:
    events = [event("RECOVER", T0 + 400), event("CREATE", T0), event("CONVERGE", T0 + 60)]
    span = alarm_span(ALARM, CTX, events, end_ns=0)
    assert span.uid == f"alarm:{ALARM}"
    assert span.trace_id == documented_trace_id(ALARM)
    assert span.span_id == documented_span_id(ALARM)
    assert span.parent_span_id is None
    assert span.name == "CPU usage alarm"
    assert [(e.name, e.timestamp_ns) for e in span.events] == [
        ("CREATE", T0 * S),
        ("CONVERGE", (T0 + 60) * S),
        ("RECOVER", (T0 + 400) * S),
    ]
    assert dict(span.attributes) == {
        "bk.alarm.id": ALARM,
        "bk.biz.id": 2,
        "bk.alarm.name": "CPU usage alarm",
        "bk.alarm.severity": 1,
        "bk.alarm.status": "RECOVERED",  # the end, not what search_alert said at discovery
        "bk.strategy.id": 41868,
        "bk.strategy.name": "CPU usage",
        "bk.alarm.dimension.ip": "10.0.0.1",
        "bk.span.role": "alarm",
    }
    assert SpanRecord.from_json(span.to_json()) == span


def test_alarm_span_without_context() -> None:
    span = alarm_span(ALARM, BARE, [event("CREATE", T0)], end_ns=(T0 + 1) * S)
    assert span.name == f"bk alarm {ALARM}"
    assert dict(span.attributes) == {"bk.alarm.id": ALARM, "bk.span.role": "alarm"}


def test_same_second_records_keep_lifecycle_order() -> None:
    events = [event("RECOVER", T0), event("ACTION", T0), event("CREATE", T0), event("ACK", T0)]
    span = alarm_span(ALARM, BARE, events, end_ns=0)
    assert [e.name for e in span.events] == ["CREATE", "ACTION", "ACK", "RECOVER"]


@pytest.mark.parametrize(
    ("events", "ctx_status", "expected"),
    [
        ([("CREATE", 0), ("RECOVER", 9, "recovered")], None, ("OK", "")),
        ([("CREATE", 0), ("SYSTEM_RECOVER", 9, "window over")], None, ("OK", "")),
        ([("CREATE", 0), ("CLOSE", 9, "strategy deleted")], None, ("ERROR", "CLOSE: strategy deleted")),
        ([("CREATE", 0), ("SYSTEM_CLOSE", 9, "no events")], None, ("ERROR", "SYSTEM_CLOSE: no events")),
        ([("CREATE", 0), ("CLOSE", 5, "x"), ("RECOVER", 9, "y")], None, ("OK", "")),
        ([("CREATE", 0), ("ACK", 5, "seen")], None, ("UNSET", "")),
        ([("CREATE", 0)], "RECOVERED", ("OK", "")),
        ([("CREATE", 0)], "CLOSED", ("ERROR", "CLOSED")),
        ([("CREATE", 0)], "ABNORMAL", ("UNSET", "")),
        ([("CREATE", 0), ("CLOSE", 9, "c")], "RECOVERED", ("ERROR", "CLOSE: c")),  # records win
    ],
)
def test_alarm_status(events: list[tuple[Any, ...]], ctx_status: str | None, expected: tuple[str, str]) -> None:
    evs = [event(op, T0 + dt, *msg) for op, dt, *msg in events]
    ctx = AlarmContext(ALARM, status=ctx_status)
    assert alarm_status(evs, ctx) == expected
    span = alarm_span(ALARM, ctx, evs, end_ns=(T0 + 10) * S)
    assert (span.status_code, span.status_message) == expected


# -- slice spans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "start", "end_ns"),
    [
        ([("CREATE", 0), ("CONVERGE", 60)], 0, 60 * S),
        ([("ACK", 90), ("CONVERGE", 60)], 60, 90 * S),
        ([("CONVERGE", 60)], 60, 60 * S + 1_000),  # one record: 1 µs long
        ([("CONVERGE", 60), ("ACK", 60)], 60, 60 * S + 1_000),
    ],
)
def test_slice_span(events: list[tuple[str, int]], start: int, end_ns: int) -> None:
    evs = [event(op, T0 + dt) for op, dt in events]
    piece = slice_span(ALARM, CTX, evs)
    first = piece.events[0]
    first_uid = str(first.attributes["log.record.uid"])
    assert first.timestamp_ns == (T0 + start) * S
    assert piece.uid == f"slice:{ALARM}:{first_uid}"
    assert piece.trace_id == documented_trace_id(ALARM)
    assert piece.span_id == documented_slice_id(ALARM, first_uid)
    assert piece.parent_span_id == documented_span_id(ALARM)
    assert piece.name == "CPU usage alarm · records"
    assert (piece.start_ns, piece.end_ns) == ((T0 + start) * S, T0 * S + end_ns)
    assert [e.timestamp_ns for e in piece.events] == sorted(e.timestamp_ns for e in evs)
    assert piece.status_code == "UNSET"
    assert piece.attributes["bk.span.role"] == "slice"
    assert piece.attributes["bk.alarm.status"] == "ABNORMAL"


def test_slice_span_needs_events() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        slice_span(ALARM, CTX, [])


def test_ids_are_stable_and_distinct_per_alarm() -> None:
    a = alarm_span(ALARM, BARE, [event("CREATE", T0)], end_ns=0)
    b = alarm_span("17180000005819838", BARE, [event("CREATE", T0)], end_ns=0)
    assert a.trace_id != b.trace_id and a.span_id != b.span_id
    again = alarm_span(ALARM, CTX, [event("CONVERGE", T0 + 5)], end_ns=0)
    assert (again.trace_id, again.span_id) == (a.trace_id, a.span_id)
    piece = slice_span(ALARM, BARE, [event("CREATE", T0)])
    assert piece.span_id != a.span_id and piece.trace_id == a.trace_id
