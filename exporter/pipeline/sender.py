"""The sender: drains the outbox into the sink.

Rows leave the outbox only when the sink said SUCCESS (``ack``). On RETRY the rows stay, the
sender backs off exponentially (with jitter, up to ``max_backoff``) and tries again later, however
long the outage lasts. On REJECTED (the backend refused the data itself) the batch is split in
halves until the refused records are isolated; those are parked (kept, counted, reported), the
rest delivered. Outages are logged when they start, then at most every ``report_every`` seconds,
and when they end: never once per record or per batch.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.model import OutboxItem
from exporter.sinks.base import ExportOutcome, ExportResult, Sink
from exporter.state.base import StateStore

__all__ = ["DrainReport", "SendMetrics", "Sender", "SenderSettings"]

log = logging.getLogger(__name__)


class SendMetrics(Protocol):
    def records_exported(self, n: int, signal: str) -> None: ...
    def records_parked(self, n: int, signal: str) -> None: ...
    def export_attempt(self, *, signal: str, ok: bool, seconds: float) -> None: ...
    def set_outbox(self, *, depth: int, oldest_age_seconds: float, parked: int) -> None: ...


@dataclass(frozen=True)
class SenderSettings:
    signals: tuple[str, ...] = ("logs",)
    batch_size: int = 512
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    report_every: float = 60.0


@dataclass
class DrainReport:
    exported: int = 0
    parked: int = 0
    failed: bool = False  # the sink asked to retry; rows are still queued
    skipped: bool = False  # backing off, or another drain was running


class Sender:
    def __init__(
        self,
        store: StateStore,
        sink: Sink,
        metrics: SendMetrics,
        settings: SenderSettings,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._outage_since: float | None = None
        self._last_report = 0.0
        self._outage_detail = ""

    @property
    def in_outage(self) -> bool:
        return self._outage_since is not None

    def replace_sink(self, sink: Sink) -> Sink:
        """Swap the sink (config reload) between batches; returns the old one to shut down."""
        with self._lock:
            old, self.sink = self.sink, sink
            self._retry_at = 0.0
            return old

    def drain(self, *, force: bool = False, deadline: float | None = None) -> DrainReport:
        """Send queued rows until the outbox is empty, the sink fails, or ``deadline`` passes.

        ``force`` ignores the backoff timer (used by ``once`` and at shutdown).
        """
        report = DrainReport()
        if not self._lock.acquire(blocking=force):
            report.skipped = True
            return report
        try:
            if not force and self.clock() < self._retry_at:
                report.skipped = True
                return report
            for signal in self.settings.signals:
                if not self._drain_signal(signal, report, deadline):
                    break
            self._publish_outbox()
            return report
        finally:
            self._lock.release()

    def _drain_signal(self, signal: str, report: DrainReport, deadline: float | None) -> bool:
        while not self.stop.is_set() or deadline is not None:
            if deadline is not None and self.clock() >= deadline:
                return False
            items = self.store.claim_outbox(signal, self.settings.batch_size)
            if not items:
                return True
            if not self._send(signal, items, report):
                return False
        return False

    def _send(self, signal: str, items: Sequence[OutboxItem], report: DrainReport) -> bool:
        started = self.clock()
        result = self.sink.export(signal, [i.payload for i in items])
        self.metrics.export_attempt(signal=signal, ok=result.ok, seconds=self.clock() - started)
        seqs = [i.seq for i in items]
        if result.outcome is ExportOutcome.SUCCESS:
            self.store.ack(seqs)
            report.exported += len(items)
            self.metrics.records_exported(len(items), signal)
            self._recovered()
            return True
        if result.outcome is ExportOutcome.REJECTED:
            return self._isolate(signal, items, result, report)
        self.store.release(seqs)
        report.failed = True
        self._failed(signal, result)
        return False

    def _isolate(self, signal: str, items: Sequence[OutboxItem], result: ExportResult, report: DrainReport) -> bool:
        if len(items) == 1:
            self.store.park([items[0].seq], result.detail or "rejected", self.clock())
            report.parked += 1
            self.metrics.records_parked(1, signal)
            log.error(
                "%s record %s of alarm %s rejected by %s (%s): parked, not retried",
                signal,
                items[0].payload.uid,
                items[0].payload.alarm_id,
                self.sink.name,
                result.detail,
            )
            return True
        half = len(items) // 2
        return self._send(signal, items[:half], report) and self._send(signal, items[half:], report)

    # -- outage bookkeeping -------------------------------------------------------------------------
    def _failed(self, signal: str, result: ExportResult) -> None:
        now = self.clock()
        self._failures += 1
        delay = min(self.settings.max_backoff, self.settings.initial_backoff * 2 ** (self._failures - 1))
        delay = delay / 2 + delay / 2 * self.rng()
        self._retry_at = now + delay
        self._outage_detail = result.detail
        depth = self.store.outbox_stats().depth
        if self._outage_since is None:
            self._outage_since = now
            self._last_report = now
            log.warning(
                "%s: export of %s failed (%s); %d records stay queued, retrying in %.1fs",
                self.sink.name,
                signal,
                result.detail,
                depth,
                delay,
            )
        elif now - self._last_report >= self.settings.report_every:
            self._last_report = now
            log.warning(
                "%s: still failing for %.0fs (%s, %d attempts); %d records queued",
                self.sink.name,
                now - self._outage_since,
                result.detail,
                self._failures,
                depth,
            )

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.info(
                "%s: export works again after %.0fs and %d failed attempts",
                self.sink.name,
                self.clock() - self._outage_since,
                self._failures,
            )
        self._outage_since = None
        self._failures = 0
        self._retry_at = 0.0

    def _publish_outbox(self) -> None:
        stats = self.store.outbox_stats()
        age = 0.0 if stats.oldest_enqueued_at is None else max(0.0, self.clock() - stats.oldest_enqueued_at)
        self.metrics.set_outbox(depth=stats.depth, oldest_age_seconds=age, parked=stats.parked)
