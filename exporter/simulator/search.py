"""``search_alert`` (docs/blueking-api.md §3): validation, overlap filter, conditions, ordering, paging, alert docs.

Simplifications: ``query_string`` supports only ``field:value`` / ``field:"value"`` terms and bare words
(case-insensitive substring of id, alert_name or description), all AND-ed (the word ``AND`` is skipped).
Unknown ``ordering`` fields are ignored. ``bk_biz_ids`` null or ``[]`` returns nothing (the simulated caller
is nobody's assignee). ``MINE``/``MY_*``/``SHIELDED_ABNORMAL`` statuses match nothing;
``NOT_SHIELDED_ABNORMAL`` means ``ABNORMAL``. Expired alarms are not searchable.
"""

from __future__ import annotations

import hashlib
import operator
import shlex
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from exporter.simulator.faults import ApiError
from exporter.simulator.store import SEVERITY_NAMES, SimAlarm, as_int, hms_string

__all__ = ["MAX_RESULT_WINDOW", "param_error", "search_alert"]

MAX_RESULT_WINDOW = 10000
DEFAULT_ORDERING = ("status", "-create_time", "-seq_id")
_RESOURCE = "fta_web.alert.resources.SearchAlertResource"
_SORTABLE = frozenset(
    {
        "create_time",
        "update_time",
        "begin_time",
        "end_time",
        "latest_time",
        "seq_id",
        "id",
        "severity",
        "status",
    }
    | {"alert_name", "bk_biz_id", "strategy_id"}
)
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_METHODS = frozenset({"eq", "neq", "include", "exclude", *_COMPARE})
_DISPLAY_KEYS = {
    "ip": "目标IP",
    "bk_target_ip": "目标IP",
    "bk_cloud_id": "云区域ID",
    "bk_target_cloud_id": "云区域ID",
}

Condition = tuple[str, set[str], str, str]  # key, values, method, joiner


def param_error(resource: str, name: str, problem: str) -> ApiError:
    """The kernel's 3300002 ``CustomException`` for a serializer error."""
    return ApiError(3300002, f"自定义异常：Resource[{resource}] 请求参数格式错误：({name}) {problem}")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "off")
    return bool(value)


def _field(alarm: SimAlarm, key: str) -> Any:
    for prefix in ("tags.", "dimensions.", "dimension."):
        if key.startswith(prefix):
            return alarm.dimensions.get(key[len(prefix) :])
    if key in ("alert_name", "name"):
        return alarm.name
    if key == "ip":
        return alarm.dimensions.get("ip")
    if key in _SORTABLE or key in ("strategy_name", "description"):
        return getattr(alarm, key, None)
    return None


def _check_condition(cond: Any) -> Condition:
    if not isinstance(cond, dict) or not cond.get("key"):
        raise param_error(_RESOURCE, "conditions", "key: 该字段是必填项。")
    values = cond.get("value", [])
    if not isinstance(values, list):
        raise param_error(_RESOURCE, "conditions", "value: 期望为一个包含物件的列表。")
    method = cond.get("method") or "eq"
    if method not in _METHODS:
        raise param_error(_RESOURCE, "conditions", f'method: "{method}" 不是合法选项。')
    return str(cond["key"]), {str(v) for v in values}, method, str(cond.get("condition") or "and")


def _condition_hit(alarm: SimAlarm, key: str, values: set[str], method: str) -> bool:
    raw = _field(alarm, key)
    text = "" if raw is None else str(raw)
    if method in ("eq", "neq"):
        return (raw is not None and text in values) == (method == "eq")
    if method in ("include", "exclude"):
        return (raw is not None and any(v in text for v in values)) == (method == "include")
    try:
        return _COMPARE[method](float(text), min(float(v) for v in values))
    except ValueError:
        return False


def _match_conditions(alarm: SimAlarm, conditions: list[Condition]) -> bool:
    result: bool | None = None  # folded left to right, like BaseQueryHandler.add_conditions
    for key, values, method, joiner in conditions:
        hit = _condition_hit(alarm, key, values, method)
        result = hit if result is None else (result or hit) if joiner == "or" else (result and hit)
    return True if result is None else result


def _parse_query_string(text: str) -> list[tuple[str | None, str]]:
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    terms: list[tuple[str | None, str]] = []
    for token in tokens:
        if token.upper() != "AND":
            key, sep, value = token.partition(":")
            terms.append((key, value) if sep and key else (None, token.lower()))
    return terms


def _match_term(alarm: SimAlarm, term: tuple[str | None, str]) -> bool:
    key, value = term
    if key is None:
        return any(value in str(x).lower() for x in (alarm.id, alarm.name, alarm.description))
    raw = _field(alarm, key)
    return raw is not None and str(raw) == value


def _sort_by(items: list[SimAlarm], key: str, desc: bool) -> list[SimAlarm]:
    """One stable sort pass; missing values last in both directions (ES ``missing: _last``)."""
    attr = "name" if key == "alert_name" else key
    present = [a for a in items if getattr(a, attr) is not None]
    missing = [a for a in items if getattr(a, attr) is None]
    present.sort(key=lambda a: getattr(a, attr), reverse=desc)
    return present + missing


def _validate(req: dict[str, Any]) -> tuple[dict[str, int], dict[str, list[Any]]]:
    ints: dict[str, int] = {}
    for name, default, low, high in (
        ("start_time", None, None, None),
        ("end_time", None, None, None),
        ("page", 1, 1, None),
        ("page_size", 10, 0, 5000),
    ):
        raw = req.get(name, default)
        if raw is None:
            raise param_error(_RESOURCE, name, "该字段是必填项。")
        value = as_int(raw)
        if value is None:
            raise param_error(_RESOURCE, name, "请填写合法的整数值。")
        if low is not None and value < low:
            raise param_error(_RESOURCE, name, f"请确保该值大于或者等于 {low}。")
        if high is not None and value > high:
            raise param_error(_RESOURCE, name, f"请确保该值小于或者等于 {high}。")
        ints[name] = value
    lists: dict[str, list[Any]] = {}
    for name in ("bk_biz_ids", "status", "conditions", "ordering", "space_uids"):
        value = req.get(name)
        if value is not None and not isinstance(value, list):
            kind = type(value).__name__
            raise param_error(_RESOURCE, name, f'期望为一个包含物件的列表，得到的类型是"{kind}"。')
        lists[name] = value or []
    return ints, lists


def search_alert(
    alarms: Iterable[SimAlarm],
    req: dict[str, Any],
    *,
    now: float,
    biz_names: dict[int, str],
    result_window: int = MAX_RESULT_WINDOW,
) -> tuple[dict[str, Any], bool]:
    """Run one search over ``alarms`` (caller holds the store lock). Returns ``(data, heavy)`` where ``heavy``
    tells whether show_overview/show_aggs were on. Raises :class:`ApiError` like the kernel would."""
    ints, lists = _validate(req)
    biz: set[int] = set()
    for item in lists["bk_biz_ids"]:
        value = as_int(item)
        if value is None:
            raise param_error(_RESOURCE, "bk_biz_ids", "请填写合法的整数值。")
        biz.add(value)
    for uid in lists["space_uids"]:
        if isinstance(uid, str) and uid.startswith("bkcc__") and uid[6:].isdigit():
            biz.add(int(uid[6:]))
    conditions = [_check_condition(c) for c in lists["conditions"]]
    terms = _parse_query_string(str(req.get("query_string") or ""))
    statuses = {"ABNORMAL" if s == "NOT_SHIELDED_ABNORMAL" else s for s in lists["status"]}
    page, size = ints["page"], ints["page_size"]
    if page * size > result_window:
        raise ApiError(
            500,
            "SearchPhaseExecutionException: Result window is too large, from + size must be less than or "
            f"equal to: [{result_window}] but was [{page * size}].",
        )
    start, end = ints["start_time"], min(ints["end_time"], int(now) + 60)  # BaseQueryHandler clamps end_time
    everyone = -1 in biz
    hits = [
        a
        for a in alarms
        if not a.expired
        and (everyone or a.bk_biz_id in biz)
        and (a.end_time is None or a.end_time >= start)
        and (a.begin_time <= end or a.create_time <= end)
        and (not statuses or a.status in statuses)
        and (not conditions or _match_conditions(a, conditions))
        and all(_match_term(a, t) for t in terms)
    ]
    for key in reversed(lists["ordering"] or DEFAULT_ORDERING):
        if isinstance(key, str) and key.lstrip("-") in _SORTABLE:
            hits = _sort_by(hits, key.lstrip("-"), key.startswith("-"))
    total = len(hits)
    data: dict[str, Any] = {
        "alerts": [alert_document(a, now, biz_names) for a in hits[(page - 1) * size : page * size]],
        "total": min(total, result_window),
        "total_relation": "gte" if total > result_window else "eq",
        "is_partial": False,
        "partial_reasons": [],
    }
    show_overview, show_aggs = _truthy(req.get("show_overview", True)), _truthy(req.get("show_aggs", True))
    if show_overview:
        by_status = Counter(a.status for a in hits)
        children = [{"id": s, "name": s, "count": by_status[s]} for s in ("ABNORMAL", "RECOVERED", "CLOSED")]
        data["overview"] = {"id": "alert", "name": "告警", "count": total, "children": children}
    if show_aggs:
        by_severity = Counter(a.severity for a in hits)
        children = [{"id": s, "name": n, "count": by_severity[s]} for s, n in SEVERITY_NAMES.items()]
        data["aggs"] = [{"id": "severity", "name": "级别", "count": total, "children": children}]
    return data, show_overview or show_aggs


def alert_document(a: SimAlarm, now: float, biz_names: dict[int, str]) -> dict[str, Any]:
    """One ``alerts[]`` item with the §3.5 fields (epoch-int times, id as str, dimensions as a list)."""
    dims = [
        {"key": k, "value": v, "display_key": _DISPLAY_KEYS.get(k, k), "display_value": v}
        for k, v in a.dimensions.items()
    ]
    ip = a.dimensions.get("ip") or a.dimensions.get("bk_target_ip") or ""
    cloud = a.dimensions.get("bk_cloud_id") or a.dimensions.get("bk_target_cloud_id") or "0"
    md5 = hashlib.md5(a.id.encode(), usedforsecurity=False).hexdigest()
    return {
        "id": a.id,
        "alert_name": a.name,
        "status": a.status,
        "severity": a.severity,
        "bk_biz_id": a.bk_biz_id,
        "bk_biz_name": biz_names.get(a.bk_biz_id, f"biz-{a.bk_biz_id}"),
        "strategy_id": a.strategy_id,
        "strategy_name": a.strategy_name,
        "create_time": a.create_time,
        "update_time": a.update_time,
        "begin_time": a.begin_time,
        "end_time": a.end_time,
        "latest_time": a.latest_time,
        "first_anomaly_time": a.begin_time,
        "duration": hms_string((a.end_time if a.end_time is not None else now) - a.begin_time),
        "ack_duration": None if a.ack_time is None else a.ack_time - a.begin_time,
        "is_ack": a.is_ack,
        "ack_operator": a.ack_operator,
        "is_shielded": False,
        "is_handled": True,
        "is_blocked": False,
        "shield_left_time": "0s",
        "shield_id": [],
        "shield_operator": [],
        "assignee": ["admin"],
        "appointee": ["admin"],
        "supervisor": [],
        "follower": [],
        "labels": [],
        "dimensions": dims,
        "tags": dims,
        "dimension_message": ", ".join(f"{d['display_key']}({d['value']})" for d in dims),
        "target_type": "HOST" if ip else "",
        "target": f"{ip}|{cloud}" if ip else "",
        "target_key": f"host|{ip}|{cloud}" if ip else "",
        "ip": ip,
        "ipv6": "",
        "bk_host_id": None,
        "bk_cloud_id": int(cloud) if ip and cloud.isdigit() else None,
        "bk_topo_node": [],
        "bk_service_instance_id": None,
        "description": a.description,
        "metric": ["bk_monitor.system.cpu_summary.usage"],
        "metric_display": [{"id": "bk_monitor.system.cpu_summary.usage", "name": "CPU使用率"}],
        "category": "os",
        "category_display": "主机-操作系统",
        "data_type": "time_series",
        "plugin_id": "bkmonitor",
        "plugin_display_name": "监控策略",
        "event_id": f"{md5}.{a.latest_time}.{a.strategy_id}.0.{a.severity}",
        "converge_id": a.id,
        "seq_id": a.seq_id,
        "dedupe_md5": md5,
        "dedupe_keys": [f"tags.{k}" for k in a.dimensions],
        "stage_display": "已通知",
    }
