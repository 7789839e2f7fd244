"""The span side of a poll: what each alarm's commit adds when ``export.signals`` has ``spans``.

:class:`SpanPlanner` is the poller's :class:`~exporter.pipeline.poller.SpanHook`. For one poll of
one alarm it adds to the :class:`~exporter.state.base.PollCommit`, which the store applies in the
same transaction as the seen uids, the log records and the alarm's new phase:

* every new record, as a span event kept in the store (``span_events``), because the alarm span
  is built from all of them when the alarm retires, possibly days and restarts later;
* the poll that **retires** the alarm (``phase`` becomes ``retired``): the alarm span, built from
  the stored events plus this poll's, queued under the outbox uid ``alarm:<id>``, and a marker row
  (``SENT_MARKER``) saying it was sent; every event is then marked ``sliced`` ("already in a sent
  span"). Atomic with the retirement, so it is queued exactly once: a crash before
  the commit redoes the poll (and builds the same span), a crash after it finds it queued, and the
  outbox's unique ``(kind, uid)`` refuses a replayed commit;
* any other poll that found new records (the alarm is open, or closed and waiting out
  ``poll.retire_after``): one **slice span** carrying them (and any stored event not yet in a
  slice), parented to the alarm span's id; the events are marked ``sliced``. So an open alarm
  shows up in a trace viewer within one poll interval, long before its span exists. The records
  of the poll that retires the alarm are in the alarm span only.

An alarm followed again after it retired (discovery saw it reopen) keeps its alarm span (a span
is immutable and its id is taken): its later records travel in slice spans only.

No alarm span is sent for an alarm that ends without retiring: one BlueKing no longer knows
(3324002, ``expired``) or one removed from ``alarms.ids``. Its slice spans stay where they are;
the trace viewer shows them under a missing root span. A span needs an end, and those alarms have
none we could honestly give them.

Turning ``spans`` on for alarms already followed: records read before that are not in the store,
so their alarm spans carry only the records read since.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict

from exporter.mapping.spans import alarm_span, epoch_ns, slice_span, span_event
from exporter.model import AlarmContext, FlowRecord, SpanEventData, SpanRecord
from exporter.state.base import AlarmState, PollCommit, QueuedRecord, StateStore, StoredSpanEvent

__all__ = ["SENT_MARKER", "SpanPlanner", "event_from_json", "event_to_json"]

log = logging.getLogger(__name__)

#: The uid of the ``span_events`` row recording that the alarm span was queued (its payload is
#: ``{"span": <outbox uid>}``, not an event). Not a record uid (those are 32 hex digits), so it
#: can never clash with one.
SENT_MARKER = "~alarm-span-sent"


def event_to_json(event: SpanEventData) -> str:
    """A span event as the ``span_events.payload`` JSON."""
    return json.dumps(asdict(event), ensure_ascii=False, separators=(",", ":"))


def event_from_json(text: str) -> SpanEventData:
    raw = json.loads(text)
    return SpanEventData(name=raw["name"], timestamp_ns=int(raw["timestamp_ns"]), attributes=raw["attributes"])


class SpanPlanner:
    """Adds span events, slice spans and the alarm span to each alarm's poll commit.

    Reads the store (the alarm's stored span events), never writes it: everything goes through
    the commit. Called from poll worker threads, one alarm per call; it keeps no state of its own.
    ``event`` maps one record to its span event (the configured mapper's ``map_span_event``).
    """

    def __init__(self, store: StateStore, *, event: Callable[[FlowRecord], SpanEventData] = span_event) -> None:
        self.store = store
        self.event = event

    def on_poll(
        self,
        alarm: AlarmState,
        ctx: AlarmContext,
        new: Sequence[FlowRecord],
        commit: PollCommit,
        retiring: bool,
    ) -> None:
        fresh = [(r.uid, self.event(r)) for r in new]
        commit.span_events = [*commit.span_events, *(_stored(uid, e) for uid, e in fresh)]
        if not fresh and not retiring:
            return  # nothing to show, nothing to end: no need to read the store
        stored = self.store.span_events(alarm.alarm_id)
        sent = any(s.uid == SENT_MARKER for s in stored)
        kept = {s.uid: s for s in stored if s.uid != SENT_MARKER}
        fresh = [(uid, e) for uid, e in fresh if uid not in kept]
        if retiring and not sent:
            events = [event_from_json(s.payload) for s in kept.values()] + [e for _, e in fresh]
            span = alarm_span(alarm.alarm_id, ctx, events, end_ns=_end_ns(alarm, ctx, events, commit.now))
            marker = StoredSpanEvent(SENT_MARKER, span.end_ns, json.dumps({"span": span.uid}))
            commit.span_events = [*commit.span_events, marker]
            # Every record is now in a sent span: a reopened alarm's slices start after them.
            commit.sliced = [*commit.sliced, *(s.uid for s in kept.values() if not s.sliced), *(u for u, _ in fresh)]
            self._queue(commit, span)
            return
        pending = [(s.uid, event_from_json(s.payload)) for s in kept.values() if not s.sliced] + fresh
        if not pending:
            return
        piece = slice_span(alarm.alarm_id, ctx, [e for _, e in pending])
        commit.sliced = [*commit.sliced, *(uid for uid, _ in pending)]
        self._queue(commit, piece)

    @staticmethod
    def _queue(commit: PollCommit, span: SpanRecord) -> None:
        commit.extra_queued = [*commit.extra_queued, QueuedRecord("spans", span.uid, span.to_json())]
        log.debug("alarm %s: queued span %s with %d events", span.alarm_id, span.uid, len(span.events))


def _stored(uid: str, event: SpanEventData) -> StoredSpanEvent:
    return StoredSpanEvent(uid=uid, time_ns=event.timestamp_ns, payload=event_to_json(event))


def _end_ns(alarm: AlarmState, ctx: AlarmContext, events: Sequence[SpanEventData], now: float) -> int:
    """Where the alarm span ends when no terminal record is among its events (alarm_span prefers one)."""
    for seconds in (alarm.terminal_at, ctx.end_time):
        ns = epoch_ns(seconds)
        if ns is not None:
            return ns
    if events:
        return max(e.timestamp_ns for e in events)
    return int(now * 1e9)
