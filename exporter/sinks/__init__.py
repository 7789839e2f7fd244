"""Where records go. Only :mod:`exporter.sinks.otlp` imports the OpenTelemetry SDK (lazily imported)."""

from exporter.sinks.base import SIGNALS, Batch, ExportOutcome, ExportResult, Sink

__all__ = ["SIGNALS", "Batch", "ExportOutcome", "ExportResult", "Sink"]
