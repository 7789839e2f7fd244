"""Wiring of the destinations: ``export:`` (``default``) and each entry of ``destinations:``.

Each destination has its own guarded sink (a sink plugin through
:func:`~exporter.plugins.create_plugin`; for ``otlp``, ``export:``'s resource with the
destination's OTLP keys), its own :class:`~exporter.pipeline.sender.Sender` (its own backoff and
outage reports) and its own outbox rows. :class:`Delivery` drains them side by side, each on its
own thread, so a destination that is down (a request waiting out its timeout) never delays the
others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

from exporter.config import Config
from exporter.config.destinations import DEFAULT_DESTINATION, DestinationConfig, FilterConfig
from exporter.config.otlp import OTLP_KEYS, OtlpOptions
from exporter.pipeline.filters import Route
from exporter.pipeline.sender import DrainReport, Sender, SenderSettings, SendMetrics
from exporter.plugins import PluginContext, create_plugin
from exporter.sinks.base import Sink
from exporter.state.base import StateStore

__all__ = ["Delivery", "all_signals", "build_destination_sink", "routes", "sender_settings"]

log = logging.getLogger(__name__)


def routes(config: Config) -> tuple[Route, ...]:
    """Every destination as the poller sees it: ``default`` (``export:``) first."""
    export = config.export
    out = [Route(DEFAULT_DESTINATION, frozenset(export.signals), export.filter)]
    out.extend(Route(d.name, frozenset(d.signals or export.signals), d.filter) for d in config.destinations)
    return tuple(out)


def all_signals(config: Config) -> frozenset[str]:
    """The signals some destination takes."""
    return frozenset().union(*(r.signals for r in routes(config)))


def sender_settings(config: Config, destination: DestinationConfig | None = None) -> SenderSettings:
    """The sender settings of ``destination`` (None: ``export:``): its signals; an OTLP
    destination's batch bounds; ``export.retry`` for the backoff."""
    export = config.export
    bounds: OtlpOptions = export
    signal_bounds: tuple[tuple[str, int, int], ...] = ()
    if destination is not None and isinstance(destination.options, OtlpOptions):
        bounds = destination.options
    elif destination is None:  # export.logs / export.spans may bound their own batches
        signal_bounds = tuple(
            (signal, own.batch_size, own.max_batch_bytes)
            for signal in ("logs", "spans")
            if (own := export.for_signal(signal)) is not export
        )
    return SenderSettings(
        signals=tuple(destination.signals or export.signals) if destination is not None else tuple(export.signals),
        batch_size=bounds.batch_size,
        max_batch_bytes=bounds.max_batch_bytes,
        initial_backoff=export.retry.initial_backoff,
        max_backoff=export.retry.max_backoff,
        signal_bounds=signal_bounds,
    )


def build_destination_sink(destination: DestinationConfig, context: PluginContext) -> Sink:
    """The guarded sink of one ``destinations:`` entry."""
    from exporter.sinks.guard import GuardedSink

    config = context.config
    if destination.sink == "otlp":
        # The built-in otlp sink is configured by its section: give it one with this destination's
        # OTLP keys (and export:'s resource).
        options = (
            destination.options if isinstance(destination.options, OtlpOptions) else OtlpOptions.model_validate({})
        )
        export = config.export.model_copy(
            update={key: getattr(options, key) for key in OTLP_KEYS}
            | {"logs": None, "spans": None, "filter": FilterConfig(), "console": False}
        )
        context = PluginContext(
            config.model_copy(update={"export": export}),
            metrics=context.metrics,
            instance_id=context.instance_id,
            clock=context.clock,
        )
        sink = create_plugin("sink", "otlp", None, context)
    else:
        sink = create_plugin("sink", destination.sink, destination.options, context)
    return GuardedSink(sink, destination.sink)


def build_destination_sinks(config: Config, context: PluginContext) -> dict[str, Sink]:
    """The sinks of every ``destinations:`` entry; all or nothing."""
    sinks: dict[str, Sink] = {}
    try:
        for destination in config.destinations:
            sinks[destination.name] = build_destination_sink(destination, context)
    except BaseException:
        for sink in sinks.values():
            sink.shutdown()
        raise
    return sinks


class Delivery:
    """One sender per destination, drained side by side."""

    def __init__(
        self,
        store: StateStore,
        metrics: SendMetrics,
        *,
        clock: Callable[[], float],
        stop: threading.Event,
    ) -> None:
        self.store, self.metrics, self.clock, self.stop = store, metrics, clock, stop
        self.senders: dict[str, Sender] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._running: dict[str, Future[DrainReport]] = {}
        self._mu = threading.Lock()
        #: told every finished drain's report, also of a drain that outlived its call
        self.on_report: Callable[[DrainReport], None] = lambda report: None

    def configure(self, config: Config, sinks: dict[str, Sink]) -> list[Sink]:
        """Use these sinks (``default`` and every destination's) and settings. Returns the sinks no
        longer used (replaced, or of a destination removed), to shut down."""
        settings = {DEFAULT_DESTINATION: sender_settings(config)}
        settings.update({d.name: sender_settings(config, d) for d in config.destinations})
        old: list[Sink] = []
        for name, sink in sinks.items():
            sender = self.senders.get(name)
            if sender is None:
                self.senders[name] = Sender(
                    self.store, sink, self.metrics, settings[name], clock=self.clock, stop=self.stop, destination=name
                )
                continue
            sender.settings = settings[name]
            if sender.sink is not sink:
                old.append(sender.replace_sink(sink))
        for name in [n for n in self.senders if n not in sinks]:
            log.warning("destination %s is no longer configured: its queued records stay in the outbox, unsent", name)
            old.append(self.senders.pop(name).sink)
            self.metrics.forget_destination(name)
        return old

    def drain(self, *, force: bool = False, deadline: float | None = None) -> DrainReport:
        """Drain every destination; each on its own thread when there are several. ``force`` waits
        for every drain; otherwise a destination still draining from the last call (waiting on a
        slow or dead backend) is left to it and the others go on."""
        senders = list(self.senders.items())
        if len(senders) == 1:
            report = senders[0][1].drain(force=force, deadline=deadline)
            self.on_report(report)
            return report
        with self._mu:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="send")
            futures = []
            for name, sender in senders:
                running = self._running.get(name)
                if running is not None and not running.done() and not force:
                    continue
                future = self._pool.submit(self._drain_one, sender, force, deadline)
                self._running[name] = future
                futures.append(future)
        done, _ = wait_futures(futures, timeout=None if force else 1.0)
        total = DrainReport(skipped=True)
        for future in done:
            try:
                part = future.result()
            except Exception:
                log.exception("a destination's drain failed")
                total.failed = True
                continue
            total.exported += part.exported
            total.parked += part.parked
            total.refused += part.refused
            total.failed = total.failed or part.failed
            total.skipped = total.skipped and part.skipped
        return total

    def _drain_one(self, sender: Sender, force: bool, deadline: float | None) -> DrainReport:
        report = sender.drain(force=force, deadline=deadline)
        if self.senders.get(sender.destination) is not sender:  # removed by a reload meanwhile
            self.metrics.forget_destination(sender.destination)  # its drain published once more
        self.on_report(report)
        return report

    def close(self) -> None:
        with self._mu:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
