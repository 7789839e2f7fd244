"""A sink that cannot take the daemon down: a plugin sink's exceptions become RETRY.

The sink contract (:mod:`exporter.sinks.base`) says a sink returns an ExportResult and does not
raise. A plugin that raises anyway, or returns something else, is contained here: the batch
stays queued (RETRY: the sender backs off and tries again), the error is logged with its
traceback the first time and as one line after that, and the daemon goes on.
"""

from __future__ import annotations

import logging
import threading

from exporter.sinks.base import Batch, ExportOutcome, ExportResult, Sink

__all__ = ["GuardedSink"]

log = logging.getLogger(__name__)


class GuardedSink:
    def __init__(self, sink: Sink, name: str = "") -> None:
        self.sink = sink
        self.name = getattr(sink, "name", "") or name or type(sink).__name__
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def _first(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            if len(self._seen) >= 100:
                self._seen.clear()
            self._seen.add(key)
            return True

    def export(self, signal: str, batch: Batch) -> ExportResult:
        try:
            result = self.sink.export(signal, batch)
        except Exception as exc:
            detail = f"sink {self.name} raised {type(exc).__name__}: {exc}"
            if self._first(f"{type(exc).__name__}: {exc}"):
                log.exception("%s; the %d records stay queued and are retried", detail, len(batch))
            else:
                log.warning("%s; the %d records stay queued and are retried", detail, len(batch))
            return ExportResult(ExportOutcome.RETRY, detail)
        if not isinstance(result, ExportResult):
            detail = f"sink {self.name} returned {type(result).__name__}, not an ExportResult"
            if self._first(detail):
                log.error("%s; the %d records stay queued and are retried", detail, len(batch))
            return ExportResult(ExportOutcome.RETRY, detail)
        return result

    def shutdown(self) -> None:
        try:
            self.sink.shutdown()
        except Exception:
            log.warning("sink %s failed to shut down", self.name, exc_info=True)
