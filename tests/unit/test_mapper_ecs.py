"""The ``ecs`` mapper, field by field (the table in exporter/mapping/ecs.py and docs/plugins.md)."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.mapping.contract import DefaultMapper
from exporter.mapping.ecs import EcsMapper, ecs_action, ecs_outcome
from exporter.mapping.ids import alarm_span_id, alarm_trace_id
from exporter.model import AlarmContext, FlowRecord
from tests.support.records import ALARM, alarm_context

UID = "ab" * 16


def record(**over: Any) -> FlowRecord:
    base: dict[str, Any] = dict(
        alarm_id=ALARM,
        operate="SYSTEM_RECOVER",
        message="delayed-recovery window over",
        status="SUCCESS",
        event_id=ALARM,
        create_time_ns=1718000030 * 10**9,
        create_time_raw="2024-06-10 14:13:50",
        extend_info={
            "anomaly_count": 3,
            "process_time": {"max": 1.5, "min": 0.25},
            "action": {"id": 7, "plugin": "mail", "ok": True},
            "targets": ["10.0.0.1", "10.0.0.2"],
            "levels": [1, 2],
            "bk_alarm_id": "a leaf that must not win",
        },
        uid=UID,
        observed_ns=1718000100 * 10**9,
    )
    base.update(over)
    return FlowRecord(**base)


CTX = alarm_context(dimensions=(("ip", "10.0.0.1"), ("bk_target.cloud_id", "0")))

#: Every attribute the ECS mapper gives the record above with CTX: exactly these, nothing else.
EXPECTED: dict[str, Any] = {
    "message": "delayed-recovery window over",
    "event.action": "system-recover",
    "event.code": "SYSTEM_RECOVER",
    "event.id": UID,
    "event.kind": "alert",
    "event.outcome": "success",
    "event.severity": 1,
    "rule.id": "41868",
    "rule.name": "CPU usage",
    "log.record.uid": UID,
    "labels.bk_alarm_id": ALARM,
    "labels.bk_biz_id": "2",
    "labels.bk_alarm_name": "CPU usage alarm",
    "labels.bk_alarm_status": "ABNORMAL",
    "labels.bk_event_id": ALARM,
    "labels.bk_event_log_status": "SUCCESS",
    "labels.bk_alarm_dimension_ip": "10.0.0.1",
    "labels.bk_alarm_dimension_bk_target_cloud_id": "0",
    "labels.anomaly_count": "3",
    "labels.process_time_max": "1.5",
    "labels.process_time_min": "0.25",
    "labels.action_id": "7",
    "labels.action_plugin": "mail",
    "labels.action_ok": "true",
    "labels.targets": ["10.0.0.1", "10.0.0.2"],
    "labels.levels": ["1", "2"],
}


def test_every_attribute_of_a_rich_record() -> None:
    event = EcsMapper().map_log(record(), CTX, with_trace=False)
    assert dict(event.attributes) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_field(name: str) -> None:
    """One test per field, so a regression names the field it broke."""
    assert EcsMapper().map_log(record(), CTX, with_trace=False).attributes[name] == EXPECTED[name]


def test_record_fields_are_contract_md_unchanged() -> None:
    for with_trace in (False, True):
        ecs = EcsMapper().map_log(record(), CTX, with_trace=with_trace)
        default = DefaultMapper().map_log(record(), CTX, with_trace=with_trace)
        assert (ecs.uid, ecs.alarm_id, ecs.event_name, ecs.body) == (UID, ALARM, "SYSTEM_RECOVER", default.body)
        assert (ecs.timestamp_ns, ecs.observed_ns) == (default.timestamp_ns, default.observed_ns)
        assert (ecs.severity_number, ecs.severity_text) == (default.severity_number, default.severity_text)
        assert (ecs.trace_id, ecs.span_id) == (default.trace_id, default.span_id)
    linked = EcsMapper().map_log(record(), CTX, with_trace=True)
    assert (linked.trace_id, linked.span_id) == (alarm_trace_id(ALARM), alarm_span_id(ALARM))


def test_no_bk_attribute_names_remain() -> None:
    attrs = EcsMapper().map_log(record(), CTX, with_trace=False).attributes
    assert not [name for name in attrs if name.startswith("bk.")]
    assert all("." not in name.removeprefix("labels.") for name in attrs if name.startswith("labels."))


def test_every_label_is_a_keyword() -> None:
    attrs = EcsMapper().map_log(record(), CTX, with_trace=False).attributes
    for name, value in attrs.items():
        if name.startswith("labels."):
            assert isinstance(value, str) or all(isinstance(v, str) for v in value), name


def test_without_alarm_context() -> None:
    attrs = EcsMapper().map_log(record(extend_info={}), None, with_trace=False).attributes
    assert attrs == {
        "message": "delayed-recovery window over",
        "event.action": "system-recover",
        "event.code": "SYSTEM_RECOVER",
        "event.id": UID,
        "event.kind": "alert",
        "event.outcome": "success",
        "log.record.uid": UID,
        "labels.bk_alarm_id": ALARM,
        "labels.bk_event_id": ALARM,
        "labels.bk_event_log_status": "SUCCESS",
    }


@pytest.mark.parametrize(
    ("extend_info", "labels"),
    [
        ("", {}),
        (None, {}),
        ({}, {}),
        ("plain text", {"labels.extend_info": "plain text"}),
        ({"a": {"b": None}}, {"labels.a_b": "null"}),
        ({"a": [{"x": 1}]}, {"labels.a": '[{"x":1}]'}),
        ({"a.b": 1, "a_b": 2}, {"labels.a_b": "2"}),  # collapse to one label: the later leaf wins
    ],
)
def test_extend_info_shapes(extend_info: Any, labels: dict[str, Any]) -> None:
    attrs = EcsMapper().map_log(record(extend_info=extend_info), None, with_trace=False).attributes
    got = {k: v for k, v in attrs.items() if k.startswith("labels.") and not k.startswith("labels.bk_")}
    assert got == labels


@pytest.mark.parametrize(
    ("operate", "action"),
    [
        ("CREATE", "create"),
        ("CONVERGE", "converge"),
        ("SEVERITY_UP", "severity-up"),
        ("SYSTEM_CLOSE", "system-close"),
        ("ACK", "ack"),
        ("NEW_KIND", "new-kind"),
    ],
)
def test_event_action(operate: str, action: str) -> None:
    assert ecs_action(operate) == action
    attrs = EcsMapper().map_log(record(operate=operate), CTX, with_trace=False).attributes
    assert (attrs["event.action"], attrs["event.code"]) == (action, operate)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("SUCCESS", "success"),
        ("success", "success"),
        ("FAILED", "failure"),
        ("FAILURE", "failure"),
        ("ERROR", "failure"),
        ("RUNNING", "unknown"),
        ("PARTIAL_SUCCESS", "unknown"),
        ("SHIELDED", "unknown"),
        ("", "unknown"),
    ],
)
def test_event_outcome(status: str, outcome: str) -> None:
    assert ecs_outcome(status) == outcome
    attrs = EcsMapper().map_log(record(status=status), CTX, with_trace=False).attributes
    assert (attrs["event.outcome"], attrs["labels.bk_event_log_status"]) == (outcome, status)


def test_context_fields_only_when_known() -> None:
    bare = AlarmContext(alarm_id=ALARM, strategy_id=0)
    attrs = EcsMapper().map_log(record(extend_info={}), bare, with_trace=False).attributes
    for name in ("event.severity", "rule.id", "rule.name", "labels.bk_biz_id", "labels.bk_alarm_name"):
        assert name not in attrs


def test_span_event() -> None:
    event = EcsMapper().map_span_event(record())
    assert (event.name, event.timestamp_ns) == ("SYSTEM_RECOVER", 1718000030 * 10**9)
    record_only = ("message", "event.action", "event.code", "event.id", "log.record.uid")
    expected = {
        k: v for k, v in EXPECTED.items() if k in record_only or not k.startswith(("labels.bk_", "event.", "rule."))
    }
    # no alarm labels on a span event (the span carries the alarm): the leaf keeps its label
    expected["labels.bk_alarm_id"] = "a leaf that must not win"
    assert dict(event.attributes) == expected
    # what the span builder relies on (exporter/mapping/base.py)
    assert event.attributes["log.record.uid"] == UID and event.attributes["message"] == record().message


def test_pure() -> None:
    first = EcsMapper().map_log(record(), CTX, with_trace=True)
    assert EcsMapper().map_log(record(), CTX, with_trace=True) == first
    assert first.to_json() == EcsMapper().map_log(record(), CTX, with_trace=True).to_json()
