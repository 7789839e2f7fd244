"""The database server's clock, read locally: what every replica compares (due times, retirement,
steals) in one clock, whatever the replicas' own clocks say. See the package docstring (**Clock**).

Each heartbeat (and the store's opening) reads ``clock_timestamp()`` and notes the local time
before and after the round trip; the offset is the server's time minus the midpoint. Of the last
few samples the one with the shortest round trip wins (its error is at most half that round
trip), so one slow answer does not move the clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["DatabaseClock"]


class DatabaseClock:
    """``time.time()`` moved onto the database server's clock. Thread-safe; callable.

    Until the first sample it is the local clock. ``keep`` samples are remembered.
    """

    def __init__(self, local: Callable[[], float] = time.time, keep: int = 6) -> None:
        self.local = local
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float]] = deque(maxlen=keep)  # (round trip, offset)
        self._offset = 0.0
        self._error: float | None = None

    def sample(self, before: float, server: float, after: float) -> None:
        """One reading: the local clock ``before`` and ``after`` a query answered ``server``."""
        rtt = max(0.0, after - before)
        with self._lock:
            self._samples.append((rtt, server - (before + after) / 2))
            rtt, self._offset = min(self._samples)
            self._error = rtt / 2

    @property
    def offset(self) -> float:
        """Seconds to add to the local clock to read the server's (0 before any sample)."""
        with self._lock:
            return self._offset

    @property
    def error(self) -> float | None:
        """The bound on the offset's error (half the best round trip); None before any sample."""
        with self._lock:
            return self._error

    def __call__(self) -> float:
        return self.local() + self.offset
