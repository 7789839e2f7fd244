"""Alarm lifecycle rules, as pure functions.

    active --terminal record or terminal search_alert status--> closing
    closing --retire_after elapsed (after one more read)--> retired
    any --3324002 (unknown / past retention)--> expired
    retired --discovery reports it changed and not terminal--> active

``terminal_at`` is the time the alarm ended: the terminal record's own time, or now if that lies
in the future (clock skew), so a long-closed alarm found after a restart retires after one read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import replace

from exporter.model import TERMINAL_OPERATES, AlarmContext, FlowRecord

__all__ = ["TERMINAL_STATUSES", "escalated", "next_poll_time", "severity_in", "terminal_time"]

#: search_alert statuses after which an alarm is over.
TERMINAL_STATUSES = frozenset({"RECOVERED", "CLOSED"})


#: Records that mean the alarm is (again) a problem. Notifications (ACTION) and ACKs that come
#: after a RECOVER are late news about the old episode and do not reopen it.
_REOPENING = frozenset({"CREATE", "CONVERGE", "SEVERITY_UP", "ABORT_RECOVER", "EVENT_DROP"})


def terminal_time(records: Iterable[FlowRecord], now: float) -> float | None:
    """When the alarm ended according to its records, or None while it is open.

    An alarm whose newest problem record is newer than its newest terminal record was reopened
    and is open again.
    """
    ends: list[float] = []
    problems: list[float] = []
    for r in records:
        if r.operate in TERMINAL_OPERATES:
            ends.append(r.create_time_ns / 1e9)
        elif r.operate in _REOPENING:
            problems.append(r.create_time_ns / 1e9)
    if not ends:
        return None
    last_end = max(ends)
    if problems and max(problems) > last_end:
        return None
    return min(last_end, now)


def next_poll_time(now: float, interval: float, jitter: float, rng: Callable[[], float] = random.random) -> float:
    """``now + interval``, spread by ±``jitter`` × interval so alarms do not poll in lockstep."""
    spread = interval * jitter * (2.0 * rng() - 1.0)
    return now + max(0.0, interval + spread)


# SEVERITY_UP messages end with the new level: "告警级别上升为：致命" (zh) or an English rendering.
_LEVEL_WORDS = (("致命", 1), ("fatal", 1), ("预警", 2), ("warning", 2), ("提醒", 3), ("remind", 3), ("info", 3))


def severity_in(message: str) -> int | None:
    """The level a SEVERITY_UP message announces (the word nearest the end wins), or None."""
    text = message.lower()
    best: tuple[int, int] | None = None
    for word, level in _LEVEL_WORDS:
        at = text.rfind(word)
        if at >= 0 and (best is None or at > best[0]):
            best = (at, level)
    return best[1] if best else None


def escalated(ctx: AlarmContext, record: FlowRecord) -> AlarmContext:
    """The alarm context after ``record``: a SEVERITY_UP raises the known severity."""
    if record.operate != "SEVERITY_UP":
        return ctx
    level = severity_in(record.message)
    if level is None or level == ctx.severity:
        return ctx
    return replace(ctx, severity=level)
