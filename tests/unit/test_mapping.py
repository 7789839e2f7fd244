"""docs/reference.md "What a flow record becomes", table-driven."""

from __future__ import annotations

import json

import pytest

from exporter.mapping.attributes import extend_info_attributes
from exporter.mapping.contract import severity_of, to_log_event
from exporter.mapping.ids import alarm_span_id, alarm_trace_id, record_uid
from exporter.model import FlowRecord, LogEvent
from tests.support.records import alarm_context


def record(**over: object) -> FlowRecord:
    base: dict[str, object] = dict(
        alarm_id="17180000005819837",
        operate="CREATE",
        message="CPU high",
        status="SUCCESS",
        event_id="17180000005819837",
        create_time_ns=1718000030 * 10**9,
        create_time_raw="2024-06-10 14:13:50",
        extend_info={},
        uid="ab" * 16,
        observed_ns=1718000100 * 10**9,
    )
    base.update(over)
    return FlowRecord(**base)  # type: ignore[arg-type]


CTX = alarm_context(dimensions=(("ip", "10.0.0.1"), ("bk_cloud_id", "0")))


@pytest.mark.parametrize(
    ("operate", "alarm_severity", "expected"),
    [
        ("CREATE", 1, (21, "FATAL")),
        ("CREATE", 2, (13, "WARN")),
        ("CREATE", 3, (9, "INFO")),
        ("CREATE", None, (13, "WARN")),
        ("CREATE", 7, (13, "WARN")),
        ("CONVERGE", 1, (21, "FATAL")),
        ("SEVERITY_UP", 2, (13, "WARN")),
        ("DELAY_RECOVER", 1, (21, "FATAL")),
        ("ABORT_RECOVER", 3, (9, "INFO")),
        ("RECOVERING", 1, (21, "FATAL")),
        ("EVENT_DROP", 2, (13, "WARN")),
        ("ALERT_QOS", 1, (21, "FATAL")),
        ("SOMETHING_NEW", 1, (21, "FATAL")),  # unknown operates are problem records
        ("RECOVER", 1, (9, "INFO")),
        ("SYSTEM_RECOVER", 1, (9, "INFO")),
        ("CLOSE", 1, (9, "INFO")),
        ("SYSTEM_CLOSE", 1, (9, "INFO")),
        ("ACK", 1, (9, "INFO")),
        ("ACTION", 1, (9, "INFO")),
    ],
)
def test_severity_rules(operate: str, alarm_severity: int | None, expected: tuple[int, str]) -> None:
    assert severity_of(operate, alarm_severity) == expected


@pytest.mark.parametrize(
    ("extend_info", "expected"),
    [
        ({}, {}),
        (None, {}),
        ("", {}),
        ("free text", {"extend_info": "free text"}),
        (42, {"extend_info": 42}),
        (["a", "b"], {"extend_info": ["a", "b"]}),
        (
            {
                "process_time": {"max": 1583914154, "min": 1583911227},
                "data_time": {"max": 1583914020, "min": 1583911080},
                "anomaly_count": 50,
                "anomaly_record": {},
            },
            {
                "process_time.max": 1583914154,
                "process_time.min": 1583911227,
                "data_time.max": 1583914020,
                "data_time.min": 1583911080,
                "anomaly_count": 50,
                "anomaly_record": "{}",
            },
        ),
        (
            {"action": {"id": 7, "notice_way": ["mail", "sms"]}},
            {"action.id": 7, "action.notice_way": ["mail", "sms"]},
        ),
        ({"mixed": [1, "a"]}, {"mixed": '[1,"a"]'}),
        ({"bools": [True, 1]}, {"bools": "[true,1]"}),
        ({"objs": [{"a": 1}]}, {"objs": '[{"a":1}]'}),
        ({"none": None}, {"none": "null"}),
        ({"f": 1.5, "b": False, "s": ""}, {"f": 1.5, "b": False, "s": ""}),
        ({"deep": {"er": {"est": "x"}}}, {"deep.er.est": "x"}),
        ({"inf": float("inf")}, {"inf": "inf"}),
    ],
)
def test_extend_info_leaves(extend_info: object, expected: dict[str, object]) -> None:
    assert extend_info_attributes(extend_info) == expected


def test_log_event_fields_with_context() -> None:
    event = to_log_event(record(extend_info={"anomaly_count": 3, "bk.alarm.id": "spoof"}), CTX)
    assert event.event_name == "CREATE"
    assert event.body == "CPU high"
    assert event.timestamp_ns == 1718000030 * 10**9
    assert event.observed_ns == 1718000100 * 10**9
    assert (event.severity_number, event.severity_text) == (21, "FATAL")
    assert event.trace_id is None and event.span_id is None
    assert event.attributes == {
        "anomaly_count": 3,
        "bk.alarm.id": "17180000005819837",  # the exporter's own name wins over the clashing leaf
        "bk.alarm.operate": "CREATE",
        "bk.event_log.status": "SUCCESS",
        "bk.event.id": "17180000005819837",
        "log.record.uid": "ab" * 16,
        "bk.biz.id": 2,
        "bk.alarm.name": "CPU usage alarm",
        "bk.alarm.severity": 1,
        "bk.alarm.status": "ABNORMAL",
        "bk.strategy.id": 41868,
        "bk.strategy.name": "CPU usage",
        "bk.alarm.dimension.ip": "10.0.0.1",
        "bk.alarm.dimension.bk_cloud_id": "0",
    }


def test_log_event_without_context_has_only_record_attributes() -> None:
    event = to_log_event(record(operate="ACK"), None)
    assert set(event.attributes) == {
        "bk.alarm.id",
        "bk.alarm.operate",
        "bk.event_log.status",
        "bk.event.id",
        "log.record.uid",
    }
    assert event.severity_text == "INFO"


def test_log_event_with_trace_carries_alarm_span_ids() -> None:
    event = to_log_event(record(), CTX, with_trace=True)
    assert event.trace_id == alarm_trace_id(CTX.alarm_id)
    assert event.span_id == alarm_span_id(CTX.alarm_id)


def test_log_event_json_round_trip() -> None:
    event = to_log_event(record(extend_info={"l": [1, 2]}), CTX, with_trace=True)
    again = LogEvent.from_json(event.to_json())
    assert again == LogEvent(**{**json.loads(event.to_json())})
    assert again.attributes["l"] == [1, 2]


def test_ids_are_deterministic_and_documented() -> None:
    import hashlib

    assert alarm_trace_id("1") == int.from_bytes(hashlib.sha256(b"bk-otel-exporter/trace/1").digest()[:16], "big")
    assert alarm_span_id("1") == int.from_bytes(hashlib.sha256(b"bk-otel-exporter/span/1").digest()[:8], "big")
    assert alarm_trace_id("1") != alarm_trace_id("2")
    assert record_uid("1", "CREATE", "t", "m") == record_uid("1", "CREATE", "t", "m")
    assert record_uid("1", "CREATE", "t", "m", 0) != record_uid("1", "CREATE", "t", "m", 1)
    # length-prefixed: shifting text between fields changes the uid
    assert record_uid("1", "AB", "C", "m") != record_uid("1", "A", "BC", "m")


def test_the_record_uid_is_the_documented_hash_for_ever() -> None:
    """A uid that changed between versions would send every stored record again after an upgrade:
    the formula of the ids module's docstring, spelled out, and a value fixed once."""
    import hashlib

    fields = ("bkoe-uid-1", "6001", "ACTION", "2026-11-20 10:00:05", "通知 admin \ud800", "1")
    framed = b"".join(len(raw).to_bytes(8, "big") + raw for raw in (f.encode("utf-8", "surrogatepass") for f in fields))
    uid = record_uid("6001", "ACTION", "2026-11-20 10:00:05", "通知 admin \ud800", 1)
    assert uid == hashlib.sha256(framed).digest()[:16].hex()
    assert record_uid("6001", "CREATE", "2026-11-20 10:00:00", "告警产生") == "85c4240a58c4648089c41434374b7d91"
