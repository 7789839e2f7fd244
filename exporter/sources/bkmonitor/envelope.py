"""Reading a BlueKing answer: the envelope, the error codes, the request id.

One pure function, :func:`parse_envelope`, turns (HTTP status, headers, body, endpoint) into the
``data`` of a successful answer or raises the :mod:`exporter.errors` class that says what to do
next (docs/blueking-api.md §1, §2.7, §4, §7.1). The rules, in order:

1. HTTP 502/503/504, whatever the body (JSON or an HTML proxy page)  -> BkUnavailableError
2. HTTP 429, whatever the body                                          -> BkRateLimitError
3. a body that is not JSON (at any nesting depth, with undecodable bytes replaced by U+FFFD):
   HTTP 401/403 (kernel middleware refusals are plain text)             -> BkAuthError, text as message
   HTTP 2xx (a truncated or garbled answer: transient)                  -> BkUnavailableError
   HTTP 500                                                             -> BkUnavailableError
   anything else (3xx redirects, 404 pages…)                            -> BkResponseError
4. a JSON body with ``result: true`` and a 2xx status                   -> ``data``
5. a JSON body with ``result: false``, or any JSON body with a non-2xx status: by ``code``

   ==========================================================  ====================
   code                                                        raises
   ==========================================================  ====================
   500, 1306201, 1650000, 1650001, 16502xx, 1650300, 1650401,
   1650070 (gateway UNKNOWN_ERROR)                             BkUnavailableError
   429, 1306429, 1642901-1642904 (+ Retry-After)               BkRateLimitError
   1306203 (ESB -> backend TLS failure)                        BkTransportError
   1306000, 1306401-1306403, 1640001, 1640004, 16401xx,
   1640301-1640304, 9900403, 35999999                          BkAuthError
   3324002                                                     BkNotFoundError
   no code: HTTP 401/403 -> BkAuthError, HTTP 500 -> BkUnavailableError, else BkResponseError
   any other code on an HTTP 5xx (a server error we do not know)  BkUnavailableError
   any other code (3300002, 1306406, 1640401…)                 BkResponseError
   ==========================================================  ====================

6. a 2xx JSON body that is not an object or has no ``result``           -> BkResponseError
7. ``data`` not of the expected type (``expect=``)                       -> BkResponseError

The request id is the body's ``request_id`` (ESB), else the ``X-Bkapi-Request-ID`` header
(gateway), else ``X-Request-ID``. The gateway's ``code_name`` is put in the summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from exporter.errors import (
    BkApiError,
    BkAuthError,
    BkNotFoundError,
    BkRateLimitError,
    BkResponseError,
    BkTransportError,
    BkUnavailableError,
)
from exporter.redact import redact
from exporter.sources.bkmonitor.body import decode_json

__all__ = ["classify_code", "parse_envelope", "parse_retry_after"]

_UNAVAILABLE_CODES = frozenset({500, 1306201, 1650000, 1650001, 1650070, 1650300, 1650401})
_RATE_LIMIT_CODES = frozenset({429, 1306429, 1642901, 1642902, 1642903, 1642904})
_TRANSPORT_CODES = frozenset({1306203})
_AUTH_CODES = frozenset(
    {1306000, 1306401, 1306402, 1306403, 1640001, 1640004, 1640301, 1640302, 1640303, 1640304} | {9900403, 35999999}
)
_NOT_FOUND_CODES = frozenset({3324002})

_SUMMARIES: dict[type[BkApiError], str] = {
    BkUnavailableError: "BlueKing is unavailable",
    BkRateLimitError: "rate limited",
    BkTransportError: "BlueKing could not reach its backend over TLS",
    BkAuthError: "credentials or permissions refused",
    BkNotFoundError: "unknown alarm, or past BlueKing's retention",
    BkResponseError: "request refused",
}

_MAX_MESSAGE = 500  # characters of a server message kept in an exception
_MAX_TEXT = 200  # characters of a non-JSON body kept in an exception


def classify_code(code: int) -> type[BkApiError] | None:
    """The exception class for a BlueKing ``code``, or ``None`` when the code is not a known one."""
    if code in _UNAVAILABLE_CODES or 1650200 <= code <= 1650299:
        return BkUnavailableError
    if code in _RATE_LIMIT_CODES:
        return BkRateLimitError
    if code in _TRANSPORT_CODES:
        return BkTransportError
    if code in _AUTH_CODES or 1640100 <= code <= 1640199:
        return BkAuthError
    if code in _NOT_FOUND_CODES:
        return BkNotFoundError
    return None


def _classify_status(status: int) -> type[BkApiError]:
    """The exception class for an error answer that carries no ``code``."""
    if status in (401, 403):
        return BkAuthError
    if status == 429:
        return BkRateLimitError
    if status in (500, 502, 503, 504):
        return BkUnavailableError
    return BkResponseError


def parse_retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP-date) or ``X-Bkapi-RateLimit-Reset``."""
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after", "x-bkapi-ratelimit-reset"):
        value = (lower.get(name) or "").strip()
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - now()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
        else:
            if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
                continue
            if seconds > 1e9:  # an epoch timestamp rather than a delay
                seconds -= now()
        return max(0.0, seconds)
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _as_text(value: Any, limit: int, secrets: Iterable[str]) -> str | None:
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = redact(text, secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_envelope(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    endpoint: str,
    *,
    expect: type | None = None,
    redact_secrets: Iterable[str] = (),
    now: Callable[[], float] = time.time,
    on_undecodable: Callable[[int, str | None], None] | None = None,
) -> Any:
    """Return the ``data`` of a successful BlueKing answer, or raise the matching BkApiError.

    ``expect`` (``list``, ``dict``) is the type ``data`` must have; ``redact_secrets`` are masked
    in any server text copied into the exception; ``now`` (wall clock) resolves HTTP-date
    ``Retry-After`` values; ``on_undecodable(n, request_id)`` is told when ``n`` bytes of the body
    were not valid UTF-8 (replaced by U+FFFD; the rest was read as sent). See the module
    docstring for the rules.
    """
    secrets = tuple(redact_secrets)
    lower = {k.lower(): v for k, v in headers.items()}
    header_request_id = lower.get("x-bkapi-request-id") or lower.get("x-request-id") or None
    ok_status = 200 <= status < 300

    decoded = decode_json(body)  # any depth; undecodable bytes replaced (U+FFFD) and counted
    payload: Any = decoded.value
    is_json = decoded.is_json

    obj: dict[str, Any] = payload if isinstance(payload, dict) else {}
    code = _as_int(obj.get("code"))
    code_name = obj.get("code_name") if isinstance(obj.get("code_name"), str) else None
    message = _as_text(obj.get("message"), _MAX_MESSAGE, secrets)
    body_request_id = obj.get("request_id")
    request_id = body_request_id if isinstance(body_request_id, str) and body_request_id else None
    request_id = request_id or header_request_id
    if decoded.replaced and decoded.is_json and on_undecodable is not None:
        on_undecodable(decoded.replaced, request_id)

    def fail(cls: type[BkApiError], summary: str | None = None, bk_message: str | None = None) -> BkApiError:
        text = summary or _SUMMARIES[cls]
        if code_name and summary is None:
            text = f"{text} ({_as_text(code_name, 80, secrets)})"
        kw: dict[str, Any] = {
            "endpoint": endpoint,
            "code": code,
            "bk_message": bk_message if bk_message is not None else message,
            "request_id": request_id,
            "http_status": status,
        }
        if cls is BkRateLimitError:
            return BkRateLimitError(text, retry_after=parse_retry_after(headers, now), **kw)
        return cls(text, **kw)

    # 1, 2: the status decides, whatever the body says.
    if status in (502, 503, 504):
        raise fail(BkUnavailableError)
    if status == 429:
        raise fail(BkRateLimitError)

    # 3: not JSON.
    if not is_json:
        if status in (401, 403):
            text = body.decode("utf-8", errors="replace").strip()
            raise fail(BkAuthError, bk_message=_as_text(" ".join(text.split()), _MAX_TEXT, secrets))
        if ok_status or status == 500:
            raise fail(BkUnavailableError, "response is not JSON")
        if 300 <= status < 400:
            raise fail(BkResponseError, "unexpected HTTP redirect (is bkmonitor.base_url right?)")
        raise fail(BkResponseError, "response is not JSON")

    # 6 (2xx only: an error status is classified whatever the body's shape).
    if ok_status and not isinstance(payload, dict):
        raise fail(BkResponseError, f"response is a JSON {type(payload).__name__}, not an object")
    if ok_status and "result" not in obj:
        raise fail(BkResponseError, "response has no 'result'")

    # 4.
    if ok_status and obj["result"] is True:
        data = obj.get("data")
        if expect is not None and not isinstance(data, expect):
            got = "null" if data is None else type(data).__name__
            raise fail(BkResponseError, f"'data' is {got}, expected {expect.__name__}")
        return data

    # 5.
    cls = classify_code(code) if code is not None else None
    if cls is None:
        if code is None:
            cls = _classify_status(status)
        else:  # an unknown code: a server error (5xx) is transient like any other, a 4xx is not
            cls = BkUnavailableError if status >= 500 else BkResponseError
    raise fail(cls)
