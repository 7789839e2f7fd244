"""Destinations end to end: simulator -> ``bk-otel-exporter run`` -> several real receivers at once.

* ``default`` (``export:``) goes through rotel to one receiver; ``audit`` (a destination) through
  a second rotel to another; ``chatops`` (filtered: CREATE only) straight to a third receiver.
* The second rotel goes down for 30 s while new records arrive: the default destination
  receives all of them meanwhile, ``audit`` its backlog once rotel is back; each exactly once.
* The filtered destination receives exactly the CREATE records, nothing else.
* The daemon is SIGKILLed while records keep coming, then started again: no destination loses
  a record, and the duplicates are only those of the crash window (a batch in flight), per
  destination.
* Logs and spans to different endpoints (``export.spans``).
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from exporter.model import AlarmContext
from exporter.simulator import SimAlarm, Simulator
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.sqlite import SqliteStateStore
from tests.support.daemon import Daemon, exporter_config, run_cli, write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.records import queued_log
from tests.support.rotel import Rotel, RotelCollector
from tests.support.secrets import APP_SECRET
from tests.support.sim import T0, expected_uids
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

ENV = {"TEST_BK_SECRET": APP_SECRET}
BATCH = 8
ALARM = "17180000005819837"


def uids(receiver: OtlpReceiver) -> list[str]:
    return [r["attributes"]["log.record.uid"] for r in receiver.logs()]


def exactly_once(receiver: OtlpReceiver, want: set[str], *, allowed_duplicates: int = 0, what: str = "") -> int:
    """Every uid of ``want`` at ``receiver`` (named ``what`` in failures), nothing else, at most
    ``allowed_duplicates`` twice."""
    counts = Counter(uids(receiver))
    at = f" at {what}" if what else ""
    assert want - counts.keys() == set(), f"{len(want - counts.keys())} records lost{at}"
    assert counts.keys() - want == set(), f"{len(counts.keys() - want)} records that should not be there{at}"
    duplicates = sum(n - 1 for n in counts.values())
    twice = sorted(uid for uid, n in counts.items() if n > 1)
    assert duplicates <= allowed_duplicates, f"{duplicates} duplicates{at} (allowed {allowed_duplicates}): {twice}"
    return duplicates


def arrived(receiver: OtlpReceiver, want: set[str], timeout: float, what: str) -> None:
    wait_until(
        lambda: want <= set(uids(receiver)),
        timeout,
        lambda: f"{what}: {len(want - set(uids(receiver)))} of {len(want)} records missing",
        every=0.1,
    )


class Story:
    """Alarms whose records only grow: a CREATE each, then ACTION notes at times of their own."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.alarms: list[SimAlarm] = []
        self.n = 0

    def add(self, count: int, notes: int) -> None:
        for i in range(count):
            alarm = self.sim.add_alarm(name=f"alarm {i}", severity=1 + i % 3, begin_time=T0, create_time=T0)
            self.alarms.append(alarm)
        self.notes(notes)

    def notes(self, count: int) -> None:
        for _ in range(count):
            self.n += 1
            self.alarms[self.n % len(self.alarms)].log("ACTION", f"note #{self.n}", at=T0 + self.n)

    def all(self) -> set[str]:
        return expected_uids(self.sim, self.alarms)

    def creates(self) -> set[str]:
        return expected_uids(self.sim, self.alarms, lambda raw: raw["operate"] == "CREATE")


def status(path: Path) -> dict[str, Any]:
    done = run_cli(["status", "--json", "--config", str(path)], env=ENV)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_three_destinations_one_down_one_filtered_and_a_sigkill(
    sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path
) -> None:
    rotel, default_rx = rotel_collector
    with OtlpReceiver() as audit_rx, OtlpReceiver() as chat_rx:
        audit_rotel = Rotel(receiver=audit_rx).start()
        try:
            story = Story(sim)
            story.add(6, notes=18)
            state = tmp_path / "s.db"
            otlp = {"protocol": "grpc", "timeout": "2s", "batch_size": BATCH}
            config = exporter_config(
                sim,
                state,
                [a.id for a in story.alarms],
                export={
                    "endpoint": rotel.grpc_endpoint,
                    **otlp,
                    "retry": {"initial_backoff": "200ms", "max_backoff": "1s"},
                },
                destinations=[
                    {"name": "audit", "sink": "otlp", "options": {"endpoint": audit_rotel.grpc_endpoint, **otlp}},
                    {
                        "name": "chatops",
                        "sink": "otlp",
                        "options": {"endpoint": chat_rx.grpc_endpoint, **otlp},
                        "filter": {"operates": ["CREATE"]},
                    },
                ],
            )
            path = write_config(tmp_path / "c.yaml", config)
            daemon = Daemon(path, env=ENV).start()
            try:
                first = story.all()
                assert len(first) == 24
                arrived(default_rx, first, 30, "default")
                arrived(audit_rx, first, 30, "audit")
                arrived(chat_rx, story.creates(), 30, "chatops")

                # audit's collector goes down; new records keep coming
                audit_rotel.stop()
                down_at = time.monotonic()
                story.notes(16)
                during = story.all()
                arrived(default_rx, during, 8, "default while audit is down")  # on time, not held
                assert not (during - first) & set(uids(audit_rx))
                wait_until(
                    lambda: status(path)["destinations"]["audit"]["queued"] == 16,
                    10,
                    "audit's backlog of 16 records in status",
                )
                assert status(path)["destinations"]["default"]["queued"] == 0
                # halfway through the outage, more records: default still takes them on time
                time.sleep(max(0.0, 15.0 - (time.monotonic() - down_at)))
                story.notes(8)
                during = story.all()
                arrived(default_rx, during, 8, "default, halfway through audit's outage")
                assert not (during - first) & set(uids(audit_rx))
                time.sleep(max(0.0, 30.0 - (time.monotonic() - down_at)))
                audit_rotel.restart()
                arrived(audit_rx, during, 30, "audit after its outage")
                time.sleep(1.0)  # late duplicates, if any
                for rx, what in ((default_rx, "default"), (audit_rx, "audit")):
                    exactly_once(rx, during, what=what)
                exactly_once(chat_rx, story.creates(), what="chatops")
                assert "destination audit (otlp-grpc): export of logs failed" in daemon.output()

                # SIGKILL while records are being polled and sent; then a new process
                story.notes(12)
                time.sleep(0.6)
                daemon.signal(signal.SIGKILL)
                assert daemon.wait(10) == -signal.SIGKILL
                story.notes(6)
            finally:
                daemon.stop(20)
            daemon = Daemon(path, env=ENV).start()
            try:
                want = story.all()
                for rx, what in ((default_rx, "default"), (audit_rx, "audit")):
                    arrived(rx, want, 30, f"{what} after the restart")
                arrived(chat_rx, story.creates(), 30, "chatops after the restart")
                time.sleep(1.0)
                # the crash window: at most the batch each destination had in flight
                for rx in (default_rx, audit_rx):
                    exactly_once(rx, want, allowed_duplicates=BATCH)
                exactly_once(chat_rx, story.creates(), allowed_duplicates=BATCH)
                assert {d: s["queued"] for d, s in status(path)["destinations"].items()} == {
                    "audit": 0,
                    "chatops": 0,
                    "default": 0,
                }
            finally:
                daemon.stop(20)
        finally:
            audit_rotel.stop()


def test_requeue_one_destination(sim: Simulator, tmp_path: Path) -> None:
    """``requeue --destination`` moves only that destination's parked records."""
    state = tmp_path / "s.db"
    store = SqliteStateStore(state)
    try:
        store.upsert_alarm(AlarmContext(ALARM), source="config", now=1.0, due=True)
        rows: list[QueuedRecord] = []
        for dest in ("default", "audit"):
            rows += [QueuedRecord("logs", u, queued_log(u, ALARM).payload, dest) for u in ("x", "y")]
        store.commit_poll(PollCommit(ALARM, 1.0, seen=["x", "y"], queued=rows))
        for dest in ("default", "audit"):
            store.park([i.seq for i in store.claim_outbox("logs", 10, dest)], "HTTP 400", 2.0)
    finally:
        store.close()
    config = exporter_config(
        sim,
        state,
        [ALARM],
        export={"endpoint": "http://127.0.0.1:9"},
        destinations=[{"name": "audit", "sink": "otlp", "options": {"endpoint": "http://127.0.0.1:9"}}],
    )
    path = write_config(tmp_path / "c.yaml", config)
    bad = run_cli(["requeue", "--destination", "nope", "--config", str(path)], env=ENV)
    assert bad.returncode == 2 and "--destination: unknown destination 'nope'" in bad.stderr
    done = run_cli(["requeue", "--destination", "audit", "--config", str(path)], env=ENV)
    assert (done.returncode, done.stdout) == (0, "requeued 2 parked records\n")
    shown = status(path)["destinations"]
    assert shown["audit"] == {"queued": 2, "parked": 0, "oldest_age_seconds": shown["audit"]["oldest_age_seconds"]}
    assert (shown["default"]["queued"], shown["default"]["parked"]) == (0, 2)
    text = run_cli(["status", "--config", str(path)], env=ENV).stdout
    assert "destination" in text and "audit" in text


def test_logs_and_spans_to_different_endpoints(sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path) -> None:
    """``export.spans.endpoint`` (a full URL, used as-is): the spans go straight to a second
    receiver over HTTP, the logs through rotel to the first; neither gets the other's signal."""
    rotel, logs_rx = rotel_collector
    with OtlpReceiver() as traces_rx:
        story = Story(sim)
        story.add(3, notes=3)
        for alarm in story.alarms:
            alarm.close(at=T0 + 100)  # over: the first read sends each alarm's span
        config = exporter_config(
            sim,
            tmp_path / "s.db",
            [a.id for a in story.alarms],
            export={
                "signals": ["logs", "spans"],
                "endpoint": rotel.grpc_endpoint,
                "spans": {"endpoint": f"{traces_rx.http_endpoint}/v1/traces", "protocol": "http/protobuf"},
            },
        )
        daemon = Daemon(write_config(tmp_path / "c.yaml", config), env=ENV).start()
        try:
            want = story.all()
            arrived(logs_rx, want, 30, "logs")
            spans = traces_rx.wait_for_spans(3, timeout=30)
            assert sorted(s["attributes"]["bk.alarm.id"] for s in spans) == sorted(a.id for a in story.alarms)
            time.sleep(1.0)
            exactly_once(logs_rx, want)
            assert logs_rx.spans() == [] and traces_rx.logs() == []
        finally:
            daemon.stop(20)


def test_a_postgres_store_of_schema_2_gains_destinations_and_keeps_its_rows(postgres_url: str) -> None:
    """A shared store written by the previous version (schema 2: the fencing tokens) is migrated
    to the newest schema on open (3: destinations, 4: the encoded outbox): its queued rows become
    ``default``'s and are claimed with a token as before, delivered from their JSON."""
    import psycopg
    from psycopg.rows import dict_row

    from exporter.state.postgres import SCHEMA_VERSION, PostgresStateStore
    from exporter.state.postgres.schema import MIGRATIONS
    from exporter.state.sql import POSTGRES
    from tests.support.postgres import fresh_schema

    assert SCHEMA_VERSION == 4
    url = fresh_schema(postgres_url)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        for step in (1, 2):
            conn.execute(MIGRATIONS[step])
            for sql, params in POSTGRES.meta_after(step):
                conn.execute(sql, params)
        payload = queued_log("old-1", ALARM).payload
        conn.execute(
            "INSERT INTO outbox (kind, uid, alarm_id, payload, enqueued_at, enqueued_by) "
            "VALUES ('logs', 'old-1', %s, %s, 1.0, NULL)",
            (ALARM, payload),
        )
    store = PostgresStateStore(url, max_queued=10, lease=30.0)
    try:
        assert store.get_meta("schema_version") == "4"
        assert store.outbox_stats().by_destination == {"default": (1, 0, 1.0)}
        assert store.claim_outbox("logs", 10, "audit") == []
        (item,) = store.claim_outbox("logs", 10, "default")
        assert item.payload.uid == "old-1" and item.encoded is None
        assert item.encoded_log()  # what the OTLP sink sends: encoded from the JSON now
        store.ack([item.seq])
        assert store.outbox_stats().depth == 0
    finally:
        store.close()
