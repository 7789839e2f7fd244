"""Attribute building: the alarm's ``bk.*`` attributes and the dotted leaves of ``extend_info``.

Leaf rule (docs/reference.md): a string, bool, int or float stays as it is; a list whose items are all
of one of those types stays a list (OpenTelemetry arrays are homogeneous, so a mixed list, or a
list holding dicts, becomes compact JSON); anything else (``None``, an empty dict, a float that
JSON cannot hold) becomes a compact JSON string. A non-empty non-dict ``extend_info`` becomes the
single attribute ``extend_info``. The exporter's own names (``bk.*``, ``log.record.uid``) win.

Depth limit: paths have at most :data:`MAX_DEPTH` segments. An object found at that depth is not
walked further: it becomes one attribute (at that path) holding its compact JSON. Nothing here
recurses, so an ``extend_info`` nested thousands deep (valid JSON, and what a hostile or broken
server can send) costs time in proportion to its size and never raises ``RecursionError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from exporter.model import AlarmContext, AttrValue

__all__ = ["MAX_DEPTH", "alarm_attributes", "compact_json", "extend_info_attributes"]

#: The most segments an ``extend_info`` attribute path has; deeper objects become compact JSON.
MAX_DEPTH = 32

_PRIMITIVES = (str, bool, int, float)


def compact_json(value: Any) -> str:
    """``value`` as compact JSON with sorted keys (``default=str``), at any nesting depth."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)
    except RecursionError:  # the C encoder recurses: walk the rest with an explicit stack
        return _compact_json_iterative(value)


class _Text(str):
    """Literal JSON punctuation on the encoder's work stack (never a value)."""


class _Leave:
    """Marks the end of a container on the encoder's work stack (for the cycle check)."""

    __slots__ = ("ident",)

    def __init__(self, ident: int) -> None:
        self.ident = ident


def _scalar_json(value: Any) -> str:
    if value is None or isinstance(value, (str, bool, int, float)):
        return json.dumps(value, ensure_ascii=False)  # not a container: no recursion
    return json.dumps(str(value), ensure_ascii=False)  # default=str


def _key_json(key: Any) -> str:
    if isinstance(key, str):
        return json.dumps(key, ensure_ascii=False)
    return json.dumps(json.dumps(key) if isinstance(key, (bool, int, float)) or key is None else str(key))


def _compact_json_iterative(value: Any) -> str:
    """What :func:`compact_json` returns, built without recursion (same text as ``json.dumps``)."""
    out: list[str] = []
    todo: list[Any] = [value]
    open_ids: set[int] = set()
    while todo:
        item = todo.pop()
        if type(item) is _Text:
            out.append(item)
            continue
        if type(item) is _Leave:
            open_ids.discard(item.ident)
            continue
        if isinstance(item, (Mapping, list, tuple)):
            if not item:
                out.append("{}" if isinstance(item, Mapping) else "[]")
                continue
            if id(item) in open_ids:
                raise ValueError("Circular reference detected")
            open_ids.add(id(item))
            todo.append(_Leave(id(item)))
            if isinstance(item, Mapping):
                out.append("{")
                todo.append(_Text("}"))
                pairs = sorted(item.items(), key=lambda pair: pair[0])
                for index in range(len(pairs) - 1, -1, -1):
                    key, child = pairs[index]
                    todo.append(child)
                    todo.append(_Text(("," if index else "") + _key_json(key) + ":"))
            else:
                out.append("[")
                todo.append(_Text("]"))
                for index in range(len(item) - 1, -1, -1):
                    todo.append(item[index])
                    if index:
                        todo.append(_Text(","))
            continue
        out.append(_scalar_json(item))
    return "".join(out)


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
            return compact_json([repr(v) for v in items])
        if items and type(items[0]) is int and not all(v in _INT64 for v in items):
            return compact_json(items)
        return items
    return compact_json(value)


def _flatten(root: Mapping[Any, Any], out: dict[str, AttrValue]) -> None:
    """Depth-first, in ``extend_info``'s own order (as a recursive walk would), with a stack."""
    stack: list[tuple[str, Any, int]] = [("", root, 0)]
    while stack:
        prefix, value, depth = stack.pop()
        if isinstance(value, Mapping) and value and depth < MAX_DEPTH:
            children = [(f"{prefix}.{key}" if prefix else str(key), child, depth + 1) for key, child in value.items()]
            stack.extend(reversed(children))
        else:
            out[prefix] = _leaf(value)


def extend_info_attributes(extend_info: Any) -> dict[str, AttrValue]:
    """Flatten ``extend_info`` into ``{dotted.path: value}`` (paths of at most :data:`MAX_DEPTH` segments)."""
    if extend_info is None or extend_info == "" or (isinstance(extend_info, Mapping) and not extend_info):
        return {}
    if not isinstance(extend_info, Mapping):
        return {"extend_info": _leaf(extend_info)}
    out: dict[str, AttrValue] = {}
    _flatten(extend_info, out)
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
