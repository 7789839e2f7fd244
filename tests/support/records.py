"""Small builders of pipeline values for store and pipeline tests."""

from __future__ import annotations

from typing import Any

from exporter.model import AlarmContext, LogEvent
from exporter.state.base import QueuedRecord

__all__ = ["ALARM", "alarm_context", "queued_log"]

#: The alarm id the mapping tests build their records and contexts for.
ALARM = "17180000005819837"


def alarm_context(**over: Any) -> AlarmContext:
    """The mapping tests' alarm: a CPU usage alarm of biz 2, fatal, open, on host 10.0.0.1."""
    fields: dict[str, Any] = {
        "alarm_id": ALARM,
        "bk_biz_id": 2,
        "name": "CPU usage alarm",
        "severity": 1,
        "status": "ABNORMAL",
        "strategy_id": 41868,
        "strategy_name": "CPU usage",
        "dimensions": (("ip", "10.0.0.1"),),
        **over,
    }
    return AlarmContext(**fields)


def queued_log(uid: str, alarm_id: str = "1") -> QueuedRecord:
    """An outbox row holding a minimal log record (with a list attribute, to check round trips)."""
    ev = LogEvent(
        uid=uid,
        alarm_id=alarm_id,
        timestamp_ns=1,
        observed_ns=2,
        event_name="CREATE",
        body="b",
        severity_number=9,
        severity_text="INFO",
        attributes={"k": [1, 2]},
    )
    return QueuedRecord("logs", uid, ev.to_json())
