"""A sink that keeps what it is given, for tests and benchmarks. It can be told to fail."""

from __future__ import annotations

import threading

from exporter.model import LogEvent, SpanRecord
from exporter.sinks.base import Batch, ExportOutcome, ExportResult

__all__ = ["MemorySink"]


class MemorySink:
    name = "memory"

    def __init__(self) -> None:
        self.logs: list[LogEvent] = []
        self.spans: list[SpanRecord] = []
        self.calls = 0
        #: set to RETRY or REJECTED to make every export fail that way
        self.fail_with: ExportOutcome | None = None
        #: uids that make a batch containing them REJECTED (to test bisection and parking)
        self.poison: set[str] = set()
        self._lock = threading.Lock()

    def export(self, signal: str, batch: Batch) -> ExportResult:
        with self._lock:
            self.calls += 1
            if self.fail_with is not None:
                return ExportResult(self.fail_with, "memory sink told to fail")
            if any(item.uid in self.poison for item in batch):
                return ExportResult(ExportOutcome.REJECTED, "poisoned record")
            for item in batch:
                if isinstance(item, LogEvent):
                    self.logs.append(item)
                else:
                    self.spans.append(item)
            return ExportResult(ExportOutcome.SUCCESS)

    def shutdown(self) -> None:
        return None
