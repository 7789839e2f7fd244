"""The sender: drains the outbox into the sink, each signal on its own.

Rows leave the outbox only when the sink said SUCCESS (``ack``). What each outcome does (the
outcomes are those of :mod:`exporter.sinks.base`):

* RETRY: the rows stay; that signal backs off exponentially (with jitter, up to
  ``max_backoff``; at least the backend's ``Retry-After``/``RetryInfo``, up to ``max_backoff``)
  and is tried again later, however long the outage lasts. The other signal goes on: a backend
  without a traces service never holds the logs back.
* REJECTED (the backend refused the data itself) and TOO_LARGE (the request was too big): the
  batch is split in halves until the parts are accepted or the refused records are isolated;
  those are parked (kept, counted, reported) with the reason, the rest delivered.
* SUCCESS with ``rejected`` records (OTLP ``partial_success``): the batch is acknowledged (the
  backend stored the rest and does not say which it refused, so nothing is resent), the refused
  records are counted, and the backend's message is logged: the first time, then at most every
  ``report_every`` seconds with how many were refused meanwhile.

A batch is at most ``batch_size`` rows and, by the records' encoded size (:func:`row_bytes`:
exact for the log records stored as OTLP bytes, estimated for JSON rows), at most
``max_batch_bytes``, a signal's own where ``export.logs`` / ``export.spans`` set them; the sink
checks the exact size and answers TOO_LARGE past it. Signals take
turns, one batch each, and the drain lets go of the sink between batches: a sink swap (a reload)
waits for one batch, not for the whole backlog, and a stop ends the drain at the next batch.
Outages are logged when they start, then at most every ``report_every`` seconds, and when they
end: never once per record or per batch.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.model import LogEvent, OutboxItem, SpanRecord
from exporter.sinks.base import ExportOutcome, ExportResult, Sink, StoredBatch
from exporter.state.base import StateStore

__all__ = ["DrainReport", "SendMetrics", "Sender", "SenderSettings", "estimated_bytes", "row_bytes"]

log = logging.getLogger(__name__)


class SendMetrics(Protocol):
    def records_exported(self, n: int, signal: str) -> None: ...
    def records_parked(self, n: int, signal: str) -> None: ...
    def records_refused(self, n: int, signal: str) -> None: ...
    def export_attempt(self, *, signal: str, ok: bool, seconds: float) -> None: ...
    def set_outbox(
        self, *, depth: int, oldest_age_seconds: float, parked: int, sendable: int | None = None
    ) -> None: ...
    def set_destination(
        self, destination: str, *, queued: int, parked: int, oldest_age_seconds: float, in_outage: bool
    ) -> None: ...
    def destination_success(self, destination: str) -> None: ...
    def forget_destination(self, destination: str) -> None: ...


@dataclass(frozen=True)
class SenderSettings:
    signals: tuple[str, ...] = ("logs",)
    batch_size: int = 512
    max_batch_bytes: int = 3 * 1024 * 1024  # 0 = no byte bound
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    report_every: float = 60.0
    #: a signal's own ``(batch_size, max_batch_bytes)`` (``export.logs`` / ``export.spans``)
    signal_bounds: tuple[tuple[str, int, int], ...] = ()

    def bounds(self, signal: str) -> tuple[int, int]:
        """``signal``'s ``(batch_size, max_batch_bytes)``: its own, else the settings' own."""
        for name, size, max_bytes in self.signal_bounds:
            if name == signal:
                return size, max_bytes
        return self.batch_size, self.max_batch_bytes


@dataclass
class DrainReport:
    exported: int = 0
    parked: int = 0
    refused: int = 0  # acknowledged, but refused by the backend's partial_success
    failed: bool = False  # a signal's sink asked to retry; its rows are still queued
    skipped: bool = False  # nothing was tried: every signal backing off, or another drain was running


def _text_bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")) + 4
    if isinstance(value, (list, tuple)):
        return sum(_text_bytes(v) for v in value) + 4
    return 12  # int, float, bool: a varint or fixed64 with its tags


def _attrs_bytes(attributes: object) -> int:
    if not isinstance(attributes, dict):
        return 0
    return sum(len(key.encode("utf-8", "surrogatepass")) + 8 + _text_bytes(v) for key, v in attributes.items())


def estimated_bytes(item: LogEvent | SpanRecord) -> int:
    """About what ``item`` adds to an OTLP request, in bytes (an overestimate for typical records).

    Cheap (no encoding): the sender cuts batches by it so that requests rarely need the sink's
    exact check; the exact size is the sink's business (it answers TOO_LARGE past its limit).
    """
    if isinstance(item, LogEvent):
        return 96 + _text_bytes(item.body) + _text_bytes(item.event_name) + _attrs_bytes(item.attributes)
    events = sum(40 + _text_bytes(e.name) + _attrs_bytes(e.attributes) for e in item.events)
    return 128 + _text_bytes(item.name) + _text_bytes(item.status_message) + _attrs_bytes(item.attributes) + events


def row_bytes(item: OutboxItem) -> int:
    """What an outbox row adds to an OTLP request: exact for a log row's stored bytes (its
    framing included), :func:`estimated_bytes` for a JSON row."""
    if item.encoded is not None:
        return len(item.encoded)
    return estimated_bytes(item.payload)


@dataclass
class _Backoff:
    """One signal's outage bookkeeping."""

    failures: int = 0
    retry_at: float = 0.0
    outage_since: float | None = None
    last_report: float = 0.0


@dataclass
class _Refusals:
    """Rate limit of the partial_success log lines, per signal."""

    last_report: float | None = None
    pending: int = 0


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
        destination: str = "default",
    ) -> None:
        #: the destination whose outbox rows this sender drains (``default``: ``export:``)
        self.destination = destination
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.stop = stop or threading.Event()
        self._drain_lock = threading.Lock()  # one drain at a time
        self._swap = threading.Condition()  # guards the two below: a swap waits for one export only
        self._exporting = False
        self._swaps_waiting = 0
        self._backoff: dict[str, _Backoff] = {}
        self._refusals: dict[str, _Refusals] = {}
        self._claimed_for: Sink | None = None  # the sink the batch being sent was claimed for
        self._replaced = False  # that sink was replaced before the batch was sent

    @property
    def in_outage(self) -> bool:
        return any(b.outage_since is not None for b in self._backoff.values())

    def backing_off(self, signal: str) -> bool:
        """Whether ``signal`` is waiting for its next retry."""
        return self.clock() < self._state(signal).retry_at

    def _state(self, signal: str) -> _Backoff:
        return self._backoff.setdefault(signal, _Backoff())

    def replace_sink(self, sink: Sink) -> Sink:
        """Swap the sink (config reload) between two requests; returns the old one, no longer in
        use, to shut down. Waits for the request in flight, never for the rest of a drain: a drain
        does not start another request while a swap is waiting."""
        with self._swap:
            self._swaps_waiting += 1
            try:
                self._swap.wait_for(lambda: not self._exporting)
                old, self.sink = self.sink, sink
                for state in self._backoff.values():
                    state.retry_at = 0.0
            finally:
                self._swaps_waiting -= 1
                self._swap.notify_all()
            return old

    def _export(self, signal: str, items: Sequence[OutboxItem]) -> tuple[Sink, ExportResult | None]:
        """Send ``items`` to the sink; no result (None) when a reload replaced the sink after the
        batch was claimed: that batch was cut by the old settings, so it goes back to the outbox
        and is claimed again under the new ones."""
        with self._swap:
            self._swap.wait_for(lambda: not self._swaps_waiting)
            sink = self.sink
            if sink is not self._claimed_for:
                return sink, None
            self._exporting = True
        try:
            return sink, sink.export(signal, StoredBatch(items))
        finally:
            with self._swap:
                self._exporting = False
                self._swap.notify_all()

    def drain(self, *, force: bool = False, deadline: float | None = None) -> DrainReport:
        """Send queued rows until the outbox is empty, every signal failed, ``deadline`` passed, or
        the sender is told to stop (without a deadline). ``force`` ignores the backoff timers (used
        by ``once`` and at shutdown) and waits for a drain already running."""
        report = DrainReport()
        if not self._drain_lock.acquire(blocking=force):
            report.skipped = True
            return report
        try:
            now = self.clock()
            active = [s for s in self.settings.signals if force or now >= self._state(s).retry_at]
            report.skipped = not active
            while active:
                for signal in list(active):
                    if self._must_stop(deadline):
                        return report
                    if not self._one_batch(signal, report, deadline):
                        active.remove(signal)
            return report
        finally:
            try:
                self._publish_outbox()
            finally:
                self._drain_lock.release()

    def _must_stop(self, deadline: float | None) -> bool:
        if deadline is not None:
            return self.clock() >= deadline
        return self.stop.is_set()

    def _one_batch(self, signal: str, report: DrainReport, deadline: float | None) -> bool:
        """Claim one batch of ``signal`` and send it (in as many requests as its size needs);
        False when there is nothing to send, the sink asked to retry, or the drain must stop."""
        self._claimed_for = self.sink
        size, max_bytes = self.settings.bounds(signal)
        items = self.store.claim_outbox(signal, size, self.destination)
        if not items:
            return False
        parts = self._parts(items, max_bytes)
        for n, part in enumerate(parts):
            unsent: list[OutboxItem] = []
            if n and self._must_stop(deadline):
                unsent = part
            elif self._send(signal, part, report, unsent):
                continue
            # what was not acknowledged or parked stays queued (a shared store's lease on it ends)
            later = [item for rest in parts[n + 1 :] for item in rest]
            self.store.release([i.seq for i in [*unsent, *later]])
            replaced, self._replaced = self._replaced, False
            return replaced  # after a swap, go on: the next claim follows the new settings
        return True

    @staticmethod
    def _parts(items: Sequence[OutboxItem], limit: int) -> list[list[OutboxItem]]:
        """``items`` cut in runs of at most ``limit`` bytes by estimate (each at least one row)."""
        if not limit:
            return [list(items)]
        parts: list[list[OutboxItem]] = [[]]
        total = 0
        for item in items:
            size = row_bytes(item)
            if parts[-1] and total + size > limit:
                parts.append([])
                total = 0
            parts[-1].append(item)
            total += size
        return parts

    def _send(self, signal: str, items: Sequence[OutboxItem], report: DrainReport, unsent: list[OutboxItem]) -> bool:
        """Send ``items``, splitting on REJECTED/TOO_LARGE; False when the sink asked to retry
        (then the rows not acknowledged or parked are added to ``unsent``)."""
        started = self.clock()
        sink, result = self._export(signal, items)
        if result is None:  # the sink was replaced by a reload: claimed again under the new settings
            unsent.extend(items)
            self._replaced = True
            return False
        self.metrics.export_attempt(signal=signal, ok=result.ok, seconds=self.clock() - started)
        if result.outcome is ExportOutcome.SUCCESS:
            self.store.ack([i.seq for i in items])
            report.exported += len(items)
            self.metrics.records_exported(len(items), signal)
            self.metrics.destination_success(self.destination)
            if result.rejected or result.detail:
                self._partly_refused(signal, sink, result, report)
            self._recovered(signal, sink)
            return True
        if result.outcome in (ExportOutcome.REJECTED, ExportOutcome.TOO_LARGE):
            return self._isolate(signal, items, result, report, unsent, sink)
        unsent.extend(items)
        report.failed = True
        self._failed(signal, sink, result)
        return False

    def _isolate(
        self,
        signal: str,
        items: Sequence[OutboxItem],
        result: ExportResult,
        report: DrainReport,
        unsent: list[OutboxItem],
        sink: Sink,
    ) -> bool:
        if len(items) == 1:
            item = items[0]
            too_large = result.outcome is ExportOutcome.TOO_LARGE
            reason = f"too large to send even alone: {result.detail}" if too_large else result.detail or "rejected"
            self.store.park([item.seq], reason, self.clock())
            report.parked += 1
            self.metrics.records_parked(1, signal)
            log.error(
                "%s record %s of alarm %s %s by %s (%s): parked, not retried",
                signal,
                item.uid,
                item.alarm_id,
                "too large to be accepted even alone" if too_large else "rejected",
                self._who(sink),
                result.detail,
            )
            return True
        half = len(items) // 2
        if not self._send(signal, items[:half], report, unsent):
            unsent.extend(items[half:])
            return False
        return self._send(signal, items[half:], report, unsent)

    # -- partial success ----------------------------------------------------------------------------
    def _partly_refused(self, signal: str, sink: Sink, result: ExportResult, report: DrainReport) -> None:
        if result.rejected:
            report.refused += result.rejected
            self.metrics.records_refused(result.rejected, signal)
        state = self._refusals.setdefault(signal, _Refusals())
        state.pending += result.rejected
        now = self.clock()
        if state.last_report is not None and now - state.last_report < self.settings.report_every:
            return
        first = state.last_report is None
        state.last_report, refused, state.pending = now, state.pending, 0
        message = result.detail or "no message"
        if refused:
            log.warning(
                "%s accepted a %s batch but refused %d of its records%s: %s (counted in "
                "bk_otel_records_refused_total; not resent)",
                self._who(sink),
                signal,
                refused,
                "" if first else f" (summed over the last {self.settings.report_every:.0f}s)",
                message,
            )
        else:
            log.warning("%s accepted a %s batch with a warning: %s", self._who(sink), signal, message)

    # -- outage bookkeeping -------------------------------------------------------------------------
    def _failed(self, signal: str, sink: Sink, result: ExportResult) -> None:
        now = self.clock()
        state = self._state(signal)
        state.failures += 1
        settings = self.settings
        delay = min(settings.max_backoff, settings.initial_backoff * 2 ** (state.failures - 1))
        delay = delay / 2 + delay / 2 * self.rng()
        if result.retry_after is not None:
            delay = max(delay, min(settings.max_backoff, result.retry_after))
        state.retry_at = now + delay
        if state.outage_since is None:
            state.outage_since = now
            state.last_report = now
            log.warning(
                "%s: export of %s failed (%s); %d %s stay queued, retrying in %.1fs",
                self._who(sink),
                signal,
                result.detail,
                self._queued(signal),
                signal,
                delay,
            )
        elif now - state.last_report >= settings.report_every:
            state.last_report = now
            log.warning(
                "%s: %s still failing for %.0fs (%s, %d attempts); %d %s queued",
                self._who(sink),
                signal,
                now - state.outage_since,
                result.detail,
                state.failures,
                self._queued(signal),
                signal,
            )

    def _who(self, sink: Sink) -> str:
        """The sink as log lines name it: with its destination, unless it is ``export:``'s."""
        return sink.name if self.destination == "default" else f"destination {self.destination} ({sink.name})"

    def _queued(self, signal: str) -> int:
        stats = self.store.outbox_stats()
        if self.destination != "default" and stats.by_destination:
            return stats.by_destination.get(self.destination, (0, 0, None))[0]
        return stats.by_kind.get(signal, 0) if stats.by_kind else stats.depth

    def _recovered(self, signal: str, sink: Sink) -> None:
        state = self._state(signal)
        if state.outage_since is not None:
            log.info(
                "%s: export works again for %s after %.0fs and %d failed attempts",
                self._who(sink),
                signal,
                self.clock() - state.outage_since,
                state.failures,
            )
        state.outage_since = None
        state.failures = 0
        state.retry_at = 0.0

    def _publish_outbox(self) -> None:
        stats = self.store.outbox_stats()
        queued, parked, oldest = stats.by_destination.get(self.destination, (0, 0, None))
        since = 0.0 if oldest is None else max(0.0, self.clock() - oldest)
        self.metrics.set_destination(
            self.destination, queued=queued, parked=parked, oldest_age_seconds=since, in_outage=self.in_outage
        )
        if self.destination != "default":
            return  # the outbox as a whole (and readiness) is published by export:'s sender
        age = 0.0 if stats.oldest_enqueued_at is None else max(0.0, self.clock() - stats.oldest_enqueued_at)
        sendable = sum(stats.by_kind.get(signal, 0) for signal in self.settings.signals)
        self.metrics.set_outbox(depth=stats.depth, oldest_age_seconds=age, parked=stats.parked, sendable=sendable)
