"""Discovery: find alarms through the source and decide which event logs need reading.

Windows: the source's ``discover(start, end)`` answers the alarms *active* in the window (for the
BlueKing source, search_alert's overlap semantics, docs/blueking-api.md §3.2: every open alarm comes back in
every window; paging and splitting capped windows are the source's business, see
:mod:`exporter.sources.bkmonitor`). Each round asks for ``[previous end - overlap, now]`` (first
round: ``now - lookback``; ``once --since`` reaches further back).

API economy: an alarm's event log is read (made due) when it is new, when its change token
(``update_time|status|severity``) moved, when it is reopened after retirement, when it had expired
(get_event_log answered 3324002) and search_alert lists it all the same, or when its last full
read is older than ``poll.full_reread_interval`` (the safety net). Otherwise discovery leaves it
alone, so get_event_log calls grow with what changes, not with how many alarms are open.

On a shared store only the replica holding the ``discovery`` role runs a round.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from exporter.errors import BkApiError, BkAuthError
from exporter.model import TERMINAL_STATUSES, AlarmContext, change_token
from exporter.sources.base import Source
from exporter.state.base import StateStore

__all__ = ["DiscoveryReport", "DiscoverySettings", "Discoverer"]

log = logging.getLogger(__name__)

CHECKPOINT = "discovery.window_end"


class DiscoveryMetrics(Protocol):
    def auth_failure(self, message: str | None) -> None: ...


@dataclass(frozen=True)
class DiscoverySettings:
    """The windows and the economy (``alarms.recent``); what to search for is the source's."""

    lookback: float = 3600.0
    overlap: float = 600.0
    interval: float = 60.0
    full_reread_interval: float = 1800.0


@dataclass
class DiscoveryReport:
    ran: bool = False
    alerts: int = 0
    new: int = 0
    changed: int = 0
    reopened: int = 0
    revived: int = 0  # expired (3324002) alarms listed again, followed again
    safety_net: int = 0
    requests: int = 0
    error: str | None = None
    window: tuple[int, int] | None = None
    skipped_alerts: list[str] = field(default_factory=list)


class Discoverer:
    def __init__(
        self,
        source: Source,
        store: StateStore,
        metrics: DiscoveryMetrics,
        settings: DiscoverySettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.store = store
        self.metrics = metrics
        self.settings = settings
        self.clock = clock

    def run(self, *, since: float | None = None) -> DiscoveryReport:
        report = DiscoveryReport()
        now = self.clock()
        if not self.store.acquire_role("discovery", now, ttl=max(3 * self.settings.interval, 30.0)):
            return report
        report.ran = True
        start, end = self._window(now, since)
        report.window = (start, end)
        try:
            found = self.source.discover(start, end)
        except BkAuthError as exc:
            report.error = str(exc)
            self.metrics.auth_failure(str(exc))
            log.error("discovery: BlueKing refused our credentials: %s", exc)
            return report
        except BkApiError as exc:
            report.error = str(exc)
            log.warning("discovery: search_alert failed, the window will be asked again next round: %s", exc)
            return report
        except Exception as exc:  # a bug in a source plugin: contained like a failed search
            report.error = f"source failed: {type(exc).__name__}: {exc}"
            log.error("discovery: %s; the window will be asked again next round", report.error, exc_info=exc)
            return report
        report.requests += found.calls
        for reason in found.skipped:
            report.skipped_alerts.append(reason)
            log.warning("discovery: skipping an alert that cannot be used: %s", reason)
        self._apply(found.alarms, now, report)
        self.store.set_meta(CHECKPOINT, str(end))
        log.info(
            "discovery: %d alarms active in the window, %d new, %d changed, %d reopened, %d expired followed again, "
            "%d safety re-reads (%d search_alert calls)",
            report.alerts,
            report.new,
            report.changed,
            report.reopened,
            report.revived,
            report.safety_net,
            report.requests,
        )
        return report

    # -- the window ---------------------------------------------------------------------------------
    def _window(self, now: float, since: float | None) -> tuple[int, int]:
        end = int(now)
        previous = self.store.get_meta(CHECKPOINT)
        try:
            start = int(float(previous)) - int(self.settings.overlap) if previous else end - int(self.settings.lookback)
        except ValueError:
            start = end - int(self.settings.lookback)
        if since is not None:
            start = min(start, end - int(since))
        return min(start, end - 1), end

    # -- deciding what to read ----------------------------------------------------------------------
    def _apply(self, alarms: Sequence[AlarmContext], now: float, report: DiscoveryReport) -> None:
        reread_before = now - self.settings.full_reread_interval if self.settings.full_reread_interval > 0 else None
        for ctx in alarms:
            report.alerts += 1
            token = change_token(ctx)
            known = self.store.get_alarm(ctx.alarm_id)
            if known is None:
                report.new += 1
                self.store.upsert_alarm(ctx, source="discovered", now=now, due=True, change_token=token)
                continue
            merged = _merge(known.context, ctx)
            if known.phase == "expired":
                # get_event_log answered 3324002 (unknown alarm), yet search_alert lists it: BlueKing
                # knows it (an alarm read before it was indexed). Read it again, from where it was.
                report.revived += 1
                log.info(
                    "alarm %s: listed by BlueKing again (status %s) after an 'unknown alarm' answer: followed again",
                    ctx.alarm_id,
                    ctx.status,
                )
                self.store.upsert_alarm(merged, source="discovered", now=now, due=True, change_token=token)
                continue
            if known.phase == "retired":
                reopened = token != known.change_token and ctx.status not in TERMINAL_STATUSES
                if reopened:
                    report.reopened += 1
                    log.info("alarm %s is active again (status %s): followed again", ctx.alarm_id, ctx.status)
                self.store.upsert_alarm(
                    merged,
                    source="discovered",
                    now=now,
                    due=reopened,
                    change_token=token if reopened else None,
                )
                continue
            changed = token != known.change_token
            last_read = known.last_full_read or 0.0
            stale = reread_before is not None and last_read < reread_before - _spread(ctx.alarm_id, self.settings)
            # update_time has one-second resolution: a record added later in the second of our last
            # read leaves the token as it was, so read such an alarm once more.
            racy = ctx.update_time is not None and last_read > 0 and ctx.update_time + 1 > last_read
            if changed or racy:
                report.changed += 1
            elif stale:
                report.safety_net += 1
            elif merged == known.context and (known.phase != "active" or known.retired_at is None):
                continue  # the upsert would write the row back as it is: one transaction saved per alarm
            self.store.upsert_alarm(
                merged, source="discovered", now=now, due=changed or racy or stale, change_token=token
            )


def _spread(alarm_id: str, settings: DiscoverySettings) -> float:
    """Up to a fifth of the safety-net interval, fixed per alarm, so that alarms discovered together
    are not all re-read in the same round."""
    return settings.full_reread_interval * 0.2 * (zlib.crc32(alarm_id.encode()) % 1000) / 1000


def _merge(old: AlarmContext, new: AlarmContext) -> AlarmContext:
    """search_alert's view wins; what it does not say is kept."""
    updates = {k: v for k, v in vars(new).items() if v not in (None, (), "")}
    return replace(old, **updates)
