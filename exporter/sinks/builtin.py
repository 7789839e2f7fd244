"""The built-in sinks as plugins: ``otlp``, ``console`` and ``memory`` (``jsonl`` is in :mod:`.jsonl`).

Light on purpose: an entry point resolves to one of these objects at config-validation time, so
the OpenTelemetry SDK (``exporter.sinks.otlp``) is imported only when the ``otlp`` sink is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.plugins import NoOptions, Plugin, PluginContext
from exporter.sinks.base import Sink

if TYPE_CHECKING:
    from exporter.config import Config

__all__ = ["console", "memory", "otlp", "otlp_sink"]


def otlp_sink(config: Config, instance_id: str) -> Sink:
    """The OTLP sink configured by the ``export:`` section."""
    from exporter.sinks.otlp import OtlpSettings, OtlpSink, default_resource_attributes

    ex = config.export
    resource = default_resource_attributes(ex.service_name, instance_id)
    resource.update(ex.resource_attributes)
    resource["service.name"] = ex.service_name
    return OtlpSink(
        OtlpSettings(
            endpoint=ex.endpoint,
            protocol=ex.protocol,
            headers=dict(ex.headers),
            compression=ex.compression,
            timeout=ex.timeout,
            insecure=ex.insecure,
            ca_file=ex.ca_file,
            client_cert_file=ex.client_cert_file,
            client_key_file=ex.client_key_file,
            resource=resource,
        )
    )


def _otlp(options: NoOptions, context: PluginContext) -> Sink:
    return otlp_sink(context.config, context.instance_id)


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
