"""The daemon: APScheduler 3.x BlockingScheduler jobs around the App.

Jobs (all ``max_instances=1``, ``coalesce=True``, generous ``misfire_grace_time``):

``poll``         every tick (a fraction of ``poll.interval``): poll the alarms whose own
                 ``next_poll`` (interval ± jitter, kept in the state store) has come; first run at once.
                 Sends what it found right away.
``discover``     (when ``alarms.recent.enabled``) search_alert every ``alarms.recent.interval``.
``send``         every second: drain the outbox (the sender keeps its own backoff during outages).
``maintenance``  every minute: forget long-retired alarms, refresh gauges.
``control``      every second: apply a requested reload, ping the systemd watchdog, but only while
                 polls and drains make progress (:func:`watchdog_bounds`): a stuck job stops the
                 pings, and systemd restarts the service.

Signals: SIGTERM/SIGINT set a flag, wake every BlueKing backoff sleep (:meth:`App.request_stop`: a
poll waiting out a long backoff gives up at once, leaving the final flush its time) and call
``shutdown(wait=False)``; SIGHUP only sets a flag. Everything else happens on the main thread
after the scheduler loop returns: in-flight jobs finish (bounded by ``shutdown_timeout``), the
outbox gets a last drain, the store is closed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter import sdnotify
from exporter.app import App
from exporter.config import Config, load_config
from exporter.errors import ConfigError, ExporterError
from exporter.sources.bkmonitor.retry import RETRY_AFTER_CAP_FACTOR

__all__ = ["Daemon", "watchdog_bounds"]

log = logging.getLogger(__name__)


def poll_tick(interval: float) -> float:
    """How often the poll job looks for due alarms: often enough that jitter stays meaningful,
    and that an alarm waits at most a twentieth of its interval past its due time (a tick is a
    query on an index: a quarter of a second costs nothing the benchmarks can see)."""
    return min(5.0, max(0.25, interval / 20.0))


def watchdog_bounds(config: Config) -> dict[str, float]:
    """Seconds polls and drains may go without progress before the watchdog stops pinging.

    Progress is a completed run of the job, or, inside a long run, a completed get_event_log
    request (polls) or OTLP export call (drains). A poll may wait one BlueKing timeout plus the
    longest backoff (a rate limit's ``Retry-After``, capped at 5 x ``bkmonitor.retry.max_backoff``)
    between two requests; a drain one ``export.timeout`` per call.
    """
    bk = config.bkmonitor
    longest_bk_wait = bk.effective_timeout + RETRY_AFTER_CAP_FACTOR * bk.retry.max_backoff
    return {
        "poll": 3.0 * config.poll.interval + longest_bk_wait,
        "send": 3.0 * (1.0 + config.export.timeout),
    }


class Daemon:
    """``bk-otel-exporter run``."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | Path | None = None,
        app_factory: Callable[[Config], App] = App,
        on_reload: Callable[[Config], None] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.app = app_factory(config)
        self.on_reload = on_reload
        self.scheduler = BlockingScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 3600}
        )
        self.scheduler.add_listener(self._job_failed, EVENT_JOB_ERROR)
        # "skipped: maximum number of running instances reached" and missed-run notices are the
        # intended effect of max_instances=1/coalesce (a slow export during an outage), not news.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        self._stop_requested = threading.Event()
        self._reload_requested = threading.Event()
        self._busy = 0
        self._busy_cond = threading.Condition()
        self._server: Any = None
        self._watchdog = sdnotify.Watchdog(sdnotify.watchdog_interval(), watchdog_bounds(config))
        self.app.metrics.on_activity(self._activity)

    # -- job plumbing -------------------------------------------------------------------------------
    def _guard(self, name: str, fn: Callable[[], object]) -> Callable[[], None]:
        """Wrap a job: count it in flight, contain every exception (logged with the traceback)."""

        def run() -> None:
            if self._stop_requested.is_set():
                return
            with self._busy_cond:
                self._busy += 1
            try:
                fn()
            except Exception:
                log.exception("job %s failed; it will run again at its next time", name)
            finally:
                self._watchdog.progressed(name)
                with self._busy_cond:
                    self._busy -= 1
                    self._busy_cond.notify_all()

        return run

    def _activity(self, event: str, detail: str) -> None:
        """A step of work inside a job completed (see :meth:`Metrics.on_activity`): progress."""
        if event == "api_request" and detail == "get_event_log":
            self._watchdog.progressed("poll")
        elif event == "export_attempt":
            self._watchdog.progressed("send")

    @staticmethod
    def _job_failed(event: JobExecutionEvent) -> None:  # pragma: no cover - _guard catches first
        log.error("job %s raised %r", event.job_id, event.exception)

    def _schedule(self) -> None:
        cfg = self.config
        now = datetime.now(timezone.utc)
        self.scheduler.add_job(
            self._guard("poll", self._poll_job),
            IntervalTrigger(seconds=poll_tick(cfg.poll.interval)),
            id="poll",
            replace_existing=True,
            next_run_time=now,
        )
        self.scheduler.add_job(
            self._guard("send", self._send_job),
            IntervalTrigger(seconds=1.0),
            id="send",
            replace_existing=True,
        )
        self.scheduler.add_job(
            self._guard("maintenance", self._maintenance_job),
            IntervalTrigger(seconds=60.0),
            id="maintenance",
            replace_existing=True,
            next_run_time=now,
        )
        self.scheduler.add_job(self._control_job, IntervalTrigger(seconds=1.0), id="control", replace_existing=True)
        if cfg.alarms.recent.enabled:
            self.scheduler.add_job(
                self._guard("discover", self._discover_job),
                IntervalTrigger(seconds=cfg.alarms.recent.interval, jitter=cfg.alarms.recent.interval * 0.05),
                id="discover",
                replace_existing=True,
            )
        elif self.scheduler.get_job("discover"):
            self.scheduler.remove_job("discover")

    def _poll_job(self) -> None:
        report = self.app.poll()
        if report.new_records or report.retired:
            self._wake("send")
        if report.polled or report.auth_error:
            log.info(
                "poll cycle: %d alarms read, %d new records, %d malformed, %d retired, %d failed%s; %d queued",
                report.polled,
                report.new_records,
                report.malformed,
                report.retired,
                report.failed,
                f", overflow {report.overflow}" if report.overflow else "",
                self.app.queued(),
            )

    def _wake(self, job_id: str) -> None:
        """Run a job now instead of at its next tick (the send job never runs on the poll thread:
        during an outage an export blocks for up to export.timeout)."""
        try:
            self.scheduler.modify_job(job_id, next_run_time=datetime.now(timezone.utc))
        except Exception:  # noqa: S110 - not scheduled (stopping): its next tick or the final flush sends
            log.debug("could not wake job %s", job_id, exc_info=True)

    def _discover_job(self) -> None:
        report = self.app.discover()
        if report is not None and (report.new or report.changed or report.reopened or report.safety_net):
            self._poll_job()  # read what changed now rather than at the next tick

    def _send_job(self) -> None:
        self.app.send()

    def _maintenance_job(self) -> None:
        self.app.maintain()

    def _control_job(self) -> None:
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self._reload()
        self._watchdog.tick()

    # -- reload -------------------------------------------------------------------------------------
    def _reload(self) -> None:
        sdnotify.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays in force:\n  %s", "\n  ".join(exc.problems))
            sdnotify.ready("reload refused: invalid configuration")
            return
        if new.server.listen != self.config.server.listen:
            log.warning("server.listen changed: takes effect after a restart, not on reload")
        try:
            self.app.apply(new)
        except ExporterError as exc:  # a plugin of the new config cannot be created
            log.error("reload refused, the running configuration stays in force: %s", exc)
            sdnotify.ready("reload refused: a plugin cannot be created")
            return
        self.config = new
        self._watchdog.set_bounds(watchdog_bounds(new))
        if self.on_reload:
            self.on_reload(new)
        self._schedule()
        log.info("configuration reloaded from %s", self.config_path)
        sdnotify.ready("reloaded")

    # -- signals and lifecycle ----------------------------------------------------------------------
    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested.set()
        self.app.request_stop()
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # noqa: S110 - not running yet: run() checks the flag
            pass

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested.set()

    def request_stop(self) -> None:
        """Stop from another thread (tests, the demo)."""
        self._on_stop(signal.SIGTERM, None)

    def run(self) -> int:
        previous = (
            {
                sig: signal.signal(sig, handler)
                for sig, handler in (
                    (signal.SIGTERM, self._on_stop),
                    (signal.SIGINT, self._on_stop),
                    (signal.SIGHUP, self._on_hup),
                )
            }
            if threading.current_thread() is threading.main_thread()
            else {}
        )
        try:
            self._start_server()
            self.app.sync_configured_alarms()
            if self.config.alarms.recent.enabled:
                # one round before the first poll, so even the first records carry the alarm context
                self._guard("discover", self.app.discover)()
            self._schedule()
            self.app.set_running(True)
            sdnotify.ready("polling")
            log.info(
                "bk-otel-exporter running: %d configured alarms, discovery %s, poll every %.0fs, exporting %s to %s",
                len(self.config.alarms.ids),
                "on" if self.config.alarms.recent.enabled else "off",
                self.config.poll.interval,
                "+".join(self.config.export.signals),
                self.app.sink.name,
            )
            if not self._stop_requested.is_set():
                self._watchdog.restart()  # the start-up (discovery, alarms) is not a stall
                self.scheduler.start()  # blocks until shutdown(wait=False)
        finally:
            self.app.set_running(False)
            sdnotify.stopping()
            self._graceful_stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _graceful_stop(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_timeout
        self.app.request_stop()
        if self.scheduler.state != STATE_STOPPED:
            try:
                self.scheduler.shutdown(wait=False)
            except Exception:  # noqa: S110
                pass
        with self._busy_cond:
            while self._busy and time.monotonic() < deadline - 1.0:
                self._busy_cond.wait(0.1)
        if self._busy:
            log.warning(
                "shutdown: %d jobs still running after shutdown_timeout; their work will be redone",
                self._busy,
            )
        remaining = deadline - time.monotonic()
        if remaining > 0.5:
            report = self.app.send(force=True, deadline=self.app.clock() + remaining - 0.25)
            log.info(
                "shutdown: flushed %d records; %d stay queued for the next start", report.exported, self.app.queued()
            )
        if self._server is not None:
            self._server.close()
        self.app.close()

    def _start_server(self) -> None:
        address = self.config.server.listen_address
        if address is None:
            return
        from exporter.server import HealthServer

        self._server = HealthServer(address[0], address[1], self.app.metrics).start()
        log.info("health and metrics on %s/ (healthz, readyz, metrics)", self._server.url)
