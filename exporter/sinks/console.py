"""A sink that prints every record as one JSON line (``export.console`` and ``demo``)."""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from typing import Any, TextIO

from exporter.model import LogEvent, SpanRecord
from exporter.sinks.base import Batch, ExportOutcome, ExportResult

__all__ = ["ConsoleSink", "render_record"]


def _iso(ns: int) -> str:
    moment = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000 // 1_000_000:03d}Z"


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else f"{value:0{width}x}"


def render_record(item: LogEvent | SpanRecord) -> dict[str, Any]:
    """The console form of one record (OTLP field names, readable times and ids)."""
    if isinstance(item, LogEvent):
        return {
            "signal": "log",
            "timestamp": _iso(item.timestamp_ns),
            "observed_timestamp": _iso(item.observed_ns),
            "severity_text": item.severity_text,
            "severity_number": item.severity_number,
            "event_name": item.event_name,
            "body": item.body,
            "attributes": dict(item.attributes),
            "trace_id": _hex(item.trace_id, 32),
            "span_id": _hex(item.span_id, 16),
        }
    return {
        "signal": "span",
        "name": item.name,
        "trace_id": _hex(item.trace_id, 32),
        "span_id": _hex(item.span_id, 16),
        "parent_span_id": _hex(item.parent_span_id, 16),
        "start": _iso(item.start_ns),
        "end": _iso(item.end_ns),
        "status": item.status_code,
        "attributes": dict(item.attributes),
        "events": [
            {"name": e.name, "timestamp": _iso(e.timestamp_ns), "attributes": dict(e.attributes)} for e in item.events
        ],
    }


class ConsoleSink:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def export(self, signal: str, batch: Batch) -> ExportResult:
        stream = self._stream or sys.stdout
        lines = [json.dumps(render_record(item), ensure_ascii=False, sort_keys=True) for item in batch]
        with self._lock:
            try:
                stream.write("".join(line + "\n" for line in lines))
                stream.flush()
            except (OSError, ValueError) as exc:
                return ExportResult(ExportOutcome.RETRY, f"console: {exc}")
        return ExportResult(ExportOutcome.SUCCESS)

    def shutdown(self) -> None:
        return None
