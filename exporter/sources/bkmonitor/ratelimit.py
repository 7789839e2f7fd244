"""A thread-safe token bucket: the global request-rate limit shared by every BlueKing call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` (default ``max(1, rate)``) saved up.

    :meth:`reserve` takes a token and says how long the caller must wait before using it. A
    token is taken even when the bucket is empty (the balance goes negative), so waiting callers
    are served in the order they asked and never spin. ``rate <= 0`` disables the limit.
    """

    def __init__(self, rate: float, *, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before the request may go (0.0 = now)."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._stamp)
            self._stamp = now
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._tokens -= 1.0
            if self._tokens >= 0.0:
                return 0.0
            return -self._tokens / self.rate

    def acquire(self, sleep: Callable[[float], bool]) -> bool:
        """Take one token, sleeping with ``sleep`` if needed. True if the sleep was interrupted."""
        wait = self.reserve()
        return wait > 0.0 and sleep(wait)
