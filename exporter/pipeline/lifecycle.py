"""Alarm lifecycle rules, as pure functions.

    active --terminal record or terminal search_alert status--> closing
    closing --retire_after elapsed (after one more read)--> retired
    any --3324002 (unknown / past retention)--> expired
    retired --discovery reports it changed and not terminal--> active

:func:`plan_poll` is the decision one successful read implies: the phase to commit, when the
alarm ended, whether it retires now, and when it is read next.

``terminal_at`` is the time the alarm ended: the terminal record's own time, or now if that lies
in the future (clock skew), so a long-closed alarm found after a restart retires after one read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from exporter.model import TERMINAL_OPERATES, TERMINAL_STATUSES, AlarmContext, FlowRecord

__all__ = ["PollPlan", "escalated", "next_poll_time", "plan_poll", "severity_in", "terminal_time"]


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


@dataclass(frozen=True)
class PollPlan:
    """What one successful read of an alarm decides (see :func:`plan_poll`)."""

    phase: str  # the phase to commit: active, closing or retired
    terminal_at: float | None
    retiring: bool
    next_poll: float


def plan_poll(
    *,
    phase: str,
    terminal_at: float | None,
    records: Iterable[FlowRecord],
    ctx: AlarmContext,
    discovered: bool,
    now: float,
    interval: float,
    retire_after: float,
    jitter: float = 0.0,
    full_reread_interval: float = 0.0,
    rng: Callable[[], float] = random.random,
) -> PollPlan:
    """The lifecycle step of one read: ``records`` is the whole answer, ``ctx`` the alarm after it.

    An active alarm whose records (or, failing those, search_alert's status) say it is over
    moves to ``closing``; a closing alarm retires once ``retire_after`` has passed since it
    ended. A discovered alarm that stays open is re-read every ``full_reread_interval`` (when
    set: discovery makes it due sooner on a change); a closing one is read once more at its
    retirement time, so it retires on time.
    """
    ended = terminal_time(records, now)
    if ended is None and ctx.status in TERMINAL_STATUSES:
        ended = min(float(ctx.end_time or now), now)  # search_alert says it is over
    if ended is not None and phase == "active":
        phase, terminal_at = "closing", ended
    retiring = phase == "closing" and terminal_at is not None and now >= terminal_at + retire_after
    if discovered and phase == "active" and full_reread_interval > 0:
        interval = full_reread_interval
    next_poll = next_poll_time(now, interval, jitter, rng)
    if phase == "closing" and terminal_at is not None and not retiring:
        next_poll = min(next_poll, terminal_at + retire_after)
    return PollPlan("retired" if retiring else phase, terminal_at, retiring, next_poll)
