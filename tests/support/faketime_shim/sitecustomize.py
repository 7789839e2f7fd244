"""Imported at start-up by the test subprocesses that run under libfaketime (tests/support/faketime.py),
and by nothing else (this directory is put on their PYTHONPATH only).

Debian's libfaketime (0.9.10) with the monotonic clock left alone (``FAKETIME_DONT_FAKE_MONOTONIC=1``,
which the process needs: a faked monotonic clock makes every timed lock wait hang) breaks one call,
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``: it hands the kernel a negative time, so Python
3.11's ``time.sleep`` raises ``OSError: [Errno 22]`` (libfaketime issue #426). Sleeping on an event
waits for the same time through ``sem_clockwait``, which works; nothing else is changed.
"""

import threading
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
