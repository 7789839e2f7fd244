"""Every alert of a discovery window, in a bounded number of ``search_alert`` calls.

``search_alert`` selects the alerts *active* in ``[start_time, end_time]`` (docs/blueking-api.md
§3.2) and pages them up to Elasticsearch's result window (10,000). When an answer is capped
(``total_relation: gte``, or ``total`` at the result window) the alerts are split:

1. by time, in halves, while that helps;
2. when *both* halves are still capped, the cap comes from alerts that stay open across every
   sub-window (overlap matching): halving the time can never get under it. The window is then
   split by ``create_time`` conditions instead (``create_time >= lo`` and ``< hi``), bisecting
   ``[oldest create_time, newest create_time]``: every alert has one create_time, so the slices
   partition the alerts and each bisection really halves the range.

Bounds: time splitting stops at ``MAX_TIME_DEPTH`` levels (or a 1 s window) and create_time
splitting at ``MAX_CREATE_TIME_DEPTH`` levels (or a 1 s slice); a round never makes more than
``max_calls`` calls (then it fails with an error that names the filters to narrow, and the window
is asked again next round).

A partial answer (``is_partial: true``, an Elasticsearch timeout or shard failure, with
``partial_reasons``; its ``total_relation`` is forced to ``gte`` and says nothing about the size)
is never split on: the call is made again up to ``PARTIAL_ATTEMPTS`` times in all, then the round
fails with the reasons, logged once per distinct reason at WARNING (later repeats at DEBUG), and
the same window is asked again next round, so nothing is missed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from exporter.errors import BkResponseError, BkUnavailableError

__all__ = [
    "MAX_CALLS",
    "MAX_CREATE_TIME_DEPTH",
    "MAX_TIME_DEPTH",
    "MIN_WINDOW",
    "PARTIAL_ATTEMPTS",
    "RESULT_WINDOW",
    "AlertCollector",
]

log = logging.getLogger(__name__)

RESULT_WINDOW = 10_000  # Elasticsearch's default index.max_result_window
MIN_WINDOW = 1.0  # seconds; a window this small is not split further
MAX_TIME_DEPTH = 8  # at most 2**8 sub-windows by time
MAX_CREATE_TIME_DEPTH = 24  # at most 2**24 create_time slices (a range of ~194 days down to 1 s)
MAX_CALLS = 1000  # search_alert calls per discovery round
PARTIAL_ATTEMPTS = 3  # a partial answer is asked this many times in all before the round fails

Body = Callable[[int, int, Sequence[Mapping[str, Any]], int, Sequence[str], int], dict[str, Any]]
NEWEST_FIRST = ("-create_time", "-seq_id")  # stable while alarms change status
OLDEST_FIRST = ("create_time", "seq_id")


def _create_time(alert: Any) -> int | None:
    value = alert.get("create_time") if isinstance(alert, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


class AlertCollector:
    """Collects a window's alerts through ``search`` (one ``search_alert`` page per call).

    ``body(start, end, extra_conditions, page, ordering, page_size)`` builds a request body. One
    collector serves every round of a source (it remembers which partial reasons were logged).
    """

    def __init__(
        self,
        search: Callable[[Mapping[str, Any]], dict[str, Any]],
        body: Body,
        *,
        page_size: int,
        result_window: int = RESULT_WINDOW,
        max_calls: int = MAX_CALLS,
    ) -> None:
        self.search = search
        self.body = body
        self.page_size = page_size
        self.result_window = result_window
        self.max_calls = max_calls
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        self.calls = 0

    def collect(self, start: int, end: int) -> tuple[dict[str, Any], int]:
        """``(alerts by id, calls made)`` for the window. Raises BkApiError (the round fails)."""
        self.calls = 0
        found = self._window(start, end, 0, None)
        return found, self.calls

    # -- one call ------------------------------------------------------------------------------------
    def _call(
        self,
        start: int,
        end: int,
        extra: Sequence[Mapping[str, Any]],
        page: int,
        ordering: Sequence[str] = NEWEST_FIRST,
        size: int | None = None,
    ) -> dict[str, Any]:
        reasons: list[str] = []
        for _ in range(PARTIAL_ATTEMPTS):
            if self.calls >= self.max_calls:
                raise BkResponseError(
                    f"discovery stopped after {self.max_calls} search_alert calls in one round (the bound per "
                    "round); narrow alarms.recent (bk_biz_ids, status, query_string or conditions). The window "
                    "is asked again next round",
                    endpoint="search_alert",
                )
            self.calls += 1
            data = self.search(self.body(start, end, extra, page, ordering, size or self.page_size))
            alerts = data.get("alerts") if isinstance(data, dict) else None
            if not isinstance(alerts, list):
                raise BkResponseError("data has no alerts list", endpoint="search_alert")
            if data.get("is_partial") is not True:
                return data
            raw = data.get("partial_reasons")
            reasons = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False, default=str) for r in raw or ()]
        text = "; ".join(reasons)[:500] or "no reason given"
        self._report_partial(text, start, end)
        raise BkUnavailableError(
            f"search_alert answered a partial result {PARTIAL_ATTEMPTS} times (Elasticsearch: {text}); "
            "not split on it, the window is asked again next round",
            endpoint="search_alert",
        )

    def _report_partial(self, text: str, start: int, end: int) -> None:
        with self._lock:
            first = text not in self._logged
            self._logged.add(text)
        level = logging.WARNING if first else logging.DEBUG
        log.log(
            level,
            "discovery: search_alert answered is_partial (reason: %s) for the window %d..%d, %d times; "
            "a partial answer is never split on (its total says nothing); the window is asked again next round",
            text,
            start,
            end,
            PARTIAL_ATTEMPTS,
        )

    def _capped(self, data: dict[str, Any]) -> bool:
        total = data.get("total")
        return data.get("total_relation") == "gte" or (isinstance(total, int) and total >= self.result_window)

    # -- splitting -----------------------------------------------------------------------------------
    def _window(self, start: int, end: int, depth: int, data: dict[str, Any] | None) -> dict[str, Any]:
        if data is None:
            data = self._call(start, end, (), 1)
        if not self._capped(data):
            return self._pages(start, end, (), data)
        if end - start > MIN_WINDOW and depth < MAX_TIME_DEPTH:
            middle = (start + end) // 2
            left = self._call(start, middle, (), 1)
            right = self._call(middle, end, (), 1)
            if not (self._capped(left) and self._capped(right)):
                log.info("discovery: window %d..%d capped at %s alarms; splitting it", start, end, data.get("total"))
                found = self._window(start, middle, depth + 1, left)
                found.update(self._window(middle, end, depth + 1, right))
                return found
        log.info(
            "discovery: window %d..%d stays capped when split by time (alarms open across it); splitting it by "
            "create_time instead",
            start,
            end,
        )
        return self._by_create_time(start, end, data)

    def _by_create_time(self, start: int, end: int, newest: dict[str, Any]) -> dict[str, Any]:
        alerts = newest.get("alerts") or []
        high = _create_time(alerts[0]) if alerts else None
        oldest = self._call(start, end, (), 1, OLDEST_FIRST, 1).get("alerts") or []
        low = _create_time(oldest[0]) if oldest else None
        if low is None or high is None:
            return self._pages(start, end, (), newest)
        return self._slice(start, end, min(low, high), max(low, high) + 1, 0)

    def _slice(self, start: int, end: int, low: int, high: int, depth: int) -> dict[str, Any]:
        extra = (
            {"key": "create_time", "value": [low], "method": "gte", "condition": "and"},
            {"key": "create_time", "value": [high], "method": "lt", "condition": "and"},
        )
        data = self._call(start, end, extra, 1)
        if self._capped(data):
            if high - low > 1 and depth < MAX_CREATE_TIME_DEPTH:
                middle = (low + high) // 2
                found = self._slice(start, end, low, middle, depth + 1)
                found.update(self._slice(start, end, middle, high, depth + 1))
                return found
            log.warning(
                "discovery: more than %d alarms created in %d..%d cannot be split further; reading the first %d",
                self.result_window,
                low,
                high,
                self.result_window,
            )
        return self._pages(start, end, extra, data)

    def _pages(self, start: int, end: int, extra: Sequence[Mapping[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
        """Page 1 is ``data``; read the rest of the pages."""
        found: dict[str, Any] = {}
        page, size = 1, self.page_size
        while True:
            alerts = data["alerts"]
            for alert in alerts:
                alarm_id = str(alert.get("id")) if isinstance(alert, dict) else ""
                found[alarm_id] = alert
            raw_total = data.get("total")
            total = raw_total if isinstance(raw_total, int) else len(alerts)
            fetched = (page - 1) * size + len(alerts)
            if len(alerts) < size or fetched >= total or (page + 1) * size > self.result_window:
                return found
            page += 1
            data = self._call(start, end, extra, page)
