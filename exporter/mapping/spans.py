"""An alarm's flow records -> SDK-free spans, as docs/reference.md "As spans" (and the README, "Traces").

The trace of alarm ``A`` (ids from :mod:`exporter.mapping.ids`, the same on every host)::

    trace  alarm_trace_id(A)
      alarm span   id alarm_span_id(A), no parent; sent once, when A retires; every record as an event
      slice spans  id slice_span_id(A, first record uid), parent = the alarm span; sent while A is
                   followed, one per poll that found new records, carrying just those records

``span_event``   one FlowRecord -> SpanEventData (name = operate, time = create_time, attributes =
                 the extend_info leaves + ``message`` + ``log.record.uid``; the exporter's names win)
``alarm_span``   the alarm span: start = the CREATE record (else search_alert ``begin_time``, else the
                 earliest record), end = the last terminal record (else ``end_ns``), never before start
``slice_span``   a child span carrying a slice of records: first .. last record time (1 µs at least)

Status of the alarm span, for a trace viewer's red marker and TraceQL ``status``:

* ``OK``    the alarm ended in recovery (RECOVER, SYSTEM_RECOVER; or search_alert said RECOVERED);
* ``ERROR`` it was closed without recovering (CLOSE: strategy disabled or deleted, circuit breaker,
            superseded by a newer alarm; SYSTEM_CLOSE: no events for a long time; or search_alert
            said CLOSED), with ``"<operate>: <message>"`` as the status message;
* ``UNSET`` neither is known. Slice spans are always UNSET: while an alarm is open its outcome is not.

Every span also carries ``bk.span.role`` (``alarm`` or ``slice``) so queries can pick one kind.

A span carries at most :data:`MAX_SPAN_EVENTS` events (an alarm can have tens of thousands of
records, and a request over a collector's 4 MiB limit is refused): past it, the span keeps the
first and the last ``MAX_SPAN_EVENTS / 2`` records in time order (how the alarm began and how it
ended) and its ``dropped_events`` (OTLP ``dropped_events_count``) says how many were left out.
Start, end and status are computed from every record, and the log records keep every one.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.mapping.attributes import alarm_attributes, extend_info_attributes
from exporter.mapping.ids import alarm_span_id, alarm_trace_id, slice_span_id
from exporter.model import TERMINAL_OPERATES, AlarmContext, AttrValue, FlowRecord, SpanEventData, SpanRecord

__all__ = [
    "MAX_SPAN_EVENTS",
    "RECOVERED_OPERATES",
    "ROLE_ATTRIBUTE",
    "alarm_span",
    "alarm_span_uid",
    "alarm_status",
    "epoch_ns",
    "event_uid",
    "slice_span",
    "slice_span_uid",
    "span_event",
    "span_name",
]

#: Terminal records that mean the problem went away (the others, CLOSE and SYSTEM_CLOSE, do not).
RECOVERED_OPERATES = frozenset({"RECOVER", "SYSTEM_RECOVER"})
#: Attribute naming which part of the alarm's trace a span is: ``alarm`` or ``slice``.
ROLE_ATTRIBUTE = "bk.span.role"

#: The most events one span carries (see the module docstring).
MAX_SPAN_EVENTS = 1000

_TERMINAL_STATUS = {"RECOVER": "RECOVERED", "SYSTEM_RECOVER": "RECOVERED", "CLOSE": "CLOSED", "SYSTEM_CLOSE": "CLOSED"}
_MIN_SLICE_NS = 1_000  # a zero-length span renders as nothing in Jaeger; 1 µs is its resolution
_MAX_NS = 2**63  # OTLP times are fixed64; keep clear of the sign bit some backends read


def epoch_ns(seconds: int | float | None) -> int | None:
    """search_alert epoch seconds as nanoseconds, or None when absent or not a usable time."""
    if not seconds or seconds < 0:
        return None
    ns = int(seconds * 1_000_000_000)
    return ns if ns < _MAX_NS else None


def span_event(record: FlowRecord) -> SpanEventData:
    """One flow record as a span event."""
    attrs = extend_info_attributes(record.extend_info)
    attrs["message"] = record.message
    attrs["log.record.uid"] = record.uid
    return SpanEventData(name=record.operate, timestamp_ns=record.create_time_ns, attributes=attrs)


def event_uid(event: SpanEventData) -> str:
    """The ``log.record.uid`` an event carries (empty when it has none)."""
    uid = event.attributes.get("log.record.uid", "")
    return uid if isinstance(uid, str) else ""


def span_name(alarm_id: str, ctx: AlarmContext | None) -> str:
    """The alarm's name when known, else ``bk alarm <id>``."""
    return ctx.name if ctx is not None and ctx.name else f"bk alarm {alarm_id}"


def alarm_span_uid(alarm_id: str) -> str:
    """The outbox identity of the alarm span (one per alarm: the outbox refuses a second)."""
    return f"alarm:{alarm_id}"


def slice_span_uid(alarm_id: str, first_uid: str) -> str:
    return f"slice:{alarm_id}:{first_uid}"


def _rank(event: SpanEventData) -> int:
    # Same-second records: CREATE first, terminal records last, the rest as given.
    if event.name == "CREATE":
        return 0
    return 2 if event.name in TERMINAL_OPERATES else 1


def _ordered(events: Sequence[SpanEventData]) -> tuple[SpanEventData, ...]:
    return tuple(sorted(events, key=lambda e: (e.timestamp_ns, _rank(e))))


def _capped(ordered: tuple[SpanEventData, ...]) -> tuple[tuple[SpanEventData, ...], int]:
    """At most MAX_SPAN_EVENTS of time-ordered events (the first and the last half), and how many were left out."""
    if len(ordered) <= MAX_SPAN_EVENTS:
        return ordered, 0
    head = MAX_SPAN_EVENTS // 2
    tail = MAX_SPAN_EVENTS - head
    return ordered[:head] + ordered[-tail:], len(ordered) - MAX_SPAN_EVENTS


def _terminal(events: Sequence[SpanEventData]) -> SpanEventData | None:
    """The last terminal record of time-ordered ``events``."""
    return next((e for e in reversed(events) if e.name in TERMINAL_OPERATES), None)


def alarm_status(events: Sequence[SpanEventData], ctx: AlarmContext | None) -> tuple[str, str]:
    """``(status_code, status_message)`` of the alarm span (see the module docstring)."""
    last = _terminal(_ordered(events))
    if last is not None:
        if last.name in RECOVERED_OPERATES:
            return "OK", ""
        message = last.attributes.get("message", "")
        return "ERROR", f"{last.name}: {message}" if message else last.name
    status = ctx.status if ctx is not None else None
    if status == "RECOVERED":
        return "OK", ""
    if status == "CLOSED":
        return "ERROR", "CLOSED"
    return "UNSET", ""


def _attributes(alarm_id: str, ctx: AlarmContext | None, role: str) -> dict[str, AttrValue]:
    attrs = alarm_attributes(ctx)
    attrs["bk.alarm.id"] = alarm_id
    attrs[ROLE_ATTRIBUTE] = role
    return attrs


def alarm_span(alarm_id: str, ctx: AlarmContext | None, events: Sequence[SpanEventData], *, end_ns: int) -> SpanRecord:
    """The alarm's own span, carrying every record. ``end_ns`` is used when no terminal record is
    among ``events`` (an alarm that search_alert reported over)."""
    ordered = _ordered(events)
    create = next((e for e in ordered if e.name == "CREATE"), None)
    begin = epoch_ns(ctx.begin_time) if ctx is not None else None
    if create is not None:
        start = create.timestamp_ns
    elif begin is not None:
        start = begin
    elif ordered:
        start = ordered[0].timestamp_ns
    else:
        start = end_ns
    last = _terminal(ordered)
    end = max(start, last.timestamp_ns if last is not None else end_ns)
    attrs = _attributes(alarm_id, ctx, "alarm")
    if last is not None:
        # The span is sent after the alarm ended: its status is that of the end, whatever
        # search_alert said when the alarm was discovered.
        attrs["bk.alarm.status"] = _TERMINAL_STATUS.get(last.name, "CLOSED")
    code, message = alarm_status(ordered, ctx)
    kept, dropped = _capped(ordered)
    return SpanRecord(
        uid=alarm_span_uid(alarm_id),
        alarm_id=alarm_id,
        trace_id=alarm_trace_id(alarm_id),
        span_id=alarm_span_id(alarm_id),
        name=span_name(alarm_id, ctx),
        start_ns=start,
        end_ns=end,
        attributes=attrs,
        events=kept,
        status_code=code,
        status_message=message,
        dropped_events=dropped,
    )


def slice_span(alarm_id: str, ctx: AlarmContext | None, events: Sequence[SpanEventData]) -> SpanRecord:
    """A child of the alarm span carrying ``events`` (at least one), so an open alarm is visible."""
    if not events:
        raise ValueError("a slice span needs at least one event")
    ordered = _ordered(events)
    first_uid = event_uid(ordered[0])
    start = ordered[0].timestamp_ns
    kept, dropped = _capped(ordered)
    return SpanRecord(
        uid=slice_span_uid(alarm_id, first_uid),
        alarm_id=alarm_id,
        trace_id=alarm_trace_id(alarm_id),
        span_id=slice_span_id(alarm_id, first_uid),
        name=f"{span_name(alarm_id, ctx)} · records",
        start_ns=start,
        end_ns=max(ordered[-1].timestamp_ns, start + _MIN_SLICE_NS),
        parent_span_id=alarm_span_id(alarm_id),
        attributes=_attributes(alarm_id, ctx, "slice"),
        events=kept,
        dropped_events=dropped,
    )
