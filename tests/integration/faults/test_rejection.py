"""Issue 5, case 3: the backend rejects some data for good (gRPC INVALID_ARGUMENT / HTTP 400).

The backend refuses every request that carries a "poison" record (one whose body contains
``POISON``) and accepts everything else, the way a backend refuses a record it cannot store.
The exporter is pointed straight at it: a collector would acknowledge and hide the verdict.

What must hold: the poison records are isolated by splitting the batch (a bounded number of
refused requests each), parked (kept in the state store, never retried), counted
(``bk_otel_records_parked_total``, ``bk_otel_outbox_parked``), reported (one ERROR line each,
naming the record and the alarm; ``status`` shows them); every other record is delivered exactly
once, including records that arrive after the poison ones (nothing is blocked).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest

from tests.support.daemon import run_cli, write_config
from tests.support.wait import wait_until

from ._harness import (
    ENV,
    T0,
    HookedReceiver,
    Run,
    Story,
    assert_exactly_once,
    exporter_config,
    simulator,
    status_of,
    wait_delivered,
)
from .conftest import StoreChoice

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 16


def _poisoned(raw: dict[str, object]) -> bool:
    return "POISON" in str(raw["message"])


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_rejected_records_are_parked_counted_reported_and_block_nothing(
    protocol: str, tmp_path: Path, store: StoreChoice
) -> None:
    with simulator() as sim, HookedReceiver() as receiver:
        story = Story(sim, seed=3)
        alarms = story.add_alarms(4, records=10)
        for i, alarm in enumerate(alarms[:3]):
            alarm.log("ACTION", f"POISON: a record the backend cannot store #{i}", at=T0 + 5_000 + i)
        receiver.decide = lambda bodies: "reject" if any("POISON" in b for b in bodies) else None
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        config = exporter_config(
            sim, endpoint, tmp_path / "s.db", story.ids, store=store, protocol=protocol, export={"batch_size": BATCH}
        )
        path = write_config(tmp_path / "c.yaml", config)
        run = Run(path)
        try:
            good = story.expected_uids(lambda raw: not _poisoned(raw))
            poison = story.expected_uids(_poisoned)
            assert len(good) == 40 and len(poison) == 3
            assert_exactly_once(wait_delivered(receiver, good), good)
            wait_until(lambda: run.metric("bk_otel_records_parked_total", signal="logs") == 3, 10, "3 parked")
            assert run.metric("bk_otel_outbox_parked") == 3
            assert run.metric("bk_otel_outbox_depth") == 0

            # not retried: the refused requests stop once the poison is parked
            refused = receiver.decisions["reject"]
            assert 3 <= refused <= 3 * (math.log2(BATCH) + 1)  # bisection: one refusal per halving
            time.sleep(3.0)  # three send ticks, a few polls
            assert receiver.decisions["reject"] == refused

            # nothing blocked: later records flow past the parked ones
            story.notes(12)
            want = story.expected_uids(lambda raw: not _poisoned(raw))
            assert_exactly_once(wait_delivered(receiver, want), want)

            # reported: status (machine and human), while the daemon runs
            status = status_of(path)
            assert status["outbox"]["parked"] == 3 and status["outbox"]["queued"] == 0
            assert status["last_successful_export"] is not None and status["last_successful_poll"] is not None
            text = run_cli(["status", "--config", str(path)], env=ENV).stdout
            assert re.search(r"records parked:\s+3\b", text) and re.search(r"records queued:\s+0\b", text), text
            assert "alarms followed:        4" in text and "never" not in text, text
            output = run.finish()
        finally:
            run.stop_quietly()
    parked_lines = [line for line in output.splitlines() if "parked, not retried" in line]
    assert len(parked_lines) == 3, parked_lines
    assert {re.search(r"record ([0-9a-f]{32}) ", line).group(1) for line in parked_lines} == poison  # type: ignore[union-attr]
    assert all(" ERROR " in line and "INVALID_ARGUMENT" in line or "HTTP 400" in line for line in parked_lines)
