"""The values that travel the data path, as frozen dataclasses.

``AlarmContext``  what search_alert (or the config) told us about one alarm
``FlowRecord``    one parsed item of get_event_log's ``data``
``LogEvent``      a FlowRecord mapped to an OpenTelemetry log record (SDK-free, JSON-serialisable)
``SpanRecord``    an alarm (or a slice of it) mapped to an OpenTelemetry span, with its events
``OutboxItem``    a LogEvent or SpanRecord waiting in the state store's outbox

Nothing here imports the OpenTelemetry SDK: only the OTLP sink (``exporter.sinks.otlp*``) does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any

__all__ = [
    "TERMINAL_OPERATES",
    "TERMINAL_STATUSES",
    "AlarmContext",
    "AttrValue",
    "Attributes",
    "FlowRecord",
    "LogEvent",
    "OutboxItem",
    "SpanEventData",
    "SpanRecord",
    "change_token",
]

AttrValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
Attributes = Mapping[str, AttrValue]


def _shallow(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields of a dataclass whose values are already JSON-native (str, numbers, lists,
    tuples, dicts of those): the same JSON as ``asdict`` gives, without its recursive deep copy
    (which cost ~10x the ``json.dumps`` itself on the poller's hot path)."""
    return {name: getattr(obj, name) for name in names}


#: Flow-record operates after which an alarm is over (it is then read for ``poll.retire_after`` more).
TERMINAL_OPERATES = frozenset({"RECOVER", "SYSTEM_RECOVER", "CLOSE", "SYSTEM_CLOSE"})
#: search_alert statuses after which an alarm is over.
TERMINAL_STATUSES = frozenset({"RECOVERED", "CLOSED"})


@dataclass(frozen=True)
class AlarmContext:
    """What is known about one alarm. Only ``alarm_id`` is always set.

    Times are epoch seconds; ``dimensions`` is a tuple of ``(key, value)`` pairs in
    search_alert's order.
    """

    alarm_id: str
    bk_biz_id: int | None = None
    name: str | None = None
    severity: int | None = None
    status: str | None = None
    strategy_id: int | str | None = None
    strategy_name: str | None = None
    dimensions: tuple[tuple[str, str], ...] = ()
    begin_time: int | None = None
    create_time: int | None = None
    update_time: int | None = None
    end_time: int | None = None

    def to_json(self) -> str:
        return json.dumps(_shallow(self, _CONTEXT_FIELDS), ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AlarmContext:
        raw = json.loads(text)
        raw["dimensions"] = tuple((str(k), str(v)) for k, v in raw.get("dimensions") or ())
        return cls(**raw)


_CONTEXT_FIELDS = tuple(f.name for f in fields(AlarmContext))


def change_token(ctx: AlarmContext) -> str:
    """What discovery compares between rounds: a change means the event log may have changed."""
    return f"{ctx.update_time}|{ctx.status}|{ctx.severity}"


@dataclass(frozen=True)
class FlowRecord:
    """One get_event_log item, parsed and identified.

    ``uid`` is the stable identity (see ``exporter.mapping.ids.record_uid``);
    ``create_time_ns`` is UTC nanoseconds; ``create_time_raw`` the value as BlueKing sent it;
    ``extend_info`` is whatever the server sent (dict, ``""``, ``None`` or anything else).
    """

    alarm_id: str
    operate: str
    message: str
    status: str
    event_id: str
    create_time_ns: int
    create_time_raw: str
    extend_info: Any
    uid: str
    observed_ns: int


@dataclass(frozen=True)
class LogEvent:
    """An OpenTelemetry log record, independent of the SDK. ``uid`` equals ``log.record.uid``."""

    uid: str
    alarm_id: str
    timestamp_ns: int
    observed_ns: int
    event_name: str
    body: str
    severity_number: int
    severity_text: str
    attributes: Attributes = field(default_factory=dict)
    trace_id: int | None = None
    span_id: int | None = None

    def to_json(self) -> str:
        return json.dumps(_shallow(self, _LOG_EVENT_FIELDS), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LogEvent:
        return cls(**json.loads(text))


_LOG_EVENT_FIELDS = tuple(f.name for f in fields(LogEvent))


@dataclass(frozen=True)
class SpanEventData:
    """One span event: a flow record on the alarm's span."""

    name: str
    timestamp_ns: int
    attributes: Attributes = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    """An OpenTelemetry span, independent of the SDK.

    ``uid`` is the outbox identity of the span (stable, so a re-enqueued span is recognised).
    ``status_code`` is ``UNSET``, ``OK`` or ``ERROR``. ``dropped_events`` counts the events left
    out of ``events`` (OTLP ``dropped_events_count``).
    """

    uid: str
    alarm_id: str
    trace_id: int
    span_id: int
    name: str
    start_ns: int
    end_ns: int
    parent_span_id: int | None = None
    attributes: Attributes = field(default_factory=dict)
    events: tuple[SpanEventData, ...] = ()
    status_code: str = "UNSET"
    status_message: str = ""
    dropped_events: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SpanRecord:
        raw = json.loads(text)
        raw["events"] = tuple(SpanEventData(**e) for e in raw.get("events") or ())
        return cls(**raw)


@dataclass(frozen=True)
class OutboxItem:
    """A queued record. ``seq`` orders the outbox; ``kind`` is the signal, ``logs`` or ``spans``.

    A row holds its record in one of two forms: ``encoded``, the OTLP bytes a log record was
    encoded to at poll time (:func:`exporter.mapping.otlp.encode_log`), or ``text``, JSON (spans,
    and log rows queued by versions before the encoded outbox). :attr:`payload` is the record as
    a value either way, decoded on first use; :meth:`encoded_log` the OTLP bytes either way.
    """

    seq: int
    kind: str
    uid: str
    alarm_id: str
    text: str = ""
    encoded: bytes | None = None
    enqueued_at: float = 0.0
    attempts: int = 0

    @cached_property
    def payload(self) -> LogEvent | SpanRecord:
        if self.encoded is not None:
            from exporter.mapping.otlp import decode_log

            return decode_log(self.uid, self.alarm_id, self.encoded)
        return SpanRecord.from_json(self.text) if self.kind == "spans" else LogEvent.from_json(self.text)

    def encoded_log(self) -> bytes:
        """The log record as stored OTLP bytes; a JSON row's is encoded now (raises what the
        encoder raises for a record OTLP cannot carry)."""
        if self.encoded is not None:
            return self.encoded
        from exporter.mapping.otlp import encode_log

        payload = self.payload
        if not isinstance(payload, LogEvent):
            raise TypeError(f"outbox row {self.seq} holds a {self.kind} record, not a log record")
        return encode_log(payload)
