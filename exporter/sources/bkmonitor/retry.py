"""Retrying BlueKing calls: which failures, how often, how long to wait.

Only :class:`~exporter.errors.BkRetryableError` is retried (rate limits, unavailability,
timeouts and connection errors); auth, not-found and shape errors are raised at once. The wait
before retry ``n`` (``n = 0`` for the first retry) uses *equal jitter*::

    cap   = min(max_backoff, initial_backoff * 2**n)
    delay = cap / 2 + rng() * cap / 2                   # in [cap/2, cap]
    delay = max(delay, min(retry_after, 5 * max_backoff))   # rate limits with a server hint

Half of the wait is fixed, so retries never stampede at once, and half is random, so callers
that failed together spread out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from exporter.errors import BkRateLimitError, BkRetryableError, BkTransportError

__all__ = ["RetryPolicy", "retry_call"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: A rate limit's Retry-After is honoured up to this many ``max_backoff``.
RETRY_AFTER_CAP_FACTOR = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts in all, and the backoff bounds in seconds."""

    max_attempts: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff must not be negative")

    def backoff_cap(self, retry: int) -> float:
        """The upper bound of the wait before retry number ``retry`` (0-based)."""
        return min(self.max_backoff, self.initial_backoff * 2.0 ** min(retry, 64))

    def delay(self, retry: int, error: BkRetryableError, rng: Callable[[], float]) -> float:
        """The wait before retry number ``retry`` (0-based) after ``error``; ``rng`` is in [0, 1)."""
        cap = self.backoff_cap(retry)
        delay = cap / 2.0 + rng() * cap / 2.0
        if isinstance(error, BkRateLimitError) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, RETRY_AFTER_CAP_FACTOR * self.max_backoff))
        return delay


def retry_call(
    attempt: Callable[[], T],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], bool],
    rng: Callable[[], float],
    endpoint: str,
    subject: str | None = None,
    on_retry: Callable[[int, float, BkRetryableError], None] | None = None,
) -> T:
    """Call ``attempt`` until it returns, raises a non-retryable error, or ``policy`` gives up.

    ``sleep(seconds)`` returns True when it was interrupted (the client is closing): the call
    then ends with ``BkTransportError("client closed")``. ``subject`` (the alarm id) and the
    error's code and request id go into the DEBUG line logged per retry. The last error is
    raised unchanged; logging it is the caller's job. ``on_retry(attempt, delay, error)`` is
    called before each wait (the client logs a rate-limited WARNING there and counts the retry:
    :mod:`exporter.sources.bkmonitor.report`).
    """
    number = 1
    while True:
        try:
            return attempt()
        except BkRetryableError as error:
            if number >= policy.max_attempts:
                raise
            delay = policy.delay(number - 1, error, rng)
            logger.debug(
                "%s alarm=%s: %s (code=%s request_id=%s), attempt %d/%d, retrying in %.2fs",
                endpoint,
                subject or "-",
                error.summary,
                error.code,
                error.request_id,
                number,
                policy.max_attempts,
                delay,
            )
            if on_retry is not None:
                on_retry(number, delay, error)
            if sleep(delay):
                raise BkTransportError("client closed", endpoint=endpoint) from error
            number += 1
