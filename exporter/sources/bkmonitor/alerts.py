"""Parse search_alert's alert objects (docs/blueking-api.md §3.5) into AlarmContext, tolerantly.

Ids may arrive as strings or numbers, times as epoch ints or null, dimensions as a list of
``{key, value, display_key, display_value}`` (or a plain dict on odd servers). An alert without a
usable id is reported and skipped; every other field is optional.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from exporter.model import AlarmContext

__all__ = ["parse_alert"]


#: Integers OTLP can carry (signed 64-bit); epoch seconds whose nanoseconds still fit in them.
_INT64 = range(-(2**63), 2**63)
_EPOCH = range(1, (2**63 - 1) // 1_000_000_000)
#: A lone UTF-16 surrogate is valid JSON but not UTF-8 (SQLite and protobuf refuse it).
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _int(value: Any, valid: range = _INT64) -> int | None:
    """An integer field (also from "12" or 12.0); None when absent, unusable or out of ``valid``."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: "1e400", Infinity
        return None
    return number if number in valid else None


def _text(value: Any) -> str:
    return _SURROGATE_RE.sub("\ufffd", str(value))


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _text(value)


def _dimensions(raw: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, Mapping):
        return tuple((_text(k), _text(v)) for k, v in raw.items())
    out: list[tuple[str, str]] = []
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, Mapping) and item.get("key") not in (None, ""):
                out.append((_text(item["key"]), "" if item.get("value") is None else _text(item.get("value"))))
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
        begin_time=_int(alert.get("begin_time"), _EPOCH),
        create_time=_int(alert.get("create_time"), _EPOCH),
        update_time=_int(alert.get("update_time"), _EPOCH),
        end_time=_int(alert.get("end_time"), _EPOCH),
    )
