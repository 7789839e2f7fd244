"""The ``ecs`` mapper: the default mapping's log records (docs/reference.md) with Elastic Common Schema attribute names.

For Elastic users (Elastic Agent/APM Server's OTLP intake, or the EDOT collector in ECS mode):
the alarm's flow shows up under the fields Kibana's Logs and Alerts views, detection rules and
dashboards already know. Body, timestamps, ``event_name``, severity and the trace/span ids are
exactly the default mapping's (docs/reference.md); only the attributes change:

==============================  =====================================================  ==========================
attribute                       value                                                  default attribute
==============================  =====================================================  ==========================
``message``                     the record's ``message`` (also the body)               (the body)
``event.action``                ``operate`` in ECS's action style: lower case, ``_``   ``bk.alarm.operate``
                                as ``-`` (``CREATE`` -> ``create``,
                                ``SYSTEM_RECOVER`` -> ``system-recover``)
``event.code``                  ``operate`` verbatim (``CREATE``; unknown values       ``bk.alarm.operate``
                                pass through): BlueKing's code for the kind of
                                record, the same whatever the message language
``event.id``                    the record's stable uid (32 hex digits)                ``log.record.uid``
``event.kind``                  ``alert`` (ECS: raised by a detection rule outside      -
                                the Elastic Stack)
``event.outcome``               from the record's ``status``: ``SUCCESS`` ->           ``bk.event_log.status``
                                ``success``; ``FAILED``/``FAILURE``/``ERROR`` ->
                                ``failure``; anything else (``RUNNING``,
                                ``PARTIAL_SUCCESS``, ``SHIELDED``, empty) -> ``unknown``
``event.severity``              the alarm's severity (1 fatal, 2 warning, 3 info),      ``bk.alarm.severity``
                                when known (integer)
``rule.id``                     the strategy id, when known (string)                   ``bk.strategy.id``
``rule.name``                   the strategy name, when known                          ``bk.strategy.name``
``log.record.uid``              the record's uid, kept: the OpenTelemetry name the      ``log.record.uid``
                                delivery guarantee is stated in
``labels.bk_alarm_id``          the alarm id                                           ``bk.alarm.id``
``labels.bk_biz_id``            the business id, when known                            ``bk.biz.id``
``labels.bk_alarm_name``        the alarm name, when known                             ``bk.alarm.name``
``labels.bk_alarm_status``      the alarm status, when known                           ``bk.alarm.status``
``labels.bk_event_id``          the record's ``event_id``                              ``bk.event.id``
``labels.bk_event_log_status``  the record's ``status``, verbatim                       ``bk.event_log.status``
``labels.bk_alarm_dimension_K`` each search_alert dimension ``K`` (dots in ``K`` as     ``bk.alarm.dimension.K``
                                ``_``)
``labels.P``                    each ``extend_info`` leaf, ``P`` its dotted path with   the extend_info leaves
                                dots as ``_`` (``process_time.max`` ->
                                ``labels.process_time_max``); a non-dict
                                ``extend_info`` is ``labels.extend_info``
==============================  =====================================================  ==========================

ECS ``labels`` are flat keyword fields: label names carry no dots, and every label value is a
string (``true``/``false``, ``3``, ``0.5``; a list becomes a list of strings), so one label never
changes type between documents (which would be a mapping conflict in Elasticsearch). The
exporter's own labels win over an ``extend_info`` leaf of the same name; when two leaves collapse
to one label (``a.b`` and ``a_b``), the one later in ``extend_info`` wins.

Span events (``export.signals`` has ``spans``) carry ``message``, ``event.action``,
``event.code``, ``event.id``, ``log.record.uid`` and the ``labels.*`` of the ``extend_info``
leaves. The spans themselves (names, ``bk.*`` span attributes) are not a mapper's: unchanged.

It takes no options.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.mapping.attributes import extend_info_attributes
from exporter.mapping.contract import log_event
from exporter.model import AlarmContext, AttrValue, FlowRecord, LogEvent, SpanEventData
from exporter.plugins import NoOptions, Plugin, PluginContext

__all__ = ["EcsMapper", "ecs_action", "ecs_outcome", "label_name", "label_value", "plugin"]

_SUCCESS = frozenset({"SUCCESS"})
_FAILURE = frozenset({"FAILED", "FAILURE", "ERROR"})


def ecs_action(operate: str) -> str:
    """``SYSTEM_RECOVER`` -> ``system-recover``."""
    return operate.strip().lower().replace("_", "-").replace(" ", "-")


def ecs_outcome(status: str) -> str:
    """ECS ``event.outcome`` (``success``, ``failure`` or ``unknown``) of a record status."""
    normal = status.strip().upper()
    if normal in _SUCCESS:
        return "success"
    if normal in _FAILURE:
        return "failure"
    return "unknown"


def label_name(path: str) -> str:
    """``labels.<path with dots as _>``."""
    return "labels." + path.replace(".", "_")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def label_value(value: AttrValue) -> str | list[str]:
    """A label's keyword value: a string, or a list of strings."""
    if isinstance(value, (str, bool, int, float)):
        return _text(value)
    if isinstance(value, Sequence):
        return [_text(item) for item in value]
    return _text(value)  # pragma: no cover - AttrValue has no other shapes


def _labels(record: FlowRecord) -> dict[str, AttrValue]:
    return {label_name(path): label_value(value) for path, value in extend_info_attributes(record.extend_info).items()}


def _record_attributes(record: FlowRecord) -> dict[str, AttrValue]:
    attrs = _labels(record)
    attrs["message"] = record.message
    attrs["event.action"] = ecs_action(record.operate)
    attrs["event.code"] = record.operate
    attrs["event.id"] = record.uid
    attrs["log.record.uid"] = record.uid
    return attrs


def _context_attributes(ctx: AlarmContext | None) -> dict[str, AttrValue]:
    if ctx is None:
        return {}
    out: dict[str, AttrValue] = {}
    if ctx.bk_biz_id is not None:
        out["labels.bk_biz_id"] = _text(ctx.bk_biz_id)
    if ctx.name:
        out["labels.bk_alarm_name"] = ctx.name
    if ctx.status:
        out["labels.bk_alarm_status"] = ctx.status
    if ctx.severity is not None:
        out["event.severity"] = ctx.severity
    if ctx.strategy_id not in (None, "", 0):
        out["rule.id"] = _text(ctx.strategy_id)
    if ctx.strategy_name:
        out["rule.name"] = ctx.strategy_name
    for key, value in ctx.dimensions:
        out[label_name(f"bk_alarm_dimension_{key}")] = value
    return out


class EcsMapper:
    """Default log records (docs/reference.md), ECS attribute names (see the module docstring for the table)."""

    def map_log(self, record: FlowRecord, ctx: AlarmContext | None, *, with_trace: bool) -> LogEvent:
        attrs = _record_attributes(record)
        attrs.update(_context_attributes(ctx))
        attrs["labels.bk_alarm_id"] = record.alarm_id
        attrs["labels.bk_event_id"] = record.event_id
        attrs["labels.bk_event_log_status"] = record.status
        attrs["event.kind"] = "alert"
        attrs["event.outcome"] = ecs_outcome(record.status)
        return log_event(record, ctx, attrs, with_trace=with_trace)

    def map_span_event(self, record: FlowRecord) -> SpanEventData:
        attrs = _record_attributes(record)
        return SpanEventData(name=record.operate, timestamp_ns=record.create_time_ns, attributes=attrs)


def _create(options: NoOptions, context: PluginContext) -> EcsMapper:
    return EcsMapper()


plugin: Plugin[EcsMapper] = Plugin(
    kind="mapper",
    name="ecs",
    options=NoOptions,
    create=_create,
    description="Elastic Common Schema names: message, event.*, rule.*, labels.*",
)
