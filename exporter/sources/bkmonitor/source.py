"""The built-in ``bkmonitor`` source: BlueKing Monitor's ``get_event_log`` and ``search_alert``.

``fetch``     ``get_event_log`` for the alarm (the client retries transient failures), then
              :func:`~exporter.sources.bkmonitor.records.parse_event_log` in ``bkmonitor.timezone``.
``discover``  ``search_alert`` over the window (docs/blueking-api.md §3.2: it selects alarms *active* in
              ``[start_time, end_time]``), paged to the end with an explicit stable ordering; when
              the result is capped (``total_relation: gte``, or Elasticsearch's result window would
              be exceeded) the window is split in halves. Alerts become
              :class:`~exporter.model.AlarmContext` through :func:`~exporter.sources.bkmonitor.alerts.parse_alert`.

Configured by the ``bkmonitor:`` section (the client) and ``alarms.recent`` (the search filter);
it takes no ``plugins.source.options``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from exporter.errors import BkApiError
from exporter.model import AlarmContext
from exporter.plugins import NoOptions, Plugin, PluginContext, settings_from
from exporter.sources.base import Discovered, FetchResult
from exporter.sources.bkmonitor.alerts import parse_alert
from exporter.sources.bkmonitor.records import parse_event_log

if TYPE_CHECKING:
    from exporter.config import BkMonitorConfig, Config
    from exporter.sources.bkmonitor.client import BkClientSettings

__all__ = [
    "MIN_WINDOW",
    "RESULT_WINDOW",
    "BkApi",
    "BkMonitorSource",
    "SearchSettings",
    "client_settings",
    "plugin",
    "search_settings",
]

log = logging.getLogger(__name__)

RESULT_WINDOW = 10_000  # Elasticsearch's default index.max_result_window
MIN_WINDOW = 1.0  # seconds; a window this small is not split further


class BkApi(Protocol):
    """The two BlueKing calls (:class:`~exporter.sources.bkmonitor.client.BkClient` has them)."""

    def get_event_log(self, alarm_id: str) -> list[Any]: ...

    def search_alert(self, body: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SearchSettings:
    """The ``search_alert`` filter (``alarms.recent``)."""

    bk_biz_ids: tuple[int, ...] = ()
    status: tuple[str, ...] = ("ABNORMAL", "RECOVERED", "CLOSED")
    query_string: str = ""
    conditions: tuple[Mapping[str, Any], ...] = ()
    page_size: int = 500


class BkMonitorSource:
    """The :class:`~exporter.sources.base.Source` over a BlueKing client."""

    def __init__(
        self,
        api: BkApi,
        *,
        timezone: tzinfo | None = None,
        search: SearchSettings | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.api = api
        self.timezone = timezone or ZoneInfo("Asia/Shanghai")
        self.search = search or SearchSettings()
        self.clock_ns = clock_ns

    # -- fetch ----------------------------------------------------------------------------------------
    def fetch(self, alarm: AlarmContext) -> FetchResult:
        data = self.api.get_event_log(alarm.alarm_id)
        if not isinstance(data, list):
            raise BkApiError(f"data is a {type(data).__name__}, not a list", endpoint="get_event_log")
        return parse_event_log(alarm.alarm_id, data, tz=self.timezone, observed_ns=self.clock_ns())

    # -- discover -------------------------------------------------------------------------------------
    def discover(self, start: int, end: int) -> Discovered:
        calls = [0]
        found = self._search(start, end, calls)
        alarms: dict[str, AlarmContext] = {}
        skipped: list[str] = []
        for raw in found.values():
            try:
                ctx = parse_alert(raw)
            except ValueError as exc:
                skipped.append(str(exc))
                continue
            alarms[ctx.alarm_id] = ctx
        return Discovered(alarms=list(alarms.values()), skipped=skipped, calls=calls[0])

    def _body(self, start: int, end: int, page: int) -> dict[str, Any]:
        s = self.search
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

    def _search(self, start: int, end: int, calls: list[int]) -> dict[str, Any]:
        """Every alert of the window, by id. Splits the window when BlueKing caps the result."""
        found: dict[str, Any] = {}
        page = 1
        size = self.search.page_size
        while True:
            data = self.api.search_alert(self._body(start, end, page))
            calls[0] += 1
            alerts = data.get("alerts") if isinstance(data, dict) else None
            if not isinstance(alerts, list):
                raise BkApiError("search_alert: data has no alerts list", endpoint="search_alert")
            raw_total = data.get("total")
            total = raw_total if isinstance(raw_total, int) else len(alerts)
            capped = data.get("total_relation") == "gte" or total >= RESULT_WINDOW
            if capped and end - start > MIN_WINDOW:
                middle = (start + end) // 2
                log.info("discovery: window %d..%d capped at %s alarms; splitting it", start, end, total)
                found.update(self._search(start, middle, calls))
                found.update(self._search(middle, end, calls))
                return found
            for alert in alerts:
                alarm_id = str(alert.get("id")) if isinstance(alert, dict) else ""
                found[alarm_id] = alert
            fetched = (page - 1) * size + len(alerts)
            if len(alerts) < size or fetched >= total:
                return found
            if (page + 1) * size > RESULT_WINDOW:
                return found  # only reachable when a 1-second window holds > 10,000 alarms
            page += 1

    def stop(self) -> None:
        """Shutdown has begun: wake the client's backoff sleeps (the calls in them give up)."""
        stop = getattr(self.api, "stop", None)
        if callable(stop):
            stop()

    def close(self) -> None:
        close = getattr(self.api, "close", None)
        if callable(close):
            close()


# -- the plugin -----------------------------------------------------------------------------------------


def client_settings(bk: BkMonitorConfig) -> BkClientSettings:
    """The client's settings from the ``bkmonitor:`` section."""
    from exporter.sources.bkmonitor.client import BkClientSettings

    retry = bk.retry
    return settings_from(
        BkClientSettings,
        bk,
        app_secret=bk.app_secret.get_secret_value() if bk.app_secret else "",
        max_attempts=retry.max_attempts,
        initial_backoff=retry.initial_backoff,
        max_backoff=retry.max_backoff,
    )


def search_settings(config: Config) -> SearchSettings:
    recent = config.alarms.recent
    return SearchSettings(
        bk_biz_ids=tuple(recent.bk_biz_ids),
        status=tuple(recent.status),
        query_string=recent.query_string,
        conditions=tuple(recent.conditions),
        page_size=recent.page_size,
    )


def _create(options: BkMonitorConfig, context: PluginContext) -> BkMonitorSource:
    from exporter.sources.bkmonitor.client import BkClient

    client = BkClient(client_settings(options), observer=context.metrics)
    search = search_settings(context.config)  # the alarms.recent filter
    return BkMonitorSource(client, timezone=ZoneInfo(options.timezone), search=search)


plugin: Plugin[BkMonitorSource] = Plugin(
    kind="source",
    name="bkmonitor",
    options=NoOptions,
    create=_create,
    description="BlueKing Monitor get_event_log + search_alert (configured by bkmonitor: and alarms.recent:)",
    section="bkmonitor",
)
