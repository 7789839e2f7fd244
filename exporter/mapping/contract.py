"""The built-in ``default`` mapper: the reference mapping (docs/reference.md, "What a record becomes").

Log records: :func:`to_log_event` (``bk.*`` attributes, ``log.record.uid``, the ``extend_info``
leaves); span events: :func:`exporter.mapping.spans.span_event`. It takes no options.
"""

from __future__ import annotations

from exporter.mapping.attributes import alarm_attributes, extend_info_attributes
from exporter.mapping.ids import alarm_span_id, alarm_trace_id
from exporter.mapping.spans import span_event
from exporter.model import AlarmContext, AttrValue, FlowRecord, LogEvent, SpanEventData
from exporter.plugins import NoOptions, Plugin, PluginContext

__all__ = [
    "PROBLEM_OPERATES",
    "QUIET_OPERATES",
    "DefaultMapper",
    "log_event",
    "plugin",
    "record_attributes",
    "severity_of",
    "to_log_event",
]

#: Records that are not "problem" records: always INFO.
QUIET_OPERATES = frozenset({"RECOVER", "SYSTEM_RECOVER", "CLOSE", "SYSTEM_CLOSE", "ACK", "ACTION"})
#: The documented problem records; any operate not in QUIET_OPERATES is treated like these.
PROBLEM_OPERATES = frozenset(
    {
        "CREATE",
        "CONVERGE",
        "SEVERITY_UP",
        "DELAY_RECOVER",
        "ABORT_RECOVER",
        "RECOVERING",
        "EVENT_DROP",
        "ALERT_QOS",
    }
)

_INFO = (9, "INFO")
_BY_ALARM_SEVERITY = {1: (21, "FATAL"), 2: (13, "WARN"), 3: (9, "INFO")}
_UNKNOWN_SEVERITY = (13, "WARN")


def severity_of(operate: str, alarm_severity: int | None) -> tuple[int, str]:
    """``(severity_number, severity_text)`` of a record."""
    if operate in QUIET_OPERATES:
        return _INFO
    if alarm_severity is None:
        return _UNKNOWN_SEVERITY
    return _BY_ALARM_SEVERITY.get(alarm_severity, _UNKNOWN_SEVERITY)


def record_attributes(record: FlowRecord, ctx: AlarmContext | None) -> dict[str, AttrValue]:
    """Every attribute of the log record: extend_info leaves first, the exporter's own names win."""
    attrs = extend_info_attributes(record.extend_info)
    attrs.update(alarm_attributes(ctx))
    attrs["bk.alarm.id"] = record.alarm_id
    attrs["bk.alarm.operate"] = record.operate
    attrs["bk.event_log.status"] = record.status
    attrs["bk.event.id"] = record.event_id
    attrs["log.record.uid"] = record.uid
    return attrs


def log_event(
    record: FlowRecord, ctx: AlarmContext | None, attributes: dict[str, AttrValue], *, with_trace: bool = False
) -> LogEvent:
    """The reference log record around a given attribute set (mappers differ only in the names)."""
    number, text = severity_of(record.operate, ctx.severity if ctx else None)
    return LogEvent(
        uid=record.uid,
        alarm_id=record.alarm_id,
        timestamp_ns=record.create_time_ns,
        observed_ns=record.observed_ns,
        event_name=record.operate,
        body=record.message,
        severity_number=number,
        severity_text=text,
        attributes=attributes,
        trace_id=alarm_trace_id(record.alarm_id) if with_trace else None,
        span_id=alarm_span_id(record.alarm_id) if with_trace else None,
    )


def to_log_event(record: FlowRecord, ctx: AlarmContext | None, *, with_trace: bool = False) -> LogEvent:
    """Map one flow record. ``with_trace`` links it to the alarm's span (``signals`` has ``spans``)."""
    return log_event(record, ctx, record_attributes(record, ctx), with_trace=with_trace)


class DefaultMapper:
    """The reference mapping (``bk.*`` attributes, ``log.record.uid``, extend_info leaves)."""

    def map_log(self, record: FlowRecord, ctx: AlarmContext | None, *, with_trace: bool) -> LogEvent:
        return to_log_event(record, ctx, with_trace=with_trace)

    def map_span_event(self, record: FlowRecord) -> SpanEventData:
        return span_event(record)


def _create(options: NoOptions, context: PluginContext) -> DefaultMapper:
    return DefaultMapper()


plugin: Plugin[DefaultMapper] = Plugin(
    kind="mapper",
    name="default",
    options=NoOptions,
    create=_create,
    description="the reference mapping: bk.* attributes, log.record.uid, extend_info leaves",
)
