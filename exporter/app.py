"""Wiring: a validated Config in, a ready pipeline out (store, source, mapper, sink, poller, sender).

This is the only place that knows how the parts fit together; ``cli`` and ``scheduler`` use it,
tests and the demo build it with injected parts (a simulator URL, a memory sink).

The source, the mapper and the sink are the plugins ``plugins.source``, ``plugins.mapper`` and
``plugins.sink`` name (:mod:`exporter.plugins`; by default ``bkmonitor``, ``default``, ``otlp``:
the BlueKing client, the docs/reference.md mapping and OTLP from ``export.*``). A plugin sink sits
behind :class:`~exporter.sinks.guard.GuardedSink` (an exception is a RETRY), the mapper behind
:class:`~exporter.mapping.base.GuardedMapper` (an exception fails that alarm's poll, nothing is
committed); ``export.console`` adds the console sink beside any sink but ``console``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.config import Config
from exporter.destinations import Delivery, all_signals, build_destination_sinks, routes
from exporter.mapping.base import GuardedMapper, Mapper, guarded
from exporter.metrics import Metrics
from exporter.model import AlarmContext
from exporter.pipeline.discovery import Discoverer, DiscoveryReport, DiscoverySettings
from exporter.pipeline.poller import CycleReport, Poller, PollSettings
from exporter.pipeline.sender import DrainReport, Sender
from exporter.plugins import PluginContext, create_plugin
from exporter.sinks.base import Sink
from exporter.sources.base import Source
from exporter.state import StateStore, open_store
from exporter.state.base import PollCommit

__all__ = ["App", "OnceReport", "build_mapper", "build_sink", "build_source"]

log = logging.getLogger(__name__)


def _plugin(kind: str, context: PluginContext) -> Any:
    ref = getattr(context.config.plugins, kind)
    return create_plugin(kind, ref.name, ref.options, context)


def build_source(context: PluginContext) -> Source:
    """The ``plugins.source`` source (by default the BlueKing client)."""
    source: Source = _plugin("source", context)
    return source


def build_mapper(context: PluginContext) -> GuardedMapper:
    """The ``plugins.mapper`` mapper, guarded (by default the docs/reference.md mapping)."""
    mapper: Mapper = _plugin("mapper", context)
    return guarded(mapper, context.config.plugins.mapper.name)


def build_sink(config: Config, instance_id: str, *, context: PluginContext | None = None) -> Sink:
    """The ``plugins.sink`` sink (by default OTLP from ``export.*``), guarded, with the console sink
    beside it when ``export.console`` is set."""
    from exporter.sinks.fanout import FanoutSink
    from exporter.sinks.guard import GuardedSink

    context = context or PluginContext(config, instance_id=instance_id)
    name = config.plugins.sink.name
    sink: Sink = GuardedSink(_plugin("sink", context), name)
    if config.export.console and name != "console":
        from exporter.sinks.console import ConsoleSink

        sink = FanoutSink(sink, [GuardedSink(ConsoleSink())])
    return sink


def instance_id(config: Config, store: StateStore) -> str:
    """This process's ``service.instance.id``: the operator's (``export.resource_attributes`` or
    ``OTEL_RESOURCE_ATTRIBUTES``), else the store's for this process (one per replica of a shared
    store; the SQLite file's own, which one process owns)."""
    configured = config.export.resource_attributes.get("service.instance.id")
    own = getattr(store, "instance_id", None)
    return configured or (own if isinstance(own, str) and own else None) or store.get_meta("instance_id") or "unknown"


def _built(sink: Sink | None) -> Sink:
    if sink is None:  # pragma: no cover - _build_plugins(with_sink=True) always builds one
        raise RuntimeError("no sink was built")
    return sink


@dataclass
class OnceReport:
    cycle: CycleReport
    drain: DrainReport
    queued: int  # rows still queued of the signals exported (stranded rows of others not counted)

    @property
    def exit_code(self) -> int:
        """0 when everything fetched was delivered; 1 when delivery failed (queued or parked records)
        or fetching failed (BlueKing errors: the records are read again next time). Rows of a signal
        not in ``export.signals`` (stranded: they were queued before it was removed) do not count:
        this run could never send them; start-up warns about them, ``status`` shows them."""
        delivered = self.queued == 0 and not self.drain.failed and self.drain.parked == 0
        return 0 if (delivered and self.cycle.ok) else 1


class App:
    """The assembled pipeline. ``close()`` releases the store, the source and the sink."""

    def __init__(
        self,
        config: Config,
        *,
        sink: Sink | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.config = config
        self.stop = threading.Event()
        poll_interval = config.poll.interval
        self.metrics = metrics or Metrics(
            poll_stale_after=max(300.0, 3 * poll_interval),
            export_stale_after=max(300.0, 3 * poll_interval),
            outbox_capacity=config.state.max_queued_records,
        )
        self.store = store or open_store(
            config.state.path,
            url=config.state.url.get_secret_value() if config.state.url else None,
            max_queued=config.state.max_queued_records,
            lease=config.state.lease,
            exclusive=True,  # one exporter per state file (status reads it without the lock)
            instance_id=config.export.resource_attributes.get("service.instance.id"),
        )
        # Due times and retirements are compared across replicas: a shared store offers the
        # database's clock for them (time.time() otherwise).
        self.clock: Callable[[], float] = clock or getattr(self.store, "clock", None) or time.time
        try:
            self.instance_id = instance_id(config, self.store)
            self.source, self.mapper, built = self._build_plugins(config, with_sink=sink is None)
            self.sink: Sink = sink if sink is not None else _built(built)
            others = build_destination_sinks(config, self._context(config))
        except BaseException:
            self.store.close()
            raise
        self._own_sink = sink is None
        self.poller = self._build_poller(config)
        self.discoverer = self._build_discoverer(config)
        self.delivery = Delivery(self.store, self.metrics, clock=self.clock, stop=self.stop)
        self.delivery.on_report = self._delivered
        self.delivery.configure(config, {"default": self.sink, **others})
        self.warn_stranded()

    @property
    def sender(self) -> Sender:
        """The sender of ``export:`` (the ``default`` destination)."""
        return self.delivery.senders["default"]

    @property
    def senders(self) -> dict[str, Sender]:
        """Every destination's sender, by name."""
        return self.delivery.senders

    def _context(self, config: Config) -> PluginContext:
        return PluginContext(config, metrics=self.metrics, instance_id=self.instance_id, clock=self.clock)

    def _build_plugins(self, config: Config, *, with_sink: bool) -> tuple[Source, GuardedMapper, Sink | None]:
        """Source, mapper and (``with_sink``) sink for ``config``; all or nothing."""
        context = self._context(config)
        source = build_source(context)
        try:
            mapper = build_mapper(context)
            return source, mapper, build_sink(config, self.instance_id, context=context) if with_sink else None
        except BaseException:
            source.close()
            raise

    def _build_poller(self, config: Config) -> Poller:
        from exporter.pipeline.spans import SpanPlanner

        signals = all_signals(config)
        return Poller(
            self.source,
            self.store,
            self.metrics,
            PollSettings(
                interval=config.poll.interval,
                retire_after=config.poll.retire_after,
                jitter=config.poll.jitter,
                max_concurrency=config.bkmonitor.max_concurrency,
                signals=signals,
                full_reread_interval=config.poll.full_reread_interval if config.alarms.recent.enabled else 0.0,
                routes=routes(config),
            ),
            mapper=self.mapper,
            spans=SpanPlanner(self.store, event=self.mapper.map_span_event) if "spans" in signals else None,
            clock=self.clock,
            stop=self.stop,
        )

    def _build_discoverer(self, config: Config) -> Discoverer | None:
        recent = config.alarms.recent
        if not recent.enabled:
            return None
        return Discoverer(
            self.source,
            self.store,
            self.metrics,
            DiscoverySettings(
                lookback=recent.lookback,
                overlap=recent.overlap,
                interval=recent.interval,
                full_reread_interval=config.poll.full_reread_interval,
            ),
            clock=self.clock,
        )

    def apply(self, config: Config) -> None:
        """Apply a reloaded config: new source, mapper, sink and settings; the store and its queue
        stay. When a plugin cannot be created, nothing changes and the error is raised."""
        source, mapper, sink = self._build_plugins(config, with_sink=self._own_sink)
        try:
            others = build_destination_sinks(config, self._context(config))
        except BaseException:
            source.close()
            if sink is not None:
                sink.shutdown()
            raise
        if (config.state.path, config.state.url) != (self.config.state.path, self.config.state.url):
            log.warning("state.* changed: takes effect after a restart, not on reload")
        old_source = self.source
        self.config = config
        self.source, self.mapper = source, mapper
        self.poller = self._build_poller(config)
        self.discoverer = self._build_discoverer(config)
        if sink is not None:
            self.sink = sink
        for unused in self.delivery.configure(config, {"default": self.sink, **others}):
            unused.shutdown()
        old_source.close()
        self.sync_configured_alarms()
        self.warn_stranded()

    def warn_stranded(self) -> dict[str, int]:
        """Warn about queued rows of a signal that ``export.signals`` no longer lists: they are
        never sent and count toward the cap. Returns them, per signal."""
        exported = all_signals(self.config)
        stats = self.store.outbox_stats()
        names = {route.name for route in routes(self.config)}
        for name, (queued, parked, _) in sorted(stats.by_destination.items()):
            if name not in names and queued + parked:
                log.warning(
                    "outbox: %d queued and %d parked records are for destination %s, which is not configured: "
                    "they are never sent and count toward state.max_queued_records",
                    queued,
                    parked,
                    name,
                )
        stranded = {k: n for k, n in sorted(stats.by_kind.items()) if k not in exported}
        for signal, count in stranded.items():
            log.warning(
                "outbox: %d queued %s records are stranded: %s is not in export.signals, so they are never "
                "sent and they count toward state.max_queued_records; add %s to export.signals to send them, "
                "or delete them with: bk-otel-exporter purge --signal %s",
                count,
                signal,
                signal,
                signal,
                signal,
            )
        return stranded

    # -- configured alarms --------------------------------------------------------------------------
    def sync_configured_alarms(self) -> None:
        """Follow every ``alarms.ids`` entry; stop following configured alarms no longer listed."""
        now = self.clock()
        wanted = set(self.config.alarms.ids)
        for alarm_id in self.config.alarms.ids:
            known = self.store.get_alarm(alarm_id)
            ctx = known.context if known else AlarmContext(alarm_id=alarm_id)
            # An expired alarm (3324002) still listed is tried again, once per start or reload: a
            # BlueKing that answered "unknown" for an alarm it had not indexed yet knows it now.
            expired = known is not None and known.phase == "expired"
            if expired:
                log.info("alarm %s: in alarms.ids, expired (3324002) earlier: reading it again", alarm_id)
            self.store.upsert_alarm(ctx, source="config", now=now, due=known is None or expired)
        for alarm_id in self.store.alarm_ids(source="config"):
            if alarm_id not in wanted:
                log.info("alarm %s is no longer in alarms.ids: no longer followed", alarm_id)
                self.store.commit_poll(PollCommit(alarm_id, now, phase="retired"))
        self._count_followed()

    def _count_followed(self) -> None:
        self.metrics.set_alarms_followed(len(self.store.alarm_ids()))

    # -- what the daemon's jobs call ----------------------------------------------------------------
    def maintain(self) -> int:
        """Forget alarms retired longer than ``poll.retired_retention`` ago and parked records
        parked longer than ``state.parked_retention`` ago (by the app clock), refresh the gauges;
        returns how many alarms were forgotten."""
        retention = self.config.poll.retired_retention
        now = self.clock()
        pruned = 0
        if retention > 0:
            pruned = self.store.prune(now, now - retention)
            if pruned:
                log.info("forgot %d alarms retired more than %.0f days ago", pruned, retention / 86400)
        keep_parked = self.config.state.parked_retention
        if keep_parked > 0:
            dropped = self.store.prune_parked(now - keep_parked)
            if dropped:
                log.warning(
                    "deleted %d parked records (refused by the backend) parked more than %.1f days ago "
                    "(state.parked_retention)",
                    dropped,
                    keep_parked / 86400,
                )
        self._count_followed()
        return pruned

    def queued(self, *, exported_only: bool = False) -> int:
        """Records waiting in the outbox (``exported_only``: of the signals ``export.signals`` lists)."""
        stats = self.store.outbox_stats()
        if not exported_only:
            return stats.depth
        exported = all_signals(self.config)
        return sum(n for kind, n in stats.by_kind.items() if kind in exported)

    def set_running(self, running: bool) -> None:
        """Report whether the daemon's scheduler is running (``/readyz``)."""
        self.metrics.set_scheduler_running(running)

    # -- one cycle ----------------------------------------------------------------------------------
    def discover(self, *, since: float | None = None) -> DiscoveryReport | None:
        """One discovery round (None when discovery is off)."""
        if self.discoverer is None:
            return None
        report = self.discoverer.run(since=since)
        self._count_followed()
        return report

    def poll(self, *, force: bool = False) -> CycleReport:
        report = self.poller.run_cycle(force=force)
        if report.ok and report.polled:
            self.store.set_meta("last_poll_ok", str(self.clock()))
        return report

    def send(self, *, force: bool = False, deadline: float | None = None) -> DrainReport:
        return self.delivery.drain(force=force, deadline=deadline)

    def _delivered(self, report: DrainReport) -> None:
        if report.exported:  # signals are delivered independently: one that fails does not undo the other
            self.store.set_meta("last_export_ok", str(self.clock()))

    def run_once(self, *, since: float | None = None, on_phase: Callable[[str, int], None] | None = None) -> OnceReport:
        """``once``: follow the configured alarms (and discover, looking back ``since`` seconds when
        given), poll all of them, export everything pending.

        The export goes on while it makes progress: it stops when the outbox is empty, the backend
        fails, or a window of ``max(30 s, 3 × export.timeout)`` passes without a batch delivered.
        ``on_phase(name, total)`` is told when ``discovering``, ``polling`` (total: alarms
        followed) and ``exporting`` (total: records queued) begin, for a progress line.
        """
        phase = on_phase or (lambda name, total: None)
        self.sync_configured_alarms()
        phase("discovering", 0)
        found = self.discover(since=since)
        phase("polling", len(self.store.alarm_ids()))
        cycle = self.poll(force=True)
        if found is not None and found.error:
            cycle.errors.append(found.error)
            cycle.failed += 1
        phase("exporting", self.queued())
        window = max(30.0, self.config.export.timeout * 3)
        drain = DrainReport()
        while True:
            part = self.send(force=True, deadline=self.clock() + window)
            drain.exported, drain.parked = drain.exported + part.exported, drain.parked + part.parked
            drain.failed = drain.failed or part.failed
            if part.failed or not (part.exported or part.parked) or self.stop.is_set() or not self.queued():
                break
        return OnceReport(cycle=cycle, drain=drain, queued=self.queued(exported_only=True))

    def request_stop(self) -> None:
        """Shutdown has begun: set :attr:`stop` and wake the source's backoff sleeps (a source with a
        ``stop()`` method, like the BlueKing client), so no job waits out a long backoff while the
        final flush runs short of time. Safe from a signal handler; ``close()`` still closes."""
        self.stop.set()
        stop = getattr(self.source, "stop", None)
        if callable(stop):
            try:
                stop()
            except Exception:  # pragma: no cover - best effort: close() follows
                log.debug("source stop failed", exc_info=True)

    def close(self) -> None:
        self.stop.set()
        closers = [self.source.close, self.delivery.close]
        closers += [sender.sink.shutdown for sender in self.delivery.senders.values()]
        for closer in (*closers, self.store.close):
            try:
                closer()
            except Exception:  # pragma: no cover - best effort on the way out
                log.debug("close failed", exc_info=True)
