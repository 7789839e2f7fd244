"""SQL shared by the SQLite and PostgreSQL stores (they differ in placeholders, not in meaning)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exporter.model import AlarmContext, LogEvent, SpanRecord
from exporter.state.base import AlarmState, PollCommit

__all__ = ["alarm_from_row", "alarm_update", "outbox_payload", "refollow"]


def alarm_from_row(row: Any) -> AlarmState:
    """An ``alarms`` row (sqlite3.Row or a psycopg dict row) as an AlarmState."""
    return AlarmState(
        alarm_id=row["alarm_id"],
        source=row["source"],
        phase=row["phase"],
        context=AlarmContext.from_json(row["context"]),
        first_seen=row["first_seen"],
        next_poll=row["next_poll"],
        last_poll=row["last_poll"],
        last_full_read=row["last_full_read"],
        terminal_at=row["terminal_at"],
        retired_at=row["retired_at"],
        change_token=row["change_token"],
        records=row["records"],
        last_error=row["last_error"],
    )


def outbox_payload(kind: str, text: str) -> LogEvent | SpanRecord:
    """An outbox row's payload: a SpanRecord for ``spans``, else a LogEvent."""
    return SpanRecord.from_json(text) if kind == "spans" else LogEvent.from_json(text)


def alarm_update(c: PollCommit, new_records: int, mark: str, extra: Sequence[str] = ()) -> tuple[str, list[object]]:
    """The ``UPDATE alarms`` statement a poll commit implies. ``mark`` is the driver's placeholder."""
    sets = [f"last_poll = {mark}", f"records = records + {mark}", *extra]
    params: list[object] = [c.now, new_records]
    for column, value in (
        ("context", c.context.to_json() if c.context else None),
        ("phase", c.phase),
        ("next_poll", c.next_poll),
        ("terminal_at", c.terminal_at),
        ("change_token", c.change_token),
    ):
        if value is not None:
            sets.append(f"{column} = {mark}")
            params.append(value)
    if c.full_read:
        sets.append(f"last_full_read = {mark}")
        params.append(c.now)
    if c.phase in ("retired", "expired"):
        sets.append(f"retired_at = {mark}")
        params.append(c.now)
    if c.last_error is not None:
        sets.append(f"last_error = {mark}")
        params.append(c.last_error)
    elif c.clear_error:
        sets.append("last_error = NULL")
    params.append(c.alarm_id)
    return f"UPDATE alarms SET {', '.join(sets)} WHERE alarm_id = {mark}", params


def refollow(current: AlarmState, *, source: str, now: float, due: bool) -> tuple[str, float, str]:
    """``(phase, next_poll, source)`` for an alarm that is upserted again.

    ``due`` makes it poll now, and follows a retired alarm again (reopened); a configured alarm
    stays ``config`` when discovery also reports it.
    """
    phase = "active" if due and current.phase == "retired" else current.phase
    next_poll = min(current.next_poll, now) if due else current.next_poll
    new_source = "config" if "config" in (current.source, source) else source
    return phase, next_poll, new_source
