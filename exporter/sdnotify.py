"""systemd's sd_notify protocol, with the stdlib ``socket`` module (no libsystemd, nothing compiled).

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an
abstract socket) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` / ``WATCHDOG_PID``. The daemon sends
newline-separated ``KEY=VALUE`` assignments as one datagram:

* :func:`ready` once the scheduler runs (``READY=1``), :func:`stopping` when a graceful stop begins;
* :func:`reloading` when SIGHUP starts a reload, then :func:`ready` when it is done
  (``RELOADING=1`` carries ``MONOTONIC_USEC`` as systemd >= 253 requires for ``Type=notify-reload``);
* :func:`watchdog` every :func:`watchdog_interval` seconds while the daemon makes progress: send it
  from the loop whose hang should restart the service, not from a free-running thread.
  :class:`Watchdog` decides when: only while every watched activity (the daemon's polls and
  drains) made progress within its bound, so a daemon whose scheduler still ticks but whose poll
  or send job is stuck stops pinging and is restarted;
* :func:`status` a one-line status for ``systemctl status``.

Outside systemd (``NOTIFY_SOCKET`` unset) every call is a no-op returning False. Send errors are
logged at DEBUG and reported as False: notification must never take the daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

__all__ = ["Watchdog", "notify", "ready", "reloading", "status", "stopping", "watchdog", "watchdog_interval"]

log = logging.getLogger(__name__)


def notify(message: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` to ``$NOTIFY_SOCKET``. True when sent; False when unset or the send failed."""
    environ = os.environ if env is None else env
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        log.debug("sd_notify: unsupported NOTIFY_SOCKET %r (only paths and @abstract)", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.debug("sd_notify: sending %r failed: %s", message.split("\n", 1)[0], exc)
        return False
    return True


def ready(status: str = "", *, env: Mapping[str, str] | None = None) -> bool:
    """``READY=1`` (plus ``STATUS=`` when given): start-up or a reload is complete."""
    return notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""), env=env)


def stopping(*, env: Mapping[str, str] | None = None) -> bool:
    """``STOPPING=1``: a graceful stop has begun."""
    return notify("STOPPING=1", env=env)


def reloading(*, env: Mapping[str, str] | None = None) -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC``; send :func:`ready` once the new config is in effect."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", env=env)


def watchdog(*, env: Mapping[str, str] | None = None) -> bool:
    """``WATCHDOG=1``: still making progress."""
    return notify("WATCHDOG=1", env=env)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """``STATUS=<text>`` (newlines folded), shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}", env=env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between :func:`watchdog` pings (half of ``WATCHDOG_USEC``), or None when not watched.

    None when ``WATCHDOG_USEC`` is unset, not a positive integer, or ``WATCHDOG_PID`` names
    another process (the variables were inherited, not meant for us).
    """
    environ = os.environ if env is None else env
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1e6 / 2


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


class Watchdog:
    """When to send ``WATCHDOG=1``: every ``interval`` seconds, and only while nothing is stalled.

    ``bounds`` maps each watched activity (``poll``, ``send``) to the most seconds it may go
    without :meth:`progressed`; every activity counts as having progressed at construction and at
    :meth:`restart`. :meth:`tick` (called often, e.g. every second) pings when a ping is due and
    no activity is past its bound; while one is, it holds the ping back, logs why once (WARNING),
    and logs again (INFO) when progress resumes. ``interval`` None: never pings (not watched).
    ``clock`` is monotonic seconds, ``ping`` sends the notification (both injectable).
    """

    def __init__(
        self,
        interval: float | None,
        bounds: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
        ping: Callable[[], bool] = watchdog,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._ping = ping
        self._lock = threading.Lock()
        self._bounds = dict(bounds)
        self._last: dict[str, float] = {}
        self._last_ping: float | None = None
        self._holding = False
        self.restart()

    def set_bounds(self, bounds: Mapping[str, float]) -> None:
        """New bounds (a reloaded configuration); the progress seen so far is kept."""
        with self._lock:
            now = self._clock()
            self._bounds = dict(bounds)
            self._last = {name: self._last.get(name, now) for name in self._bounds}

    def restart(self) -> None:
        """Count every activity as having just progressed (the scheduler starts)."""
        with self._lock:
            now = self._clock()
            self._last = dict.fromkeys(self._bounds, now)

    def progressed(self, name: str) -> None:
        """``name`` completed a step of work (a run, a request, an export call)."""
        if name in self._bounds:
            now = self._clock()
            with self._lock:
                self._last[name] = now

    def stalled(self) -> list[tuple[str, float, float]]:
        """``(activity, seconds since its progress, its bound)`` for each activity past its bound."""
        now = self._clock()
        with self._lock:
            ages = [(name, now - self._last[name], bound) for name, bound in self._bounds.items()]
        return [(name, age, bound) for name, age, bound in ages if age > bound]

    def tick(self) -> bool:
        """Ping when due and nothing is stalled; True when a ping was sent."""
        if not self.interval:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.interval:
            return False
        stalled = self.stalled()
        if stalled:
            if not self._holding:
                self._holding = True
                why = ", ".join(f"{n}: no progress for {age:.0f}s (limit {bound:.0f}s)" for n, age, bound in stalled)
                log.warning("systemd watchdog: pings held back (%s); the service is restarted unless work resumes", why)
            return False
        if self._holding:
            self._holding = False
            log.info("systemd watchdog: progress again, pinging")
        self._last_ping = now
        self._ping()
        return True
