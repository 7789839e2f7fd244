"""Telling operators about BlueKing calls that worked only on retry, or read stray bytes.

A retry that succeeds hides its failure from the caller: without this, a gateway answering 429
or 1306201 for hours looks healthy. :class:`CallReporter` makes both anomalies visible:

* every retried failure is logged at WARNING with the endpoint, alarm, BlueKing code, message and
  request id, rate-limited per endpoint and *kind* (:func:`failure_kind`: rate limited,
  unavailable, no answer): the first at once, then at most one line a minute carrying the count
  of the ones held back; and counted by the observer's ``api_retry(endpoint, code)``
  (``bk_otel_api_retries_total{api_endpoint,code}``, where every code is told apart);
* an answer with bytes that are not UTF-8 (replaced by U+FFFD, the rest read as sent) is logged
  once per endpoint and alarm (then at most hourly) and counted by ``api_undecodable(endpoint,
  n)`` (``bk_otel_api_undecodable_bytes_total{api_endpoint}``).

The code label keeps the metric's cardinality bounded whatever a server sends: a code the client
knows (:func:`~exporter.sources.bkmonitor.envelope.classify_code`) as itself, another code as
``other``; without a code, ``http_<status>`` for 429/500/502/503/504, ``http_other`` for any other
status, and ``transport`` when no answer came (timeout, connection refused or reset).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from exporter.errors import BkRateLimitError, BkRetryableError, BkTransportError
from exporter.logsetup import RateLimitedLogger
from exporter.sources.bkmonitor.envelope import classify_code

__all__ = ["RETRY_LOG_INTERVAL", "UNDECODABLE_LOG_INTERVAL", "CallReporter", "code_label", "failure_kind"]

log = logging.getLogger(__name__)

#: Seconds between two lines about the same retried kind (code) of failure.
RETRY_LOG_INTERVAL = 60.0
#: Seconds between two lines about undecodable bytes in one alarm's answers.
UNDECODABLE_LOG_INTERVAL = 3600.0

_STATUS_LABELS = frozenset({429, 500, 502, 503, 504})


def code_label(error: BkRetryableError) -> str:
    """The bounded ``code`` label of a retried failure (see the module docstring)."""
    if error.code is not None:
        return str(error.code) if classify_code(error.code) is not None else "other"
    if error.http_status is None:
        return "transport"
    return f"http_{error.http_status}" if error.http_status in _STATUS_LABELS else "http_other"


def failure_kind(error: BkRetryableError) -> str:
    """What a retried failure is, for the log's rate limit: ``rate_limited``, ``unavailable`` or
    ``no_answer`` (a timeout, a refused or reset connection)."""
    if isinstance(error, BkRateLimitError):
        return "rate_limited"
    if isinstance(error, BkTransportError):
        return "no_answer"
    return "unavailable"


class CallReporter:
    """Logs (rate-limited) and counts retried failures and undecodable answers.

    ``observer`` is the client's :class:`~exporter.sources.bkmonitor.client.ApiObserver`; its
    optional ``api_retry`` and ``api_undecodable`` methods are called when it has them. ``clock``
    (monotonic seconds) drives the rate limits.
    """

    def __init__(self, observer: Any = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._on_retry = getattr(observer, "api_retry", None)
        self._on_undecodable = getattr(observer, "api_undecodable", None)
        self._retries = RateLimitedLogger(log, RETRY_LOG_INTERVAL, clock=clock)
        self._undecodable = RateLimitedLogger(log, UNDECODABLE_LOG_INTERVAL, clock=clock)

    def retrying(
        self, endpoint: str, subject: str | None, attempt: int, max_attempts: int, delay: float, error: BkRetryableError
    ) -> None:
        """Attempt ``attempt`` of ``max_attempts`` failed with ``error``; the next comes in ``delay`` s."""
        label = code_label(error)
        if callable(self._on_retry):
            self._on_retry(endpoint, label)
        self._retries.warning(
            f"{endpoint}:{failure_kind(error)}",
            "%s alarm=%s: %s (code=%s http=%s message=%s request_id=%s), attempt %d/%d failed, retrying in %.2fs",
            endpoint,
            subject or "-",
            error.summary,
            error.code if error.code is not None else "-",
            error.http_status if error.http_status is not None else "-",
            error.bk_message or "-",
            error.request_id or "-",
            attempt,
            max_attempts,
            delay,
        )

    def undecodable(self, endpoint: str, subject: str | None, replaced: int, request_id: str | None) -> None:
        """An answer held ``replaced`` bytes that are not UTF-8 (replaced by U+FFFD)."""
        if callable(self._on_undecodable):
            self._on_undecodable(endpoint, replaced)
        self._undecodable.warning(
            f"{endpoint}:{subject or '-'}",
            "%s alarm=%s: the answer holds %d bytes that are not UTF-8 (request_id=%s);"
            " they were replaced by U+FFFD and the rest of the answer was read as sent",
            endpoint,
            subject or "-",
            replaced,
            request_id or "-",
        )
