"""Response envelopes of the three BlueKing layers, and the fault catalogue (docs/blueking-api.md §2.7, §4)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_FAULT_KINDS",
    "FAULT_KINDS",
    "ApiError",
    "Response",
    "esb_error",
    "esb_response",
    "fault_response",
    "gateway_error",
    "gateway_headers",
    "json_response",
    "not_found",
]

#: Every fault kind ``Simulator.inject`` accepts.
FAULT_KINDS = (
    "esb_timeout",
    "esb_non_json",
    "gateway_429",
    "gateway_502",
    "gateway_503",
    "gateway_504",
    "plain_403",
    "malformed_json",
    "es_error",
    "slow",
    "auth_1306000",
    "auth_1640001",
    "reset",
)
#: The transient kinds random faults draw from unless ``Simulator.fault_kinds`` is changed.
DEFAULT_FAULT_KINDS = (
    "esb_timeout",
    "esb_non_json",
    "gateway_429",
    "gateway_502",
    "gateway_503",
    "gateway_504",
    "malformed_json",
    "es_error",
)


@dataclass
class Response:
    """What the handler writes. ``reset`` closes the connection with an RST and writes nothing."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reset: bool = False


class ApiError(Exception):
    """A kernel-layer refusal, like bkmonitor's ``failed()``: HTTP 200, ``result: false``, ``data: {}``."""

    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        details = {"type": None, "code": None, "overview": self.message, "detail": self.message}
        return {
            "code": self.code,
            "name": None,
            "result": False,
            "message": self.message,
            "data": {},
            "error_details": {**details, "popup_message": "warning"},
            **self.extra,
        }


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return Response(status, body, [("Content-Type", "application/json"), *(headers or [])])


def gateway_headers() -> list[tuple[str, str]]:
    """``X-Bkapi-Request-ID`` (uuid with dashes) and ``X-Request-ID`` (dashless), as APISIX sets them."""
    rid = uuid.uuid4()
    return [("X-Bkapi-Request-ID", str(rid)), ("X-Request-ID", rid.hex)]


def gateway_error(
    status: int, code: int, code_name: str, message: str, extra: list[tuple[str, str]] | None = None
) -> Response:
    """An APISIX error (``bk-error-wrapper``): JSON body without request_id, ``X-Bkapi-Error-*`` headers."""
    body = {"code": code, "code_name": code_name, "message": message, "result": False, "data": None}
    headers = [*gateway_headers(), ("X-Bkapi-Error-Code", str(code)), ("X-Bkapi-Error-Message", message)]
    resp = json_response(status, body, headers + (extra or []))
    resp.headers[0] = ("Content-Type", "application/json; charset=utf-8")
    return resp


def not_found() -> Response:
    """The ESB's 404 for an unknown (method, path): no ``code`` key, no body request_id."""
    return json_response(
        404, {"result": False, "data": None, "message": "The content does not exist"}, gateway_headers()
    )


def esb_response(payload: dict[str, Any], flavour: str = "esb") -> Response:
    """HTTP 200 with the kernel body; the ESB adds a 32-hex ``request_id``, the gateway a header instead."""
    if flavour == "gateway":
        return json_response(200, payload, gateway_headers())
    return json_response(200, {**payload, "request_id": uuid.uuid4().hex})


def esb_error(code: int, message: str, flavour: str = "esb") -> Response:
    """An ESB-layer refusal (``format_resp_dict``): HTTP 200, ``result: false``, ``data: null``."""
    return esb_response({"result": False, "code": code, "data": None, "message": message}, flavour)


def fault_response(fault: str, *, endpoint: str, flavour: str, app_code: str) -> Response:
    """The answer of one fault kind (``slow`` and ``malformed_json`` are handled by the server)."""
    third_party = f"Component request third-party system [MONITOR_V3] interface [{endpoint}] error: "
    later = ", please try again later or contact component developer to handle this"
    if fault == "esb_timeout":
        text = "Third-party system interface response time exceeds 30 seconds"
        return esb_error(1306201, third_party + text + later, flavour)
    if fault == "esb_non_json":
        return esb_error(1306201, third_party + "interface response is not the JSON format" + later, flavour)
    if fault == "auth_1306000":
        message = (
            "APP Secret verification failed, pelase confirm if the APP Secret and APP Code "
            f"[bk_app_code={app_code}] match"
        )
        return esb_error(1306000, message, flavour)
    if fault == "es_error":
        message = (
            "ConnectionTimeout caused by - ReadTimeoutError(HTTPConnectionPool(host='es7', port=9200): "
            "Read timed out. (read timeout=30))"
        )
        return esb_response(ApiError(500, message).body(), flavour)
    if fault == "gateway_429":
        extra = [
            ("Retry-After", "1"),
            ("X-Bkapi-RateLimit-Limit", "100"),
            ("X-Bkapi-RateLimit-Remaining", "0"),
            ("X-Bkapi-RateLimit-Reset", "1"),
            ("X-Bkapi-RateLimit-Plugin", "bk-resource-ratelimit"),
        ]
        message = "API rate limit exceeded by resource strategy"
        return gateway_error(429, 1642903, "RATE_LIMIT_RESTRICTION", message, extra)
    if fault == "gateway_502":
        return gateway_error(502, 1650200, "BAD_GATEWAY", 'Bad Gateway [upstream_error="connection refused"]')
    if fault == "gateway_503":
        return gateway_error(503, 1650300, "SERVICE_UNAVAILABLE", "Service Unavailable")
    if fault == "gateway_504":
        message = 'Request backend service timeout [upstream_error="timeout"]'
        return gateway_error(504, 1650401, "REQUEST_BACKEND_TIMEOUT", message)
    if fault == "auth_1640001":
        message = 'Parameters error [reason="bk_app_code or bk_app_secret is incorrect"]'
        return gateway_error(400, 1640001, "INVALID_ARGS", message)
    if fault == "plain_403":
        return Response(403, b"lack of tenant_id", [("Content-Type", "text/plain"), *gateway_headers()])
    if fault == "reset":
        return Response(0, reset=True)
    raise ValueError(f"fault {fault!r} has no canned answer")
