"""When an alarm is over, by its records."""

from __future__ import annotations

import pytest

from exporter.model import FlowRecord
from exporter.pipeline.lifecycle import next_poll_time, terminal_time


def rec(operate: str, t: int) -> FlowRecord:
    return FlowRecord("1", operate, "m", "SUCCESS", "1", t * 10**9, str(t), {}, f"{operate}{t}", 0)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([rec("CREATE", 10)], None),
        ([rec("CREATE", 10), rec("RECOVER", 20)], 20.0),
        ([rec("CREATE", 10), rec("CLOSE", 20), rec("SYSTEM_CLOSE", 30)], 30.0),
        ([rec("CREATE", 10), rec("RECOVER", 20), rec("ACTION", 25), rec("ACK", 26)], 20.0),  # late news
        ([rec("CREATE", 10), rec("RECOVER", 20), rec("CONVERGE", 30)], None),  # reopened
        ([rec("CREATE", 10), rec("RECOVER", 20), rec("CONVERGE", 30), rec("SYSTEM_RECOVER", 40)], 40.0),
        ([rec("CREATE", 10), rec("RECOVER", 2000)], 1000.0),  # a future terminal time is clamped to now
    ],
)
def test_terminal_time(records: list[FlowRecord], expected: float | None) -> None:
    assert terminal_time(records, now=1000.0) == expected


def test_next_poll_time_spreads_by_jitter() -> None:
    assert next_poll_time(100.0, 30.0, 0.1, rng=lambda: 0.5) == 130.0
    assert next_poll_time(100.0, 30.0, 0.1, rng=lambda: 0.0) == pytest.approx(127.0)
    assert next_poll_time(100.0, 30.0, 0.1, rng=lambda: 1.0) == pytest.approx(133.0)
