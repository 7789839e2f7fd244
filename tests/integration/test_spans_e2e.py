"""Spans end to end: simulator -> ``python -m exporter run`` -> rotel -> OtlpReceiver (decoded).

Two alarms, real clock, ``poll.interval`` 1 s, ``retire_after`` 2 s, ``signals: [logs, spans]``:

* B was closed long ago: its first read retires it, so it arrives as one alarm span (ERROR);
* A is open: it arrives as slice spans parented to its (not yet sent) alarm span; the daemon is
  stopped (SIGTERM) and started again on the same state file, A gets one more record (a slice
  from the second process, same trace); then the collector goes down, A recovers and retires
  (its alarm span waits in the outbox), the daemon is SIGKILLed; collector and daemon come back
  and A's alarm span (OK) arrives once, carrying the records all three processes read.

The ids are checked against the derivation written in the README ("Traces") (recomputed here, not
imported), and nothing is sent twice across the restart.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from exporter.simulator import SimAlarm, Simulator
from tests.support.daemon import Daemon
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.rotel import RotelCollector
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

S = 1_000_000_000
OK, ERROR = 1, 2  # OTLP Status.code


def trace_id_hex(alarm_id: str) -> str:
    return hashlib.sha256(f"bk-otel-exporter/trace/{alarm_id}".encode()).digest()[:16].hex()


def span_id_hex(alarm_id: str) -> str:
    return hashlib.sha256(f"bk-otel-exporter/span/{alarm_id}".encode()).digest()[:8].hex()


def slice_id_hex(alarm_id: str, first_uid: str) -> str:
    return hashlib.sha256(f"bk-otel-exporter/slice/{alarm_id}/{first_uid}".encode()).digest()[:8].hex()


def queued(state: Path, alarm_id: str) -> tuple[str, list[str]]:
    """The alarm's phase and its outbox rows (kind:uid), read from the daemon's state file."""
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)) as db:
        phase = db.execute("SELECT phase FROM alarms WHERE alarm_id = ?", (alarm_id,)).fetchone()
        rows = db.execute("SELECT kind, uid FROM outbox WHERE alarm_id = ? ORDER BY seq", (alarm_id,)).fetchall()
    return (phase[0] if phase else ""), [f"{kind}:{uid}" for kind, uid in rows]


def of(items: list[dict[str, Any]], alarm_id: str) -> list[dict[str, Any]]:
    return [i for i in items if i["attributes"].get("bk.alarm.id") == alarm_id]


def alarm_spans(receiver: OtlpReceiver, alarm_id: str) -> list[dict[str, Any]]:
    return [s for s in of(receiver.spans(), alarm_id) if s["attributes"].get("bk.span.role") == "alarm"]


def slices(receiver: OtlpReceiver, alarm_id: str) -> list[dict[str, Any]]:
    return [s for s in of(receiver.spans(), alarm_id) if s["attributes"].get("bk.span.role") == "slice"]


def expected_events(sim: Simulator, alarm: SimAlarm) -> list[tuple[str, int, str]]:
    """(operate, time_ns, message) of every flow record, oldest first (no CONVERGE runs here, so
    get_event_log's rows are exactly the raw logs)."""
    logs = sorted(sim.all_raw_logs(alarm.id), key=lambda r: (r.create_time, r.seq))
    return [(r.operate, r.create_time * S, r.message) for r in logs]


def events_of(span: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(e["name"], e["time_unix_nano"], e["attributes"]["message"]) for e in span["events"]]


def check_slice(span: dict[str, Any], alarm_id: str) -> None:
    first_uid = span["events"][0]["attributes"]["log.record.uid"]
    assert span["trace_id"] == trace_id_hex(alarm_id)
    assert span["span_id"] == slice_id_hex(alarm_id, first_uid)
    assert span["parent_span_id"] == span_id_hex(alarm_id)
    assert span["start_time_unix_nano"] == span["events"][0]["time_unix_nano"]
    assert span["end_time_unix_nano"] == max(span["events"][-1]["time_unix_nano"], span["start_time_unix_nano"] + 1000)
    assert span["status"]["code"] == 0


def check_logs_link(receiver: OtlpReceiver, alarm_id: str) -> None:
    logs = of(receiver.logs(), alarm_id)
    assert logs
    assert {(x["trace_id"], x["span_id"]) for x in logs} == {(trace_id_hex(alarm_id), span_id_hex(alarm_id))}


def check_events_are_logs(receiver: OtlpReceiver, span: dict[str, Any]) -> None:
    """Every event is one delivered log record: same uid, operate, time and body. The two signals
    are sent in batches of their own, so a span may arrive before its last records' log batch:
    those are waited for."""
    wanted = {event["attributes"]["log.record.uid"] for event in span["events"]}

    def delivered() -> set[str]:
        return {x["attributes"]["log.record.uid"] for x in receiver.logs()}

    wait_until(lambda: wanted <= delivered(), 15, lambda: f"log records of events {sorted(wanted - delivered())}")
    by_uid = {x["attributes"]["log.record.uid"]: x for x in receiver.logs()}
    for event in span["events"]:
        log_record = by_uid[event["attributes"]["log.record.uid"]]
        assert (log_record["event_name"], log_record["time_unix_nano"], log_record["body"]) == (
            event["name"],
            event["time_unix_nano"],
            event["attributes"]["message"],
        )


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_through_rotel_across_a_restart(
    protocol: str, sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path
) -> None:
    rotel, receiver = rotel_collector
    now = int(sim.clock.now())
    # B: closed long ago (its first read retires it). A: open.
    b = sim.add_alarm(name="Disk full", severity=1, begin_time=now - 600, create_time=now - 590)
    b.converge(at=now - 500)
    b.ack(at=now - 400)
    b.close(at=now - 300)
    a = sim.add_alarm(name="CPU usage alarm", severity=2, begin_time=now - 130, create_time=now - 120)
    a.converge(at=now - 60)
    a.ack(at=now - 30)

    endpoint = rotel.grpc_endpoint if protocol == "grpc" else rotel.http_endpoint
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
bkmonitor:
  base_url: {sim.base_url}
  app_code: {sim.app_code}
  app_secret: {sim.app_secret}
  timeout: 5s
  retry: {{max_attempts: 2, initial_backoff: 0.2, max_backoff: 1}}
alarms:
  ids: ["{a.id}", "{b.id}"]
poll: {{interval: 1s, retire_after: 2s, jitter: 0}}
export:
  signals: [logs, spans]
  endpoint: {endpoint}
  protocol: {protocol}
  timeout: 5s
  retry: {{initial_backoff: 0.2, max_backoff: 1}}
state: {{path: {tmp_path / "state.db"}}}
server: {{listen: ""}}
shutdown_timeout: 5s
""",
        encoding="utf-8",
    )
    daemon = Daemon(config, log_path=tmp_path / "daemon.log")
    try:
        # -- first process: B retires, A is open --------------------------------------------------
        daemon.start()
        wait_until(
            lambda: bool(alarm_spans(receiver, b.id)) and bool(slices(receiver, a.id)) and len(receiver.logs()) >= 7,
            15,
            "B's alarm span, A's slice and 7 log records",
            daemon=daemon,
        )
        [b_span] = alarm_spans(receiver, b.id)
        assert (b_span["trace_id"], b_span["span_id"], b_span["parent_span_id"]) == (
            trace_id_hex(b.id),
            span_id_hex(b.id),
            "",
        )
        assert b_span["name"] == f"bk alarm {b.id}"  # followed by id: search_alert never named it
        assert events_of(b_span) == expected_events(sim, b)
        assert b_span["start_time_unix_nano"] == (now - 590) * S  # CREATE
        assert b_span["end_time_unix_nano"] == (now - 300) * S  # CLOSE
        assert b_span["status"]["code"] == ERROR and b_span["status"]["message"].startswith("CLOSE: ")
        assert b_span["attributes"]["bk.alarm.status"] == "CLOSED"
        assert slices(receiver, b.id) == []  # retired at its first read: nothing to show before
        check_events_are_logs(receiver, b_span)
        check_logs_link(receiver, b.id)

        [a_first] = slices(receiver, a.id)
        assert alarm_spans(receiver, a.id) == []  # open: no alarm span yet
        check_slice(a_first, a.id)
        assert events_of(a_first) == expected_events(sim, a)
        check_events_are_logs(receiver, a_first)
        check_logs_link(receiver, a.id)  # already the ids of the span to come

        assert daemon.stop() == 0

        # -- second process on the same state file ----------------------------------------------
        a.converge(at=int(sim.clock.now()))
        daemon.start()
        wait_until(lambda: len(slices(receiver, a.id)) >= 2, 15, "A's second slice", daemon=daemon)
        a_second = next(s for s in slices(receiver, a.id) if s["span_id"] != a_first["span_id"])
        check_slice(a_second, a.id)
        assert [e[0] for e in events_of(a_second)] == ["CONVERGE"]  # only what is new
        assert a_second["trace_id"] == a_first["trace_id"]

        wait_until(lambda: len(receiver.logs()) >= 8, 15, "A's 8th log record", daemon=daemon)

        # -- collector down; A retires; SIGKILL with the alarm span still queued ------------------
        rotel.kill()
        a.recover()
        state = tmp_path / "state.db"

        def retired_and_queued() -> bool:
            phase, rows = queued(state, a.id)
            return phase == "retired" and f"spans:alarm:{a.id}" in rows

        wait_until(retired_and_queued, 15, "A retired, its alarm span queued", daemon=daemon)
        daemon.kill()
        assert alarm_spans(receiver, a.id) == []

        # -- third process, collector back: the queued span is delivered, once --------------------
        rotel.restart()
        daemon.start()
        wait_until(lambda: bool(alarm_spans(receiver, a.id)), 15, "A's alarm span", daemon=daemon)
        [a_span] = alarm_spans(receiver, a.id)
        assert (a_span["trace_id"], a_span["span_id"], a_span["parent_span_id"]) == (
            trace_id_hex(a.id),
            span_id_hex(a.id),
            "",
        )
        # every record, the three processes' reads, in time order
        assert events_of(a_span) == expected_events(sim, a)
        assert [e[0] for e in events_of(a_span)] == ["CREATE", "CONVERGE", "ACK", "CONVERGE", "RECOVER"]
        assert a_span["start_time_unix_nano"] == (now - 120) * S
        assert a.end_time is not None and a_span["end_time_unix_nano"] == a.end_time * S  # RECOVER
        assert a_span["status"]["code"] == OK
        check_events_are_logs(receiver, a_span)
        check_logs_link(receiver, a.id)

        # one more poll and send: nothing may come twice
        time.sleep(1.5)
        assert daemon.stop() == 0
        assert len(alarm_spans(receiver, a.id)) == 1 and len(alarm_spans(receiver, b.id)) == 1
        a_slices = slices(receiver, a.id)
        assert len({s["span_id"] for s in a_slices}) == len(a_slices)
        for piece in a_slices:
            check_slice(piece, a.id)
        sliced = [e["attributes"]["log.record.uid"] for s in a_slices for e in s["events"]]
        assert len(sliced) == len(set(sliced))  # a record is in at most one slice
        uids = [x["attributes"]["log.record.uid"] for x in receiver.logs()]
        assert len(uids) == len(set(uids)) == 9
        assert {s["resource"]["service.name"] for s in receiver.spans()} == {"bk-otel-exporter"}
    finally:
        daemon.stop()
