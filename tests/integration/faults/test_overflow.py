"""Issue 5, case 6: the outbox at ``state.max_queued_records``.

The policy is backpressure, never a silent drop: when a poll's new records do not fit, none of
them is taken (they are not marked seen, so they stay in BlueKing and are read again once the
queue has room), they are counted (``bk_otel_records_skipped_total{reason="overflow"}``, at
every read that finds them left over) and the condition is logged at most once a minute. A poll
bigger than the whole cap is taken whole once the outbox is empty, so it can never be stuck.

Here the backend is down (so nothing drains) and the cap is 20: three alarms fill 18 places, a
record batch that still fits (2) is taken, one that does not (5) and one bigger than the cap
itself (30) wait in BlueKing; when the backend is back, every record arrives exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.daemon import write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.wait import wait_until

from ._harness import Run, Story, assert_exactly_once, exporter_config, simulator, status_of, wait_delivered
from .conftest import StoreChoice

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAP = 20


def test_full_outbox_leaves_records_in_bluekings_hands_counted_logged_then_delivered(
    tmp_path: Path, otlp_receiver: OtlpReceiver, store: StoreChoice
) -> None:
    receiver = otlp_receiver
    receiver.mode = "unavailable"
    with simulator() as sim:
        story = Story(sim, seed=6)
        a, b, c = story.add_alarms(3, records=6)
        config = exporter_config(
            sim, receiver.grpc_endpoint, tmp_path / "s.db", story.ids, store=store, state={"max_queued_records": CAP}
        )
        path = write_config(tmp_path / "c.yaml", config)
        run = Run(path)
        try:
            wait_until(lambda: run.metric("bk_otel_outbox_depth") == 18, 15, "18 records queued")
            for _ in range(5):
                story.note(a)  # 18 + 5 > 20: left in BlueKing
            for _ in range(2):
                story.note(b)  # 18 + 2 = 20: taken
            for _ in range(30):
                story.note(c)  # more than the whole cap: taken whole once the outbox is empty

            def overflowed() -> float:
                return run.metric("bk_otel_records_skipped_total", reason="overflow") or 0.0

            wait_until(lambda: overflowed() >= 3 * (5 + 30), 15, "three reads of the left-over records")
            time.sleep(1.0)
            assert run.metric("bk_otel_outbox_depth") == CAP  # the cap holds
            status = status_of(path)
            assert status["outbox"]["queued"] == CAP and status["outbox"]["parked"] == 0
            full = [line for line in run.output().splitlines() if "outbox full" in line]
            assert len(full) == 1, full  # logged once a minute, although it happens at every poll
            assert f"state.max_queued_records={CAP}" in full[0] and " ERROR " in full[0]

            receiver.mode = "ok"
            want = story.expected_uids()
            assert len(want) == 18 + 5 + 2 + 30
            assert_exactly_once(wait_delivered(receiver, want), want)
            wait_until(lambda: run.metric("bk_otel_outbox_depth") == 0, 10, "an empty outbox")
            run.finish()
        finally:
            run.stop_quietly()
