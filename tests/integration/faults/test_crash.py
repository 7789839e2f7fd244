"""Issue 5, case 1: SIGKILL during a poll, during an export and during a state commit; restart; go on.

Two ways of choosing the moment:

* deterministic points, repeated: the simulator kills the exporter while it waits for a
  ``get_event_log`` answer (mid-poll); the backend kills it while it waits for the export's
  answer, either refusing the batch (lost in flight) or storing it first (acknowledged by the
  backend, not yet committed locally: the one window where the contract allows a duplicate,
  which must then carry the same uid, and does: those batches come again, nothing else);
* random moments of a busy run through a real collector (rotel), with a fixed seed: hundreds of
  records, a new record every 10 ms, small batches, so most kills land while a transaction
  (``commit_poll``, ``ack``) is open.

After every kill, before the restart, the state file is checked: intact, every queued record
marked seen, nothing delivered that was not committed first, nothing marked seen that is neither
queued nor delivered (that would be a record lost for good).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import write_config
from tests.support.rotel import RotelCollector
from tests.support.wait import wait_until

from ._harness import (
    Grower,
    HookedReceiver,
    Run,
    Story,
    assert_exactly_once,
    exporter_config,
    lost_since_crash,
    simulator,
    uids_of,
    wait_delivered,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 8


def _kill_at_answer(victim: int, pid: int, killed: threading.Event) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """A simulator hook: SIGKILL the exporter while it waits for its ``victim``-th event log."""
    answers = itertools.count(1)

    def on_answer(endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        if endpoint == "get_event_log" and next(answers) == victim and not killed.is_set():
            killed.set()
            os.kill(pid, signal.SIGKILL)
        return payload

    return on_answer


def _kill_at_export(
    store_it: bool, pid: int, killed: threading.Event, batch: list[int]
) -> Callable[[list[str]], str | None]:
    """A backend hook: SIGKILL the exporter while it waits for the answer to its next export;
    the backend keeps the batch (``store_it``: acknowledged, never committed locally) or not."""

    def decide(bodies: list[str]) -> str | None:
        if killed.is_set():
            return None
        killed.set()
        batch.append(len(bodies))
        os.kill(pid, signal.SIGKILL)
        return "ok" if store_it else "unavailable"

    return decide


def test_sigkill_inside_a_poll_and_inside_an_export_then_restart(tmp_path: Path) -> None:
    rng = random.Random(5)
    state = tmp_path / "s.db"
    with simulator() as sim, HookedReceiver() as receiver:
        story = Story(sim, seed=5)
        story.add_alarms(12, records=6)
        config = exporter_config(sim, receiver.grpc_endpoint, state, story.ids, export={"batch_size": BATCH})
        path = write_config(tmp_path / "c.yaml", config)
        acknowledged_then_killed = 0
        for point in ["poll", "export", "export-acked"] * 3:
            story.notes(10)  # new records for this round to poll, commit and export
            run = Run(path)
            killed = threading.Event()
            batch: list[int] = []
            try:
                if point == "poll":
                    sim.response_hook = _kill_at_answer(rng.randint(1, 6), run.pid, killed)
                else:
                    receiver.decide = _kill_at_export(point == "export-acked", run.pid, killed, batch)
                wait_until(killed.is_set, 20, f"the exporter to reach the {point} kill point")
                assert run.daemon.wait(10) == -signal.SIGKILL
            finally:
                sim.response_hook = None
                receiver.decide = None
                run.stop_quietly()
            if point == "export-acked":
                acknowledged_then_killed += batch[0]
            assert not lost_since_crash(state, set(uids_of(receiver)))

        final = Run(path)
        try:
            want = story.expected_uids()
            assert len(want) == 12 * 6 + 9 * 10
            got = wait_delivered(receiver, want)
            # The batches the backend had stored when the exporter died came again (same uids);
            # a kill inside a poll may also catch a concurrent export: at most one batch each.
            duplicates = assert_exactly_once(got, want, allowed_duplicates=acknowledged_then_killed + 3 * BATCH)
            assert duplicates >= acknowledged_then_killed > 0
            final.finish()
        finally:
            final.stop_quietly()


def test_sigkill_at_random_moments_of_a_busy_run(tmp_path: Path, rotel_collector: RotelCollector) -> None:
    rotel, receiver = rotel_collector
    rng = random.Random(20240610)
    kills = 8
    state = tmp_path / "s.db"
    with simulator(latency=0.005) as sim:
        story = Story(sim, seed=7)
        story.add_alarms(40, records=8)
        config = exporter_config(sim, rotel.grpc_endpoint, state, story.ids, export={"batch_size": 10})
        path = write_config(tmp_path / "c.yaml", config)
        grower = Grower(story, every=0.01)
        grower.start()
        moments = []
        try:
            for _ in range(kills):
                run = Run(path)
                try:
                    run.wait_for("bk-otel-exporter running", 30)
                    moments.append(round(rng.uniform(0.0, 1.2), 3))
                    time.sleep(moments[-1])
                    run.sigkill()
                finally:
                    run.stop_quietly()

                def nothing_lost() -> bool:
                    return not lost_since_crash(state, set(uids_of(receiver)))

                wait_until(nothing_lost, 10, "every committed record to be queued or delivered")
        finally:
            grower.stop()

        final = Run(path)
        try:
            want = story.expected_uids()
            assert len(want) >= 320 + grower.added
            got = wait_delivered(receiver, want, timeout=60)
            duplicates = assert_exactly_once(got, want, allowed_duplicates=kills * 10)
            print(f"{kills} kills at {moments}s after start-up; {len(want)} records; {duplicates} duplicates")
            final.finish()
        finally:
            final.stop_quietly()
