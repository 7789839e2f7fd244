"""The BlueKing client: envelope rules, retries, auth placement, secrets, rate and concurrency limits.

No sockets: a ``requests.Session`` whose adapter replays a script of answers (or raises), and an
injected ``sleep`` that records the delays it is asked for.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3.exceptions
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict

import exporter
import exporter.sources.bkmonitor
from exporter.errors import (
    BkApiError,
    BkAuthError,
    BkNotFoundError,
    BkRateLimitError,
    BkResponseError,
    BkRetryableError,
    BkTransportError,
    BkUnavailableError,
)
from exporter.metrics import Metrics
from exporter.sources.bkmonitor import (
    BkClient,
    BkClientSettings,
    BkMonitorSource,
    RetryPolicy,
    TokenBucket,
    parse_envelope,
)
from exporter.sources.bkmonitor.report import code_label

ROOT = Path(__file__).resolve().parents[2]
SECRET = "demo-secret"
TOKEN = "tok+en/=1 x"  # URL-encodes differently in paths and forms
BASE = "https://paas.example.com"
EVENT_LOG_PATH = "/api/c/compapi/v2/monitor_v3/get_event_log/"
SEARCH_ALERT_PATH = "/api/c/compapi/v2/monitor_v3/search_alert/"
ESB_RID = "9f3c6a1e0b7d4c2a8e5f1d3b7a9c0e42"
GW_RID = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"

RECORD = {
    "operate": "CREATE",
    "message": "AVG(CPU) >= 80.0%",
    "extend_info": {},
    "status": "SUCCESS",
    "event_id": 17180000005819837,
    "create_time": "2024-06-10 14:13:50",
}


# -- the fake transport -------------------------------------------------------------------------

# status, body (JSON-encoded unless bytes/str), headers
Reply = tuple[int, bytes | str | dict | list, dict]
Step = Reply | BaseException | Callable[[requests.PreparedRequest], Reply]


def reply(status: int = 200, body: Any = None, **headers: str) -> Reply:
    return (status, body, {k.replace("_", "-"): v for k, v in headers.items()})


def ok(data: Any, request_id: str = ESB_RID) -> Reply:
    return reply(200, {"result": True, "code": 200, "message": "OK", "data": data, "request_id": request_id})


def esb_error(code: int, message: str = "boom", status: int = 200) -> Reply:
    body = {"result": False, "code": code, "message": message, "data": {}, "request_id": ESB_RID}
    return reply(status, body)


def gw_error(status: int, code: int, code_name: str, message: str = "refused", **headers: str) -> Reply:
    body = {"code": code, "code_name": code_name, "message": message, "result": False, "data": None}
    return reply(status, body, X_Bkapi_Request_ID=GW_RID, **headers)


HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def connection_refused(request: requests.PreparedRequest) -> Reply:
    """Raise what requests raises for a refused connection: messages that quote the full URL."""
    try:
        reason = urllib3.exceptions.NewConnectionError(
            None,  # type: ignore[arg-type]
            f"{request.url}: Failed to establish a new connection: [Errno 111] Connection refused",
        )
        raise urllib3.exceptions.MaxRetryError(None, request.path_url, reason)  # type: ignore[arg-type]
    except urllib3.exceptions.MaxRetryError as exc:
        raise requests.ConnectionError(exc, request=request) from exc


def read_timeout(request: requests.PreparedRequest) -> Reply:
    raise requests.ReadTimeout(f"Read timed out. (read timeout=30) url={request.url}", request=request)


class FakeAdapter(BaseAdapter):
    """Answers with the next scripted step (the last one repeats); records every request."""

    def __init__(self, script: list[Step]) -> None:
        super().__init__()
        self.script = list(script)
        self.requests: list[requests.PreparedRequest] = []
        self.kwargs: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        with self._lock:
            self.requests.append(request)
            self.kwargs.append(kwargs)
            step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            step = step(request)
        status, body, headers = step
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body, ensure_ascii=False)
        response = requests.Response()
        response.status_code = status
        response._content = body.encode() if isinstance(body, str) else body
        response._content_consumed = True  # type: ignore[attr-defined]
        response.headers = CaseInsensitiveDict(headers)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


class Sleeps:
    """An injected sleep: records the delays, never waits, can advance a fake clock."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> bool:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds
        return False


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def api_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.calls.append((endpoint, outcome, seconds))


def make_settings(**overrides: Any) -> BkClientSettings:
    values: dict[str, Any] = {
        "base_url": BASE,
        "app_code": "demo-app",
        "app_secret": SECRET,
        "rate_limit": 0,
        "max_attempts": 4,
        "initial_backoff": 1.0,
        "max_backoff": 30.0,
    }
    values.update(overrides)
    return BkClientSettings(**values)


class Harness:
    def __init__(self, script: list[Step], *, rng: float = 0.5, clock: FakeClock | None = None, **kw: Any):
        self.adapter = FakeAdapter(script)
        session = requests.Session()
        session.trust_env = False
        session.mount("https://", self.adapter)
        session.mount("http://", self.adapter)
        self.clock = clock or FakeClock()
        self.sleeps = Sleeps(self.clock if clock is not None else None)
        self.observer = Observer()
        self.settings = make_settings(**kw)
        self.client = BkClient(
            self.settings,
            session=session,
            observer=self.observer,
            sleep=self.sleeps,
            clock=self.clock,
            rng=lambda: rng,
        )

    @property
    def last(self) -> requests.PreparedRequest:
        return self.adapter.requests[-1]


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(script: list[Step], **kw: Any) -> Harness:
        h = Harness(script, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.client.close()


def error_chain_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def walk_chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


# -- the envelope table, through the client ------------------------------------------------------

ENVELOPE_CASES = [
    # id, script, expected (class or "ok"), attempts, code, http status, request id
    pytest.param([ok([RECORD])], "ok", 1, None, None, None, id="success-list"),
    pytest.param([ok([])], "ok", 1, None, None, None, id="success-empty-list"),
    pytest.param([esb_error(1306201), ok([RECORD])], "ok", 2, None, None, None, id="1306201-retried-then-ok"),
    pytest.param([esb_error(1306201)], BkUnavailableError, 4, 1306201, 200, ESB_RID, id="1306201-gives-up"),
    pytest.param([esb_error(1306000)], BkAuthError, 1, 1306000, 200, ESB_RID, id="1306000-auth"),
    pytest.param([esb_error(3324002)], BkNotFoundError, 1, 3324002, 200, ESB_RID, id="3324002-not-found"),
    pytest.param([esb_error(3300002)], BkResponseError, 1, 3300002, 200, ESB_RID, id="3300002-bad-args"),
    pytest.param([esb_error(1306406)], BkResponseError, 1, 1306406, 200, ESB_RID, id="1306406-arg-error"),
    pytest.param([esb_error(500)], BkUnavailableError, 4, 500, 200, ESB_RID, id="backend-500-retried"),
    pytest.param([esb_error(500), ok([RECORD])], "ok", 2, None, None, None, id="backend-500-then-ok"),
    pytest.param(
        [gw_error(429, 1642903, "RATE_LIMIT_RESTRICTION", Retry_After="3"), ok([RECORD])],
        "ok",
        2,
        None,
        None,
        None,
        id="429-retry-after-then-ok",
    ),
    pytest.param(
        [gw_error(429, 1642903, "RATE_LIMIT_RESTRICTION")],
        BkRateLimitError,
        4,
        1642903,
        429,
        GW_RID,
        id="429-gives-up",
    ),
    pytest.param([reply(429, b"Too Many Requests")], BkRateLimitError, 4, None, 429, None, id="429-text"),
    pytest.param(
        [gw_error(502, 1650201, "ERROR_REQUESTING_RESOURCE")],
        BkUnavailableError,
        4,
        1650201,
        502,
        GW_RID,
        id="502-json",
    ),
    pytest.param(
        [gw_error(503, 1650300, "SERVICE_UNAVAILABLE")],
        BkUnavailableError,
        4,
        1650300,
        503,
        GW_RID,
        id="503-json",
    ),
    pytest.param(
        [gw_error(504, 1650401, "REQUEST_BACKEND_TIMEOUT")],
        BkUnavailableError,
        4,
        1650401,
        504,
        GW_RID,
        id="504-json",
    ),
    pytest.param([reply(502, HTML_502)], BkUnavailableError, 4, None, 502, None, id="502-html"),
    pytest.param([reply(503, HTML_502)], BkUnavailableError, 4, None, 503, None, id="503-html"),
    pytest.param(
        [reply(504, HTML_502, X_Request_ID="echoed")],
        BkUnavailableError,
        4,
        None,
        504,
        "echoed",
        id="504-html",
    ),
    pytest.param(
        [reply(502, {"result": False, "code": 1306000, "message": "x"})],
        BkUnavailableError,
        4,
        1306000,
        502,
        None,
        id="502-status-beats-body-code",
    ),
    pytest.param([reply(403, b"lack of tenant_id")], BkAuthError, 1, None, 403, None, id="403-plain-text"),
    pytest.param([reply(200, b"<html>oops</html>")], BkUnavailableError, 4, None, 200, None, id="200-html"),
    pytest.param(
        [reply(200, b'{"result": true, "data": [{"oper'), ok([RECORD])],
        "ok",
        2,
        None,
        None,
        None,
        id="200-truncated",
    ),
    pytest.param([reply(200, b"")], BkUnavailableError, 4, None, 200, None, id="200-empty"),
    pytest.param(
        [reply(404, {"result": False, "data": None, "message": "The content does not exist"})],
        BkResponseError,
        1,
        None,
        404,
        None,
        id="404-esb-no-code",
    ),
    pytest.param(
        [gw_error(400, 1640001, "INVALID_ARGS", 'Parameters error [reason="bk_app_code or bk_app_secret"]')],
        BkAuthError,
        1,
        1640001,
        400,
        GW_RID,
        id="1640001-http-400",
    ),
    pytest.param(
        [gw_error(200, 1640001, "INVALID_ARGS")],
        BkAuthError,
        1,
        1640001,
        200,
        GW_RID,
        id="1640001-http-200-status-rewrite",
    ),
    pytest.param([gw_error(403, 1640301, "APP_NO_PERMISSION")], BkAuthError, 1, 1640301, 403, GW_RID, id="1640301"),
    pytest.param([gw_error(404, 1640401, "API_NOT_FOUND")], BkResponseError, 1, 1640401, 404, GW_RID, id="1640401"),
    pytest.param([read_timeout], BkTransportError, 4, None, None, "ours", id="read-timeout"),
    pytest.param([requests.ConnectTimeout("connect")], BkTransportError, 4, None, None, "ours", id="conn-timeout"),
    pytest.param([connection_refused], BkTransportError, 4, None, None, "ours", id="connection-refused"),
    pytest.param([connection_refused, read_timeout, ok([RECORD])], "ok", 3, None, None, None, id="transport-then-ok"),
    pytest.param(
        [requests.exceptions.ChunkedEncodingError("truncated")],
        BkTransportError,
        4,
        None,
        None,
        "ours",
        id="chunked",
    ),
]


@pytest.mark.parametrize(("script", "expected", "attempts", "code", "http_status", "request_id"), ENVELOPE_CASES)
def test_envelope_cases_through_client(
    harness: Callable[..., Harness],
    script: list[Step],
    expected: type[BkApiError] | str,
    attempts: int,
    code: int | None,
    http_status: int | None,
    request_id: str | None,
) -> None:
    h = harness(script)
    if expected == "ok":
        final = script[-1]
        assert isinstance(final, tuple) and isinstance(final[1], dict)
        assert h.client.get_event_log("17180000005819837") == final[1]["data"]
    else:
        assert isinstance(expected, type)
        with pytest.raises(expected) as info:
            h.client.get_event_log("17180000005819837")
        error = info.value
        assert type(error) is expected
        assert error.endpoint == "get_event_log"
        assert error.code == code
        assert error.http_status == http_status
        if request_id == "ours":  # no answer: our own X-Request-ID, for the gateway's logs
            assert error.request_id == h.last.headers["X-Request-ID"]
        else:
            assert error.request_id == request_id
    assert h.client.requests_sent == attempts == len(h.adapter.requests)
    assert h.client.retries == attempts - 1 == len(h.sleeps.delays)
    assert len(h.observer.calls) == attempts


def test_retry_after_is_honoured(harness: Callable[..., Harness]) -> None:
    h = harness([gw_error(429, 1642903, "RATE_LIMIT_RESTRICTION", Retry_After="3"), ok([])], rng=0.0)
    assert h.client.get_event_log("1") == []
    assert h.sleeps.delays == [3.0]  # the plain backoff would have been 0.5


def test_retry_after_is_capped_at_five_max_backoff(harness: Callable[..., Harness]) -> None:
    h = harness([reply(429, b"", Retry_After="3600"), ok([])], max_backoff=2.0)
    h.client.get_event_log("1")
    assert h.sleeps.delays == [10.0]


def test_bkapi_ratelimit_reset_header_is_a_retry_hint(harness: Callable[..., Harness]) -> None:
    h = harness([gw_error(200, 1642901, "RATE_LIMIT_RESTRICTION", X_Bkapi_RateLimit_Reset="7"), ok([])])
    h.client.get_event_log("1")
    assert h.sleeps.delays == [7.0]


@pytest.mark.parametrize(("rng", "expected"), [(0.0, [0.5, 1.0, 2.0, 4.0]), (0.5, [0.75, 1.5, 3.0, 6.0])])
def test_backoff_sequence(harness: Callable[..., Harness], rng: float, expected: list[float]) -> None:
    h = harness([esb_error(1306201)], rng=rng, max_attempts=5)
    with pytest.raises(BkUnavailableError):
        h.client.get_event_log("1")
    assert h.sleeps.delays == expected


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def test_backoff_bounds_with_any_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=1.0, max_backoff=8.0)
    error = BkUnavailableError("x")
    for n, cap in enumerate([1, 2, 4, 8, 8, 8, 8]):
        assert policy.backoff_cap(n) == cap
        for r in (0.0, 0.3, 0.999999):
            assert cap / 2 <= policy.delay(n, error, fixed(r)) <= cap
    assert policy.backoff_cap(10_000) == 8.0  # no overflow


def test_rate_limit_retry_after_wins_over_shorter_backoff() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=1.0, max_backoff=30.0)
    assert policy.delay(0, BkRateLimitError("x", retry_after=12.5), lambda: 0.5) == 12.5
    assert policy.delay(4, BkRateLimitError("x", retry_after=1.0), lambda: 0.0) == 8.0
    assert policy.delay(0, BkRateLimitError("x", retry_after=999.0), lambda: 0.0) == 150.0


def test_retries_are_logged_with_context(harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness([esb_error(1306201), ok([])])
    h.client.get_event_log("17180000005819837")
    lines = [r for r in caplog.records if r.name == "exporter.sources.bkmonitor.retry"]
    assert len(lines) == 1
    text = lines[0].getMessage()
    for part in ("get_event_log", "17180000005819837", "1306201", ESB_RID, "attempt 1/4", "0.75s"):
        assert part in text
    assert lines[0].levelno == logging.DEBUG
    assert isinstance(lines[0].args, tuple) and lines[0].args  # lazy %-formatting


def test_final_failure_is_raised_not_logged(harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness([esb_error(1306000, "APP Secret verification failed")])
    with pytest.raises(BkAuthError, match="APP Secret verification failed"):
        h.client.get_event_log("1")
    assert not [r for r in caplog.records if r.name.startswith("exporter")]


# -- retried failures are visible: a rate-limited WARNING and a counter by code -------------------------


def metered(script: list[Step], clock: FakeClock) -> tuple[BkClient, Metrics]:
    """A client whose observer is the daemon's real Metrics; no sleep waits, the clock stands still."""
    adapter = FakeAdapter(script)
    session = requests.Session()
    session.mount("https://", adapter)
    metrics = Metrics()
    client = BkClient(make_settings(), session=session, observer=metrics, sleep=Sleeps(), clock=clock, rng=lambda: 0.5)
    return client, metrics


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "exporter.sources.bkmonitor.report" and "retrying" in r.msg]


def retries_counted(metrics: Metrics, code: str, endpoint: str = "get_event_log") -> float:
    value = metrics.registry.get_sample_value("bk_otel_api_retries_total", {"api_endpoint": endpoint, "code": code})
    return value or 0.0


def test_a_429_then_success_logs_one_warning_with_code_and_request_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    client, metrics = metered(
        [gw_error(429, 1642903, "RATE_LIMIT_RESTRICTION", "API rate limit exceeded", Retry_After="1"), ok([RECORD])],
        FakeClock(),
    )
    assert client.get_event_log("17180000005819837") == [RECORD]
    lines = retry_lines(caplog)
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    text = lines[0].getMessage()
    for part in ("get_event_log", "17180000005819837", "code=1642903", "http=429", "API rate limit exceeded", GW_RID):
        assert part in text, text
    assert retries_counted(metrics, "1642903") == 1
    client.close()


def test_a_hundred_retries_within_a_minute_log_once_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    timeout, limited = [esb_error(1306201), ok([])], [gw_error(429, 1642903, "RATE_LIMIT_RESTRICTION"), ok([])]
    unavailable = [gw_error(503, 1650300, "SERVICE_UNAVAILABLE"), ok([])]
    client, metrics = metered(timeout * 100 + limited + unavailable + timeout, clock)
    for _ in range(100):
        client.get_event_log("1")
    assert len(retry_lines(caplog)) == 1
    assert retries_counted(metrics, "1306201") == 100
    client.get_event_log("1")  # another kind of failure (rate limited): its first one is logged at once
    lines = retry_lines(caplog)
    assert len(lines) == 2 and "code=1642903" in lines[1].getMessage()
    client.get_event_log("1")  # unavailable again (a 503): the same kind as 1306201, held back
    assert len(retry_lines(caplog)) == 2
    clock.now += 61
    client.get_event_log("1")  # a minute later: one line carrying the count of the 100 held back
    lines = retry_lines(caplog)
    assert len(lines) == 3
    assert "code=1306201" in lines[2].getMessage() and "(100 similar suppressed)" in lines[2].getMessage()
    assert retries_counted(metrics, "1306201") == 101  # the counter tells every code apart
    assert retries_counted(metrics, "1650300") == 1
    assert retries_counted(metrics, "1642903") == 1
    client.close()


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (BkUnavailableError("x", code=1306201, http_status=200), "1306201"),
        (BkUnavailableError("x", code=1650250, http_status=502), "1650250"),
        (BkUnavailableError("x", code=987654321, http_status=200), "other"),  # any code a server invents
        (BkUnavailableError("x", http_status=502), "http_502"),
        (BkUnavailableError("x", http_status=200), "http_other"),
        (BkRateLimitError("x", http_status=429), "http_429"),
        (BkTransportError("x"), "transport"),
    ],
)
def test_retry_code_label_is_bounded(error: BkRetryableError, label: str) -> None:
    assert code_label(error) == label


def test_an_undecodable_answer_is_read_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    body = json.dumps({"result": True, "code": 200, "data": [{**RECORD, "message": "MARK"}], "request_id": ESB_RID})
    raw = body.encode().replace(b"MARK", b"caf\xe9 \xff")
    client, metrics = metered([reply(200, raw)], FakeClock())
    for _ in range(3):
        assert client.get_event_log("42")[0]["message"] == "caf\ufffd \ufffd"
    lines = [r for r in caplog.records if r.name == "exporter.sources.bkmonitor.report"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    for part in ("get_event_log", "alarm=42", "2 bytes", ESB_RID):
        assert part in lines[0].getMessage()
    assert (
        metrics.registry.get_sample_value("bk_otel_api_undecodable_bytes_total", {"api_endpoint": "get_event_log"}) == 6
    )
    assert client.requests_sent == 3  # read, not retried
    client.close()


def test_stop_wakes_a_backoff_sleep_and_refuses_new_calls() -> None:
    adapter = FakeAdapter([esb_error(1306201)])
    session = requests.Session()
    session.mount("https://", adapter)
    client = BkClient(make_settings(initial_backoff=600.0, max_backoff=600.0), session=session)
    source = BkMonitorSource(client)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.get_event_log("1")
        except BkApiError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 10
    while client.retries < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()  # what App.request_stop calls on SIGTERM
    worker.join(10)
    assert not worker.is_alive()
    assert len(errors) == 1 and "client closed" in str(errors[0])
    with pytest.raises(BkTransportError, match="client closed"):
        client.get_event_log("2")
    assert client.requests_sent == 1
    client.close()


def test_observer_outcomes(harness: Callable[..., Harness]) -> None:
    clock = FakeClock()
    h = harness(
        [
            esb_error(1306201),
            reply(429, b""),
            ok([]),
            esb_error(1306000),
            esb_error(3324002),
            esb_error(3300002),
            connection_refused,
        ],
        clock=clock,
        max_attempts=3,
    )
    h.client.get_event_log("1")
    for expected in (BkAuthError, BkNotFoundError, BkResponseError):
        with pytest.raises(expected):
            h.client.get_event_log("1")
    outcomes = [outcome for _, outcome, _ in h.observer.calls]
    assert outcomes[:6] == ["retryable", "rate_limited", "ok", "auth", "not_found", "error"]
    with pytest.raises(BkTransportError):
        h.client.get_event_log("1")
    assert [o for _, o, _ in h.observer.calls[6:]] == ["retryable"] * 3
    assert all(endpoint == "get_event_log" and seconds >= 0 for endpoint, _, seconds in h.observer.calls)


def test_observer_gets_latency() -> None:
    class SlowClock(FakeClock):
        def __call__(self) -> float:
            self.now += 0.25  # every reading is a quarter second later
            return self.now

    h = Harness([ok([])], clock=SlowClock())
    h.client.get_event_log("1")
    assert h.observer.calls == [("get_event_log", "ok", 0.25)]


# -- parse_envelope directly ---------------------------------------------------------------------


def parse(status: int, body: Any, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_envelope(status, headers or {}, raw, "get_event_log", **kw)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (1306201, BkUnavailableError),
        (1650000, BkUnavailableError),
        (1650001, BkUnavailableError),
        (1650200, BkUnavailableError),
        (1650299, BkUnavailableError),
        (1650300, BkUnavailableError),
        (1650401, BkUnavailableError),
        (500, BkUnavailableError),
        (429, BkRateLimitError),
        (1306429, BkRateLimitError),
        (1642901, BkRateLimitError),
        (1642904, BkRateLimitError),
        (1306203, BkTransportError),
        (1306000, BkAuthError),
        (1306401, BkAuthError),
        (1306402, BkAuthError),
        (1306403, BkAuthError),
        (1640001, BkAuthError),
        (1640004, BkAuthError),
        (1640100, BkAuthError),
        (1640102, BkAuthError),
        (1640301, BkAuthError),
        (1640304, BkAuthError),
        (9900403, BkAuthError),
        (35999999, BkAuthError),
        (3324002, BkNotFoundError),
        (3300002, BkResponseError),
        (1306206, BkResponseError),
        (1306406, BkResponseError),
        (1640401, BkResponseError),
        (1650002, BkResponseError),
        (400, BkResponseError),
    ],
)
def test_code_classification(code: int, cls: type[BkApiError]) -> None:
    with pytest.raises(cls) as info:
        parse(200, {"result": False, "code": code, "message": "m"})
    assert type(info.value) is cls
    assert info.value.code == code


def test_string_code_is_understood() -> None:
    with pytest.raises(BkAuthError) as info:
        parse(200, {"result": False, "code": "9900403", "message": "no permission"})
    assert info.value.code == 9900403


@pytest.mark.parametrize(
    ("status", "body", "cls", "match"),
    [
        (200, [1, 2], BkResponseError, "JSON list, not an object"),
        (200, "text", BkResponseError, "JSON str, not an object"),
        (200, {"code": 200, "data": []}, BkResponseError, "no 'result'"),
        (200, {"result": True, "data": {"alerts": []}}, BkResponseError, "'data' is dict, expected list"),
        (200, {"result": True}, BkResponseError, "'data' is null, expected list"),
        (200, {"result": False}, BkResponseError, "request refused"),
        (200, {"result": "true", "data": []}, BkResponseError, "request refused"),
        (401, {"detail": "Authentication credentials were not provided."}, BkAuthError, "refused"),
        (500, {"result": False, "message": "x"}, BkUnavailableError, "unavailable"),
        (500, b"<html>Server Error</html>", BkUnavailableError, "not JSON"),
        (404, b"<html>Not Found</html>", BkResponseError, "not JSON"),
        (302, b"", BkResponseError, "redirect"),
        (200, b"\xff\xfe\x00garbage", BkUnavailableError, "not JSON"),
        (200, b"[" * 100_000, BkUnavailableError, "not JSON"),
    ],
)
def test_shapes(status: int, body: Any, cls: type[BkApiError], match: str) -> None:
    with pytest.raises(cls, match=match) as info:
        parse(status, body, expect=list)
    assert type(info.value) is cls
    assert info.value.http_status == status


def test_success_returns_data_as_is() -> None:
    assert parse(200, {"result": True, "code": 200, "data": {"alerts": [], "total": 0}}, expect=dict) == {
        "alerts": [],
        "total": 0,
    }
    assert parse(200, {"result": True, "data": None}) is None  # no expectation, no check


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({"request_id": ESB_RID}, {"X-Bkapi-Request-ID": GW_RID, "X-Request-ID": "x"}, ESB_RID),
        ({}, {"x-bkapi-request-id": GW_RID, "X-Request-ID": "x"}, GW_RID),
        ({"request_id": ""}, {"X-Request-ID": "echoed"}, "echoed"),
        ({"request_id": 12}, {}, None),
    ],
)
def test_request_id_sources(body: dict[str, Any], headers: dict[str, str], expected: str | None) -> None:
    with pytest.raises(BkNotFoundError) as info:
        parse(
            200,
            {"result": False, "code": 3324002, "message": "告警ID (1) 对应的告警信息不存在", **body},
            headers,
        )
    assert info.value.request_id == expected


def test_gateway_error_summary_has_code_name_and_everything() -> None:
    body = {
        "code": 1640301,
        "code_name": "APP_NO_PERMISSION",
        "message": 'App has no permission [reason="no permission, bk_app_code=demo-app"]',
        "result": False,
        "data": None,
    }
    with pytest.raises(BkAuthError) as info:
        parse(403, body, {"X-Bkapi-Request-ID": GW_RID})
    text = str(info.value)
    for part in ("get_event_log", "APP_NO_PERMISSION", "http=403", "code=1640301", "no permission", GW_RID):
        assert part in text
    assert info.value.bk_message == body["message"]


def test_plain_text_403_message_is_truncated() -> None:
    with pytest.raises(BkAuthError) as info:
        parse(403, ("invalid jwt  \n" + "x" * 500).encode())
    assert info.value.bk_message is not None
    assert info.value.bk_message.startswith("invalid jwt x")
    assert len(info.value.bk_message) == 200


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After": "Thu, 01 Jan 2026 00:00:30 GMT"}, 30.0),
        ({"Retry-After": "Thu, 01 Jan 2026 00:00:00 GMT"}, 0.0),
        ({"X-Bkapi-RateLimit-Reset": "12"}, 12.0),
        ({"X-Bkapi-RateLimit-Reset": str(1767225600 + 40)}, 40.0),  # an epoch, not a delay
        ({"Retry-After": "soon", "X-Bkapi-RateLimit-Reset": "5"}, 5.0),
        ({"Retry-After": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    now = 1767225600.0  # 2026-01-01T00:00:00Z
    with pytest.raises(BkRateLimitError) as info:
        parse(429, {"code": 1642903, "result": False}, headers, now=lambda: now)
    assert info.value.retry_after == expected


def test_server_text_is_redacted() -> None:
    body = {"result": False, "code": 1306000, "message": f"APP Secret [{SECRET}] verification failed"}
    with pytest.raises(BkAuthError) as info:
        parse(200, body, redact_secrets=[SECRET])
    assert SECRET not in str(info.value)
    assert "***" in str(info.value)


# -- auth, headers, URLs -------------------------------------------------------------------------


def test_header_auth_get(harness: Callable[..., Harness]) -> None:
    h = harness([ok([RECORD])], language="zh-cn")
    h.client.get_event_log("17180000005819837")
    request = h.last
    assert request.method == "GET"
    assert request.url is not None
    parts = urlsplit(request.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == BASE + EVENT_LOG_PATH
    assert parse_qs(parts.query) == {"id": ["17180000005819837"]}
    assert SECRET not in request.url
    assert json.loads(request.headers["X-Bkapi-Authorization"]) == {
        "bk_app_code": "demo-app",
        "bk_app_secret": SECRET,
        "bk_username": "admin",
    }
    assert request.headers["Blueking-Language"] == "zh-cn"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"bk-otel-exporter/{exporter.__version__}"
    assert len(request.headers["X-Request-ID"]) == 32
    int(request.headers["X-Request-ID"], 16)
    assert h.adapter.kwargs[-1]["timeout"] == 35.0  # the ESB default: above its own 30 s backend timeout
    assert h.adapter.kwargs[-1]["verify"] is True


def test_header_auth_with_token_and_no_username(harness: Callable[..., Harness]) -> None:
    h = harness([ok([])], username=None, bk_token=TOKEN)
    h.client.get_event_log("1")
    assert json.loads(h.last.headers["X-Bkapi-Authorization"]) == {
        "bk_app_code": "demo-app",
        "bk_app_secret": SECRET,
        "bk_token": TOKEN,
    }


def test_header_auth_post(harness: Callable[..., Harness]) -> None:
    data = {"alerts": [{"id": "17180000005819837"}], "total": 1}
    h = harness([ok(data)])
    query = {"bk_biz_ids": [2], "start_time": 1, "end_time": 2, "page": 1, "page_size": 500}
    assert h.client.search_alert(query) == data
    request = h.last
    assert request.method == "POST"
    assert request.url == BASE + SEARCH_ALERT_PATH
    assert request.headers["Content-Type"] == "application/json"
    assert isinstance(request.body, bytes)
    assert json.loads(request.body) == query
    assert SECRET not in request.body.decode()
    assert "X-Bkapi-Authorization" in request.headers


def test_params_auth_get_puts_credentials_in_query(harness: Callable[..., Harness]) -> None:
    h = harness([ok([])], auth_in="params", bk_token=TOKEN)
    h.client.get_event_log("42")
    assert h.last.url is not None
    assert parse_qs(urlsplit(h.last.url).query) == {
        "id": ["42"],
        "bk_app_code": ["demo-app"],
        "bk_app_secret": [SECRET],
        "bk_username": ["admin"],
        "bk_token": [TOKEN],
    }
    assert "X-Bkapi-Authorization" not in h.last.headers


def test_params_auth_post_puts_credentials_in_body(harness: Callable[..., Harness]) -> None:
    h = harness([ok({"alerts": []})], auth_in="params")
    h.client.search_alert({"start_time": 1, "end_time": 2})
    assert h.last.url == BASE + SEARCH_ALERT_PATH
    assert isinstance(h.last.body, bytes)
    assert json.loads(h.last.body) == {
        "start_time": 1,
        "end_time": 2,
        "bk_app_code": "demo-app",
        "bk_app_secret": SECRET,
        "bk_username": "admin",
    }
    assert "X-Bkapi-Authorization" not in h.last.headers


def test_each_attempt_has_its_own_request_id(harness: Callable[..., Harness]) -> None:
    h = harness([esb_error(1306201), esb_error(1306201), ok([])])
    h.client.get_event_log("1")
    ids = [r.headers["X-Request-ID"] for r in h.adapter.requests]
    assert len(set(ids)) == 3


def test_get_event_log_rejects_dict_data(harness: Callable[..., Harness]) -> None:
    h = harness([ok({"logs": []})])
    with pytest.raises(BkResponseError, match="'data' is dict, expected list") as info:
        h.client.get_event_log("1")
    assert info.value.request_id == ESB_RID
    assert h.client.requests_sent == 1


def test_search_alert_rejects_list_data(harness: Callable[..., Harness]) -> None:
    h = harness([ok([])])
    with pytest.raises(BkResponseError, match="expected dict"):
        h.client.search_alert({})


def test_redirects_are_not_followed(harness: Callable[..., Harness]) -> None:
    h = harness([reply(302, b"", Location="https://login.example.com/?next=/x"), ok([])], auth_in="params")
    with pytest.raises(BkResponseError, match="redirect"):
        h.client.get_event_log("1")
    assert len(h.adapter.requests) == 1  # the credentials were not replayed to the login page


def test_base_url_trailing_slash(harness: Callable[..., Harness]) -> None:
    h = harness([ok([])], base_url=BASE + "/")
    h.client.get_event_log("1")
    assert h.last.url is not None and h.last.url.startswith(BASE + EVENT_LOG_PATH + "?")


# -- secrets -------------------------------------------------------------------------------------


def test_settings_repr_hides_secrets() -> None:
    settings = make_settings(bk_token=TOKEN)
    text = repr(settings)
    assert SECRET not in text and TOKEN not in text
    assert "app_secret='***'" in text and "demo-app" in text
    with BkClient(settings, session=requests.Session()) as client:
        assert SECRET not in repr(client)


@pytest.mark.parametrize("auth_in", ["header", "params"])
@pytest.mark.parametrize(
    "failure",
    [
        connection_refused,
        read_timeout,
        requests.exceptions.SSLError(f"{BASE}/x?bk_app_secret={SECRET}&bk_token=tok%2Ben%2F%3D1+x: bad cert"),
        requests.exceptions.InvalidURL(f"bad url {BASE}/?bk_app_secret={SECRET}"),
    ],
    ids=["connection-refused", "read-timeout", "ssl", "invalid-url"],
)
def test_no_secret_in_errors_or_logs(
    harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture, auth_in: str, failure: Step
) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness([failure], auth_in=auth_in, bk_token=TOKEN)
    with pytest.raises((BkTransportError, BkResponseError)) as info:
        h.client.get_event_log("1")
    error = info.value
    texts = [error_chain_text(error), caplog.text]
    texts += [str(e) for e in walk_chain(error)]
    texts += [repr(e.args) for e in walk_chain(error)]
    texts += [r.getMessage() for r in caplog.records]
    forms = {SECRET, TOKEN, "tok%2Ben%2F%3D1+x", "tok%2Ben%2F%3D1%20x"}
    for text in texts:
        for form in forms:
            assert form not in text
    assert error.__cause__ is not None  # still chained, to a scrubbed stand-in where needed
    if auth_in == "params":
        assert h.last.url is not None and SECRET in h.last.url  # the legacy mode really sends it


def test_transport_error_keeps_a_useful_reason(harness: Callable[..., Harness]) -> None:
    h = harness([connection_refused], auth_in="params", max_attempts=1)
    with pytest.raises(BkTransportError, match="connection failed: ConnectionError") as info:
        h.client.get_event_log("1")
    assert info.value.bk_message is not None and "Connection refused" in info.value.bk_message
    assert isinstance(info.value.__cause__, requests.ConnectionError)


def test_header_mode_chains_the_original_exception(harness: Callable[..., Harness]) -> None:
    original = requests.ConnectTimeout("connect timed out")
    h = harness([original], max_attempts=1)
    with pytest.raises(BkTransportError, match="connect timed out after 35s") as info:
        h.client.get_event_log("1")
    assert info.value.__cause__ is original


def test_urllib3_debug_lines_are_redacted_in_params_mode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pool_logger = logging.getLogger("urllib3.connectionpool")
    before = list(pool_logger.filters)
    client = BkClient(make_settings(auth_in="params"), session=requests.Session())
    pool_logger.debug('%s://%s:%s "%s %s %s" %s %s', "https", "paas", 443, "GET", f"/x?bk_app_secret={SECRET}", 1, 2, 3)
    client.close()
    assert SECRET not in caplog.text
    assert "bk_app_secret=***" in caplog.text
    assert pool_logger.filters == before


# -- limits and lifecycle ------------------------------------------------------------------------


def test_token_bucket_allows_rate_per_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5  # the burst
    assert bucket.reserve() == pytest.approx(0.2)
    assert bucket.reserve() == pytest.approx(0.4)
    clock.now += 10  # idle time refills up to the burst only
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    assert bucket.reserve() > 0


def test_token_bucket_fractional_rate_and_disabled() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0.5, clock=clock)
    assert bucket.burst == 1.0
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(2.0)
    off = TokenBucket(0, clock=clock)
    assert not off.enabled
    assert all(off.reserve() == 0.0 for _ in range(1000))


def test_client_rate_limit_spaces_requests() -> None:
    clock = FakeClock()
    sent_at: list[float] = []

    def stamp(request: requests.PreparedRequest) -> Reply:
        sent_at.append(clock.now)
        return ok([])

    h = Harness([stamp], clock=clock, rate_limit=4)
    for _ in range(20):
        h.client.get_event_log("1")
    start = sent_at[0]
    offsets = [round(t - start, 6) for t in sent_at]
    assert offsets[:4] == [0.0] * 4
    assert offsets[4:] == [round(0.25 * i, 6) for i in range(1, 17)]
    for second in range(1, 4):  # after the burst: `rate` requests per second
        assert sum(1 for t in offsets if second <= t < second + 1) == 4


def test_concurrency_never_exceeds_max(harness: Callable[..., Harness]) -> None:
    limit = 3
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    release = threading.Event()

    def slow(request: requests.PreparedRequest) -> Reply:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        release.wait(10)
        with lock:
            state["now"] -= 1
        return ok([])

    h = harness([slow], max_concurrency=limit)
    threads = [threading.Thread(target=h.client.get_event_log, args=(str(i),)) for i in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while state["now"] < limit and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # room for a fourth to sneak in, if it could
    assert state["max"] == limit
    release.set()
    for t in threads:
        t.join(10)
    assert state["max"] == limit
    assert h.client.requests_sent == 12


def test_semaphore_is_not_held_while_backing_off() -> None:
    """With one slot, a call that is backing off must not block another call."""
    adapter = FakeAdapter([esb_error(1306201), ok(["second"]), ok(["first"])])
    session = requests.Session()
    session.mount("https://", adapter)
    in_backoff = threading.Event()
    go_on = threading.Event()

    def sleep(seconds: float) -> bool:
        in_backoff.set()
        go_on.wait(10)
        return False

    client = BkClient(make_settings(max_concurrency=1), session=session, sleep=sleep, rng=lambda: 0.5)
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(client.get_event_log("1")))
    first.start()
    assert in_backoff.wait(10)
    results.append(client.get_event_log("2"))  # would deadlock if the slot were held
    go_on.set()
    first.join(10)
    assert results == [["second"], ["first"]]
    client.close()


def test_close_wakes_a_backoff_sleep() -> None:
    adapter = FakeAdapter([esb_error(1306201)])
    session = requests.Session()
    session.mount("https://", adapter)
    client = BkClient(make_settings(initial_backoff=60.0, max_backoff=60.0), session=session)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.get_event_log("1")
        except BkApiError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    started = time.monotonic()
    worker.start()
    deadline = time.monotonic() + 10
    while client.retries < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()
    worker.join(10)
    assert not worker.is_alive()
    assert time.monotonic() - started < 10
    assert len(errors) == 1 and isinstance(errors[0], BkTransportError)
    assert "client closed" in str(errors[0])
    assert isinstance(errors[0].__cause__, BkUnavailableError)
    assert client.requests_sent == 1


def test_closed_client_sends_nothing(harness: Callable[..., Harness]) -> None:
    h = harness([ok([])])
    h.client.close()
    with pytest.raises(BkTransportError, match="client closed"):
        h.client.get_event_log("1")
    assert h.adapter.requests == []


def test_injected_sleep_still_stops_after_close(harness: Callable[..., Harness]) -> None:
    h = harness([esb_error(1306201)])

    def sleep_then_close(seconds: float) -> bool:
        h.client.close()
        return False

    h.client._user_sleep = sleep_then_close
    with pytest.raises(BkTransportError, match="client closed"):
        h.client.get_event_log("1")
    assert h.client.requests_sent == 1


def test_default_session_is_pooled_without_urllib3_retries() -> None:
    client = BkClient(make_settings(max_concurrency=32, ca_file="/etc/ssl/ca.pem"))
    adapter = client._session.get_adapter(BASE)
    assert isinstance(adapter, HTTPAdapter)
    assert adapter._pool_maxsize >= 32  # type: ignore[attr-defined]
    assert adapter.max_retries.total == 0
    assert client._session.verify == "/etc/ssl/ca.pem"
    client.close()
    client = BkClient(make_settings(verify_tls=False))
    assert client._session.verify is False
    client.close()


@pytest.mark.parametrize(
    "bad",
    [{"auth_in": "query"}, {"max_concurrency": 0}, {"max_attempts": 0}, {"timeout": 0}],
)
def test_settings_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_settings(**bad)


# -- the package surface -------------------------------------------------------------------------


def test_public_surface() -> None:
    # The package is the source plugin and the client it is built on (the entry point names it).
    assert sorted(exporter.sources.bkmonitor.__all__) == [
        "ApiObserver",
        "BkApi",
        "BkClient",
        "BkClientSettings",
        "BkMonitorSource",
        "MIN_WINDOW",
        "RESULT_WINDOW",
        "RetryPolicy",
        "SearchSettings",
        "TokenBucket",
        "client_settings",
        "parse_envelope",
        "plugin",
        "retry_call",
        "search_settings",
    ]
    for name in exporter.sources.bkmonitor.__all__:
        assert getattr(exporter.sources.bkmonitor, name) is not None
    with pytest.raises(AttributeError):
        exporter.sources.bkmonitor.nothing_here  # noqa: B018


def test_import_is_light() -> None:
    code = "import sys, exporter.sources.bkmonitor; print('requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
