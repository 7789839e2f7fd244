"""Where records go. Only the OTLP sink (:mod:`exporter.sinks.otlp` and its `otlp_*` modules, lazily
imported) uses the OpenTelemetry SDK, grpcio and opentelemetry-proto."""

from exporter.sinks.base import SIGNALS, Batch, ExportOutcome, ExportResult, Sink

__all__ = ["SIGNALS", "Batch", "ExportOutcome", "ExportResult", "Sink"]
