"""The source on the ``bk-monitor`` API gateway (``bkmonitor.api: apigw``): no flow-log endpoint there.

``discover``  the same as on the ESB, through ``POST …/app/alert/search/`` (the same body as
              ``search_alert``; see :class:`~exporter.sources.bkmonitor.source.BkMonitorSource`).
``fetch``     one alert search for the alarm by id (so ``alarms.ids`` work: each id is resolved
              through alert search), then ``POST …/app/action/search/`` for its actions, paged; the
              flow records are synthesised from both (:mod:`~exporter.sources.bkmonitor.synth`) and
              the alarm's current context goes back with them. An id the search does not know is
              :class:`~exporter.errors.BkNotFoundError` (the pipeline marks it expired).

The search window of an id lookup starts at the alert's begin time: the stored one, else the
10-digit epoch BlueKing alert ids start with, else ``LOOKUP_SPAN`` back; it ends now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import tzinfo
from typing import Any, Protocol

from exporter.errors import BkNotFoundError, BkResponseError
from exporter.model import TERMINAL_STATUSES, AlarmContext
from exporter.sources.base import FetchResult, Malformed
from exporter.sources.bkmonitor.source import BkMonitorSource, SearchSettings
from exporter.sources.bkmonitor.synth import Observations, synthesize

__all__ = ["ACTION_PAGE_SIZE", "LOOKUP_SPAN", "MAX_ACTION_PAGES", "GatewayApi", "GatewaySource"]

log = logging.getLogger(__name__)

ACTION_PAGE_SIZE = 500  # the gateway accepts 0..1000
MAX_ACTION_PAGES = 20  # 10,000 actions per alarm at most
LOOKUP_SPAN = 180 * 86400  # an id lookup without any begin time looks back this far


class GatewayApi(Protocol):
    """What the gateway source calls (:class:`~exporter.sources.bkmonitor.client.BkClient` has both)."""

    def search_alert(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def search_action(self, body: Mapping[str, Any]) -> dict[str, Any]: ...


def _begin_from_id(alarm_id: str, now: float) -> int | None:
    head = alarm_id[:10]
    if len(alarm_id) > 10 and head.isdigit() and 1_000_000_000 <= int(head) <= now + 86400:
        return int(head)
    return None


class GatewaySource(BkMonitorSource):
    """The :class:`~exporter.sources.base.Source` over the bk-monitor gateway."""

    api: GatewayApi  # type: ignore[assignment]

    def __init__(
        self,
        api: GatewayApi,
        *,
        timezone: tzinfo | None = None,
        search: SearchSettings | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        observations: Observations | None = None,
    ) -> None:
        super().__init__(api, timezone=timezone, search=search, clock_ns=clock_ns)  # type: ignore[arg-type]
        self.observations = observations or Observations()

    def fetch(self, alarm: AlarmContext) -> FetchResult:
        alert = self._lookup(alarm)
        actions, skipped = self._actions(alarm, alert)
        try:
            result = synthesize(
                alert, actions, known=alarm, observations=self.observations, observed_ns=self.clock_ns()
            )
        except ValueError as exc:
            raise BkResponseError(f"alert {alarm.alarm_id} cannot be used: {exc}", endpoint="search_alert") from None
        result.malformed.extend(skipped)
        if result.context is not None and result.context.status in TERMINAL_STATUSES:
            # over: nothing more to compare (forgetting is safe, uids do not depend on this memory)
            self.observations.forget(alarm.alarm_id)
        return result

    # -- the alert ---------------------------------------------------------------------------------
    def _businesses(self, alarm: AlarmContext) -> list[int]:
        if alarm.bk_biz_id is not None:
            return [alarm.bk_biz_id]
        return list(self.search.bk_biz_ids) or [-1]

    def _lookup(self, alarm: AlarmContext) -> Mapping[str, Any]:
        now = self.clock_ns() / 1e9
        begin = alarm.begin_time or alarm.create_time or _begin_from_id(alarm.alarm_id, now)
        start = int(begin) - 1 if begin else int(now) - LOOKUP_SPAN
        body = {
            "bk_biz_ids": self._businesses(alarm),
            "start_time": start,
            "end_time": int(now),
            "conditions": [{"key": "id", "value": [alarm.alarm_id], "method": "eq", "condition": "and"}],
            "query_string": "",
            "ordering": ["-create_time"],
            "page": 1,
            "page_size": 1,
            "show_overview": False,
            "show_aggs": False,
        }
        data = self.api.search_alert(body)
        alerts = data.get("alerts") if isinstance(data, dict) else None
        if not isinstance(alerts, list):
            raise BkResponseError("data has no alerts list", endpoint="search_alert")
        for alert in alerts:
            if isinstance(alert, Mapping) and str(alert.get("id", "")).strip() == alarm.alarm_id:
                return alert
        raise BkNotFoundError(
            f"alert {alarm.alarm_id} not found by alert search since {start} (unknown id, or past retention)",
            endpoint="search_alert",
        )

    # -- its actions -------------------------------------------------------------------------------
    def _actions(self, alarm: AlarmContext, alert: Mapping[str, Any]) -> tuple[list[Any], list[Malformed]]:
        raw_biz = alert.get("bk_biz_id")
        businesses = [int(str(raw_biz))] if str(raw_biz).lstrip("-").isdigit() else self._businesses(alarm)
        found: dict[str, Any] = {}
        skipped: list[Malformed] = []
        for page in range(1, MAX_ACTION_PAGES + 1):
            body = {
                "bk_biz_ids": businesses,
                "alert_ids": [alarm.alarm_id],
                "conditions": [],
                "query_string": "",
                "ordering": ["create_time"],
                "page": page,
                "page_size": ACTION_PAGE_SIZE,
                "show_overview": False,
                "show_aggs": False,
            }
            data = self.api.search_action(body)
            actions = data.get("actions") if isinstance(data, dict) else None
            if not isinstance(actions, list):
                raise BkResponseError("data has no actions list", endpoint="search_action")
            for index, action in enumerate(actions):
                if not isinstance(action, Mapping) or not str(action.get("id", "")).strip():
                    skipped.append(Malformed(index, "action without an id", f"action-page{page}-{index}"))
                    continue
                # alert_id is a list of alert ids: an action of several alerts belongs to each
                owners = action.get("alert_id")
                if isinstance(owners, list) and owners and alarm.alarm_id not in {str(o) for o in owners}:
                    continue
                found[str(action["id"])] = action
            total = data.get("total")
            if len(actions) < ACTION_PAGE_SIZE or (isinstance(total, int) and page * ACTION_PAGE_SIZE >= total):
                break
        else:
            log.warning(
                "alarm %s: more than %d actions; only the first %d are read",
                alarm.alarm_id,
                MAX_ACTION_PAGES * ACTION_PAGE_SIZE,
                MAX_ACTION_PAGES * ACTION_PAGE_SIZE,
            )
        return list(found.values()), skipped
