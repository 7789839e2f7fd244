"""The built-in ``bkmonitor`` source: BlueKing Monitor's ``get_event_log`` and ``search_alert``.

``fetch``     ``get_event_log`` for the alarm (the client retries transient failures), then
              :func:`~exporter.sources.bkmonitor.records.parse_event_log` in ``bkmonitor.timezone``.
``discover``  ``search_alert`` over the window (docs/blueking-api.md §3.2: it selects alarms *active* in
              ``[start_time, end_time]``), paged to the end with an explicit stable ordering; a
              capped result is split by time, or by create_time when open alarms cause the cap,
              within bounds (:mod:`~exporter.sources.bkmonitor.alertsearch`). Alerts become
              :class:`~exporter.model.AlarmContext` through :func:`~exporter.sources.bkmonitor.alerts.parse_alert`.

With ``bkmonitor.api: apigw`` the plugin builds a
:class:`~exporter.sources.bkmonitor.gateway.GatewaySource` instead (the same discovery; the flow
records synthesised from alert and action search).

Configured by the ``bkmonitor:`` section (the client) and ``alarms.recent`` (the search filter);
it takes no ``plugins.source.options``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from exporter.errors import BkApiError
from exporter.model import AlarmContext
from exporter.plugins import NoOptions, Plugin, PluginContext, settings_from
from exporter.sources.base import Discovered, FetchResult
from exporter.sources.bkmonitor.alerts import parse_alert
from exporter.sources.bkmonitor.alertsearch import MAX_CALLS, MIN_WINDOW, RESULT_WINDOW, AlertCollector
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
    result_window: int = RESULT_WINDOW  # a result this large is capped: split
    max_calls: int = MAX_CALLS  # search_alert calls per discovery round


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
        s = self.search
        self.collector = AlertCollector(
            lambda body: self.api.search_alert(body),
            self._body,
            page_size=s.page_size,
            result_window=s.result_window,
            max_calls=s.max_calls,
        )

    # -- fetch ----------------------------------------------------------------------------------------
    def fetch(self, alarm: AlarmContext) -> FetchResult:
        data = self.api.get_event_log(alarm.alarm_id)
        if not isinstance(data, list):
            raise BkApiError(f"data is a {type(data).__name__}, not a list", endpoint="get_event_log")
        return parse_event_log(alarm.alarm_id, data, tz=self.timezone, observed_ns=self.clock_ns())

    # -- discover -------------------------------------------------------------------------------------
    def discover(self, start: int, end: int) -> Discovered:
        found, calls = self.collector.collect(start, end)
        alarms: dict[str, AlarmContext] = {}
        skipped: list[str] = []
        for raw in found.values():
            try:
                ctx = parse_alert(raw)
            except ValueError as exc:
                skipped.append(str(exc))
                continue
            alarms[ctx.alarm_id] = ctx
        return Discovered(alarms=list(alarms.values()), skipped=skipped, calls=calls)

    def _body(
        self,
        start: int,
        end: int,
        extra: Sequence[Mapping[str, Any]] = (),
        page: int = 1,
        ordering: Sequence[str] = ("-create_time", "-seq_id"),  # stable while alarms change status
        page_size: int | None = None,
    ) -> dict[str, Any]:
        s = self.search
        return {
            "bk_biz_ids": list(s.bk_biz_ids),
            "start_time": start,
            "end_time": end,
            "status": list(s.status),
            "conditions": [dict(c) for c in (*s.conditions, *extra)],
            "query_string": s.query_string,
            "ordering": list(ordering),
            "page": page,
            "page_size": page_size or s.page_size,
            "show_overview": False,
            "show_aggs": False,
        }

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
        timeout=bk.effective_timeout,
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
    if options.api == "apigw":
        from exporter.sources.bkmonitor.gateway import GatewaySource

        return GatewaySource(client, timezone=ZoneInfo(options.timezone), search=search)
    return BkMonitorSource(client, timezone=ZoneInfo(options.timezone), search=search)


plugin: Plugin[BkMonitorSource] = Plugin(
    kind="source",
    name="bkmonitor",
    options=NoOptions,
    create=_create,
    description=(
        "BlueKing Monitor get_event_log + search_alert on the ESB, or alert and action search on the bk-monitor "
        "gateway (configured by bkmonitor: and alarms.recent:)"
    ),
    section="bkmonitor",
)
