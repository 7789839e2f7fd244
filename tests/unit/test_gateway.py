"""The gateway generation: routes, header-only credentials, tenancy, its codes and the hints.

No sockets: a ``requests.Session`` whose adapter answers from a script and records the requests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from exporter.config import config_from_dict
from exporter.errors import (
    BkApiError,
    BkAuthError,
    BkRateLimitError,
    BkResponseError,
    BkUnavailableError,
    ConfigError,
)
from exporter.sources.bkmonitor import BkClient, BkClientSettings, client_settings
from exporter.sources.bkmonitor.apigw import hinted
from exporter.sources.bkmonitor.envelope import parse_envelope

BASE = "https://paas.example.com"
SECRET = "gw-secret-value"
TOKEN = "oauth-access-token-value"
RID = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
BK = {"base_url": BASE, "app_code": "a", "app_secret": SECRET}


class Script(BaseAdapter):
    def __init__(self, *answers: tuple[int, Any, dict[str, str]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        status, body, headers = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        response = requests.Response()
        response.status_code = status
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response._content_consumed = True  # type: ignore[attr-defined]
        response.headers = CaseInsensitiveDict(headers)
        response.request = request
        return response

    def close(self) -> None:
        pass


def client(adapter: Script, **kw: Any) -> BkClient:
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", adapter)
    values: dict[str, Any] = {"base_url": BASE, "app_code": "a", "app_secret": SECRET, "rate_limit": 0}
    values.update({"max_attempts": 3, "initial_backoff": 0.0, "max_backoff": 0.0, **kw})
    return BkClient(BkClientSettings(**values), session=session, sleep=lambda s: False)


def ok(data: Any) -> tuple[int, Any, dict[str, str]]:
    return 200, {"result": True, "code": 200, "message": "OK", "data": data}, {"X-Bkapi-Request-ID": RID}


def gw(status: int, code: int, name: str, message: str = "refused", **headers: str) -> tuple[int, Any, dict[str, str]]:
    body = {"code": code, "code_name": name, "message": message, "result": False, "data": None}
    return status, body, {"X-Bkapi-Request-ID": RID, **{k.replace("_", "-"): v for k, v in headers.items()}}


# -- routes, credentials, tenancy --------------------------------------------------------------------


def test_gateway_routes_header_only_credentials_and_the_request_id_header() -> None:
    adapter = Script(ok({"alerts": [], "total": 0}), ok({"actions": [], "total": 0}))
    c = client(adapter, api="apigw", stage="stage", access_token=TOKEN, tenant_id="system")
    c.search_alert({"page": 1})
    c.search_action({"alert_ids": ["1"]})
    alert, action = adapter.requests
    assert alert.url == f"{BASE}/api/bk-monitor/stage/app/alert/search/"
    assert action.url == f"{BASE}/api/bk-monitor/stage/app/action/search/"
    for request in adapter.requests:
        assert request.headers["X-Bk-Tenant-Id"] == "system"
        auth = json.loads(request.headers["X-Bkapi-Authorization"])
        assert auth == {"bk_app_code": "a", "bk_app_secret": SECRET, "bk_username": "admin", "access_token": TOKEN}
        assert SECRET not in (request.url or "") and TOKEN not in (request.url or "")
        assert isinstance(request.body, bytes) and SECRET not in request.body.decode(), "not in the body either"
    adapter.answers = [gw(400, 1640001, "INVALID_ARGS")]
    with pytest.raises(BkAuthError) as info:
        c.search_alert({})
    assert info.value.request_id == RID, "the request id is the X-Bkapi-Request-ID header"
    assert SECRET not in str(info.value) and TOKEN not in str(info.value)


def test_get_event_log_is_not_published_on_the_gateway() -> None:
    adapter = Script(ok([]))
    with pytest.raises(BkResponseError, match="not published on the bk-monitor API gateway"):
        client(adapter, api="apigw").get_event_log("1")
    assert adapter.requests == []


def test_tenant_header_on_every_esb_request_too() -> None:
    adapter = Script(ok([]), ok({"alerts": []}))
    c = client(adapter, tenant_id="t1")
    c.get_event_log("1")
    c.search_alert({})
    assert [r.headers["X-Bk-Tenant-Id"] for r in adapter.requests] == ["t1", "t1"]
    assert adapter.requests[0].url == f"{BASE}/api/c/compapi/v2/monitor_v3/get_event_log/?id=1"
    adapter2 = Script(ok([]))
    client(adapter2).get_event_log("1")
    assert "X-Bk-Tenant-Id" not in adapter2.requests[0].headers


def test_config_refuses_params_credentials_on_the_gateway_naming_both_options() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"bkmonitor": {**BK, "api": "apigw", "auth_in": "params"}}, env={})
    (line,) = info.value.problems
    assert line.startswith("bkmonitor.auth_in: ") and "bkmonitor.api: apigw" in line


def test_config_timeouts_default_above_the_servers_and_access_token_is_a_secret() -> None:
    esb = config_from_dict({"bkmonitor": BK}, env={})
    gateway = config_from_dict({"bkmonitor": {**BK, "api": "apigw", "access_token": TOKEN, "username": ""}}, env={})
    assert (esb.bkmonitor.effective_timeout, gateway.bkmonitor.effective_timeout) == (35.0, 65.0)
    assert client_settings(gateway.bkmonitor).timeout == 65.0
    assert client_settings(esb.bkmonitor).max_response_bytes == 64 << 20
    assert config_from_dict({"bkmonitor": {**BK, "timeout": "10s"}}, env={}).bkmonitor.effective_timeout == 10.0
    assert TOKEN in gateway.secrets()
    assert TOKEN not in repr(client_settings(gateway.bkmonitor))
    sized = config_from_dict({"bkmonitor": {**BK, "max_response_bytes": "4MiB"}}, env={})
    assert sized.bkmonitor.max_response_bytes == 4 << 20
    with pytest.raises(ConfigError, match="bkmonitor.max_response_bytes: .*invalid size"):
        config_from_dict({"bkmonitor": {**BK, "max_response_bytes": "lots"}}, env={})


def test_an_answer_over_max_response_bytes_fails_clearly_and_is_not_retried() -> None:
    adapter = Script(ok([{"operate": "CREATE", "message": "x" * 5000}]))
    with pytest.raises(BkResponseError, match=r"larger than bkmonitor.max_response_bytes \(4KiB\)"):
        client(adapter, max_response_bytes=4096).get_event_log("1")
    assert len(adapter.requests) == 1


# -- the gateway's codes -------------------------------------------------------------------------------


def parse(status: int, code: int, name: str, api: str = "apigw", **headers: str) -> BkApiError:
    _, body, hdrs = gw(status, code, name, **headers)
    with pytest.raises(BkApiError) as info:
        parse_envelope(status, hdrs, json.dumps(body).encode(), "search_alert", now=lambda: 1000.0)
    return hinted(info.value, api=api, stage="prod")


@pytest.mark.parametrize("code", [1642901, 1642902, 1642903])
def test_gateway_rate_limits_honour_the_reset_header(code: int) -> None:
    error = parse(429, code, "RATE_LIMIT_RESTRICTION", X_Bkapi_RateLimit_Reset="7")
    assert isinstance(error, BkRateLimitError) and error.retry_after == 7.0 and error.code == code


def test_1640301_not_granted_is_an_auth_error_saying_what_to_grant() -> None:
    error = parse(403, 1640301, "APP_NO_PERMISSION")
    assert isinstance(error, BkAuthError)
    assert "not granted" in str(error) and "/app/alert/search/" in str(error)


@pytest.mark.parametrize("api", ["apigw", "esb"])
def test_1640302_cross_tenant_names_tenant_id(api: str) -> None:
    error = parse(403, 1640302, "CROSS_TENANT_FORBIDDEN", api=api)
    assert isinstance(error, BkAuthError) and "bkmonitor.tenant_id" in str(error)


def test_kernel_plain_text_lack_of_tenant_names_tenant_id() -> None:
    with pytest.raises(BkApiError) as info:
        parse_envelope(403, {}, b"lack of tenant_id", "search_alert")
    assert "bkmonitor.tenant_id" in str(hinted(info.value, api="apigw", stage="prod"))


def test_1640401_on_the_esb_says_the_installation_may_have_no_esb() -> None:
    error = parse(404, 1640401, "API_NOT_FOUND", api="esb")
    assert isinstance(error, BkResponseError) and not isinstance(error, BkUnavailableError)
    assert "may have no ESB" in str(error) and "bkmonitor.api: apigw" in str(error)


def test_an_esb_404_without_a_code_gives_the_same_hint() -> None:
    body = json.dumps({"result": False, "data": None, "message": "The content does not exist"}).encode()
    with pytest.raises(BkApiError) as info:
        parse_envelope(404, {}, body, "get_event_log")
    assert "bkmonitor.api: apigw" in str(hinted(info.value, api="esb", stage="prod"))


def test_1640401_on_the_gateway_points_at_the_stage() -> None:
    error = parse(404, 1640401, "API_NOT_FOUND")
    assert "bkmonitor.stage" in str(error) and "bkmonitor.api: apigw" not in str(error)


def test_1650070_unknown_error_is_retried() -> None:
    assert isinstance(parse(500, 1650070, "UNKNOWN_ERROR"), BkUnavailableError)


@pytest.mark.parametrize("status", [500, 501, 503, 508])
def test_an_unknown_code_on_a_5xx_is_retried_like_other_server_errors(status: int) -> None:
    error = parse(status, 1659999, "SOMETHING_NEW")
    assert isinstance(error, BkUnavailableError)


def test_an_unknown_code_on_a_4xx_stays_permanent() -> None:
    error = parse(400, 1649999, "SOMETHING_NEW")
    assert type(error) is BkResponseError


def test_the_client_retries_an_unknown_5xx_code_then_succeeds() -> None:
    adapter = Script(gw(500, 1659999, "SOMETHING_NEW"), ok({"alerts": []}))
    assert client(adapter, api="apigw").search_alert({}) == {"alerts": []}
    assert len(adapter.requests) == 2


def test_hints_come_through_the_client() -> None:
    adapter = Script(gw(403, 1640302, "CROSS_TENANT_FORBIDDEN"))
    with pytest.raises(BkAuthError, match="set bkmonitor.tenant_id"):
        client(adapter, api="apigw").search_alert({})
    adapter = Script((404, {"result": False, "data": None, "message": "The content does not exist"}, {}))
    with pytest.raises(BkResponseError, match="bkmonitor.api: apigw"):
        client(adapter).get_event_log("1")
