"""The exporter's own telemetry: Prometheus metrics, and the liveness/readiness verdicts.

One :class:`Metrics` per daemon. It owns a private ``CollectorRegistry`` (never the global one, so
several instances coexist in one process, e.g. in tests). The pipeline and scheduler report what
happened through its methods; :mod:`exporter.server` serves :meth:`Metrics.render`,
:meth:`Metrics.live` and :meth:`Metrics.ready` over HTTP. Every method is thread-safe and cheap.

Metrics (``/metrics``, Prometheus text format; type in brackets)::

    bk_otel_build_info{version}                       [gauge] always 1
    bk_otel_up                                        [gauge] 1 while the scheduler runs (= /healthz)
    bk_otel_ready                                     [gauge] 1 while /readyz answers 200
    bk_otel_auth_failing                              [gauge] 1 while BlueKing refuses our credentials
    bk_otel_polls_total{outcome}                      [counter] poll cycles; outcome ok | error
    bk_otel_poll_duration_seconds                     [histogram] duration of one poll cycle
    bk_otel_alarm_polls_total                         [counter] event-log reads (alarms polled)
    bk_otel_api_requests_total{api_endpoint,outcome}  [counter] BlueKing API requests (each attempt)
    bk_otel_api_request_duration_seconds{api_endpoint} [histogram] BlueKing API latency
    bk_otel_api_retries_total{api_endpoint,code}      [counter] retried BlueKing failures, by code label
    bk_otel_api_undecodable_bytes_total{api_endpoint} [counter] answer bytes that were not UTF-8 (replaced)
    bk_otel_records_fetched_total                     [counter] records get_event_log returned
    bk_otel_records_enqueued_total                    [counter] new records put in the outbox
    bk_otel_records_skipped_total{reason}             [counter] records dropped: malformed, overflow
    bk_otel_records_exported_total{signal}            [counter] records acknowledged; logs | spans
    bk_otel_records_parked_total{signal}              [counter] records the backend refused for good
    bk_otel_records_refused_total{signal}             [counter] records an accepted answer's partial_success
                                                                refused (acknowledged, not resent)
    bk_otel_export_attempts_total{signal,outcome}     [counter] OTLP export calls; ok | error
    bk_otel_export_duration_seconds{signal}           [histogram] duration of one OTLP export call
    bk_otel_outbox_depth                              [gauge] records waiting (parked excluded)
    bk_otel_outbox_capacity                           [gauge] state.max_queued_records (the cap)
    bk_otel_outbox_oldest_age_seconds                 [gauge] age of the oldest waiting record
    bk_otel_outbox_parked                             [gauge] records currently parked
    bk_otel_records_filtered_total{destination}       [counter] records a destination's filter left out
    bk_otel_destination_queued{destination}           [gauge] records waiting for that destination
    bk_otel_destination_parked{destination}           [gauge] records parked for that destination
    bk_otel_destination_oldest_age_seconds{destination} [gauge] age of its oldest waiting record
    bk_otel_destination_in_outage{destination}        [gauge] 1 while its exports fail
    bk_otel_destination_last_success_timestamp_seconds{destination} [gauge] Unix time; 0 = never
    bk_otel_alarms_followed                           [gauge] alarms whose event log is read
    bk_otel_last_successful_poll_timestamp_seconds    [gauge] Unix time; 0 = never
    bk_otel_last_successful_export_timestamp_seconds  [gauge] Unix time; 0 = never

``api_endpoint`` is the BlueKing API name (``get_event_log``, ``search_alert``): not ``endpoint``,
which the Prometheus Operator sets as a target label of its own (ours would become
``exported_endpoint``). The API ``outcome`` is whatever the client reports (``ok``, ``error``,
``retry``, ``auth``, ``rate_limited``, ...: keep it a short fixed vocabulary). The retries'
``code`` is a bounded label too: a BlueKing code the client knows, ``other``, ``http_<status>`` or
``transport`` (:func:`exporter.sources.bkmonitor.report.code_label`). ``records_skipped`` reasons
``malformed`` and ``overflow`` (outbox full) and both signals are exported at 0 from the start.

The registry also holds the client library's ``process_*`` (CPU, memory, file descriptors, start
time) and ``python_*`` (version, garbage collector) collectors. No ``*_created`` series are
exposed: they double the number of series and no query of ours reads them.

:meth:`Metrics.progress` is a plain reading of a few counters for ``once``'s progress line
(:mod:`exporter.progress`): it is not exposed.

Liveness (``/healthz``): the process answers and the scheduler is running.

Readiness (``/readyz``), all of:

* the scheduler is running;
* BlueKing is not refusing our credentials (:meth:`Metrics.auth_failure` with a message sets that,
  with ``None`` clears it);
* a poll cycle succeeded within ``poll_stale_after`` seconds. Start-up grace: until the first
  successful poll, the clock runs from the moment the scheduler started, so a fresh daemon is ready
  for ``poll_stale_after`` seconds before its first poll must have succeeded. The pipeline reports
  every cycle, including one with nothing to poll (``alarms_polled=0``), so an idle daemon stays ready;
* when the outbox holds records (``depth > 0``), an export succeeded within ``export_stale_after``
  seconds. The clock starts at the latest of: the last successful export, the moment the outbox
  became non-empty, the scheduler start. An empty outbox is never an export failure, and a single
  failed attempt is not an outage: only a long one makes the daemon unready.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from exporter import __version__

__all__ = ["METRIC_NAMES", "Metrics", "Progress"]

# Process-wide switch of the client library: counters and histograms expose no ``*_created``.
disable_created_metrics()

#: Every metric family name as it appears in the text exposition (counters with ``_total``).
METRIC_NAMES: tuple[str, ...] = (
    "bk_otel_build_info",
    "bk_otel_up",
    "bk_otel_ready",
    "bk_otel_auth_failing",
    "bk_otel_polls_total",
    "bk_otel_poll_duration_seconds",
    "bk_otel_alarm_polls_total",
    "bk_otel_api_requests_total",
    "bk_otel_api_request_duration_seconds",
    "bk_otel_api_retries_total",
    "bk_otel_api_undecodable_bytes_total",
    "bk_otel_records_fetched_total",
    "bk_otel_records_enqueued_total",
    "bk_otel_records_skipped_total",
    "bk_otel_records_exported_total",
    "bk_otel_records_parked_total",
    "bk_otel_records_refused_total",
    "bk_otel_export_attempts_total",
    "bk_otel_export_duration_seconds",
    "bk_otel_outbox_depth",
    "bk_otel_outbox_capacity",
    "bk_otel_outbox_oldest_age_seconds",
    "bk_otel_outbox_parked",
    "bk_otel_records_filtered_total",
    "bk_otel_destination_queued",
    "bk_otel_destination_parked",
    "bk_otel_destination_oldest_age_seconds",
    "bk_otel_destination_in_outage",
    "bk_otel_destination_last_success_timestamp_seconds",
    "bk_otel_alarms_followed",
    "bk_otel_last_successful_poll_timestamp_seconds",
    "bk_otel_last_successful_export_timestamp_seconds",
)

_SIGNALS = ("logs", "spans")
_SKIP_REASONS = ("malformed", "overflow")
_API_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CYCLE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class Progress:
    """A reading of :meth:`Metrics.progress`: counts since the process started."""

    alarms_followed: int  # the last count of followed alarms (after discovery)
    alarms_read: int  # event logs read successfully
    records_read: int  # records those reads returned (new or already seen)
    records_new: int  # new records put in the outbox
    records_exported: int  # records the backend acknowledged
    outbox_depth: int  # records waiting, as last published


class Metrics:
    """The daemon's counters and gauges, and its liveness/readiness verdicts.

    ``clock`` returns Unix seconds (injected so tests control staleness). ``poll_stale_after`` and
    ``export_stale_after`` are the readiness windows described in the module docstring; a sensible
    ``poll_stale_after`` is a few poll intervals.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        poll_stale_after: float = 300.0,
        export_stale_after: float = 300.0,
        outbox_capacity: int = 1_000_000,
    ) -> None:
        self._clock = clock
        self.poll_stale_after = float(poll_stale_after)
        self.export_stale_after = float(export_stale_after)
        self._lock = threading.Lock()
        now = clock()
        self._started_at = now
        self._scheduler_running = False
        self._scheduler_since = now
        self._auth_failure: str | None = None
        self._last_poll_ok: float | None = None
        self._last_poll_failed: float | None = None
        self._last_export_ok: float | None = None
        self._last_export_failed: float | None = None
        self._outbox_depth = 0
        self._outbox_nonempty_since: float | None = None
        self._followed = self._read = self._records_read = self._records_new = self._records_sent = 0

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        info = Gauge("bk_otel_build_info", "Build information; always 1.", ["version"], registry=r)
        info.labels(version=__version__).set(1)
        self._polls = Counter("bk_otel_polls", "Poll cycles, by outcome (ok, error).", ["outcome"], registry=r)
        self._poll_seconds = Histogram(
            "bk_otel_poll_duration_seconds", "Duration of one poll cycle.", buckets=_CYCLE_BUCKETS, registry=r
        )
        self._alarm_polls = Counter(
            "bk_otel_alarm_polls", "Event-log reads: alarms polled, summed over cycles.", registry=r
        )
        self._api_requests = Counter(
            "bk_otel_api_requests",
            "BlueKing API requests, by api_endpoint (API name) and outcome.",
            ["api_endpoint", "outcome"],
            registry=r,
        )
        self._api_seconds = Histogram(
            "bk_otel_api_request_duration_seconds",
            "BlueKing API request latency, by api_endpoint.",
            ["api_endpoint"],
            buckets=_API_BUCKETS,
            registry=r,
        )
        self._api_retries = Counter(
            "bk_otel_api_retries",
            "Retried BlueKing failures, by endpoint and code (a known BlueKing code, other, http_<status>, transport).",
            ["api_endpoint", "code"],
            registry=r,
        )
        self._api_undecodable = Counter(
            "bk_otel_api_undecodable_bytes",
            "Bytes of BlueKing answers that were not UTF-8 (replaced by U+FFFD), by endpoint.",
            ["api_endpoint"],
            registry=r,
        )
        self._activity_listeners: list[Callable[[str, str], None]] = []
        self._fetched = Counter(
            "bk_otel_records_fetched", "Flow records returned by get_event_log, new or not.", registry=r
        )
        self._enqueued = Counter("bk_otel_records_enqueued", "New records written to the outbox.", registry=r)
        self._skipped = Counter(
            "bk_otel_records_skipped",
            "Records dropped, by reason (malformed, overflow, ...).",
            ["reason"],
            registry=r,
        )
        self._exported = Counter(
            "bk_otel_records_exported",
            "Records acknowledged by the OTLP backend, by signal.",
            ["signal"],
            registry=r,
        )
        self._parked = Counter(
            "bk_otel_records_parked",
            "Records set aside after the backend rejected them permanently, by signal.",
            ["signal"],
            registry=r,
        )
        self._refused = Counter(
            "bk_otel_records_refused",
            "Records the backend refused inside an accepted answer (OTLP partial_success), by signal.",
            ["signal"],
            registry=r,
        )
        self._export_attempts = Counter(
            "bk_otel_export_attempts",
            "OTLP export calls, by signal and outcome.",
            ["signal", "outcome"],
            registry=r,
        )
        self._export_seconds = Histogram(
            "bk_otel_export_duration_seconds",
            "Duration of one OTLP export call, by signal.",
            ["signal"],
            buckets=_API_BUCKETS,
            registry=r,
        )
        self._outbox_depth_g = Gauge(
            "bk_otel_outbox_depth", "Records waiting for delivery (parked excluded).", registry=r
        )
        self._outbox_capacity_g = Gauge(
            "bk_otel_outbox_capacity",
            "The outbox cap (state.max_queued_records): beyond it new records stay in BlueKing.",
            registry=r,
        )
        self._outbox_capacity_g.set(outbox_capacity)
        self._outbox_age_g = Gauge(
            "bk_otel_outbox_oldest_age_seconds", "Age of the oldest waiting record; 0 when empty.", registry=r
        )
        self._outbox_parked_g = Gauge("bk_otel_outbox_parked", "Records currently parked.", registry=r)
        self._filtered = Counter(
            "bk_otel_records_filtered",
            "Records a destination's filter left out (never queued for it).",
            ["destination"],
            registry=r,
        )
        per = ["destination"]
        self._dest_queued = Gauge("bk_otel_destination_queued", "Records waiting for a destination.", per, registry=r)
        self._dest_parked = Gauge("bk_otel_destination_parked", "Records parked for a destination.", per, registry=r)
        self._dest_age = Gauge(
            "bk_otel_destination_oldest_age_seconds", "Age of a destination's oldest waiting record.", per, registry=r
        )
        self._dest_outage = Gauge(
            "bk_otel_destination_in_outage", "1 while a destination's exports fail.", per, registry=r
        )
        self._dest_last_ok = Gauge(
            "bk_otel_destination_last_success_timestamp_seconds",
            "Unix time of a destination's last acknowledged export; 0 = never.",
            per,
            registry=r,
        )
        #: every family labelled by destination: exposed for ``default`` from the start, and
        #: dropped together when a destination is removed (:meth:`forget_destination`)
        self._per_destination = (
            self._filtered,
            self._dest_queued,
            self._dest_parked,
            self._dest_age,
            self._dest_outage,
            self._dest_last_ok,
        )
        for family in self._per_destination:
            family.labels(destination="default")
        self._alarms_followed = Gauge("bk_otel_alarms_followed", "Alarms whose event log is being read.", registry=r)
        self._last_poll_g = Gauge(
            "bk_otel_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll cycle; 0 = never.",
            registry=r,
        )
        self._last_export_g = Gauge(
            "bk_otel_last_successful_export_timestamp_seconds",
            "Unix time of the last successful OTLP export; 0 = never.",
            registry=r,
        )
        # Known label values start at 0, so dashboards and rate() see them before the first event.
        for outcome in ("ok", "error"):
            self._polls.labels(outcome=outcome)
            for signal in _SIGNALS:
                self._export_attempts.labels(signal=signal, outcome=outcome)
        for signal in _SIGNALS:
            self._exported.labels(signal=signal)
            self._parked.labels(signal=signal)
            self._refused.labels(signal=signal)
        for reason in _SKIP_REASONS:
            self._skipped.labels(reason=reason)
        r.register(_StatusCollector(self))
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)

    # -- reported by the pipeline and the scheduler -------------------------------------------------

    def api_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One BlueKing API request finished (each retry attempt counts as one request)."""
        self._api_requests.labels(api_endpoint=endpoint, outcome=outcome).inc()
        self._api_seconds.labels(api_endpoint=endpoint).observe(max(0.0, seconds))
        self._activity("api_request", endpoint)

    def api_retry(self, endpoint: str, code: str) -> None:
        """A BlueKing failure is being retried; ``code`` is a bounded label (see the module docstring)."""
        self._api_retries.labels(api_endpoint=endpoint, code=code).inc()

    def api_undecodable(self, endpoint: str, n: int) -> None:
        """An answer held ``n`` bytes that were not UTF-8 (replaced; the rest of it was used)."""
        if n > 0:
            self._api_undecodable.labels(api_endpoint=endpoint).inc(n)

    def on_activity(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(event, detail)`` whenever work completes a step: ``("api_request",
        endpoint)`` for each BlueKing request, ``("export_attempt", signal)`` for each OTLP export
        call (the daemon's watchdog counts them as progress). It must be cheap and never raise."""
        self._activity_listeners.append(listener)

    def _activity(self, event: str, detail: str) -> None:
        for listener in self._activity_listeners:
            listener(event, detail)

    def poll_cycle(self, *, ok: bool, alarms_polled: int, seconds: float) -> None:
        """One poll cycle finished. Report every cycle, also one with nothing to poll."""
        self._polls.labels(outcome="ok" if ok else "error").inc()
        self._poll_seconds.observe(max(0.0, seconds))
        if alarms_polled > 0:
            self._alarm_polls.inc(alarms_polled)
        now = self._clock()
        with self._lock:
            if ok:
                self._last_poll_ok = now
            else:
                self._last_poll_failed = now
        if ok:
            self._last_poll_g.set(now)

    def records_fetched(self, n: int) -> None:
        """One alarm's event log was read: ``n`` records (new or already seen)."""
        with self._lock:
            self._read += 1
            self._records_read += max(0, n)
        if n > 0:
            self._fetched.inc(n)

    def records_enqueued(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self._records_new += n
            self._enqueued.inc(n)

    def records_skipped(self, n: int, reason: str) -> None:
        if n > 0:
            self._skipped.labels(reason=reason).inc(n)

    def records_exported(self, n: int, signal: str) -> None:
        if n > 0:
            with self._lock:
                self._records_sent += n
            self._exported.labels(signal=signal).inc(n)

    def records_parked(self, n: int, signal: str) -> None:
        if n > 0:
            self._parked.labels(signal=signal).inc(n)

    def records_refused(self, n: int, signal: str) -> None:
        """``n`` records of an acknowledged batch were refused by the backend (``partial_success``)."""
        if n > 0:
            self._refused.labels(signal=signal).inc(n)

    def export_attempt(self, *, signal: str, ok: bool, seconds: float) -> None:
        """One OTLP export call finished; ``ok`` when the backend acknowledged it."""
        self._export_attempts.labels(signal=signal, outcome="ok" if ok else "error").inc()
        self._export_seconds.labels(signal=signal).observe(max(0.0, seconds))
        self._activity("export_attempt", signal)
        now = self._clock()
        with self._lock:
            if ok:
                self._last_export_ok = now
            else:
                self._last_export_failed = now
        if ok:
            self._last_export_g.set(now)

    def set_outbox(self, *, depth: int, oldest_age_seconds: float, parked: int, sendable: int | None = None) -> None:
        """The outbox as it is now: waiting records (parked excluded), oldest age, parked records.

        ``sendable`` (default: ``depth``) is how many of them the sender can send (of the signals
        ``export.signals`` lists): readiness waits only on those, never on stranded rows."""
        depth = max(0, depth)
        self._outbox_depth_g.set(depth)
        self._outbox_age_g.set(max(0.0, oldest_age_seconds) if depth else 0.0)
        self._outbox_parked_g.set(max(0, parked))
        depth = depth if sendable is None else max(0, sendable)
        with self._lock:
            if depth and not self._outbox_depth:
                self._outbox_nonempty_since = self._clock()
            elif not depth:
                self._outbox_nonempty_since = None
            self._outbox_depth = depth

    def records_filtered(self, destination: str, n: int) -> None:
        """``n`` records were left out of ``destination`` by its filter."""
        if n > 0:
            self._filtered.labels(destination=destination).inc(n)

    def set_destination(
        self, destination: str, *, queued: int, parked: int, oldest_age_seconds: float, in_outage: bool
    ) -> None:
        """One destination's backlog as it is now."""
        self._dest_queued.labels(destination=destination).set(max(0, queued))
        self._dest_parked.labels(destination=destination).set(max(0, parked))
        self._dest_age.labels(destination=destination).set(max(0.0, oldest_age_seconds) if queued else 0.0)
        self._dest_outage.labels(destination=destination).set(int(in_outage))

    def destination_success(self, destination: str) -> None:
        """``destination`` acknowledged an export now."""
        self._dest_last_ok.labels(destination=destination).set(self._clock())

    def forget_destination(self, destination: str) -> None:
        """``destination`` is no longer configured: its series go (a frozen "in outage" or age
        would keep alerting about a destination that is gone)."""
        for family in self._per_destination:
            try:
                family.remove(destination)
            except KeyError:
                pass

    def set_alarms_followed(self, n: int) -> None:
        with self._lock:
            self._followed = max(0, n)
        self._alarms_followed.set(max(0, n))

    def auth_failure(self, message: str | None) -> None:
        """BlueKing refuses our credentials (``message``: how, no secrets); ``None``: it works again."""
        with self._lock:
            self._auth_failure = message

    def set_scheduler_running(self, running: bool) -> None:
        with self._lock:
            if running and not self._scheduler_running:
                self._scheduler_since = self._clock()
            self._scheduler_running = running

    # -- read by the health server and by ``once``'s progress line -----------------------------------

    def progress(self) -> Progress:
        """What this process did so far (since the Metrics was made), for a progress line."""
        with self._lock:
            return Progress(
                alarms_followed=self._followed,
                alarms_read=self._read,
                records_read=self._records_read,
                records_new=self._records_new,
                records_exported=self._records_sent,
                outbox_depth=self._outbox_depth,
            )

    def live(self) -> tuple[bool, dict[str, Any]]:
        """``(alive, details)``: alive while the scheduler is running."""
        now = self._clock()
        with self._lock:
            running = self._scheduler_running
        return running, {
            "status": "ok" if running else "fail",
            "scheduler_running": running,
            "uptime_seconds": round(max(0.0, now - self._started_at), 3),
            "version": __version__,
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, details)`` by the rules of the module docstring; ``details["reasons"]`` says why not."""
        now = self._clock()
        with self._lock:
            running = self._scheduler_running
            since = self._scheduler_since
            auth = self._auth_failure
            poll_ok, poll_failed = self._last_poll_ok, self._last_poll_failed
            export_ok, export_failed = self._last_export_ok, self._last_export_failed
            depth, nonempty_since = self._outbox_depth, self._outbox_nonempty_since
        reasons: list[str] = []
        if not running:
            reasons.append("scheduler not running")
        if auth is not None:
            reasons.append(f"BlueKing authentication failing: {auth}")

        poll_anchor = poll_ok if poll_ok is not None else since
        poll_age = now - poll_anchor
        if running and poll_age > self.poll_stale_after:
            if poll_ok is None:
                reasons.append(f"no successful poll since start {poll_age:.0f}s ago")
            else:
                reasons.append(f"last successful poll {poll_age:.0f}s ago (limit {self.poll_stale_after:.0f}s)")

        export_age: float | None = None
        if depth:
            anchors = [a for a in (export_ok, nonempty_since, since) if a is not None]
            export_age = now - max(anchors)
            if running and export_age > self.export_stale_after:
                reasons.append(
                    f"{depth} records waiting, no successful export for {export_age:.0f}s"
                    f" (limit {self.export_stale_after:.0f}s)"
                )

        ok = not reasons
        return ok, {
            "status": "ok" if ok else "fail",
            "reasons": reasons,
            "scheduler_running": running,
            "auth_failure": auth,
            "last_poll_success_age_seconds": _age(now, poll_ok),
            "last_poll_failure_age_seconds": _age(now, poll_failed),
            "last_export_success_age_seconds": _age(now, export_ok),
            "last_export_failure_age_seconds": _age(now, export_failed),
            "outbox_depth": depth,
        }

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type: Prometheus text, or OpenMetrics when ``accept`` asks."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)


class _StatusCollector:
    """Gauges computed at scrape time from the verdicts, so they never disagree with the endpoints."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        live, _ = self._metrics.live()
        ready, details = self._metrics.ready()
        yield GaugeMetricFamily("bk_otel_up", "1 while the scheduler is running (= /healthz).", value=int(live))
        yield GaugeMetricFamily("bk_otel_ready", "1 while /readyz answers 200.", value=int(ready))
        yield GaugeMetricFamily(
            "bk_otel_auth_failing",
            "1 while BlueKing refuses the configured credentials.",
            value=int(details["auth_failure"] is not None),
        )
