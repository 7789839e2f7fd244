"""SQL shared by the SQLite and PostgreSQL stores (they differ in placeholders, not in meaning)."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.state.base import PollCommit

__all__ = ["alarm_update"]


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
