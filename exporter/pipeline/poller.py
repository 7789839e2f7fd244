"""One poll cycle: read the event log of every due alarm and commit what is new.

Per alarm, in a worker thread (at most ``max_concurrency`` at once; the client also enforces its
own global rate limit):

1. the source's ``fetch`` (:class:`~exporter.sources.base.Source`; the BlueKing source calls
   ``get_event_log``, retrying transient failures with backoff, and parses the answer);
2. malformed items are counted and logged once, then skipped;
3. keep the records whose uid is not in the alarm's seen set (the list is re-folded by BlueKing
   between calls, so identity is by content, never by position);
4. map them (oldest first) with the mapper (:class:`~exporter.mapping.base.Mapper`) to log
   records and/or span events, and encode each log record as OTLP bytes once
   (:func:`~exporter.mapping.otlp.stored_log`): the sender sends those bytes as they are;
5. one ``commit_poll`` transaction: seen uids + outbox rows + lifecycle + next poll time.

An error for one alarm never stops the others; an authentication failure stops the cycle (every
other call would fail the same way) and is reported once per cycle. A source or mapper plugin
that raises is contained like a failed API call: nothing of that alarm's poll is committed, the
error is logged with its traceback (at most once a minute per kind of error), and the alarm is
read again at its next interval.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from exporter.config.destinations import DEFAULT_DESTINATION, FilterConfig
from exporter.errors import BkApiError, BkAuthError, BkNotFoundError, PluginError, StateError
from exporter.logsetup import RateLimitedLogger
from exporter.mapping.base import Mapper, guarded
from exporter.mapping.otlp import stored_log
from exporter.model import AlarmContext, FlowRecord
from exporter.pipeline.filters import Route, targets
from exporter.pipeline.lifecycle import escalated, next_poll_time, plan_poll
from exporter.sources.base import FetchResult, Malformed, Source
from exporter.state.base import AlarmState, PollCommit, QueuedRecord, StateStore

__all__ = ["CycleReport", "PollSettings", "Poller", "SpanHook"]

log = logging.getLogger(__name__)

#: due alarms claimed at a time (a cycle claims page after page)
CLAIM_PAGE = 1000


class PollMetrics(Protocol):
    def records_fetched(self, n: int) -> None: ...
    def records_enqueued(self, n: int) -> None: ...
    def records_skipped(self, n: int, reason: str) -> None: ...
    def records_filtered(self, destination: str, n: int) -> None: ...
    def poll_cycle(self, *, ok: bool, alarms_polled: int, seconds: float) -> None: ...
    def auth_failure(self, message: str | None) -> None: ...


class SpanHook(Protocol):
    """What the span side adds to one alarm's commit (see :mod:`exporter.pipeline.spans`)."""

    def on_poll(
        self,
        alarm: AlarmState,
        ctx: AlarmContext,
        new: Sequence[FlowRecord],
        commit: PollCommit,
        retiring: bool,
    ) -> None: ...


@dataclass(frozen=True)
class PollSettings:
    interval: float = 30.0
    retire_after: float = 600.0
    jitter: float = 0.1
    max_concurrency: int = 8
    signals: frozenset[str] = frozenset({"logs"})
    #: with discovery: how often an unchanged, open, discovered alarm is re-read anyway (0 = every
    #: interval); discovery makes it due sooner when search_alert shows a change.
    full_reread_interval: float = 0.0
    #: the destinations (``export:`` is ``default``); empty = ``default`` alone, taking ``signals``
    routes: tuple[Route, ...] = ()

    def destinations(self) -> tuple[Route, ...]:
        return self.routes or (Route(DEFAULT_DESTINATION, self.signals, FilterConfig()),)


@dataclass
class CycleReport:
    polled: int = 0
    failed: int = 0
    new_records: int = 0
    malformed: int = 0
    retired: int = 0
    overflow: int = 0
    auth_error: str | None = None
    store_error: str | None = None  # the state store refused a commit (a full disk, a lost database)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.auth_error is None


class DuePages:
    """The due alarms of one cycle, claimed :data:`CLAIM_PAGE` at a time in ``(next_poll,
    alarm_id)`` order: the next page (after the last key of the one before) is claimed when the
    last alarm of a page is taken. An alarm that comes round again within the cycle (in a forced
    cycle a polled alarm is still "due") is not handed out twice. Not thread-safe: the poller's
    workers take alarms under one lock."""

    def __init__(self, store: StateStore, now: float, limit: int) -> None:
        self.store = store
        self.now = now
        self.limit = limit
        self.claimed: set[str] = set()
        self._after: tuple[float, str] | None = None
        self._ready: list[AlarmState] = []
        self._done = limit <= 0

    def take(self) -> AlarmState | None:
        """The next due alarm, claiming a page when needed; None when there is none left."""
        while not self._ready:
            if self._done:
                return None
            size = min(CLAIM_PAGE, self.limit - len(self.claimed))
            try:
                page = self.store.claim_due(self.now, size, self._after)
            except BaseException:
                self._done = True
                raise
            if not page:
                self._done = True
                return None
            self._after = (page[-1].next_poll, page[-1].alarm_id)
            fresh = [alarm for alarm in page if alarm.alarm_id not in self.claimed]
            self.claimed.update(alarm.alarm_id for alarm in fresh)
            self._done = len(page) < size or len(self.claimed) >= self.limit
            self._ready = fresh[::-1]  # taken from the end: oldest first
        return self._ready.pop()


class Poller:
    """Runs poll cycles. Thread-safe: one cycle at a time (a second caller waits)."""

    def __init__(
        self,
        source: Source,
        store: StateStore,
        metrics: PollMetrics,
        settings: PollSettings,
        *,
        mapper: Mapper,
        spans: SpanHook | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self.metrics = metrics
        self.mapper = guarded(mapper)
        self.spans = spans
        self.clock = clock
        self.rng = rng
        self.stop = stop or threading.Event()
        self._cycle_lock = threading.Lock()
        self._malformed_seen: set[str] = set()
        self._limited = RateLimitedLogger(log, interval=60.0)
        self._failing = False
        self._auth_retry_at: float | None = None  # set while BlueKing refuses our credentials
        self._overflow_logged_at = 0.0

    # -- the cycle ----------------------------------------------------------------------------------
    def run_cycle(self, *, force: bool = False, limit: int = 1_000_000) -> CycleReport:
        """Poll every due alarm (every followed alarm with ``force``), claimed page by page
        (:class:`DuePages`): memory holds about one page of alarms however many are followed."""
        with self._cycle_lock:
            started = self.clock()
            report = CycleReport()
            if self._auth_retry_at is not None and not force:
                # Refused credentials fail every call alike: one alarm probes them once per poll
                # interval (no retry storm); when it gets through, the others follow at once.
                limit = 1 if started >= self._auth_retry_at else 0
            pages = DuePages(self.store, float("inf") if force else started, limit)
            first = pages.take()
            if first is not None:
                self._poll_all(first, pages, report)
                self._report_cycle(report, len(pages.claimed))
            if report.auth_error is not None:
                self._auth_retry_at = started + self.settings.interval
            elif report.polled:
                self._auth_retry_at = None
            self.metrics.poll_cycle(ok=report.ok, alarms_polled=report.polled, seconds=self.clock() - started)
            if report.auth_error is None and report.polled:
                self.metrics.auth_failure(None)
            return report

    def _poll_all(self, first: AlarmState, pages: DuePages, report: CycleReport) -> None:
        auth_failed = threading.Event()
        lock = threading.Lock()

        def work(alarm: AlarmState) -> None:
            try:
                outcome = self.poll_alarm(alarm)
            except BkAuthError as exc:
                auth_failed.set()
                with lock:
                    report.auth_error = str(exc)
                return
            except StateError as exc:  # nothing of this alarm's poll was committed: read again later
                with lock:
                    report.failed += 1
                    report.store_error = report.store_error or str(exc)
                    report.errors.append(f"{alarm.alarm_id}: {exc}")
                return
            with lock:
                report.polled += 1
                report.new_records += outcome.new_records
                report.malformed += outcome.malformed
                report.retired += outcome.retired
                report.overflow += outcome.overflow
                if outcome.error:
                    report.failed += 1
                    report.errors.append(outcome.error)

        feed_lock = threading.Lock()
        taken = [first]

        def drain() -> None:
            """Poll the next alarm until there is none, the poller stops or BlueKing refused us."""
            while not (self.stop.is_set() or auth_failed.is_set()):
                with feed_lock:
                    alarm = taken.pop() if taken else pages.take()
                if alarm is None:
                    return
                work(alarm)

        workers = max(1, min(self.settings.max_concurrency, len(pages.claimed)))
        if workers == 1:
            drain()
            return
        # Each worker takes the next alarm from the one feed: no future per alarm (pool.map makes
        # them all at once: ~14 MB at 10,000 alarms), and the next page is claimed as soon as the
        # last alarm of a page is taken, so no worker waits for the page's slowest poll.
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
            for done in [pool.submit(drain) for _ in range(workers)]:
                done.result()

    def _report_cycle(self, report: CycleReport, claimed: int) -> None:
        """The cycle's rate-limited log lines: store refusals, refused credentials, failed calls."""
        if report.store_error:
            self._limited.error(
                "store", "the state store refused this cycle's commits (read again next cycle): %s", report.store_error
            )
        else:
            self._limited.reset("store")
        if report.auth_error:
            self._limited.error(
                "auth", "BlueKing refused our credentials; polling paused until the next cycle: %s", report.auth_error
            )
            self.metrics.auth_failure(report.auth_error)
        else:
            self._limited.reset("auth")
        if report.failed:
            self._failing = True
            self._limited.warning(
                "failed",
                "get_event_log failed for %d of %d alarms this cycle (retried next cycle); first: %s",
                report.failed,
                claimed,
                report.errors[0],
            )
        elif self._failing:
            self._failing = False
            self._limited.reset("failed")
            log.info("get_event_log works again for every alarm polled")

    # -- one alarm ----------------------------------------------------------------------------------
    def poll_alarm(self, alarm: AlarmState) -> _AlarmOutcome:
        now = self.clock()
        try:
            parsed = self.source.fetch(alarm.context)
        except BkNotFoundError as exc:
            log.warning(
                "alarm %s: BlueKing does not know it (code %s: unknown id, or past retention); retiring it",
                alarm.alarm_id,
                exc.code,
            )
            self.store.commit_poll(PollCommit(alarm.alarm_id, now, phase="expired", last_error=str(exc)))
            return _AlarmOutcome(retired=1)
        except BkAuthError:
            raise
        except BkApiError as exc:
            # One line per alarm only at DEBUG: in an outage every alarm fails the same way; the
            # cycle reports a rate-limited summary (run_cycle).
            log.debug("alarm %s: get_event_log failed: %s", alarm.alarm_id, exc)
            return self._failed(alarm, now, str(exc))
        except Exception as exc:  # a bug in a source plugin: contained like a failed call
            return self._failed(alarm, now, self._plugin_failure(alarm.alarm_id, "source", exc))
        try:
            return self._commit(alarm, parsed, now)
        except PluginError as exc:  # a bug in the mapper: nothing committed, read again next time
            return self._failed(alarm, now, self._plugin_failure(alarm.alarm_id, "mapper", exc))

    def _failed(self, alarm: AlarmState, now: float, error: str) -> _AlarmOutcome:
        """Record the failure; nothing else of this poll is committed, the alarm is read again later."""
        self.store.commit_poll(
            PollCommit(
                alarm.alarm_id,
                now,
                last_error=error,
                next_poll=next_poll_time(now, self.settings.interval, self.settings.jitter, self.rng),
            )
        )
        return _AlarmOutcome(error=f"{alarm.alarm_id}: {error}")

    def _plugin_failure(self, alarm_id: str, kind: str, exc: Exception) -> str:
        """Log a plugin's failure with its traceback (once a minute per kind of error); describe it."""
        cause = exc.__cause__ if isinstance(exc, PluginError) and isinstance(exc.__cause__, Exception) else exc
        error = str(exc) if isinstance(exc, PluginError) else f"{kind} failed: {type(exc).__name__}: {exc}"
        self._limited.error(
            f"plugin:{kind}:{type(cause).__name__}",
            "alarm %s: %s; nothing of this poll was committed, the alarm is read again at its next interval",
            alarm_id,
            error,
            exc_info=exc,
        )
        return error

    def _commit(self, alarm: AlarmState, parsed: FetchResult, now: float) -> _AlarmOutcome:
        malformed = self._report_malformed(alarm.alarm_id, parsed.malformed)
        self.metrics.records_fetched(len(parsed.records))
        seen = self.store.seen_uids(alarm.alarm_id)
        # Oldest first, so the outbox (and the backend) receive them in time order.
        new = sorted((r for r in parsed.records if r.uid not in seen), key=lambda r: r.create_time_ns)
        with_trace = "spans" in self.settings.signals
        commit = PollCommit(alarm.alarm_id, now, seen=[r.uid for r in new], full_read=True)
        ctx = alarm.context if parsed.context is None else parsed.context
        routes = self.settings.destinations()
        filtered: dict[str, int] = {}
        queued: list[QueuedRecord] = []
        for r in new:
            ctx = escalated(ctx, r)
            if "logs" in self.settings.signals:
                taking, left = targets(routes, "logs", ctx, r.operate)
                for name in left:
                    filtered[name] = filtered.get(name, 0) + 1
                if taking:  # encoded once, whatever number of destinations takes it
                    payload = stored_log(self.mapper.map_log(r, ctx, with_trace=with_trace))
                    queued.extend(QueuedRecord("logs", r.uid, payload, name) for name in taking)
        commit.queued = queued
        if ctx != alarm.context:
            commit.context = ctx
        plan = plan_poll(
            phase=alarm.phase,
            terminal_at=alarm.terminal_at,
            records=parsed.records,
            ctx=ctx,
            discovered=alarm.source == "discovered",
            now=now,
            interval=self.settings.interval,
            retire_after=self.settings.retire_after,
            jitter=self.settings.jitter,
            full_reread_interval=self.settings.full_reread_interval,
            rng=self.rng,
        )
        if self.spans is not None:
            self.spans.on_poll(alarm, ctx, new, commit, plan.retiring)
            commit.extra_queued = self._fan_out(routes, ctx, commit.extra_queued, filtered)
        commit.phase, commit.terminal_at, commit.next_poll = plan.phase, plan.terminal_at, plan.next_poll
        result = self.store.commit_poll(commit)
        if result.overflow:
            self._report_overflow(alarm.alarm_id, len(new))
            self.store.commit_poll(PollCommit(alarm.alarm_id, now, next_poll=plan.next_poll))
            return _AlarmOutcome(overflow=len(new), malformed=malformed)
        self.metrics.records_enqueued(result.inserted)
        for name, n in filtered.items():
            self.metrics.records_filtered(name, n)
        if result.overflowed:
            self._report_overflow(alarm.alarm_id, len(new), result.overflowed)
        if plan.retiring:
            log.info(
                "alarm %s retired: over since %s, no more reads",
                alarm.alarm_id,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.terminal_at or now)),
            )
        return _AlarmOutcome(new_records=len(new), malformed=malformed, retired=int(plan.retiring))

    def _report_malformed(self, alarm_id: str, malformed: Sequence[Malformed]) -> int:
        fresh = 0
        for bad in malformed:
            item = bad.key or f"#{bad.index}: {bad.reason}"
            key = hashlib.sha256(f"{alarm_id}\0{item}".encode("utf-8", "surrogatepass")).hexdigest()
            if key in self._malformed_seen:
                continue
            self._malformed_seen.add(key)
            fresh += 1
            log.warning("alarm %s: skipping malformed event-log item #%d: %s", alarm_id, bad.index, bad.reason)
        if fresh:
            self.metrics.records_skipped(fresh, "malformed")
        return fresh

    @staticmethod
    def _fan_out(
        routes: Sequence[Route], ctx: AlarmContext, rows: Sequence[QueuedRecord], filtered: dict[str, int]
    ) -> list[QueuedRecord]:
        """The span rows the span planner queued (for ``default``), one per destination taking them."""
        out: list[QueuedRecord] = []
        for row in rows:
            if row.kind != "spans":
                out.append(row)
                continue
            taking, left = targets(routes, "spans", ctx, None)
            for name in left:
                filtered[name] = filtered.get(name, 0) + 1
            out.extend(replace(row, destination=name) for name in taking)
        return out

    def _report_overflow(self, alarm_id: str, n: int, destinations: Sequence[str] = ()) -> None:
        self.metrics.records_skipped(n, "overflow")
        now = self.clock()
        if now - self._overflow_logged_at >= 60.0:
            self._overflow_logged_at = now
            if destinations:
                log.error(
                    "outbox full for destination(s) %s (state.max_queued_records=%d each): %d new records of "
                    "alarm %s were not queued for them (counted in bk_otel_records_skipped_total); the other "
                    "destinations got them",
                    ", ".join(destinations),
                    self.store.max_queued,
                    n,
                    alarm_id,
                )
                return
            log.error(
                "outbox full (state.max_queued_records=%d): %d new records of alarm %s left in BlueKing "
                "to be read again once the backend drains the queue",
                self.store.max_queued,
                n,
                alarm_id,
            )


@dataclass
class _AlarmOutcome:
    new_records: int = 0
    malformed: int = 0
    retired: int = 0
    overflow: int = 0
    error: str | None = None
