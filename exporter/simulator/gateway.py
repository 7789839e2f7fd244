"""The ``bk-monitor`` API gateway side of the simulator (docs/blueking-api.md §4.2, §8).

* routes: ``POST /api/bk-monitor/{stage}/app/alert/search/`` and ``…/app/action/search/``;
* a gateway-only installation (``Simulator(gateway_only=True)``, multi-tenant BlueKing installs no
  ESB): every other path, the ESB's ``/api/c/compapi/…`` included, answers 404 with code 1640401
  ``API_NOT_FOUND``;
* tenancy (``Simulator(tenant_id="system")``, an app of the global tenant): a gateway call without
  ``X-Bk-Tenant-Id`` (or naming another tenant) answers 403 with code 1640302;
* ``search_action``: the §8.2 request (``alert_ids``, ``status``, ``page``, ``page_size`` 0..1000) and
  response (``{"actions": [...], "total": N}``; ids as digit strings, ``alert_id`` a list).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from exporter.simulator.faults import Response, gateway_error
from exporter.simulator.search import param_error
from exporter.simulator.store import SimAlarm, as_int

__all__ = ["gateway_auth", "gateway_path", "gateway_route", "not_published", "search_action", "tenant_refusal"]

_ACTION_RESOURCE = "fta_web.action.resources.SearchActionResource"
_RESOURCES = {"app/alert/search/": "search_alert", "app/action/search/": "search_action"}


def gateway_path(stage: str, resource: str) -> str:
    """``/api/bk-monitor/{stage}/{resource}`` (``resource`` like ``app/alert/search/``)."""
    return f"/api/bk-monitor/{stage}/{resource}"


def gateway_route(method: str, path: str, stage: str) -> str | None:
    """The endpoint a gateway (method, path) serves at ``stage``, or None."""
    prefix = f"/api/bk-monitor/{stage}/"
    if method != "POST" or not path.startswith(prefix):
        return None
    return _RESOURCES.get(path[len(prefix) :])


def not_published(method: str, path: str) -> Response:
    """APISIX's answer for a path no published resource matches."""
    return gateway_error(404, 1640401, "API_NOT_FOUND", f'API not found [method="{method}" path="{path}"]')


def gateway_auth(headers: dict[str, str], app_code_ok: str, secret_ok: str) -> Response | None:
    """``bk-monitor`` gateway: header only (``allow_auth_from_params: false``), no user needed."""
    try:
        creds = json.loads(headers.get("x-bkapi-authorization", "{}"))
    except ValueError:
        creds = None
    if not isinstance(creds, dict):
        reason = "X-Bkapi-Authorization is not a valid JSON"
    elif not (app_code := creds.get("bk_app_code") or creds.get("app_code")):
        reason = "app code cannot be empty"
    elif not (secret := creds.get("bk_app_secret") or creds.get("app_secret")):
        reason = "please provide bk_app_secret or bk_signature to verify app"
    elif app_code != app_code_ok or secret != secret_ok:
        reason = "bk_app_code or bk_app_secret is incorrect"
    else:
        return None
    return gateway_error(400, 1640001, "INVALID_ARGS", f'Parameters error [reason="{reason}"]')


def tenant_refusal(headers: dict[str, str], tenant_id: str | None) -> Response | None:
    """``bk-tenant-validate``: a global-tenant app must name the tenant it calls for."""
    if tenant_id is None:
        return None
    sent = headers.get("x-bk-tenant-id", "")
    if sent == tenant_id:
        return None
    reason = "X-Bk-Tenant-Id is required" if not sent else f"the tenant {sent!r} is not the app's"
    message = f'Cross-tenant calls are not allowed [reason="{reason}"]'
    return gateway_error(403, 1640302, "CROSS_TENANT_FORBIDDEN", message)


def search_action(alarms: Iterable[SimAlarm], req: dict[str, Any]) -> dict[str, Any]:
    """One page of actions (caller holds the store lock)."""
    page, size = as_int(req.get("page", 1)), as_int(req.get("page_size", 10))
    if page is None or page < 1:
        raise param_error(_ACTION_RESOURCE, "page", "请确保该值大于或者等于 1。")
    if size is None or not 0 <= size <= 1000:
        raise param_error(_ACTION_RESOURCE, "page_size", "请确保该值小于或者等于 1000。")
    wanted = req.get("alert_ids")
    if wanted is not None and not isinstance(wanted, list):
        raise param_error(_ACTION_RESOURCE, "alert_ids", "期望为一个包含物件的列表。")
    ids = {str(i) for i in wanted or ()}
    statuses = {str(s) for s in req.get("status") or ()}
    biz = {as_int(b) for b in req.get("bk_biz_ids") or ()}
    hits = [
        dict(action)
        for alarm in alarms
        if not alarm.expired and (not ids or alarm.id in ids) and (-1 in biz or alarm.bk_biz_id in biz)
        for action in alarm.actions
        if not statuses or action["status"] in statuses
    ]
    descending = any(isinstance(o, str) and o == "-create_time" for o in req.get("ordering") or ())
    hits.sort(key=lambda a: (a["create_time"], int(a["id"])), reverse=descending)
    return {"actions": hits[(page - 1) * size : page * size], "total": len(hits)}
