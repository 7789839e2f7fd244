"""The built-in ``default`` mapper: exactly CONTRACT.md ("What an event-log record becomes").

Log records from :func:`exporter.mapping.logs.to_log_event`, span events from
:func:`exporter.mapping.spans.span_event`. It takes no options.
"""

from __future__ import annotations

from exporter.mapping.logs import to_log_event
from exporter.mapping.spans import span_event
from exporter.model import AlarmContext, FlowRecord, LogEvent, SpanEventData
from exporter.plugins import NoOptions, Plugin, PluginContext

__all__ = ["DefaultMapper", "plugin"]


class DefaultMapper:
    """The CONTRACT.md mapping (``bk.*`` attributes, ``log.record.uid``, extend_info leaves)."""

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
    description="CONTRACT.md: bk.* attributes, log.record.uid, extend_info leaves",
)
