"""The client's own transport (a session it creates: urllib3 through its adapter's pool).

No sockets: ``HTTPAdapter.get_connection_with_tls_context`` is replaced by a fake urllib3 pool that
records every ``urlopen`` and answers from a script. The same fake serves ``requests``' own call
path (an injected session with ``trust_env``, which reads the environment on every call), so the
two are compared request by request: what reaches urllib3 must be the same, in every environment
(proxies, ``NO_PROXY``, CA bundles, ``~/.netrc``), and so must the errors.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from exporter.errors import BkApiError, BkResponseError, BkTransportError
from exporter.sources.bkmonitor import BkClient, BkClientSettings

SECRET = "demo-secret"
TOKEN = "tok+en/=1 x"
BASE = "https://paas.example.com"
DATA = [{"operate": "CREATE", "message": "m", "event_id": 1, "create_time": "2024-06-10 14:13:50"}]
_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NETRC",
)


def answer(status: int = 200, body: bytes | None = None, **headers: str) -> urllib3.HTTPResponse:
    if body is None:
        body = json.dumps({"result": True, "code": 0, "message": "OK", "data": DATA, "request_id": "r1"}).encode()
    return urllib3.HTTPResponse(
        body=io.BytesIO(body),
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        status=status,
        preload_content=False,
        decode_content=False,
    )


class _Connection:
    def close(self) -> None:
        pass


class FakePool:
    """Records ``urlopen`` calls; answers with the next scripted response or raises it."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.calls: list[dict[str, Any]] = []
        self.opened: list[dict[str, Any]] = []  # get_connection_with_tls_context arguments
        self.verified: list[Any] = []
        self.returned = 0
        self.answers: list[urllib3.HTTPResponse] = []

    def urlopen(self, **kw: Any) -> urllib3.HTTPResponse:
        self.calls.append(kw)
        step = self.script.pop(0) if self.script else answer()
        if isinstance(step, BaseException):
            raise step
        step._pool = self  # type: ignore[attr-defined]
        step._connection = _Connection()  # type: ignore[attr-defined]
        self.answers.append(step)
        return step

    def _put_conn(self, conn: Any) -> None:
        self.returned += 1


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakePool]:
    fake = FakePool()
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    def connection(self: HTTPAdapter, request: Any, verify: Any, proxies: Any = None, cert: Any = None) -> FakePool:
        fake.opened.append(
            {
                "url": str(request.url).split("?")[0],  # the pool key: the query plays no part
                "verify": verify,
                "proxies": dict(proxies or {}),
                "cert": cert,
            }
        )
        return fake

    def cert_verify(self: HTTPAdapter, conn: Any, url: str, verify: Any, cert: Any) -> None:
        fake.verified.append(verify)

    monkeypatch.setattr(HTTPAdapter, "get_connection_with_tls_context", connection)
    monkeypatch.setattr(HTTPAdapter, "cert_verify", cert_verify)
    yield fake


def settings(**overrides: Any) -> BkClientSettings:
    values: dict[str, Any] = {"base_url": BASE, "app_code": "demo-app", "app_secret": SECRET, "rate_limit": 0}
    values.update(overrides)
    return BkClientSettings(**values)


def requests_path(values: BkClientSettings) -> BkClient:
    """A client on requests' own call path, environment read on every call (what the client did before)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=10, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return BkClient(values, session=session, sleep=lambda s: False)


def sent(call: dict[str, Any]) -> dict[str, Any]:
    """What reached urllib3, without the per-request id."""
    headers = {k.lower(): v for k, v in dict(call["headers"]).items() if k.lower() != "x-request-id"}
    timeout = call["timeout"]
    return {
        "method": call["method"],
        "url": call["url"],
        "body": call["body"],
        "headers": headers,
        "redirect": call["redirect"],
        "retries": (call["retries"].total, call["retries"].read, call["retries"].redirect),
        "timeout": (timeout.connect_timeout, timeout.read_timeout),
        "preload_content": call["preload_content"],
        "decode_content": call["decode_content"],
        "chunked": call["chunked"],
    }


def both(pool: FakePool, values: BkClientSettings, call: str) -> tuple[list[Any], list[Any]]:
    """Make the same call through the requests path and the client's own transport; what each sent."""
    results = []
    for client in (requests_path(values), BkClient(values, sleep=lambda s: False)):
        pool.calls.clear()
        pool.opened.clear()
        pool.verified.clear()
        with client:
            if call == "get_event_log":
                assert client.get_event_log("4242") == DATA
            else:
                pool.script.append(answer(body=json.dumps({"result": True, "data": {"alerts": []}}).encode()))
                assert client.search_alert({"bk_biz_ids": [2], "page": 1}) == {"alerts": []}
        results.append([[sent(c) for c in pool.calls], list(pool.opened), list(pool.verified)])
    return results[0], results[1]


ENVIRONMENTS = {
    "none": {},
    "https-proxy": {"HTTPS_PROXY": "http://user:pw@proxy.example.com:3128"},
    "http-proxy-http-base": {"HTTP_PROXY": "http://proxy.example.com:3128"},
    "no-proxy": {"HTTPS_PROXY": "http://proxy.example.com:3128", "NO_PROXY": "example.com"},
    "all-proxy-lower": {"all_proxy": "http://proxy.example.com:8080", "no_proxy": "other.org"},
    "ca-bundle": {"REQUESTS_CA_BUNDLE": "/etc/ssl/bundle.pem"},
    "curl-ca-bundle": {"CURL_CA_BUNDLE": "/etc/ssl/curl.pem"},
    "netrc": {"netrc": "machine paas.example.com login ops password s3cr3t\n"},
    "netrc-other-host": {"netrc": "machine elsewhere.example.com login ops password s3cr3t\n"},
}
SETTINGS = {
    "header": {},
    "params-token": {"auth_in": "params", "bk_token": TOKEN},
    "http-base": {"base_url": "http://paas.example.com/prefix/"},
    "no-verify": {"verify_tls": False},
    "ca-file": {"ca_file": "/etc/ssl/ca.pem"},
    "tenant": {"tenant_id": "system", "language": "zh-hans"},
}


@pytest.mark.parametrize("call", ["get_event_log", "search_alert"])
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("environment", list(ENVIRONMENTS))
def test_the_same_request_as_requests_sends(
    pool: FakePool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environment: str, setting: str, call: str
) -> None:
    for name, value in ENVIRONMENTS[environment].items():
        if name == "netrc":
            (tmp_path / ".netrc").write_text(value)
        else:
            monkeypatch.setenv(name, value)
    old, new = both(pool, settings(**SETTINGS[setting]), call)
    assert new == old
    assert len(new[0]) == 1


def test_proxy_and_netrc_are_read_once_when_the_client_is_built(
    pool: FakePool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    (tmp_path / ".netrc").write_text("machine paas.example.com login ops password s3cr3t\n")
    with BkClient(settings(), sleep=lambda s: False) as client:
        monkeypatch.delenv("HTTPS_PROXY")
        (tmp_path / ".netrc").unlink()
        client.get_event_log("1")
        client.get_event_log("2")
    assert pool.opened[0]["proxies"]["https"] == "http://proxy.example.com:3128"
    assert len(pool.opened) == 1  # the pool and the target are looked up once per URL
    assert all(c["headers"]["Authorization"].startswith("Basic ") for c in pool.calls)
    assert {c["url"] for c in pool.calls} == {
        "/api/c/compapi/v2/monitor_v3/get_event_log/?id=1",
        "/api/c/compapi/v2/monitor_v3/get_event_log/?id=2",
    }


def refused(url: str) -> MaxRetryError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    return MaxRetryError(None, url, reason)  # type: ignore[arg-type]


def _failures(url: str) -> dict[str, BaseException]:
    return {
        "refused": refused(url),
        "connect-timeout": MaxRetryError(None, url, ConnectTimeoutError(f"{url}: connect timeout=35")),  # type: ignore[arg-type]
        "read-timeout": ReadTimeoutError(None, url, "Read timed out. (read timeout=35)"),  # type: ignore[arg-type]
        "tls": MaxRetryError(None, url, SSLError(f"certificate verify failed for {url}")),  # type: ignore[arg-type]
        "proxy": MaxRetryError(None, url, ProxyError("Unable to connect to proxy", OSError(f"refused {url}"))),  # type: ignore[arg-type]
        "aborted": ProtocolError("Connection aborted.", ConnectionResetError(104, f"reset by peer {url}")),
    }


@pytest.mark.parametrize("auth_in", ["header", "params"])
@pytest.mark.parametrize("failure", list(_failures("x")))
def test_failures_read_as_on_the_requests_path_and_hold_no_secret(pool: FakePool, auth_in: str, failure: str) -> None:
    values = settings(auth_in=auth_in, bk_token=TOKEN, max_attempts=1)
    url = f"{BASE}/api/c/compapi/v2/monitor_v3/get_event_log/?id=1&bk_app_secret={SECRET}&bk_token=tok%2Ben%2F%3D1+x"
    seen = []
    for client in (requests_path(values), BkClient(values, sleep=lambda s: False)):
        pool.script.append(_failures(url)[failure])
        with client, pytest.raises(BkApiError) as info:
            client.get_event_log("1")
        error: BaseException | None = info.value
        chain = []
        while error is not None:
            chain.append(f"{type(error).__name__}: {error} {error.args!r}")
            error = error.__cause__ or error.__context__
        text = "\n".join(chain)
        for form in (SECRET, TOKEN, "tok%2Ben%2F%3D1+x"):
            assert form not in text
        summary = re.sub(r"request_id=\w+", "", str(info.value))  # each attempt has its own id
        seen.append((type(info.value), summary, info.value.bk_message, type(info.value.__cause__)))
    assert seen[1] == seen[0]
    assert seen[1][0] is BkTransportError or failure == "proxy"


def test_a_redirect_is_not_followed(pool: FakePool) -> None:
    pool.script.append(answer(302, b"<html>login</html>", Location="https://login.example.com/"))
    with BkClient(settings(), sleep=lambda s: False) as client, pytest.raises(BkResponseError, match="redirect"):
        client.get_event_log("1")
    assert len(pool.calls) == 1 and pool.calls[0]["redirect"] is False


def test_retries_go_through_the_pool_and_connections_are_returned(pool: FakePool) -> None:
    pool.script += [refused("u"), answer(503, b"<html>502</html>"), answer()]
    with BkClient(settings(max_attempts=3), sleep=lambda s: False) as client:
        assert client.get_event_log("1") == DATA
        assert client.requests_sent == 3 and client.retries == 2
    assert pool.returned == 2  # both answers read to their end and their connections returned
    assert all(a.isclosed() or a.tell() > 0 for a in pool.answers)


@pytest.mark.parametrize("how", ["streamed", "content-length", "gzip-bomb"])
def test_the_response_cap_holds(pool: FakePool, how: str) -> None:
    big = json.dumps({"result": True, "data": [{"message": "x" * 5000}]}).encode()
    if how == "streamed":
        pool.script.append(answer(200, big))
    elif how == "content-length":
        pool.script.append(answer(200, big, Content_Length=str(len(big))))
    else:
        pool.script.append(answer(200, gzip.compress(big), Content_Encoding="gzip"))
    with (
        BkClient(settings(max_response_bytes=4096), sleep=lambda s: False) as client,
        pytest.raises(BkResponseError, match="max_response_bytes"),
    ):
        client.get_event_log("1")
    assert pool.answers[0].closed  # not read further: the connection is not reused
    assert client.requests_sent == 1  # not retried


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Trickle(io.RawIOBase):
    """A body that arrives 10 bytes at a time, each after 20 s of the fake clock."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.clock.now += 20.0
        buffer[:10] = b"[" * 10
        return 10


def test_the_total_deadline_holds_while_reading(pool: FakePool) -> None:
    clock = _Clock()
    response = urllib3.HTTPResponse(body=io.BufferedReader(_Trickle(clock)), status=200, preload_content=False)
    pool.script.append(response)
    with (
        BkClient(settings(max_attempts=1, timeout=35.0), sleep=lambda s: False, clock=clock) as client,
        pytest.raises(BkTransportError, match="total deadline"),
    ):
        client.get_event_log("1")
    assert clock.now - 100.0 <= 60.0  # stopped at the first read past the 35 s deadline
    assert response.closed
