"""Discovery: find alarms through search_alert and decide which event logs need reading.

Windows (BK_API.md §3.2): search_alert selects alarms *active* in ``[start_time, end_time]`` (overlap,
not creation), so every open alarm comes back in every window. Each round asks for
``[previous end - overlap, now]`` (first round: ``now - lookback``; ``once --since`` reaches further
back), pages to the end with an explicit stable ordering, and when the result is capped
(``total_relation: gte``, or the ES result window would be exceeded) splits the window in halves.

API economy: an alarm's event log is read (made due) when it is new, when its change token
(``update_time|status|severity``) moved, when it is reopened after retirement, or when its last full
read is older than ``poll.full_reread_interval`` (the safety net). Otherwise discovery leaves it
alone, so get_event_log calls grow with what changes, not with how many alarms are open.

On a shared store only the replica holding the ``discovery`` role runs a round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from exporter.bkmonitor.alerts import change_token, parse_alert
from exporter.errors import BkApiError, BkAuthError
from exporter.model import AlarmContext
from exporter.pipeline.lifecycle import TERMINAL_STATUSES
from exporter.state.base import StateStore

__all__ = ["DiscoveryReport", "DiscoverySettings", "Discoverer", "SearchSource"]

log = logging.getLogger(__name__)

CHECKPOINT = "discovery.window_end"
RESULT_WINDOW = 10_000  # Elasticsearch's default index.max_result_window
MIN_WINDOW = 1.0  # seconds; a window this small is not split further


class SearchSource(Protocol):
    def search_alert(self, body: Mapping[str, Any]) -> dict[str, Any]: ...


class DiscoveryMetrics(Protocol):
    def set_alarms_followed(self, n: int) -> None: ...
    def auth_failure(self, message: str | None) -> None: ...


@dataclass(frozen=True)
class DiscoverySettings:
    bk_biz_ids: tuple[int, ...]
    lookback: float = 3600.0
    overlap: float = 600.0
    status: tuple[str, ...] = ("ABNORMAL", "RECOVERED", "CLOSED")
    query_string: str = ""
    conditions: tuple[Mapping[str, Any], ...] = ()
    page_size: int = 500
    interval: float = 60.0
    full_reread_interval: float = 1800.0


@dataclass
class DiscoveryReport:
    ran: bool = False
    alerts: int = 0
    new: int = 0
    changed: int = 0
    reopened: int = 0
    safety_net: int = 0
    requests: int = 0
    error: str | None = None
    window: tuple[int, int] | None = None
    skipped_alerts: list[str] = field(default_factory=list)


class Discoverer:
    def __init__(
        self,
        source: SearchSource,
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
            alerts = self._search(start, end, report)
        except BkAuthError as exc:
            report.error = str(exc)
            self.metrics.auth_failure(str(exc))
            log.error("discovery: BlueKing refused our credentials: %s", exc)
            return report
        except BkApiError as exc:
            report.error = str(exc)
            log.warning("discovery: search_alert failed, the window will be asked again next round: %s", exc)
            return report
        self._apply(alerts, now, report)
        self.store.set_meta(CHECKPOINT, str(end))
        self.metrics.set_alarms_followed(len(self.store.list_alarms()))
        log.info(
            "discovery: %d alarms active in the window, %d new, %d changed, %d reopened, %d safety re-reads "
            "(%d search_alert calls)",
            report.alerts,
            report.new,
            report.changed,
            report.reopened,
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

    # -- searching ----------------------------------------------------------------------------------
    def _body(self, start: int, end: int, page: int) -> dict[str, Any]:
        s = self.settings
        return {
            "bk_biz_ids": list(s.bk_biz_ids),
            "start_time": start,
            "end_time": end,
            "status": list(s.status),
            "conditions": [dict(c) for c in s.conditions],
            "query_string": s.query_string,
            "ordering": ["-create_time", "-seq_id"],  # stable while alarms change status
            "page": page,
            "page_size": s.page_size,
            "show_overview": False,
            "show_aggs": False,
        }

    def _search(self, start: int, end: int, report: DiscoveryReport) -> dict[str, Any]:
        """Every alert of the window, by id. Splits the window when BlueKing caps the result."""
        found: dict[str, Any] = {}
        page = 1
        while True:
            data = self.source.search_alert(self._body(start, end, page))
            report.requests += 1
            alerts = data.get("alerts") if isinstance(data, dict) else None
            if not isinstance(alerts, list):
                raise BkApiError("search_alert: data has no alerts list", endpoint="search_alert")
            raw_total = data.get("total")
            total = raw_total if isinstance(raw_total, int) else len(alerts)
            capped = data.get("total_relation") == "gte" or total >= RESULT_WINDOW
            if capped and end - start > MIN_WINDOW:
                middle = (start + end) // 2
                log.info("discovery: window %d..%d capped at %s alarms; splitting it", start, end, total)
                found.update(self._search(start, middle, report))
                found.update(self._search(middle, end, report))
                return found
            for alert in alerts:
                alarm_id = str(alert.get("id")) if isinstance(alert, dict) else ""
                found[alarm_id] = alert
            fetched = (page - 1) * self.settings.page_size + len(alerts)
            if len(alerts) < self.settings.page_size or fetched >= total:
                return found
            if (page + 1) * self.settings.page_size > RESULT_WINDOW:
                return found  # only reachable when a 1-second window holds > 10,000 alarms
            page += 1

    # -- deciding what to read ----------------------------------------------------------------------
    def _apply(self, alerts: Mapping[str, Any], now: float, report: DiscoveryReport) -> None:
        reread_before = now - self.settings.full_reread_interval if self.settings.full_reread_interval > 0 else None
        for raw in alerts.values():
            try:
                ctx = parse_alert(raw)
            except ValueError as exc:
                report.skipped_alerts.append(str(exc))
                log.warning("discovery: skipping an alert that cannot be used: %s", exc)
                continue
            report.alerts += 1
            token = change_token(ctx)
            known = self.store.get_alarm(ctx.alarm_id)
            if known is None:
                report.new += 1
                self.store.upsert_alarm(ctx, source="discovered", now=now, due=True, change_token=token)
                continue
            merged = _merge(known.context, ctx)
            if known.phase in ("retired", "expired"):
                reopened = token != known.change_token and ctx.status not in TERMINAL_STATUSES
                if known.phase == "retired" and reopened:
                    report.reopened += 1
                    log.info("alarm %s is active again (status %s): followed again", ctx.alarm_id, ctx.status)
                self.store.upsert_alarm(
                    merged,
                    source="discovered",
                    now=now,
                    due=reopened and known.phase == "retired",
                    change_token=token if reopened else None,
                )
                continue
            changed = token != known.change_token
            stale = reread_before is not None and (known.last_full_read or 0.0) < reread_before
            if changed:
                report.changed += 1
            elif stale:
                report.safety_net += 1
            self.store.upsert_alarm(merged, source="discovered", now=now, due=changed or stale, change_token=token)


def _merge(old: AlarmContext, new: AlarmContext) -> AlarmContext:
    """search_alert's view wins; what it does not say is kept."""
    updates = {k: v for k, v in vars(new).items() if v not in (None, (), "")}
    return replace(old, **updates)
