"""Reading an answer's body under a total deadline and a byte cap.

A socket ``timeout`` bounds each wait, not the whole answer: a server that sends one byte every
few seconds would hold a worker for ever. :func:`read_raw` reads a streamed urllib3 answer
(:func:`read_body` a streamed ``requests`` one) chunk by chunk, giving each socket wait only the
time left before the request's deadline, and stops at ``bkmonitor.max_response_bytes`` (counted
after decompression, so a small gzip bomb is stopped too). Failures are :mod:`exporter.errors` values:

* the deadline passes                        -> BkTransportError (retried like any timeout)
* the answer is larger than the cap          -> BkResponseError, not retried: that alarm's poll
                                                fails with a message naming the option; the other
                                                alarms go on
* the connection breaks in the middle        -> BkTransportError
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
import urllib3.exceptions

from exporter.config.types import format_size
from exporter.errors import BkResponseError, BkTransportError

__all__ = ["CHUNK", "read_body", "read_raw"]

CHUNK = 1 << 16


def _too_large(endpoint: str, cap: int, request_id: str | None, status: int) -> BkResponseError:
    return BkResponseError(
        f"answer larger than bkmonitor.max_response_bytes ({format_size(cap)}); not read further "
        "(raise the option if such answers are expected)",
        endpoint=endpoint,
        request_id=request_id,
        http_status=status,
    )


def _timed_out(endpoint: str, timeout: float, request_id: str | None, status: int) -> BkTransportError:
    return BkTransportError(
        f"timed out after {timeout:g}s (the request's total deadline) while reading the answer",
        endpoint=endpoint,
        request_id=request_id,
        http_status=status,
    )


def _set_wait(raw: Any, seconds: float) -> None:
    """Give the next socket wait at most ``seconds`` (best effort: urllib3 2 exposes its connection)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(0.001, seconds))
        except OSError:
            pass


def read_body(
    response: requests.Response,
    *,
    endpoint: str,
    deadline: float,
    clock: Callable[[], float],
    cap: int,
    timeout: float,
    request_id: str | None = None,
) -> bytes:
    """The whole body of ``response`` (sent with ``stream=True``), read by ``deadline`` (``clock`` time)."""
    status = response.status_code
    raw = getattr(response, "raw", None)
    if raw is None or not hasattr(raw, "read1"):  # already read (a test transport, a cached answer)
        try:
            _check_length(response.headers, endpoint=endpoint, cap=cap, request_id=request_id, status=status)
        except BkResponseError:
            response.close()
            raise
        body = response.content or b""
        if len(body) > cap:
            raise _too_large(endpoint, cap, request_id, status)
        return body
    try:
        return read_raw(
            raw,
            status,
            response.headers,
            endpoint=endpoint,
            deadline=deadline,
            clock=clock,
            cap=cap,
            timeout=timeout,
            request_id=request_id,
        )
    except BaseException:
        response.close()
        raise


def _check_length(headers: Any, *, endpoint: str, cap: int, request_id: str | None, status: int) -> None:
    length = headers.get("Content-Length", "")
    if length.strip().isdigit() and int(length) > cap and not headers.get("Content-Encoding"):
        raise _too_large(endpoint, cap, request_id, status)


def read_raw(
    raw: Any,
    status: int,
    headers: Any,
    *,
    endpoint: str,
    deadline: float,
    clock: Callable[[], float],
    cap: int,
    timeout: float,
    request_id: str | None = None,
) -> bytes:
    """The whole body of a urllib3 response opened with ``preload_content=False``, read by
    ``deadline``; ``raw`` is closed when it is not read to its end."""
    parts: list[bytes] = []
    size = 0
    try:
        _check_length(headers, endpoint=endpoint, cap=cap, request_id=request_id, status=status)
        while True:
            left = deadline - clock()
            if left <= 0:
                raise _timed_out(endpoint, timeout, request_id, status)
            _set_wait(raw, left)
            chunk = raw.read1(CHUNK, decode_content=True)
            if not chunk:  # the end of the answer
                break
            size += len(chunk)
            if size > cap:
                raise _too_large(endpoint, cap, request_id, status)
            parts.append(chunk)
    except (TimeoutError, urllib3.exceptions.ReadTimeoutError):
        raw.close()
        raise _timed_out(endpoint, timeout, request_id, status) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raw.close()
        raise BkTransportError(
            f"connection broke while reading the answer: {type(exc).__name__}",
            endpoint=endpoint,
            request_id=request_id,
            http_status=status,
        ) from None
    except BaseException:
        raw.close()
        raise
    return b"".join(parts)
