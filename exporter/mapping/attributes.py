"""Attribute building: the alarm's ``bk.*`` attributes and the dotted leaves of ``extend_info``.

Leaf rule (docs/reference.md): a string, bool, int or float stays as it is; a list whose items are all
of one of those types stays a list (OpenTelemetry arrays are homogeneous, so a mixed list, or a
list holding dicts, becomes compact JSON); anything else (``None``, an empty dict, a float that
JSON cannot hold) becomes a compact JSON string. A non-empty non-dict ``extend_info`` becomes the
single attribute ``extend_info``. The exporter's own names (``bk.*``, ``log.record.uid``) win.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from exporter.model import AlarmContext, AttrValue

__all__ = ["alarm_attributes", "extend_info_attributes"]

_PRIMITIVES = (str, bool, int, float)


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def _homogeneous(items: list[Any]) -> bool:
    if not items:
        return True
    first = type(items[0])
    if first not in _PRIMITIVES:
        return False
    # bool is a subclass of int: compare exact types so [True, 1] is not "all ints".
    return all(type(item) is first for item in items)


#: OTLP integers are signed 64-bit: a larger JSON integer travels as its digits (a string).
_INT64 = range(-(2**63), 2**63)


def _leaf(value: Any) -> AttrValue:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return str(value)
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)) and _homogeneous(list(value)):
        items = list(value)
        if items and isinstance(items[0], float) and not all(math.isfinite(v) for v in items):
            return _compact_json([repr(v) for v in items])
        if items and type(items[0]) is int and not all(v in _INT64 for v in items):
            return _compact_json(items)
        return items
    return _compact_json(value)


def _walk(prefix: str, value: Any, out: dict[str, AttrValue]) -> None:
    if isinstance(value, Mapping) and value:
        for key, child in value.items():
            _walk(f"{prefix}.{key}" if prefix else str(key), child, out)
    else:
        out[prefix] = _leaf(value)


def extend_info_attributes(extend_info: Any) -> dict[str, AttrValue]:
    """Flatten ``extend_info`` into ``{dotted.path: value}``."""
    if extend_info is None or extend_info == "" or (isinstance(extend_info, Mapping) and not extend_info):
        return {}
    if not isinstance(extend_info, Mapping):
        return {"extend_info": _leaf(extend_info)}
    out: dict[str, AttrValue] = {}
    _walk("", extend_info, out)
    return out


def alarm_attributes(ctx: AlarmContext | None) -> dict[str, AttrValue]:
    """The ``bk.*`` attributes known from search_alert (or just the id)."""
    if ctx is None:
        return {}
    out: dict[str, AttrValue] = {"bk.alarm.id": ctx.alarm_id}
    if ctx.bk_biz_id is not None:
        out["bk.biz.id"] = ctx.bk_biz_id
    if ctx.name:
        out["bk.alarm.name"] = ctx.name
    if ctx.severity is not None:
        out["bk.alarm.severity"] = ctx.severity
    if ctx.status:
        out["bk.alarm.status"] = ctx.status
    if ctx.strategy_id not in (None, "", 0):
        out["bk.strategy.id"] = ctx.strategy_id
    if ctx.strategy_name:
        out["bk.strategy.name"] = ctx.strategy_name
    for key, value in ctx.dimensions:
        out[f"bk.alarm.dimension.{key}"] = value
    return out
