"""Small builders of pipeline values for store and pipeline tests."""

from __future__ import annotations

from exporter.model import LogEvent
from exporter.state.base import QueuedRecord

__all__ = ["queued_log"]


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
