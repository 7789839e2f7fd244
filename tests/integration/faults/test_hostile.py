"""Issue 14, items 7, 10 and 13: hostile answers, long BlueKing backoffs at shutdown, visible retries.

* One hostile row must not block its alarm: the simulator serves, beside an alarm's good rows, a
  row whose ``extend_info`` is nested 1,000 deep (valid JSON that recursive decoders and walkers
  choke on), or a row whose message holds bytes that are not UTF-8. Every record of that alarm,
  the hostile one included, arrives exactly once through rotel; the deep part beyond the
  documented depth becomes one JSON-string attribute, the stray bytes U+FFFD (counted, logged once).
* SIGTERM while a poll sleeps in a long BlueKing backoff (1306201, ``retry.initial_backoff: 40s``)
  stops the daemon at once: the backoff is woken, the final flush runs with its full time and
  delivers what was queued; the alarm that was backing off is read again at the next start.
  The retried 1306201 is logged at WARNING with its code and request id.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.mapping.attributes import MAX_DEPTH
from exporter.mapping.ids import record_uid
from exporter.simulator import render_time
from exporter.simulator.hostile import DEEP_KEY, DEEP_MESSAGE, HostileRows
from tests.support.daemon import write_config
from tests.support.rotel import RotelCollector
from tests.support.sim import T0, expected_uids
from tests.support.wait import wait_until

from ._harness import Run, Story, assert_exactly_once, exporter_config, simulator, wait_delivered

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEPTH = 1000
BAD_BYTES = b"caf\xe9 \xff\xfe"  # Latin-1 and two bytes no UTF-8 text holds
AT = T0 + 900


def _hostile_uids(alarm_id: str, rows: HostileRows) -> dict[str, str]:
    """uid -> what the record is: the identity of the hostile rows as the exporter must compute it."""
    out = {}
    if rows.deep:
        out[record_uid(alarm_id, "ACTION", render_time(AT), DEEP_MESSAGE, 0)] = "deep"
    if rows.undecodable:
        out[record_uid(alarm_id, "ACTION", render_time(AT), rows.expected_message(), 0)] = "undecodable"
    return out


def _by_uid(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["attributes"]["log.record.uid"]: r for r in records}


@pytest.mark.parametrize(
    ("deep", "undecodable"), [pytest.param(DEPTH, b"", id="deep-1000"), pytest.param(0, BAD_BYTES, id="not-utf8")]
)
def test_a_hostile_row_does_not_block_its_alarm(
    tmp_path: Path, rotel_collector: RotelCollector, deep: int, undecodable: bytes
) -> None:
    rotel, receiver = rotel_collector
    with simulator() as sim:
        story = Story(sim, seed=14)
        story.add_alarms(3, records=5)
        hostile_alarm = story.alarms[1].id
        rows = sim.serve_hostile(hostile_alarm, at=AT, deep=deep, undecodable=undecodable)
        hostile = _hostile_uids(hostile_alarm, rows)
        want = story.expected_uids() | set(hostile)
        config = exporter_config(sim, rotel.grpc_endpoint, tmp_path / "s.db", story.ids)
        run = Run(write_config(tmp_path / "c.yaml", config))
        try:
            got = wait_delivered(receiver, want, timeout=30, settle=2.0)  # polled every second meanwhile
            assert_exactly_once(got, want)
            delivered = _by_uid(receiver.logs())
            assert run.metric("bk_otel_records_skipped_total", reason="malformed") == 0
            for uid, kind in hostile.items():
                attrs = delivered[uid]["attributes"]
                assert attrs["bk.alarm.id"] == hostile_alarm
                if kind == "deep":
                    path = ".".join([DEEP_KEY] * MAX_DEPTH)
                    rest = attrs[path]  # the part below the depth limit: one JSON-string attribute
                    assert isinstance(rest, str)
                    assert rest == f'{{"{DEEP_KEY}":' * (DEPTH - MAX_DEPTH) + "1" + "}" * (DEPTH - MAX_DEPTH)
                else:
                    assert delivered[uid]["body"] == rows.expected_message()
                    assert "\ufffd" in rows.expected_message()
            if undecodable:
                polls = sim.calls("get_event_log", hostile_alarm)
                assert polls >= 2
                counted = run.metric("bk_otel_api_undecodable_bytes_total", api_endpoint="get_event_log")
                assert counted is not None and counted >= polls - 1  # every read counts its bytes
                assert run.output().count("bytes that are not UTF-8") == 1  # logged once, not per read
            output = run.finish(ready=True)
        finally:
            run.stop_quietly()
    assert "RecursionError" not in output and "Traceback" not in output


def test_sigterm_during_a_long_blueking_backoff_stops_at_once_with_the_final_flush(
    tmp_path: Path, rotel_collector: RotelCollector
) -> None:
    rotel, receiver = rotel_collector
    with simulator() as sim:
        story = Story(sim, seed=10)
        story.add_alarms(3, records=4)
        config = exporter_config(
            sim,
            rotel.grpc_endpoint,
            tmp_path / "s.db",
            story.ids,
            bkmonitor={"retry": {"initial_backoff": "40s", "max_backoff": "40s"}},  # a wait of 20 s to 40 s
            export={"retry": {"initial_backoff": "60s", "max_backoff": "60s"}},
            shutdown_timeout="30s",
        )
        path = write_config(tmp_path / "c.yaml", config)
        sim.inject("esb_timeout", times=1, endpoint="get_event_log")  # 1306201 for the first read
        rotel.kill()  # exports fail at first: the sender backs off for 30 s to 60 s
        run = Run(path)
        try:
            output = run.wait_for("attempt 1/5 failed, retrying in", 20)
            faulted = next(r.alarm_id for r in sim.requests if r.fault == "esb_timeout")
            line = next(line for line in output.splitlines() if "attempt 1/5 failed, retrying in" in line)
            assert " WARNING " in line and "code=1306201" in line, line
            assert re.search(r"request_id=[0-9a-f]{32}\b", line), line  # the ESB's request id
            others = story.expected_uids() - expected_uids(sim, [faulted])
            run.wait_for("stay queued", 20)  # the other alarms' records are queued, the export failed
            wait_until(lambda: run.metric("bk_otel_outbox_depth") == len(others), 10, "the outbox to hold them")
            rotel.restart()  # the collector is back, the sender still backing off: only the final flush sends
            assert run.alive
            run.daemon.signal(signal.SIGTERM)
            stopped = time.monotonic()
            try:
                code = run.daemon.wait(15)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running 15 s after SIGTERM, in a backoff of at least 20 s:\n{run.output()[-3000:]}")
            took = time.monotonic() - stopped
            output = run.output()
            assert code == 0, output[-3000:]
            assert took < 10, f"{took:.1f}s from SIGTERM to exit"
            assert f"shutdown: flushed {len(others)} records" in output, output[-3000:]
            assert "still running after shutdown_timeout" not in output
            assert_exactly_once(wait_delivered(receiver, others), others)

            run = Run(path)  # the alarm that was backing off is read at the next start
            want = story.expected_uids()
            assert_exactly_once(wait_delivered(receiver, want), want)
            run.finish(ready=True)
        finally:
            run.stop_quietly()
    assert sim.calls("get_event_log", faulted) >= 2
