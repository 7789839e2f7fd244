"""Parsing get_event_log data from both server generations (docs/blueking-api.md §2.3, §2.8)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.sources.bkmonitor.records import parse_create_time, parse_event_log

SHANGHAI = ZoneInfo("Asia/Shanghai")
NS = 1_000_000_000


@pytest.mark.parametrize(
    ("value", "tz", "expected_s"),
    [
        ("2024-06-10 14:13:50", SHANGHAI, 1718000030),  # naive UTC+8 (current servers)
        ("2024-06-10 06:13:50", timezone.utc, 1718000030),  # bkmonitor.timezone: UTC
        ("2024-06-10T14:13:50", SHANGHAI, 1718000030),
        ("2024-06-10 14:13:50+0800", timezone.utc, 1718000030),  # search_event style offset
        ("2024-06-10T06:13:50Z", SHANGHAI, 1718000030),
        (1718000030, SHANGHAI, 1718000030),  # epoch seconds
        (1718000030000, SHANGHAI, 1718000030),  # epoch milliseconds
        ("1718000030", SHANGHAI, 1718000030),
        (1718000030.5, SHANGHAI, 1718000030.5),
    ],
)
def test_create_time_formats(value: object, tz: object, expected_s: float) -> None:
    assert parse_create_time(value, tz) == int(expected_s * NS)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, "", "yesterday", "2024-13-45 99:00:00", True, -5, [], {}])
def test_create_time_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_create_time(value, SHANGHAI)


def item(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "operate": "CREATE",
        "message": "AVG(CPU) >= 80%",
        "extend_info": {},
        "status": "SUCCESS",
        "event_id": 17180000005819837,
        "create_time": "2024-06-10 14:13:50",
    }
    base.update(over)
    return base


def test_current_server_item() -> None:
    result = parse_event_log("17180000005819837", [item()], tz=SHANGHAI, observed_ns=42)
    assert result.malformed == []
    (rec,) = result.records
    assert rec.operate == "CREATE"
    assert rec.event_id == "17180000005819837"  # int -> string
    assert rec.create_time_ns == 1718000030 * NS
    assert rec.observed_ns == 42
    assert len(rec.uid) == 32 and int(rec.uid, 16) >= 0


def test_legacy_item_shapes() -> None:
    legacy = item(
        event_id="d751713988987e9331980363e24189ce.1574439660.0.0.0",
        extend_info={"anomaly_count": 50, "process_time": {"max": 1583914154, "min": 1583911227}},
        status="RUNNING",
        operate="ANOMALY_NOTICE",
    )
    (rec,) = parse_event_log("1", [legacy, item(extend_info="")], tz=SHANGHAI, observed_ns=0).records[:1]
    assert rec.event_id == "d751713988987e9331980363e24189ce.1574439660.0.0.0"
    assert rec.extend_info["anomaly_count"] == 50
    assert rec.status == "RUNNING"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not a dict", "not an object"),
        (item(operate=None), "operate is missing"),
        (item(operate=""), "operate is empty"),
        (item(operate=["x"]), "not a string"),
        (item(create_time="soon"), "not a known time format"),
        (item(create_time=None), "not a string or number"),
        (item(message={"a": 1}), "message is a dict"),
    ],
)
def test_malformed_items_are_reported_and_skipped(bad: object, reason: str) -> None:
    result = parse_event_log("1", [item(), bad, item(operate="ACK")], tz=SHANGHAI, observed_ns=0)
    assert [r.operate for r in result.records] == ["CREATE", "ACK"]
    assert len(result.malformed) == 1
    assert result.malformed[0].index == 1
    assert reason in result.malformed[0].reason


def test_identical_rows_are_two_records_with_distinct_stable_uids() -> None:
    data = [item(operate="ACTION", message="notified admin")] * 2
    first = parse_event_log("1", data, tz=SHANGHAI, observed_ns=0).records
    again = parse_event_log("1", data, tz=SHANGHAI, observed_ns=99).records
    assert len({r.uid for r in first}) == 2
    assert [r.uid for r in first] == [r.uid for r in again]


def test_uid_ignores_position_so_refolding_does_not_duplicate() -> None:
    """docs/blueking-api.md §2.5 walkthrough: after a new CONVERGE the merged row changes, the others keep their uid."""
    before = [
        item(operate="CONVERGE", message="m210", create_time="2024-06-10 14:16:50"),
        item(operate="CONVERGE", message="m150", create_time="2024-06-10 14:15:50"),
        item(operate="CREATE", message="m0"),
    ]
    after = [
        item(operate="CONVERGE", message="m300", create_time="2024-06-10 14:18:20"),
        item(operate="CONVERGE", message="m210", create_time="2024-06-10 14:16:50"),
        item(operate="CREATE", message="m0"),
    ]
    uids_before = {r.message: r.uid for r in parse_event_log("1", before, tz=SHANGHAI, observed_ns=0).records}
    uids_after = {r.message: r.uid for r in parse_event_log("1", after, tz=SHANGHAI, observed_ns=0).records}
    assert uids_before["m210"] == uids_after["m210"]
    assert uids_before["m0"] == uids_after["m0"]
    new = set(uids_after.values()) - set(uids_before.values())
    assert new == {uids_after["m300"]}


def test_uid_depends_on_alarm_and_content() -> None:
    a = parse_event_log("1", [item()], tz=SHANGHAI, observed_ns=0).records[0].uid
    b = parse_event_log("2", [item()], tz=SHANGHAI, observed_ns=0).records[0].uid
    c = parse_event_log("1", [item(message="other")], tz=SHANGHAI, observed_ns=0).records[0].uid
    d = parse_event_log("1", [item(status="FAILED", event_id=7)], tz=SHANGHAI, observed_ns=0).records[0].uid
    assert len({a, b, c}) == 3
    assert a == d  # status / event_id changes are the same record


_ZONES = [ZoneInfo(name) for name in ("Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe")]


@settings(max_examples=400, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 12, 31)),
    zone=st.sampled_from(_ZONES),
)
def test_the_fast_time_path_agrees_with_datetime_in_any_zone(moment: datetime, zone: ZoneInfo) -> None:
    """BlueKing's ``YYYY-MM-DD HH:MM:SS`` is read without strptime and with one UTC offset looked
    up per local minute; it must mean what ``datetime`` means, DST gaps and folds included (Lord
    Howe moves by 30 minutes)."""
    moment = moment.replace(microsecond=0)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    want = int((moment.replace(tzinfo=zone) - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()) * 10**9
    assert parse_create_time(text, zone) == want
    assert parse_create_time(text, zone) == want  # the second time from the offset cache


@pytest.mark.parametrize("text", ["2024-02-30 10:00:00", "2024-13-01 10:00:00", "2024-06-10 24:00:00"])
def test_impossible_plain_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_create_time(text, ZoneInfo("Asia/Shanghai"))
