"""The built-in sinks as plugins: ``otlp``, ``console`` and ``memory`` (``jsonl`` is in :mod:`.jsonl`).

Light on purpose: an entry point resolves to one of these objects at config-validation time, so
the OpenTelemetry SDK (``exporter.sinks.otlp``) is imported only when the ``otlp`` sink is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.plugins import NoOptions, Plugin, PluginContext, settings_from
from exporter.sinks.base import Sink

if TYPE_CHECKING:
    from exporter.config import ExportConfig

__all__ = ["console", "memory", "otlp", "otlp_resource", "otlp_sink"]


def otlp_resource(export: ExportConfig, instance_id: str) -> dict[str, str]:
    """The resource of every record: the built-in attributes, then ``export.resource_attributes``
    (``OTEL_RESOURCE_ATTRIBUTES`` merged in), then ``service.name`` = ``export.service_name``.

    The loader already chose that name: the file's ``export.service_name``, else
    ``OTEL_SERVICE_NAME``, else a ``service.name`` resource attribute, else the default.
    """
    from exporter.mapping.otlp import default_resource_attributes

    resource = default_resource_attributes(export.service_name, instance_id)
    resource.update(export.resource_attributes)
    resource["service.name"] = export.service_name
    return resource


def otlp_sink(export: ExportConfig, instance_id: str) -> Sink:
    """The OTLP sink configured by the ``export:`` section: one transport, or one per signal when
    ``export.logs`` / ``export.spans`` (or their ``OTEL_EXPORTER_OTLP_LOGS_*`` / ``_TRACES_*``
    variables) say otherwise for a signal (:meth:`ExportConfig.for_signal`). A signal's own
    endpoint is its full URL, used as-is (the OpenTelemetry rule for the signal variables)."""
    from exporter.config.otlp import DEFAULT_ENDPOINTS
    from exporter.sinks.otlp import OtlpSettings, OtlpSink, PerSignalSink

    resource = otlp_resource(export, instance_id)
    if export.logs is None and export.spans is None:
        return OtlpSink(settings_from(OtlpSettings, export, headers=dict(export.headers), resource=resource))
    sinks = {}
    for signal in ("logs", "spans"):
        keys = export.for_signal(signal)
        own = keys.endpoint != export.endpoint and keys.endpoint not in DEFAULT_ENDPOINTS.values()
        settings = settings_from(OtlpSettings, keys, headers=dict(keys.headers), resource=resource, as_is=own)
        sinks[signal] = OtlpSink(settings)
    return PerSignalSink(sinks)


def _otlp(options: ExportConfig, context: PluginContext) -> Sink:
    return otlp_sink(options, context.instance_id)


def _console(options: NoOptions, context: PluginContext) -> Sink:
    from exporter.sinks.console import ConsoleSink

    return ConsoleSink()


def _memory(options: NoOptions, context: PluginContext) -> Sink:
    from exporter.sinks.memory import MemorySink

    return MemorySink()


otlp: Plugin[Sink] = Plugin(
    kind="sink",
    name="otlp",
    options=NoOptions,
    create=_otlp,
    description="OTLP over gRPC or HTTP/protobuf (configured by export:)",
    section="export",
)
console: Plugin[Sink] = Plugin(
    kind="sink",
    name="console",
    options=NoOptions,
    create=_console,
    description="one JSON line per record on stdout",
)
memory: Plugin[Sink] = Plugin(
    kind="sink",
    name="memory",
    options=NoOptions,
    create=_memory,
    description="keeps records in memory (tests and benchmarks)",
)
