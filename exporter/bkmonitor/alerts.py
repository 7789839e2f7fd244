"""Parse search_alert's alert objects (BK_API.md §3.5) into AlarmContext, tolerantly.

Ids may arrive as strings or numbers, times as epoch ints or null, dimensions as a list of
``{key, value, display_key, display_value}`` (or a plain dict on odd servers). An alert without a
usable id is reported and skipped; every other field is optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.model import AlarmContext

__all__ = ["change_token", "parse_alert"]


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _dimensions(raw: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, Mapping):
        return tuple((str(k), str(v)) for k, v in raw.items())
    out: list[tuple[str, str]] = []
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, Mapping) and item.get("key") not in (None, ""):
                out.append((str(item["key"]), "" if item.get("value") is None else str(item.get("value"))))
    return tuple(out)


def parse_alert(alert: Any) -> AlarmContext:
    """One alert object -> AlarmContext. Raises ValueError when it has no usable id."""
    if not isinstance(alert, Mapping):
        raise ValueError(f"alert is a {type(alert).__name__}, not an object")
    alarm_id = str(alert.get("id", "")).strip()
    if not alarm_id.isdigit():
        raise ValueError(f"alert id {alert.get('id')!r} is not a digit string")
    strategy_id = alert.get("strategy_id")
    return AlarmContext(
        alarm_id=alarm_id,
        bk_biz_id=_int(alert.get("bk_biz_id")),
        name=_str(alert.get("alert_name")),
        severity=_int(alert.get("severity")),
        status=_str(alert.get("status")),
        strategy_id=_int(strategy_id) if _int(strategy_id) is not None else _str(strategy_id),
        strategy_name=_str(alert.get("strategy_name")),
        dimensions=_dimensions(alert.get("dimensions")),
        begin_time=_int(alert.get("begin_time")),
        create_time=_int(alert.get("create_time")),
        update_time=_int(alert.get("update_time")),
        end_time=_int(alert.get("end_time")),
    )


def change_token(ctx: AlarmContext) -> str:
    """What discovery compares between rounds: a change means the event log may have changed."""
    return f"{ctx.update_time}|{ctx.status}|{ctx.severity}"
