"""Flow records built from what the ``bk-monitor`` gateway publishes (it has no flow-log resource).

With ``bkmonitor.api: apigw`` an alarm's records are synthesised from its alert (``/app/alert/search/``)
and its actions (``/app/action/search/``), docs/blueking-api.md §8:

=====================  ===================================================  ==========================
operate                from                                                  time (``create_time``)
=====================  ===================================================  ==========================
CREATE                 the alert                                             its ``begin_time``
ACTION                 each action of the alert; message: plugin type,       the action's ``create_time``
                       name, signal and status as first read
RECOVER / CLOSE        status ``RECOVERED`` / ``CLOSED``                     its ``end_time``
ACK                    ``is_ack`` true                                        ``begin_time + ack_duration``
                                                                              when the server gives
                                                                              ``ack_duration``, else the
                                                                              alert's ``update_time`` in the
                                                                              search that first showed it
SEVERITY_UP            a more severe ``severity`` than the one seen before   the alert's ``update_time``
                       (by this exporter, in an earlier search)             in the search that showed it
=====================  ===================================================  ==========================

Identity: ``log.record.uid`` is :func:`~exporter.mapping.ids.record_uid` over (alarm id, operate,
a key, ``apigw:`` + what the record is). The key is only ever something the server returned and
that does not change: the begin and end times, the action's id and create_time, the severity
level reached, the fact of the acknowledgement. Never the time it was observed, never a text that
changes later (the alert's description, an action's status), so the same record gets the same uid
on every poll, restart and replica, and is delivered once. The message of a record is the one of
its first read (an ACTION read while ``running`` says so).

:class:`Observations` remembers, per alarm, the severities seen and the ACK time given, so a
record already synthesised stays the same on every later poll; an alarm is forgotten once its
alert is RECOVERED or CLOSED (a record already taken is never sent again, whatever its time would
be now, since its uid does not depend on this memory). It lives in memory: a severity
raise that happens while the exporter is stopped, and that discovery reports before the alarm's
next poll, shows as the alarm's severity but not as a SEVERITY_UP record.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from exporter.mapping.ids import record_uid
from exporter.model import AlarmContext, FlowRecord
from exporter.sources.base import FetchResult, Malformed
from exporter.sources.bkmonitor.alerts import parse_alert

__all__ = ["SEVERITY_WORDS", "Observations", "synthesize"]

#: severity -> the word a SEVERITY_UP message ends with (read back by exporter.pipeline.lifecycle.severity_in)
SEVERITY_WORDS = {1: "fatal", 2: "warning", 3: "remind"}
_TERMINAL = {"RECOVERED": ("RECOVER", "alarm recovered"), "CLOSED": ("CLOSE", "alarm closed")}
_EPOCH_MAX = (2**63 - 1) // 1_000_000_000


def _epoch(value: Any) -> int | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 < number < _EPOCH_MAX else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass
class _Seen:
    severities: list[tuple[int, int]] = field(default_factory=list)  # (level, update_time), first = baseline
    times: dict[str, int] = field(default_factory=dict)  # record key -> the time first given to it


class Observations:
    """What this exporter has seen of each alarm in earlier searches (thread-safe, in memory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alarms: dict[str, _Seen] = {}

    def severity_raises(self, alarm_id: str, baseline: int | None, current: int | None, at: int) -> list[int]:
        """The levels the alarm was raised to, oldest first, after seeing ``current`` at ``at``.

        ``baseline`` is the severity known before (the stored context) when this alarm is new
        here. A lower number is more severe (1 fatal, 2 warning, 3 remind).
        """
        with self._lock:
            seen = self._alarms.setdefault(alarm_id, _Seen())
            if not seen.severities:
                first = baseline if baseline is not None else current
                if first is None:
                    return []
                seen.severities.append((first, at))
            if current is not None and current < min(level for level, _ in seen.severities):
                seen.severities.append((current, at))
            return [level for level, _ in seen.severities[1:]]

    def raised_at(self, alarm_id: str, level: int) -> int | None:
        with self._lock:
            seen = self._alarms.get(alarm_id)
            for got, at in seen.severities if seen else ():
                if got == level:
                    return at
        return None

    def stable_time(self, alarm_id: str, key: str, proposed: int) -> int:
        """The time of the record ``key``: the first one given to it (stable across polls)."""
        with self._lock:
            seen = self._alarms.setdefault(alarm_id, _Seen())
            return seen.times.setdefault(key, proposed)

    def forget(self, alarm_id: str) -> None:
        with self._lock:
            self._alarms.pop(alarm_id, None)


def _record(
    alarm_id: str,
    operate: str,
    at: int,
    key: str,
    message: str,
    observed_ns: int,
    *,
    status: str = "SUCCESS",
    extend_info: Any = None,
    timed: bool = True,
) -> FlowRecord:
    """One record; with ``timed`` false its time is not part of its uid (a time we chose, not the server)."""
    raw = str(at)
    return FlowRecord(
        alarm_id=alarm_id,
        operate=operate,
        message=message,
        status=status,
        event_id=alarm_id,
        create_time_ns=at * 1_000_000_000,
        create_time_raw=raw,
        extend_info={} if extend_info is None else extend_info,
        uid=record_uid(alarm_id, operate, raw if timed else "", f"apigw:{key}"),
        observed_ns=observed_ns,
    )


def _action_record(alarm_id: str, action: Any, observed_ns: int) -> FlowRecord:
    if not isinstance(action, Mapping):
        raise ValueError(f"action is a {type(action).__name__}, not an object")
    action_id = _text(action.get("id")).strip()
    if not action_id:
        raise ValueError("action has no id")
    at = _epoch(action.get("create_time"))
    if at is None:
        raise ValueError(f"action {action_id}: create_time {action.get('create_time')!r} is not an epoch")
    kind = _text(action.get("action_plugin_type_display") or action.get("action_plugin_type")) or "action"
    name = _text(action.get("action_name"))
    status = _text(action.get("status")) or "unknown"
    signal = _text(action.get("signal"))
    message = f"{kind}{f' {name}' if name else ''}{f' ({signal})' if signal else ''}: {status}"
    tips = _text(action.get("status_tips")).strip()
    if tips:
        message += f" ({tips})"
    extend = {
        "action": {
            "id": action_id,
            "plugin_type": _text(action.get("action_plugin_type")),
            "name": name,
            "signal": signal,
            "status": status,
        }
    }
    return _record(
        alarm_id, "ACTION", at, f"action:{action_id}", message, observed_ns, status=status.upper(), extend_info=extend
    )


def synthesize(
    alert: Mapping[str, Any],
    actions: Sequence[Any],
    *,
    known: AlarmContext,
    observations: Observations,
    observed_ns: int,
) -> FetchResult:
    """The records of one alert as they are now, and its refreshed context (``FetchResult.context``).

    ``known`` is the alarm as the exporter stored it (its severity is the baseline of a raise the
    first time this process sees the alarm). Raises ValueError when the alert itself is unusable.
    """
    ctx = parse_alert(alert)
    alarm_id = ctx.alarm_id
    begin = ctx.begin_time or ctx.create_time
    if begin is None:
        raise ValueError(f"alert {alarm_id} has no begin_time")
    updated = ctx.update_time or begin
    result = FetchResult()
    description = _text(alert.get("description")).strip()
    name = ctx.name or f"alarm {alarm_id}"
    result.records.append(
        _record(alarm_id, "CREATE", begin, "create", f"{name}: {description}" if description else name, observed_ns)
    )
    for index, action in enumerate(actions):
        try:
            result.records.append(_action_record(alarm_id, action, observed_ns))
        except ValueError as exc:
            result.malformed.append(Malformed(index, str(exc), f"action:{index}:{exc}"))
    if alert.get("is_ack") is True:
        duration = _epoch(alert.get("ack_duration"))
        at = observations.stable_time(alarm_id, "ack", begin + duration if duration is not None else updated)
        who = _text(alert.get("ack_operator")).strip()
        text = f"{who} acknowledged the alarm" if who else "alarm acknowledged"
        result.records.append(_record(alarm_id, "ACK", at, "ack", text, observed_ns, timed=False))
    for level in observations.severity_raises(alarm_id, known.severity, ctx.severity, updated):
        at = observations.raised_at(alarm_id, level) or updated
        word = SEVERITY_WORDS.get(level, str(level))
        text = f"severity raised to {word}"
        result.records.append(_record(alarm_id, "SEVERITY_UP", at, f"severity:{level}", text, observed_ns, timed=False))
    ending = _TERMINAL.get(ctx.status or "")
    if ending is not None:
        operate, text = ending
        key = f"end:{operate}"
        if ctx.end_time is not None:
            result.records.append(_record(alarm_id, operate, ctx.end_time, key, text, observed_ns))
        else:  # no end_time given: the update_time that first showed the status, and a uid without it
            at = observations.stable_time(alarm_id, key, updated)
            result.records.append(_record(alarm_id, operate, at, key, text, observed_ns, timed=False))
    updates = {k: v for k, v in vars(ctx).items() if v not in (None, (), "")}
    result.context = replace(known, **updates)
    return result
