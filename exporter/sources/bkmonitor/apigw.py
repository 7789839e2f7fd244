"""The two ways to reach BlueKing Monitor, and what their refusals mean to an operator.

``bkmonitor.api: esb``    ``{base_url}/api/c/compapi/v2/monitor_v3/{name}/`` (``get_event_log``,
                          ``search_alert``, ``search_action``)
``bkmonitor.api: apigw``  ``{base_url}/api/bk-monitor/{stage}/app/…``: the ``bk-monitor`` API gateway,
                          the only way in on multi-tenant BlueKing (it installs no ESB). It publishes
                          ``/app/alert/search/`` and ``/app/action/search/`` but no flow-log resource
                          (docs/blueking-api.md §8), so ``get_event_log`` has no route there.

The gateway takes credentials only from the ``X-Bkapi-Authorization`` header, puts its request id in
the ``X-Bkapi-Request-ID`` response header, and answers its own refusals with a JSON body
``{code, code_name, message}`` and a real HTTP status (§4.2). The codes are classified by
:func:`exporter.sources.bkmonitor.envelope.classify_code`; :func:`hinted` adds what the operator
should change when a refusal has a known fix:

=====================================  =====================================================
refusal                                hint
=====================================  =====================================================
1640302 (cross-tenant), or a plain     set ``bkmonitor.tenant_id`` (a global-tenant app must send
"lack of tenant_id" 403                ``X-Bk-Tenant-Id``)
1640301 (resource not granted)         grant the app the bk-monitor gateway resources
ESB: HTTP 404 or 1640401               this BlueKing may have no ESB: ``bkmonitor.api: apigw``
gateway: HTTP 404 or 1640401           check ``bkmonitor.stage``
=====================================  =====================================================
"""

from __future__ import annotations

from typing import Any

from exporter.errors import BkApiError, BkAuthError, BkRateLimitError, BkResponseError

__all__ = [
    "APIGW",
    "ESB",
    "ESB_PREFIX",
    "GATEWAY_ROUTES",
    "base_path",
    "hinted",
    "route",
]

ESB = "esb"
APIGW = "apigw"
ESB_PREFIX = "/api/c/compapi/v2/monitor_v3"
#: endpoint name -> path under ``/api/bk-monitor/{stage}`` (support-files/apigw/resources/external/app)
GATEWAY_ROUTES = {
    "search_alert": "/app/alert/search/",
    "search_action": "/app/action/search/",
}

CROSS_TENANT = 1640302
NO_PERMISSION = 1640301
API_NOT_FOUND = 1640401


def base_path(api: str, stage: str) -> str:
    """The path every endpoint of ``api`` lives under (no trailing slash)."""
    return f"/api/bk-monitor/{stage}" if api == APIGW else ESB_PREFIX


def route(api: str, stage: str, endpoint: str) -> str | None:
    """The path of ``endpoint`` for ``api``, or None when that API does not publish it."""
    if api != APIGW:
        return f"{ESB_PREFIX}/{endpoint}/"
    path = GATEWAY_ROUTES.get(endpoint)
    return None if path is None else f"{base_path(api, stage)}{path}"


def _hint(error: BkApiError, api: str, stage: str) -> str | None:
    message = (error.bk_message or "").lower()
    if error.code == CROSS_TENANT or (error.http_status == 403 and "tenant" in message and error.code is None):
        return (
            "the call must name its tenant: set bkmonitor.tenant_id (sent as X-Bk-Tenant-Id; an app of the "
            "global tenant must send it on multi-tenant BlueKing)"
        )
    if error.code == NO_PERMISSION:
        return (
            "the app is not granted this bk-monitor gateway resource: apply for bk_app_code's permission to "
            "the bk-monitor gateway (/app/alert/search/ and /app/action/search/)"
        )
    if error.code == API_NOT_FOUND or (error.http_status == 404 and not isinstance(error, BkAuthError)):
        if api == APIGW:
            return (
                f"the bk-monitor gateway has no such resource at stage {stage!r}: check bkmonitor.stage "
                "(prod or stage) and that the bk-monitor gateway is published"
            )
        return (
            "no such ESB API: this BlueKing may have no ESB (multi-tenant BlueKing installs none); "
            "set bkmonitor.api: apigw to use the bk-monitor API gateway"
        )
    return None


def hinted(error: BkApiError, *, api: str, stage: str) -> BkApiError:
    """``error``, or the same error with the fix appended to its summary when one is known."""
    hint = _hint(error, api, stage)
    if hint is None:
        return error
    kw: dict[str, Any] = {
        "endpoint": error.endpoint,
        "code": error.code,
        "bk_message": error.bk_message,
        "request_id": error.request_id,
        "http_status": error.http_status,
    }
    summary = f"{error.summary}: {hint}"
    if isinstance(error, BkRateLimitError):
        return BkRateLimitError(summary, retry_after=error.retry_after, **kw)
    try:
        return type(error)(summary, **kw)
    except TypeError:  # a subclass with a constructor of its own
        return BkResponseError(summary, **kw)
