"""Flow records synthesised from gateway alerts and actions: times, messages, and uids that never move."""

from __future__ import annotations

from typing import Any

from exporter.model import AlarmContext
from exporter.sources.bkmonitor.gateway import GatewaySource
from exporter.sources.bkmonitor.synth import Observations, synthesize

ID = "17180000005819837"
BEGIN = 1_718_000_000


def alert(**over: Any) -> dict[str, Any]:
    doc = {
        "id": ID,
        "alert_name": "CPU",
        "status": "ABNORMAL",
        "severity": 3,
        "bk_biz_id": 2,
        "begin_time": BEGIN,
        "create_time": BEGIN + 5,
        "update_time": BEGIN + 10,
        "end_time": None,
        "is_ack": False,
        "ack_duration": None,
        "description": "cpu 91%",
    }
    return doc | over


def action(i: int, **over: Any) -> dict[str, Any]:
    doc = {
        "id": str(300 + i),
        "alert_id": [ID],
        "action_plugin_type": "webhook",
        "action_plugin_type_display": "HTTP callback",
        "action_name": "call ops",
        "signal": "abnormal",
        "status": "running",
        "create_time": BEGIN + 20 + i,
    }
    return doc | over


def run(doc: dict[str, Any], actions: list[dict[str, Any]], obs: Observations, known: AlarmContext | None = None):
    return synthesize(doc, actions, known=known or AlarmContext(ID), observations=obs, observed_ns=123)


def by_op(result: Any) -> dict[str, Any]:
    return {r.operate: r for r in result.records}


def test_times_and_messages_follow_the_gateway_table() -> None:
    obs = Observations()
    doc = alert(status="RECOVERED", end_time=BEGIN + 900, is_ack=True, ack_duration=120, ack_operator="admin")
    got = by_op(run(doc, [action(1, status="failure", status_tips="HTTP 500")], obs))
    assert got["CREATE"].create_time_ns == BEGIN * 10**9
    assert got["ACTION"].create_time_ns == (BEGIN + 21) * 10**9
    assert "HTTP callback" in got["ACTION"].message and "failure" in got["ACTION"].message
    assert got["ACTION"].extend_info["action"]["status"] == "failure"
    assert got["RECOVER"].create_time_ns == (BEGIN + 900) * 10**9
    assert got["ACK"].create_time_ns == (BEGIN + 120) * 10**9, "begin_time + ack_duration"
    assert "admin" in got["ACK"].message
    closed = by_op(run(alert(status="CLOSED", end_time=BEGIN + 50), [], Observations()))
    assert "CLOSE" in closed and "RECOVER" not in closed


def test_uids_do_not_depend_on_when_or_by_whom_they_were_seen() -> None:
    first = run(alert(), [action(1)], Observations())
    # later: the description changed, the action finished, the alert was updated, the process restarted
    later_doc = alert(description="cpu 99%", update_time=BEGIN + 500)
    later = run(later_doc, [action(1, status="success"), action(2)], Observations())
    assert {r.uid for r in first.records} < {r.uid for r in later.records}
    assert len({r.uid for r in later.records}) == len(later.records)


def test_ack_and_severity_up_stay_the_same_records_across_polls_and_restarts() -> None:
    obs = Observations()
    known = AlarmContext(ID, severity=3)
    assert not {"ACK", "SEVERITY_UP"} & set(by_op(run(alert(), [], obs, known)))
    raised = alert(severity=1, is_ack=True, update_time=BEGIN + 300)
    first = by_op(run(raised, [], obs, known))
    assert first["SEVERITY_UP"].message == "severity raised to fatal"
    assert first["SEVERITY_UP"].create_time_ns == (BEGIN + 300) * 10**9, "the update_time that showed it"
    assert first["ACK"].create_time_ns == (BEGIN + 300) * 10**9, "no ack_duration: the update_time that showed it"
    again = by_op(run(alert(severity=1, is_ack=True, update_time=BEGIN + 900), [], obs, known))
    assert again["SEVERITY_UP"] == first["SEVERITY_UP"] and again["ACK"] == first["ACK"], "the same record"
    # another process (a restart, a replica) that saw the raise later: same uids
    other = by_op(run(alert(severity=1, is_ack=True, update_time=BEGIN + 900), [], Observations(), known))
    assert other["SEVERITY_UP"].uid == first["SEVERITY_UP"].uid and other["ACK"].uid == first["ACK"].uid
    # a second raise is a second record; a stored context already at that level is no raise
    assert "SEVERITY_UP" not in by_op(run(alert(severity=1), [], Observations(), AlarmContext(ID, severity=1)))


def test_end_without_end_time_keeps_its_first_time_and_a_stable_uid() -> None:
    obs = Observations()
    one = by_op(run(alert(status="CLOSED", update_time=BEGIN + 60), [], obs))["CLOSE"]
    two = by_op(run(alert(status="CLOSED", update_time=BEGIN + 99), [], obs))["CLOSE"]
    assert one == two
    fresh = by_op(run(alert(status="CLOSED", update_time=BEGIN + 99), [], Observations()))["CLOSE"]
    assert fresh.uid == one.uid


def test_context_is_refreshed_from_the_alert_and_bad_actions_are_skipped() -> None:
    result = run(alert(severity=2), [action(1), {"id": "9", "create_time": "soon"}], Observations())
    assert result.context is not None and result.context.name == "CPU" and result.context.severity == 2
    assert len(result.malformed) == 1 and "create_time" in result.malformed[0].reason


class FakeGateway:
    def __init__(self, doc: dict[str, Any] | None, actions: list[dict[str, Any]]) -> None:
        self.doc, self.actions = doc, actions
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def search_alert(self, body: Any) -> dict[str, Any]:
        self.bodies.append(("alert", dict(body)))
        return {"alerts": [self.doc] if self.doc else [], "total": int(bool(self.doc))}

    def search_action(self, body: Any) -> dict[str, Any]:
        self.bodies.append(("action", dict(body)))
        page, size = body["page"], body["page_size"]
        return {"actions": self.actions[(page - 1) * size : page * size], "total": len(self.actions)}


def test_fetch_resolves_the_id_by_alert_search_and_pages_the_actions() -> None:
    api = FakeGateway(alert(), [action(i) for i in range(501)] + [action(999, alert_id=["other"])])
    source = GatewaySource(api, clock_ns=lambda: (BEGIN + 1000) * 10**9)
    result = source.fetch(AlarmContext(ID))
    assert sum(r.operate == "ACTION" for r in result.records) == 501, "the other alert's action is not this one's"
    (kind, lookup), *pages = api.bodies
    assert kind == "alert" and lookup["conditions"][0] == {
        "key": "id",
        "value": [ID],
        "method": "eq",
        "condition": "and",
    }
    assert lookup["start_time"] == BEGIN - 1, "the search window starts at the begin time the id carries"
    assert [b["page"] for _, b in pages] == [1, 2] and pages[0][1]["alert_ids"] == [ID]


def test_fetch_of_an_unknown_id_is_not_found() -> None:
    from exporter.errors import BkNotFoundError

    source = GatewaySource(FakeGateway(None, []))
    try:
        source.fetch(AlarmContext(ID))
    except BkNotFoundError as exc:
        assert ID in str(exc)
    else:
        raise AssertionError("expected BkNotFoundError")


def test_a_finished_alarm_is_forgotten_and_its_records_keep_their_uids() -> None:
    doc = alert(status="RECOVERED", end_time=BEGIN + 900, is_ack=True, severity=1, update_time=BEGIN + 950)
    source = GatewaySource(FakeGateway(doc, [action(1)]), clock_ns=lambda: (BEGIN + 1000) * 10**9)
    known = AlarmContext(ID, severity=3)
    first = {r.uid for r in source.fetch(known).records}
    assert not source.observations._alarms, "nothing kept for an alarm that is over"
    assert {r.uid for r in source.fetch(known).records} == first
