"""The one polling wait of the test suite: :func:`wait_until`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Watched", "wait_until"]


class Watched(Protocol):
    """A process a wait gives up on early when it exits (``tests.support.daemon.Daemon``)."""

    @property
    def alive(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...

    def output(self) -> str: ...


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str | Callable[[], str],
    *,
    every: float = 0.05,
    daemon: Watched | None = None,
) -> None:
    """Poll ``check`` every ``every`` seconds until it is true; fail after ``timeout`` seconds
    naming ``what`` (a callable is asked at the failure, to say how far it got). With ``daemon``:
    fail as soon as it has exited, and quote its output."""
    deadline = time.monotonic() + timeout
    while not check():
        if daemon is not None and not daemon.alive:
            raise AssertionError(
                f"daemon exited ({daemon.returncode}) waiting for {_say(what)}; output:\n{daemon.output()[-4000:]}"
            )
        if time.monotonic() > deadline:
            tail = f"; daemon output:\n{daemon.output()[-4000:]}" if daemon is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {_say(what)}{tail}")
        time.sleep(every)


def _say(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()
