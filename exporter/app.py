"""Wiring: a validated Config in, a ready pipeline out (store, client, sink, poller, sender).

This is the only place that knows how the parts fit together; ``cli`` and ``scheduler`` use it,
tests and the demo build it with injected parts (a simulator URL, a memory sink).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from exporter.bkmonitor.client import BkClient, BkClientSettings
from exporter.config import Config
from exporter.metrics import Metrics
from exporter.model import AlarmContext
from exporter.pipeline.discovery import Discoverer, DiscoveryReport, DiscoverySettings
from exporter.pipeline.poller import CycleReport, Poller, PollSettings
from exporter.pipeline.sender import DrainReport, Sender, SenderSettings
from exporter.sinks.base import Sink
from exporter.state import StateStore, open_store
from exporter.state.base import PollCommit

__all__ = ["App", "OnceReport", "build_sink", "client_settings"]

log = logging.getLogger(__name__)


def client_settings(config: Config) -> BkClientSettings:
    bk = config.bkmonitor
    secret = bk.app_secret.get_secret_value() if bk.app_secret else ""
    return BkClientSettings(
        base_url=bk.base_url,
        app_code=bk.app_code,
        app_secret=secret,
        username=bk.username,
        bk_token=bk.bk_token.get_secret_value() if bk.bk_token else None,
        auth_in=bk.auth_in,
        language=bk.language,
        timeout=bk.timeout,
        verify_tls=bk.verify_tls,
        ca_file=bk.ca_file,
        max_concurrency=bk.max_concurrency,
        rate_limit=bk.rate_limit,
        max_attempts=bk.retry.max_attempts,
        initial_backoff=bk.retry.initial_backoff,
        max_backoff=bk.retry.max_backoff,
    )


def build_sink(config: Config, instance_id: str) -> Sink:
    """The OTLP sink, with the console sink beside it when ``export.console`` is set."""
    from exporter.sinks.fanout import FanoutSink
    from exporter.sinks.otlp import OtlpSettings, OtlpSink, default_resource_attributes

    ex = config.export
    resource = default_resource_attributes(ex.service_name, instance_id)
    resource.update(ex.resource_attributes)
    resource["service.name"] = ex.service_name
    sink: Sink = OtlpSink(
        OtlpSettings(
            endpoint=ex.endpoint,
            protocol=ex.protocol,
            headers=dict(ex.headers),
            compression=ex.compression,
            timeout=ex.timeout,
            insecure=ex.insecure,
            ca_file=ex.ca_file,
            client_cert_file=ex.client_cert_file,
            client_key_file=ex.client_key_file,
            resource=resource,
        )
    )
    if ex.console:
        from exporter.sinks.console import ConsoleSink

        sink = FanoutSink(sink, [ConsoleSink()])
    return sink


def _sender_settings(config: Config) -> SenderSettings:
    return SenderSettings(
        signals=tuple(config.export.signals),
        batch_size=config.export.batch_size,
        initial_backoff=config.export.retry.initial_backoff,
        max_backoff=config.export.retry.max_backoff,
    )


@dataclass
class OnceReport:
    cycle: CycleReport
    drain: DrainReport
    queued: int

    @property
    def exit_code(self) -> int:
        """0 when everything fetched was delivered; 1 when delivery failed (queued or parked records)
        or fetching failed (BlueKing errors: the records are read again next time)."""
        delivered = self.queued == 0 and not self.drain.failed and self.drain.parked == 0
        return 0 if (delivered and self.cycle.ok) else 1


class App:
    """The assembled pipeline. ``close()`` releases the store, the client and the sink."""

    def __init__(
        self,
        config: Config,
        *,
        sink: Sink | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        store: StateStore | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.stop = threading.Event()
        poll_interval = config.poll.interval
        self.metrics = metrics or Metrics(
            poll_stale_after=max(300.0, 3 * poll_interval), export_stale_after=max(300.0, 3 * poll_interval)
        )
        self.store = store or open_store(
            config.state.path,
            url=config.state.url.get_secret_value() if config.state.url else None,
            max_queued=config.state.max_queued_records,
            lease=config.state.lease,
        )
        try:
            self.instance_id = self.store.get_meta("instance_id") or "unknown"
            self.client = BkClient(client_settings(config), observer=self.metrics)
            self.sink = sink or build_sink(config, self.instance_id)
        except BaseException:
            self.store.close()
            raise
        self._own_sink = sink is None
        self.poller = self._build_poller(config)
        self.discoverer = self._build_discoverer(config)
        self.sender = Sender(self.store, self.sink, self.metrics, _sender_settings(config), clock=clock, stop=self.stop)

    def _build_poller(self, config: Config) -> Poller:
        from exporter.pipeline.spans import SpanPlanner

        return Poller(
            self.client,
            self.store,
            self.metrics,
            PollSettings(
                interval=config.poll.interval,
                retire_after=config.poll.retire_after,
                jitter=config.poll.jitter,
                max_concurrency=config.bkmonitor.max_concurrency,
                signals=frozenset(config.export.signals),
                timezone=ZoneInfo(config.bkmonitor.timezone),
                full_reread_interval=config.poll.full_reread_interval if config.alarms.recent.enabled else 0.0,
            ),
            spans=SpanPlanner(self.store) if "spans" in config.export.signals else None,
            clock=self.clock,
            stop=self.stop,
        )

    def _build_discoverer(self, config: Config) -> Discoverer | None:
        recent = config.alarms.recent
        if not recent.enabled:
            return None
        return Discoverer(
            self.client,
            self.store,
            self.metrics,
            DiscoverySettings(
                bk_biz_ids=tuple(recent.bk_biz_ids),
                lookback=recent.lookback,
                overlap=recent.overlap,
                status=tuple(recent.status),
                query_string=recent.query_string,
                conditions=tuple(recent.conditions),
                page_size=recent.page_size,
                interval=recent.interval,
                full_reread_interval=config.poll.full_reread_interval,
            ),
            clock=self.clock,
        )

    def apply(self, config: Config) -> None:
        """Apply a reloaded config: new client, sink and settings; the store and its queue stay."""
        old_client = self.client
        self.config = config
        self.client = BkClient(client_settings(config), observer=self.metrics)
        self.poller = self._build_poller(config)
        self.discoverer = self._build_discoverer(config)
        self.sender.settings = _sender_settings(config)
        if self._own_sink:
            self.sink = build_sink(config, self.instance_id)
            self.sender.replace_sink(self.sink).shutdown()
        old_client.close()
        self.sync_configured_alarms()

    # -- configured alarms --------------------------------------------------------------------------
    def sync_configured_alarms(self) -> None:
        """Follow every ``alarms.ids`` entry; stop following configured alarms no longer listed."""
        now = self.clock()
        wanted = set(self.config.alarms.ids)
        for alarm_id in self.config.alarms.ids:
            known = self.store.get_alarm(alarm_id)
            ctx = known.context if known else AlarmContext(alarm_id=alarm_id)
            self.store.upsert_alarm(ctx, source="config", now=now, due=known is None)
        for alarm in self.store.list_alarms():
            if alarm.source == "config" and alarm.alarm_id not in wanted:
                log.info("alarm %s is no longer in alarms.ids: no longer followed", alarm.alarm_id)
                self.store.commit_poll(PollCommit(alarm.alarm_id, now, phase="retired"))
        self.metrics.set_alarms_followed(len(self.store.list_alarms()))

    # -- one cycle ----------------------------------------------------------------------------------
    def discover(self, *, since: float | None = None) -> DiscoveryReport | None:
        """One discovery round (None when discovery is off)."""
        if self.discoverer is None:
            return None
        return self.discoverer.run(since=since)

    def poll(self, *, force: bool = False) -> CycleReport:
        report = self.poller.run_cycle(force=force)
        self.metrics.set_alarms_followed(len(self.store.list_alarms()))
        if report.ok and report.polled:
            self.store.set_meta("last_poll_ok", str(self.clock()))
        return report

    def send(self, *, force: bool = False, deadline: float | None = None) -> DrainReport:
        report = self.sender.drain(force=force, deadline=deadline)
        if report.exported and not report.failed:
            self.store.set_meta("last_export_ok", str(self.clock()))
        return report

    def run_once(self, *, since: float | None = None) -> OnceReport:
        """``once``: follow the configured alarms (and discover, looking back ``since`` seconds when
        given), poll all of them, export everything pending."""
        self.sync_configured_alarms()
        found = self.discover(since=since)
        cycle = self.poll(force=True)
        if found is not None and found.error:
            cycle.errors.append(found.error)
            cycle.failed += 1
        drain = self.send(force=True, deadline=self.clock() + max(30.0, self.config.export.timeout * 3))
        queued = self.store.outbox_stats().depth
        return OnceReport(cycle=cycle, drain=drain, queued=queued)

    def close(self) -> None:
        self.stop.set()
        for closer in (self.client.close, self.sink.shutdown, self.store.close):
            try:
                closer()
            except Exception:  # pragma: no cover - best effort on the way out
                log.debug("close failed", exc_info=True)
