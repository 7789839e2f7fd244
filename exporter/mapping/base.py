"""The mapper contract: one flow record -> one log record, or one span event.

``map_log(record, ctx, with_trace=...)``  -> :class:`~exporter.model.LogEvent`
``map_span_event(record)``                -> :class:`~exporter.model.SpanEventData`

A mapper is pure: the same input gives the same output, on every host and after every restart
(a re-read record must map to the same thing), it does no I/O, keeps no state between calls and
must not block; it is called from several poll threads at once. What it must keep:

* ``LogEvent.uid`` is the record's ``uid`` and ``LogEvent.alarm_id`` its ``alarm_id``: the outbox
  and the de-duplication are keyed on them (the pipeline checks, and treats a mismatch as a bug);
* with ``with_trace`` (``export.signals`` has ``spans``) the log record carries the alarm span's
  ids (:func:`exporter.mapping.ids.alarm_trace_id`/``alarm_span_id``), unset otherwise;
* a span event's ``name`` is the record's ``operate``, its ``timestamp_ns`` the record's
  ``create_time_ns``, and its attributes hold ``log.record.uid`` = ``uid`` and ``message``: the
  span builder orders events, finds the terminal record and slices by them.

Everything else (body, severity, attribute names) is the mapper's to decide. ``ctx`` may be
``None`` or hold only ``alarm_id``; every other field of it is optional.

Raising is a bug, never a way to drop a record: the pipeline then commits nothing of that
alarm's poll (no record is lost or marked seen), logs the error with its traceback, and reads the
alarm again at its next interval; the other alarms go on. (A record that cannot be parsed never
reaches a mapper: sources report it as malformed.)
"""

from __future__ import annotations

from typing import Protocol

from exporter.errors import PluginError
from exporter.model import AlarmContext, FlowRecord, LogEvent, SpanEventData

__all__ = ["GuardedMapper", "Mapper"]


class Mapper(Protocol):
    """Maps flow records. See the module docstring for the contract."""

    def map_log(self, record: FlowRecord, ctx: AlarmContext | None, *, with_trace: bool) -> LogEvent: ...

    def map_span_event(self, record: FlowRecord) -> SpanEventData: ...


class GuardedMapper:
    """A mapper whose failures and contract breaches become :class:`~exporter.errors.PluginError`
    naming the record, which the poller contains (the alarm's poll fails, nothing is committed)."""

    def __init__(self, mapper: Mapper, name: str = "") -> None:
        self.mapper = mapper
        self.name = name or type(mapper).__name__

    def map_log(self, record: FlowRecord, ctx: AlarmContext | None, *, with_trace: bool) -> LogEvent:
        try:
            event = self.mapper.map_log(record, ctx, with_trace=with_trace)
        except Exception as exc:
            raise self._failed(record, "map_log", exc) from exc
        if not isinstance(event, LogEvent) or event.uid != record.uid or event.alarm_id != record.alarm_id:
            raise PluginError(
                f"mapper {self.name}: map_log returned {type(event).__name__} without the record's uid and "
                f"alarm_id (record {record.uid} of alarm {record.alarm_id})"
            )
        return event

    def map_span_event(self, record: FlowRecord) -> SpanEventData:
        try:
            event = self.mapper.map_span_event(record)
        except Exception as exc:
            raise self._failed(record, "map_span_event", exc) from exc
        if not isinstance(event, SpanEventData) or event.attributes.get("log.record.uid") != record.uid:
            raise PluginError(
                f"mapper {self.name}: map_span_event returned {type(event).__name__} without "
                f"log.record.uid = {record.uid} (alarm {record.alarm_id})"
            )
        return event

    def _failed(self, record: FlowRecord, method: str, exc: Exception) -> PluginError:
        return PluginError(
            f"mapper {self.name}: {method} failed on record {record.uid} of alarm {record.alarm_id}: "
            f"{type(exc).__name__}: {exc}"
        )


def guarded(mapper: Mapper, name: str = "") -> GuardedMapper:
    """``mapper`` behind a :class:`GuardedMapper` (once)."""
    return mapper if isinstance(mapper, GuardedMapper) else GuardedMapper(mapper, name)
