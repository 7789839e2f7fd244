"""The BlueKing simulator over real sockets: envelopes, auth, folding, search_alert, faults, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from exporter.simulator import (
    FAULT_KINDS,
    GATEWAY_SEARCH_PATH,
    GET_EVENT_LOG_PATH,
    SEARCH_ALERT_PATH,
    SimAlarm,
    SimClock,
    Simulator,
)

pytestmark = pytest.mark.integration

T0 = 1718000000  # 2024-06-10 14:13:20 Asia/Shanghai
HEX32 = re.compile(r"^[0-9a-f]{32}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(clock=SimClock(T0 + 400)) as s:
        yield s


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get_log(http: requests.Session, sim: Simulator, alarm_id: object, **kw: Any) -> requests.Response:
    headers = kw.pop("headers", sim.auth_header())
    return http.get(sim.base_url + GET_EVENT_LOG_PATH, params={"id": alarm_id}, headers=headers, timeout=5, **kw)


def search(http: requests.Session, sim: Simulator, body: dict[str, Any], **kw: Any) -> requests.Response:
    headers = kw.pop("headers", sim.auth_header())
    full = {
        "bk_biz_ids": [-1],
        "start_time": 0,
        "end_time": T0 + 400,
        "show_overview": False,
        "show_aggs": False,
    }
    full.update(body)
    return http.post(sim.base_url + SEARCH_ALERT_PATH, json=full, headers=headers, timeout=5, **kw)


def walkthrough_alarm(sim: Simulator) -> SimAlarm:
    """docs/blueking-api.md §2.9: created T0+30, notified T0+31, converged T0+90/150/210."""
    alarm = sim.add_alarm(begin_time=T0, create_time=T0 + 30, alarm_id="17180000005819837", message="m-create")
    alarm.log("ACTION", "m-action", at=T0 + 31)
    for t in (90, 150, 210):
        alarm.converge(f"m{t}", at=T0 + t)
    return alarm


# --------------------------------------------------------------------------- auth and envelopes


def test_success_envelope_and_header_auth(sim: Simulator, http: requests.Session) -> None:
    alarm = walkthrough_alarm(sim)
    resp = get_log(http, sim, alarm.id)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["result"], body["code"], body["message"]) == (True, 200, "OK")
    assert HEX32.match(body["request_id"])
    assert isinstance(body["data"], list)
    item = body["data"][0]
    assert set(item) == {"operate", "message", "extend_info", "status", "event_id", "create_time"}
    assert item["extend_info"] == {} and item["status"] == "SUCCESS"
    assert item["event_id"] == 17180000005819837 and isinstance(item["event_id"], int)


def test_auth_by_query_params_and_alt_keys(sim: Simulator, http: requests.Session) -> None:
    alarm = sim.add_alarm()
    params = {
        "id": alarm.id,
        "bk_app_code": sim.app_code,
        "bk_app_secret": sim.app_secret,
        "bk_username": "u",
    }
    resp = http.get(sim.base_url + GET_EVENT_LOG_PATH, params=params, timeout=5)
    assert resp.json()["result"] is True
    # header keys app_code/app_secret/bk_token are accepted too
    header = {
        "X-Bkapi-Authorization": json.dumps({"app_code": sim.app_code, "app_secret": sim.app_secret, "bk_token": "t"})
    }
    assert get_log(http, sim, alarm.id, headers=header).json()["result"] is True
    # search_alert reads the JSON body when there is no header
    creds = {"bk_app_code": sim.app_code, "bk_app_secret": sim.app_secret, "bk_username": "u"}
    assert search(http, sim, creds, headers={}).json()["data"]["total"] == 1


@pytest.mark.parametrize(
    ("creds", "fragment"),
    [
        (
            {"bk_app_code": "bk-otel-demo", "bk_app_secret": "wrong", "bk_username": "u"},
            "APP Secret verification failed",
        ),
        ({"bk_app_code": "other", "bk_app_secret": "demo-secret", "bk_username": "u"}, "Invalid APP Code"),
        ({"bk_app_secret": "demo-secret", "bk_username": "u"}, "APP Code [bk_app_code] cannot be empty"),
        ({"bk_app_code": "bk-otel-demo", "bk_app_secret": "demo-secret"}, "User authentication failed"),
    ],
)
def test_auth_failures_are_http_200_code_1306000(
    sim: Simulator, http: requests.Session, creds: dict[str, str], fragment: str
) -> None:
    alarm = sim.add_alarm()
    resp = get_log(http, sim, alarm.id, headers={"X-Bkapi-Authorization": json.dumps(creds)})
    body = resp.json()
    assert resp.status_code == 200
    assert (body["result"], body["code"], body["data"]) == (False, 1306000, None)
    assert fragment in body["message"] and HEX32.match(body["request_id"])


def test_header_wins_over_params_and_bad_header_json(sim: Simulator, http: requests.Session) -> None:
    alarm = sim.add_alarm()
    good = {"bk_app_code": sim.app_code, "bk_app_secret": sim.app_secret, "bk_username": "u"}
    bad_header = {"X-Bkapi-Authorization": json.dumps({**good, "bk_app_secret": "nope"})}
    resp = http.get(sim.base_url + GET_EVENT_LOG_PATH, params={"id": alarm.id, **good}, headers=bad_header, timeout=5)
    assert resp.json()["code"] == 1306000
    body = get_log(http, sim, alarm.id, headers={"X-Bkapi-Authorization": "{not json"}).json()
    assert (body["result"], body["code"]) == (False, 1306406)


def test_post_to_get_event_log_and_unknown_paths_are_esb_404(sim: Simulator, http: requests.Session) -> None:
    for method, path in (("POST", GET_EVENT_LOG_PATH), ("GET", SEARCH_ALERT_PATH), ("GET", "/nope/")):
        resp = http.request(method, sim.base_url + path, json={"id": 1}, headers=sim.auth_header(), timeout=5)
        assert resp.status_code == 404
        assert resp.json() == {"result": False, "data": None, "message": "The content does not exist"}
        assert UUID.match(resp.headers["X-Bkapi-Request-ID"])
    assert sim.calls() == 3 and sim.calls("get_event_log") == 0


def test_bad_and_missing_id_give_3300002(sim: Simulator, http: requests.Session) -> None:
    body = get_log(http, sim, "abc").json()
    assert (body["result"], body["code"], body["data"]) == (False, 3300002, {})
    assert body["message"].endswith("(id) 请填写合法的整数值。") and "SearchEventLog" in body["message"]
    resp = http.get(sim.base_url + GET_EVENT_LOG_PATH, headers=sim.auth_header(), timeout=5)
    assert resp.json()["code"] == 3300002 and "该字段是必填项" in resp.json()["message"]


def test_unknown_id_gives_3324002_with_error_details(sim: Simulator, http: requests.Session) -> None:
    resp = get_log(http, sim, "164239028644167")
    body = resp.json()
    message = "告警ID (164239028644167) 对应的告警信息不存在"
    assert resp.status_code == 200
    assert body["code"] == 3324002 and body["result"] is False and body["name"] is None and body["data"] == {}
    assert body["message"] == message
    assert body["error_details"] == {
        "type": None,
        "code": None,
        "overview": message,
        "detail": message,
        "popup_message": "warning",
    }
    assert HEX32.match(body["request_id"])


def test_alarm_without_logs_gives_empty_list(sim: Simulator, http: requests.Session) -> None:
    alarm = sim.add_alarm(create=False)
    assert get_log(http, sim, alarm.id).json()["data"] == []


# --------------------------------------------------------------------------- get_event_log content


def test_newest_first_same_second_by_op_type_and_shanghai_time(
    sim: Simulator, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # the host zone must not matter
    time.tzset()
    try:
        alarm = sim.add_alarm(begin_time=T0, create_time=T0 + 30)
        alarm.recover(at=T0 + 60, message="rec")
        alarm.log("ACTION", "act-1", at=T0 + 60)
        alarm.log("ACTION", "act-2", at=T0 + 60)
        data = get_log(http, sim, alarm.id).json()["data"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    got = [(d["operate"], d["message"], d["create_time"]) for d in data]
    assert got == [
        ("ACTION", "act-2", "2024-06-10 14:14:20"),  # same second: op_type asc, then newest append first
        ("ACTION", "act-1", "2024-06-10 14:14:20"),
        ("RECOVER", "rec", "2024-06-10 14:14:20"),
        ("CREATE", alarm.description, "2024-06-10 14:13:50"),
    ]


def test_converge_folding_walkthrough(sim: Simulator, http: requests.Session) -> None:
    alarm = walkthrough_alarm(sim)

    def rows() -> list[tuple[str, str, str]]:
        data = get_log(http, sim, alarm.id).json()["data"]
        assert data == sim.visible_records(alarm.id)
        return [(d["operate"], d["create_time"], d["message"]) for d in data]

    assert rows() == [
        ("CONVERGE", "2024-06-10 14:16:50", "m210"),  # newest alone
        ("CONVERGE", "2024-06-10 14:15:50", "m150"),  # t150 + t90 merged: time max, 2nd-newest message
        ("ACTION", "2024-06-10 14:13:51", "m-action"),
        ("CREATE", "2024-06-10 14:13:50", "m-create"),
    ]
    alarm.converge("m300", at=T0 + 300)
    assert rows()[:3] == [
        ("CONVERGE", "2024-06-10 14:18:20", "m300"),
        ("CONVERGE", "2024-06-10 14:16:50", "m210"),  # the (t150, m150) row is gone
        ("ACTION", "2024-06-10 14:13:51", "m-action"),
    ]
    assert len(sim.all_raw_logs(alarm.id)) == 6


def test_folding_edge_cases(sim: Simulator) -> None:
    alarm = sim.add_alarm(begin_time=T0, create=False)
    alarm.converge("c1", at=T0 + 1)
    alarm.converge("c2", at=T0 + 2)
    alarm.log("EVENT_DROP", "d3", at=T0 + 3)
    alarm.log("EVENT_DROP", "d4", at=T0 + 4)
    alarm.log("EVENT_DROP", "d5", at=T0 + 5)
    alarm.converge("c6", at=T0 + 6)
    got = [(r["operate"], r["message"]) for r in sim.visible_records(alarm.id)]
    # the run at the top restarts with every new operate; runs of 2 stay unfolded
    assert got == [
        ("CONVERGE", "c6"),
        ("EVENT_DROP", "d5"),
        ("EVENT_DROP", "d4"),
        ("CONVERGE", "c2"),
        ("CONVERGE", "c1"),
    ]


def test_legacy_mode_shapes(http: requests.Session) -> None:
    with Simulator(clock=SimClock(T0 + 400), legacy=True) as sim:
        alarm = sim.add_alarm(begin_time=T0)
        for t in (60, 120, 180):
            alarm.converge(f"c{t}", at=T0 + t)
        alarm.log("ANOMALY_NOTICE", "notice", at=T0 + 200, status="RUNNING")
        alarm.log("ACK", "acked", at=T0 + 210, extend_info={"shield": {"id": 1}}, status="SHIELDED")
        body = get_log(http, sim, alarm.id).json()
        data = body["data"]
        assert [d["operate"] for d in data] == [
            "ACK",
            "ANOMALY_NOTICE",
            "CONVERGE",
            "CONVERGE",
            "CONVERGE",
            "CREATE",
        ]
        assert all(d["event_id"] == alarm.legacy_event_id for d in data)
        assert re.match(r"^[0-9a-f]{32}\.1718000000\.41868\.0\.2$", data[0]["event_id"])
        assert [d["status"] for d in data[:2]] == ["SHIELDED", "RUNNING"]
        assert data[0]["extend_info"] == {"shield": {"id": 1}} and data[1]["extend_info"] == {"action": {}}
        assert set(data[2]["extend_info"]) == {"process_time", "anomaly_record", "data_time", "anomaly_count"}
        assert data[-1]["extend_info"] == ""
        unknown = get_log(http, sim, "123").json()
        assert (unknown["result"], unknown["code"], unknown["detail"]) == (
            False,
            400,
            ["event(123) not exists."],
        )


def test_expire_gives_3324002(sim: Simulator, http: requests.Session) -> None:
    alarm = sim.add_alarm(begin_time=T0)
    assert get_log(http, sim, alarm.id).json()["result"] is True
    sim.expire(alarm.id)
    assert get_log(http, sim, alarm.id).json()["code"] == 3324002
    assert search(http, sim, {}).json()["data"]["total"] == 0


def test_alarm_lifecycle_methods(sim: Simulator) -> None:
    alarm = sim.add_alarm(begin_time=T0, create_time=T0 + 30)
    alarm.set_severity(1, at=T0 + 40)
    alarm.ack("alice", "on it", at=T0 + 50)
    alarm.close(at=T0 + 60)
    assert (alarm.severity, alarm.is_ack, alarm.ack_operator) == (1, True, "alice")
    assert (alarm.status, alarm.end_time, alarm.update_time) == ("CLOSED", T0 + 60, T0 + 60)
    assert [r["message"] for r in sim.visible_records(alarm.id)[:3]] == [
        "策略已被停用或删除，告警关闭",
        "alice确认了该告警事件并备注：,on it",
        "收到了更高级别的事件，告警级别上升为：致命",
    ]
    assert sim.alarm(alarm.id) is alarm and alarm.id.startswith(str(T0))
    with pytest.raises(ValueError):
        sim.add_alarm(alarm_id=alarm.id)


# --------------------------------------------------------------------------- search_alert


def test_search_alert_overlap_semantics(sim: Simulator, http: requests.Session) -> None:
    old_closed = sim.add_alarm(begin_time=T0 - 1000)
    old_closed.close(at=T0 - 500)
    old_open = sim.add_alarm(begin_time=T0 - 1000)
    inside = sim.add_alarm(begin_time=T0 + 10)
    inside.recover(at=T0 + 20)
    later = sim.add_alarm(begin_time=T0 + 300)

    def ids(start: int, end: int) -> set[str]:
        alerts = search(http, sim, {"start_time": start, "end_time": end}).json()["data"]["alerts"]
        return {a["id"] for a in alerts}

    assert ids(T0, T0 + 100) == {old_open.id, inside.id}
    assert ids(T0 - 600, T0 - 400) == {old_closed.id, old_open.id}
    assert ids(T0 + 200, T0 + 400) == {old_open.id, later.id}
    doc = next(a for a in search(http, sim, {}).json()["data"]["alerts"] if a["id"] == old_open.id)
    assert doc["end_time"] is None and doc["status"] == "ABNORMAL"


def test_search_alert_document_fields(sim: Simulator, http: requests.Session) -> None:
    alarm = walkthrough_alarm(sim)
    alarm.recover(at=T0 + 400)
    body = search(http, sim, {}).json()
    assert HEX32.match(body["request_id"])
    data = body["data"]
    assert (data["total"], data["total_relation"], data["is_partial"]) == (1, "eq", False)
    assert "overview" not in data and "aggs" not in data and sim.heavy_searches == 0
    doc = data["alerts"][0]
    assert doc["id"] == "17180000005819837" and doc["seq_id"] == 5819837
    assert (doc["create_time"], doc["begin_time"], doc["end_time"], doc["latest_time"]) == (
        T0 + 30,
        T0,
        T0 + 400,
        T0 + 210,
    )
    assert doc["update_time"] == T0 + 400 and doc["duration"] == "6m 40s" and doc["status"] == "RECOVERED"
    assert (doc["bk_biz_id"], doc["bk_biz_name"], doc["strategy_id"]) == (2, "蓝鲸", 41868)
    assert doc["dimensions"][0] == {
        "key": "ip",
        "value": "10.0.0.1",
        "display_key": "目标IP",
        "display_value": "10.0.0.1",
    }
    assert doc["description"] == "m210" and doc["is_ack"] is None


def test_search_alert_filters_ordering_and_heavy_flags(sim: Simulator, http: requests.Session) -> None:
    a = sim.add_alarm(bk_biz_id=2, severity=1, begin_time=T0 + 1)
    b = sim.add_alarm(bk_biz_id=3, severity=2, begin_time=T0 + 2, strategy_id=7)
    c = sim.add_alarm(bk_biz_id=2, severity=3, begin_time=T0 + 3)
    c.recover(at=T0 + 4)

    def ids(**body: Any) -> list[str]:
        return [x["id"] for x in search(http, sim, body).json()["data"]["alerts"]]

    assert ids(ordering=["create_time"]) == [a.id, b.id, c.id]
    assert ids() == [b.id, a.id, c.id]  # default: status, -create_time, -seq_id
    assert ids(bk_biz_ids=[2], ordering=["-begin_time"]) == [c.id, a.id]
    assert ids(bk_biz_ids=None) == [] and ids(bk_biz_ids=[]) == []
    assert ids(status=["RECOVERED"]) == [c.id]
    assert ids(conditions=[{"key": "severity", "value": [1, 2], "method": "eq"}], ordering=["id"]) == sorted(
        [a.id, b.id]
    )
    assert ids(conditions=[{"key": "strategy_id", "value": [7], "method": "neq"}], ordering=["seq_id"]) == [
        a.id,
        c.id,
    ]
    assert ids(conditions=[{"key": "id", "value": [c.id]}]) == [c.id]
    assert ids(query_string=f"id:{b.id}") == [b.id]
    data = search(http, sim, {"show_overview": True, "show_aggs": True}).json()["data"]
    assert "overview" in data and "aggs" in data and sim.heavy_searches == 1
    full = {"bk_biz_ids": [-1], "start_time": 0, "end_time": T0 + 400}  # both default to true
    assert (
        "overview" in http.post(sim.base_url + SEARCH_ALERT_PATH, json=full, headers=sim.auth_header()).json()["data"]
    )
    assert sim.heavy_searches == 2


def test_search_alert_paging_and_total_cap(sim: Simulator, http: requests.Session) -> None:
    for i in range(10005):
        sim.add_alarm(begin_time=T0 + i % 100, create=False)
    first = search(http, sim, {"page": 1, "page_size": 5000, "ordering": ["-seq_id"]}).json()["data"]
    second = search(http, sim, {"page": 2, "page_size": 5000, "ordering": ["-seq_id"]}).json()["data"]
    assert (first["total"], first["total_relation"]) == (10000, "gte")
    assert len(first["alerts"]) == 5000 and len(second["alerts"]) == 5000
    seqs = [x["seq_id"] for x in first["alerts"] + second["alerts"]]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 10000
    too_deep = search(http, sim, {"page": 3, "page_size": 5000})
    assert too_deep.status_code == 200
    assert (too_deep.json()["result"], too_deep.json()["code"]) == (False, 500)
    counted = search(
        http, sim, {"page_size": 0, "conditions": [{"key": "seq_id", "value": [5819837], "method": "lte"}]}
    )
    assert counted.json()["data"] == {
        **counted.json()["data"],
        "alerts": [],
        "total": 1,
        "total_relation": "eq",
    }


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"start_time": None}, "(start_time) 该字段是必填项。"),
        ({"end_time": "soon"}, "(end_time) 请填写合法的整数值。"),
        ({"page_size": 5001}, "(page_size) 请确保该值小于或者等于 5000。"),
        ({"page_size": -1}, "(page_size) 请确保该值大于或者等于 0。"),
        ({"page": 0}, "(page) 请确保该值大于或者等于 1。"),
        ({"status": "ABNORMAL"}, "(status)"),
        ({"conditions": [{"key": "severity", "value": [1], "method": "like"}]}, "(conditions)"),
    ],
)
def test_search_alert_validation(
    sim: Simulator, http: requests.Session, override: dict[str, Any], fragment: str
) -> None:
    full = {"bk_biz_ids": [-1], "start_time": 0, "end_time": T0, **override}
    full = {k: v for k, v in full.items() if v is not None}  # None: leave the key out
    resp = http.post(sim.base_url + SEARCH_ALERT_PATH, json=full, headers=sim.auth_header(), timeout=5)
    assert resp.status_code == 200
    assert (resp.json()["result"], resp.json()["code"]) == (False, 3300002)
    assert fragment in resp.json()["message"]


def test_gateway_flavour(sim: Simulator, http: requests.Session) -> None:
    sim.add_alarm(begin_time=T0)
    body = {"bk_biz_ids": [-1], "start_time": 0, "end_time": T0 + 400}
    ok = http.post(sim.base_url + GATEWAY_SEARCH_PATH, json=body, headers=sim.auth_header(), timeout=5)
    assert ok.status_code == 200 and ok.json()["data"]["total"] == 1
    assert "request_id" not in ok.json() and UUID.match(ok.headers["X-Bkapi-Request-ID"])
    creds = {"bk_app_code": sim.app_code, "bk_app_secret": sim.app_secret, "bk_username": "u"}
    denied = http.post(sim.base_url + GATEWAY_SEARCH_PATH, json={**body, **creds}, timeout=5)  # params not accepted
    assert denied.status_code == 400
    assert denied.json()["code"] == 1640001 and denied.headers["X-Bkapi-Error-Code"] == "1640001"
    assert http.get(sim.base_url + GATEWAY_SEARCH_PATH, timeout=5).json()["code_name"] == "API_NOT_FOUND"


# --------------------------------------------------------------------------- faults


def test_each_fault_kind(sim: Simulator, http: requests.Session) -> None:
    alarm = sim.add_alarm()
    sim.slow_seconds = 0.2

    def call() -> requests.Response:
        return get_log(http, sim, alarm.id)

    def esb(code: int, fragment: str) -> None:
        sim.inject(kind)
        resp = call()
        body = resp.json()
        assert resp.status_code == 200 and (body["result"], body["code"]) == (False, code), kind
        assert fragment in body["message"] and HEX32.match(body["request_id"]), kind

    def gateway(status: int, code: int, code_name: str) -> requests.Response:
        sim.inject(kind)
        resp = call()
        body = resp.json()
        assert resp.status_code == status, kind
        assert body == {**body, "code": code, "code_name": code_name, "result": False, "data": None}, kind
        assert "request_id" not in body and UUID.match(resp.headers["X-Bkapi-Request-ID"]), kind
        assert resp.headers["X-Bkapi-Error-Code"] == str(code), kind
        return resp

    checked = set()
    for kind in FAULT_KINDS:
        checked.add(kind)
        if kind == "esb_timeout":
            esb(1306201, "Third-party system interface response time exceeds 30 seconds")
        elif kind == "esb_non_json":
            esb(1306201, "interface response is not the JSON format")
        elif kind == "auth_1306000":
            esb(1306000, "APP Secret verification failed")
        elif kind == "es_error":
            esb(500, "ReadTimeoutError")
        elif kind == "gateway_429":
            assert gateway(429, 1642903, "RATE_LIMIT_RESTRICTION").headers["Retry-After"] == "1"
        elif kind == "gateway_502":
            gateway(502, 1650200, "BAD_GATEWAY")
        elif kind == "gateway_503":
            gateway(503, 1650300, "SERVICE_UNAVAILABLE")
        elif kind == "gateway_504":
            gateway(504, 1650401, "REQUEST_BACKEND_TIMEOUT")
        elif kind == "auth_1640001":
            resp = gateway(400, 1640001, "INVALID_ARGS")
            assert resp.json()["message"] == 'Parameters error [reason="bk_app_code or bk_app_secret is incorrect"]'
        elif kind == "plain_403":
            sim.inject(kind)
            resp = call()
            assert (resp.status_code, resp.text) == (403, "lack of tenant_id")
            assert resp.headers["Content-Type"].startswith("text/plain") and resp.headers["X-Bkapi-Request-ID"]
        elif kind == "malformed_json":
            sim.inject(kind)
            resp = call()
            assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
            with pytest.raises(ValueError):
                resp.json()
        elif kind == "slow":
            sim.inject(kind)
            with pytest.raises(requests.Timeout):
                http.get(
                    sim.base_url + GET_EVENT_LOG_PATH,
                    params={"id": alarm.id},
                    headers=sim.auth_header(),
                    timeout=0.05,
                )
            sim.inject(kind)
            started = time.monotonic()
            assert call().json()["result"] is True and time.monotonic() - started >= 0.2
        elif kind == "reset":
            sim.inject(kind)
            with pytest.raises(requests.ConnectionError):
                call()
            assert sim.requests[-1].status is None and sim.requests[-1].fault == "reset"
        else:
            pytest.fail(f"fault {kind} not covered")
    assert checked == set(FAULT_KINDS)
    assert call().json()["result"] is True and sim.pending_faults() == 0


def test_inject_times_and_endpoint(sim: Simulator, http: requests.Session) -> None:
    alarm = sim.add_alarm()
    sim.inject("gateway_503", times=2, endpoint="search_alert")
    assert get_log(http, sim, alarm.id).status_code == 200  # other endpoint untouched
    assert [search(http, sim, {}).status_code for _ in range(3)] == [503, 503, 200]
    assert sim.calls("search_alert") == 3 and sim.calls("get_event_log", alarm.id) == 1
    assert [r.fault for r in sim.requests] == [None, "gateway_503", "gateway_503", None]
    with pytest.raises(ValueError):
        sim.inject("nope")


def test_random_faults_are_seeded(http: requests.Session) -> None:
    def run() -> list[int]:
        with Simulator(seed=7) as sim:
            alarm = sim.add_alarm()
            sim.fault_rate = 0.5
            sim.fault_kinds = ["gateway_502", "gateway_504"]
            return [get_log(http, sim, alarm.id).status_code for _ in range(20)]

    first = run()
    assert first == run() and {200, 502, 504} <= set(first)


def test_latency_counting_recording_and_hook(http: requests.Session) -> None:
    with Simulator(latency=0.2) as sim:
        alarm = sim.add_alarm()
        started = time.monotonic()
        get_log(http, sim, alarm.id)
        assert time.monotonic() - started >= 0.2
        sim.latency = 0.0
        sim.response_hook = lambda endpoint, payload: {
            **payload,
            "data": [{**payload["data"][0], "extend_info": ""}],
        }
        assert get_log(http, sim, alarm.id).json()["data"][0]["extend_info"] == ""
        get_log(http, sim, "999")
        assert (sim.calls(), sim.calls("get_event_log"), sim.calls("get_event_log", alarm.id)) == (3, 3, 2)
        rec = sim.requests[0]
        assert (rec.method, rec.path, rec.endpoint, rec.alarm_id, rec.status) == (
            "GET",
            GET_EVENT_LOG_PATH,
            "get_event_log",
            alarm.id,
            200,
        )
        assert rec.query == f"id={alarm.id}" and "X-Bkapi-Authorization" in rec.headers
        sim.clear_requests()
        assert sim.calls() == 0 and sim.requests == []


def test_sim_clock() -> None:
    frozen = SimClock(100.0)
    frozen.advance(5)
    assert frozen.now() == 105.0
    frozen.set(7)
    assert frozen.now() == 7.0
    real = SimClock.real()
    assert abs(real.now() - time.time()) < 1
    real.advance(3600)
    assert abs(real.now() - time.time() - 3600) < 1
    real.set(50)
    assert abs(real.now() - 50) < 1
    assert abs(SimClock().now() - time.time()) < 1


def test_cli_demo_serves() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "exporter.simulator", "--port", "0", "--demo"]
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            base_url = re.search(r"http://127\.0\.0\.1:\d+", first)
            assert base_url, first
            alarm_id = proc.stdout.readline().split()[1]
            header = {
                "X-Bkapi-Authorization": json.dumps(
                    {"bk_app_code": "bk-otel-demo", "bk_app_secret": "demo-secret", "bk_username": "admin"}
                )
            }
            resp = requests.get(
                base_url.group(0) + GET_EVENT_LOG_PATH, params={"id": alarm_id}, headers=header, timeout=5
            )
            assert [d["operate"] for d in resp.json()["data"]][:2] == ["CONVERGE", "CONVERGE"]
        finally:
            proc.terminate()
            proc.wait(5)
            assert proc.stdout is not None
            proc.stdout.close()


def test_stop_and_restart_on_the_same_port(http: requests.Session) -> None:
    sim = Simulator().start()
    try:
        alarm = sim.add_alarm()
        url = sim.base_url
        sim.stop()
        with pytest.raises(requests.ConnectionError):
            get_log(http, sim, alarm.id)
        sim.start()
        assert sim.base_url == url and get_log(http, sim, alarm.id).json()["result"] is True
    finally:
        sim.stop()
