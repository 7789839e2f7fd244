"""Several replicas on one PostgreSQL store (state.url): leases, roles, takeover, exactly-once.

Two tiers in one file:

* the shared store's own semantics, with two ``PostgresStateStore`` objects in this process playing
  two replicas (claims are exclusive, a lapsed lease moves on, a stale commit neither loses nor
  duplicates, roles move on, ``replicas()``, the password never shows);
* the "must show" scenario: three ``bk-otel-exporter run`` subprocesses, one PostgreSQL, the
  BlueKing simulator with 300 alarms and an OTLP receiver. Every record arrives exactly once, each
  replica does a real share of the polling (counted at the simulator by ``bk_username``), and when
  one replica is SIGKILLed the others deliver everything within the lease plus one poll interval.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from exporter.errors import StateError
from exporter.model import AlarmContext
from exporter.simulator import Simulator
from exporter.state import open_store
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.postgres import PostgresStateStore
from tests.support.daemon import Daemon, run_cli, write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.postgres import fresh_database, fresh_schema, replica_bkmonitor
from tests.support.records import queued_log
from tests.support.sim import expected_uids, simulator
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def schema_url(postgres_url: str) -> str:
    return fresh_schema(postgres_url)


@pytest.fixture
def two_replicas(schema_url: str) -> Iterator[Callable[..., PostgresStateStore]]:
    opened: list[PostgresStateStore] = []

    def make(owner: str, **kw: Any) -> PostgresStateStore:
        kw.setdefault("lease", 30.0)
        store = PostgresStateStore(schema_url, max_queued=kw.pop("max_queued", 1000), owner=owner, **kw)
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in opened:
            store.close()


# -- the shared store, two replicas in one process ------------------------------------------------------
def test_claims_are_exclusive_and_lapse_without_renewal(two_replicas: Callable[..., PostgresStateStore]) -> None:
    # max_hold 0.1 s: a's heartbeat stops renewing its claims at once, as if its worker were wedged
    a = two_replicas("a", lease=1.0, max_hold=0.1)
    b = two_replicas("b", lease=1.0)
    for alarm_id in ("1", "2", "3"):
        a.upsert_alarm(AlarmContext(alarm_id), source="config", now=1.0, due=True)
    assert [x.alarm_id for x in a.claim_due(10.0, 2)] == ["1", "2"]
    assert [x.alarm_id for x in b.claim_due(10.0, 10)] == ["3"]  # 1 and 2 are a's
    assert [x.alarm_id for x in a.claim_due(10.0, 10)] == ["1", "2"]  # a's own claims never hide from a
    wait_until(lambda: {x.alarm_id for x in b.claim_due(10.0, 10)} == {"1", "2", "3"}, 5.0, "a's lease to lapse")


def test_live_replicas_split_the_due_alarms(two_replicas: Callable[..., PostgresStateStore]) -> None:
    a = two_replicas("a")
    b = two_replicas("b")
    assert a.claim_due(0.0, 10) == [] and b.claim_due(0.0, 10) == []  # both registered, nothing due
    ids = [str(1000 + i) for i in range(60)]
    for alarm_id in ids:
        a.upsert_alarm(AlarmContext(alarm_id), source="config", now=100.0, due=True)
    mine_a = {x.alarm_id for x in a.claim_due(100.0, 1000)}
    mine_b = {x.alarm_id for x in b.claim_due(100.0, 1000)}
    assert mine_a | mine_b == set(ids) and not mine_a & mine_b
    assert 15 <= len(mine_a) <= 45, (len(mine_a), len(mine_b))  # hashing: about half each
    for store, mine in ((a, mine_a), (b, mine_b)):
        for alarm_id in mine:
            store.commit_poll(PollCommit(alarm_id, 100.0, next_poll=200.0))
    # the same split next interval (stable), until a poll fails: then the alarm is anyone's
    assert {x.alarm_id for x in a.claim_due(200.0, 1000)} == mine_a
    failed = sorted(mine_a)[0]
    for alarm_id in mine_a:
        a.commit_poll(PollCommit(alarm_id, 200.0, next_poll=300.0, last_error="boom" if alarm_id == failed else None))
    assert {x.alarm_id for x in b.claim_due(200.0, 1000)} == mine_b
    for alarm_id in mine_b:
        b.commit_poll(PollCommit(alarm_id, 200.0, next_poll=300.0))
    assert {x.alarm_id for x in b.claim_due(300.0, 1000)} == mine_b | {failed}
    for alarm_id in mine_b | {failed}:
        b.commit_poll(PollCommit(alarm_id, 300.0, next_poll=400.0))
    # b stops looking: once its alarms are overdue by steal_after (15 s: half the lease), a takes them too
    assert {x.alarm_id for x in a.claim_due(414.0, 1000)} == mine_a  # the failed one is a's again
    assert {x.alarm_id for x in a.claim_due(416.0, 1000)} == set(ids)


def test_the_heartbeat_renews_claims_in_progress(two_replicas: Callable[..., PostgresStateStore]) -> None:
    a = two_replicas("a", lease=0.6)
    b = two_replicas("b", lease=0.6)
    a.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    assert len(a.claim_due(10.0, 10)) == 1
    time.sleep(1.5)  # 2.5 leases: renewed by a's heartbeat all along
    assert b.claim_due(10.0, 10) == []
    a.commit_poll(PollCommit("1", 10.0, next_poll=5.0))  # done: the lease ends with the commit
    assert [x.alarm_id for x in b.claim_due(10.0, 10)] == ["1"]


def test_a_stale_commit_neither_loses_nor_duplicates(two_replicas: Callable[..., PostgresStateStore]) -> None:
    a = two_replicas("a", lease=0.5, max_hold=0.1)
    b = two_replicas("b", lease=0.5)
    a.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    (claimed,) = a.claim_due(10.0, 10)
    wait_until(lambda: len(b.claim_due(10.0, 10)) == 1, 5.0, "b to take the alarm over")
    # a wakes up and commits what it read, retiring the alarm with its span: fenced off whole (b
    # claimed the alarm since, under a newer token), nothing of it is written
    stale = a.commit_poll(
        PollCommit(
            "1",
            11.0,
            seen=["r1", "r2"],
            queued=[queued_log("r1"), queued_log("r2")],
            extra_queued=[QueuedRecord("spans", "alarm-span-1", "{}")],
            phase="retired",
            next_poll=99.0,
        )
    )
    assert stale.inserted == 0
    alarm = a.get_alarm("1")
    assert alarm is not None and (alarm.phase, alarm.next_poll, alarm.records) == ("active", claimed.next_poll, 0)
    assert a.seen_uids("1") == set() and a.outbox_stats().depth == 0
    # b read the same records and one more (they are still in BlueKing): all three are queued, once
    b_commit = PollCommit("1", 12.0, seen=["r1", "r2", "r3"], queued=[queued_log(u) for u in ("r1", "r2", "r3")])
    b_commit.next_poll = 40.0
    assert b.commit_poll(b_commit).inserted == 3
    alarm = b.get_alarm("1")
    assert alarm is not None and alarm.next_poll == 40.0 and alarm.records == 3
    assert sorted(i.payload.uid for i in b.claim_outbox("logs", 10)) == ["r1", "r2", "r3"]
    assert b.claim_outbox("spans", 10) == []
    assert {r["owner"]: r["alarms_owned"] for r in b.replicas()} == {"a": 0, "b": 0}  # b's commit ended it


def test_outbox_rows_are_leased_per_replica(two_replicas: Callable[..., PostgresStateStore]) -> None:
    a = two_replicas("a")
    b = two_replicas("b")
    a.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    a.commit_poll(PollCommit("1", 5.0, seen=list("abcd"), queued=[queued_log(u) for u in "abcd"]))
    first = a.claim_outbox("logs", 2)
    second = b.claim_outbox("logs", 10)
    assert [i.payload.uid for i in first] == ["a", "b"] and [i.payload.uid for i in second] == ["c", "d"]
    assert [i.seq for i in a.claim_outbox("logs", 10)] == [i.seq for i in first]  # a's own never hide from a
    a.release([first[0].seq])  # failed: back in the queue for anyone, one attempt counted
    a.ack([first[1].seq])
    again = b.claim_outbox("logs", 10)
    assert [i.payload.uid for i in again] == ["a", "c", "d"] and again[0].attempts == 1
    b.park([second[0].seq], "rejected", 6.0)
    stats = b.outbox_stats()
    assert (stats.depth, stats.parked) == (2, 1)
    owned = {r["owner"]: r["outbox_rows_owned"] for r in a.replicas()}
    assert owned == {"a": 0, "b": 2}


def test_ack_release_and_park_act_only_under_the_callers_token(two_replicas: Callable[..., PostgresStateStore]) -> None:
    a = two_replicas("a", lease=0.5, max_hold=0.1)  # a's heartbeat lets its claims lapse at once
    b = two_replicas("b", lease=30.0)
    a.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    a.commit_poll(PollCommit("1", 5.0, seen=list("abc"), queued=[queued_log(u) for u in "abc"]))
    stale = a.claim_outbox("logs", 10)
    assert [i.payload.uid for i in stale] == ["a", "b", "c"]
    wait_until(lambda: len(b.claim_outbox("logs", 10)) == 3, 5.0, "b to take the rows over")
    # a was frozen past its lease: its bookkeeping of the batch is fenced off, b's claim stands
    a.ack([stale[0].seq])
    a.release([stale[1].seq])
    a.park([stale[2].seq], "rejected", 6.0)
    stats = b.outbox_stats()
    assert (stats.depth, stats.parked) == (3, 0)
    assert {r["owner"]: r["outbox_rows_owned"] for r in b.replicas()} == {"a": 0, "b": 3}
    mine = b.claim_outbox("logs", 10)  # b's own, under a new token
    assert [i.attempts for i in mine] == [0, 0, 0]
    b.ack([mine[0].seq])
    b.park([mine[1].seq], "rejected", 7.0)
    b.release([mine[2].seq])
    stats = b.outbox_stats()
    assert (stats.depth, stats.parked) == (1, 1)


def test_the_heartbeat_never_waits_behind_the_pool(two_replicas: Callable[..., PostgresStateStore]) -> None:
    a = two_replicas("a", lease=1.0, pool_size=1)
    b = two_replicas("b", lease=1.0)
    a.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    assert len(a.claim_due(10.0, 10)) == 1
    busy = threading.Thread(target=lambda: a._db.run("busy", lambda cur: cur.execute("SELECT pg_sleep(3.5)")))
    busy.start()  # a's only pooled connection is taken for 3.5 leases
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert b.claim_due(10.0, 10) == [], "a's claim lapsed while its pool was busy"
            time.sleep(0.2)
    finally:
        busy.join()


def test_three_replicas_split_the_alarms_evenly(two_replicas: Callable[..., PostgresStateStore]) -> None:
    stores = [two_replicas(name) for name in ("a", "b", "c")]
    for store in stores:
        assert store.claim_due(0.0, 10) == []  # registered, nothing due
    for i in range(60):
        stores[0].upsert_alarm(AlarmContext(str(5000 + i)), source="config", now=100.0, due=True)
    shares = [len(store.claim_due(100.0, 1000)) for store in stores]
    assert shares == [20, 20, 20], shares


def test_a_replica_sends_what_it_queued_first(two_replicas: Callable[..., PostgresStateStore]) -> None:
    a = two_replicas("a", steal_after=1.0)
    b = two_replicas("b", steal_after=1.0)
    assert a.claim_due(0.0, 10) == [] and b.claim_due(0.0, 10) == []  # both live
    a.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    now = a.clock()  # the database's clock, as the poller uses it
    a.commit_poll(PollCommit("1", now, seen=list("xy"), queued=[queued_log(u) for u in "xy"]))
    assert b.claim_outbox("logs", 10) == []  # a's rows: a sends them
    wait_until(lambda: len(b.claim_outbox("logs", 10)) == 2, 5.0, "a's rows to wait longer than steal_after")


def test_a_role_has_one_holder_and_moves_on(two_replicas: Callable[..., PostgresStateStore]) -> None:
    a = two_replicas("a")
    b = two_replicas("b")
    assert a.acquire_role("discovery", 0.0, ttl=0.5)
    assert not b.acquire_role("discovery", 0.0, ttl=0.5)
    assert a.acquire_role("discovery", 0.0, ttl=0.5)  # renewed
    assert {r["owner"]: r["roles"] for r in b.replicas()} == {"a": ["discovery"], "b": []}
    wait_until(lambda: b.acquire_role("discovery", 0.0, ttl=30.0), 5.0, "a's role to expire")
    assert not a.acquire_role("discovery", 0.0, ttl=30.0)
    b.close()  # a clean stop hands the role over at once
    assert a.acquire_role("discovery", 0.0, ttl=30.0)
    states = {r["owner"]: (r["alive"], r["stopped_at"] is not None) for r in a.replicas()}
    assert states == {"a": (True, False), "b": (False, True)}


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    url = fresh_schema(postgres_url)
    stores: list[PostgresStateStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStateStore(url, max_queued=10, lease=30.0))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(stores) == 4
        # migrated once: one store, one creation (the store's own id in meta is the store's, not a replica's)
        assert len({(s.get_meta("instance_id"), s.get_meta("created_at")) for s in stores}) == 1
        # one service.instance.id per replica, never the store's
        ids = {s.instance_id for s in stores}
        assert len(ids) == 4 and stores[0].get_meta("instance_id") not in ids
    finally:
        for s in stores:
            s.close()


def test_the_password_never_shows(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    password = "s3cr3t-Pa55word"
    parts = urlsplit(postgres_url)
    user, host = parts.username, f"{parts.hostname}:{parts.port}"
    with pytest.raises(StateError, match="password authentication failed") as failure:
        PostgresStateStore(f"postgresql://{user}:{password}@{host}{parts.path}", max_queued=10, lease=30.0)
    assert password not in str(failure.value) and "***" in str(failure.value)
    assert failure.value.__cause__ is None and failure.value.__suppress_context__  # no driver text in tracebacks
    unreachable = f"postgresql://{user}:{password}@127.0.0.1:1/db?password={password}&connect_timeout=5"
    with pytest.raises(StateError, match="cannot connect") as failure:
        open_store("unused.db", url=unreachable, max_queued=10, lease=30.0)
    assert password not in str(failure.value)
    assert password not in caplog.text


def test_status_shows_the_replicas(postgres_url: str, tmp_path: Path) -> None:
    from exporter.config import config_from_dict
    from exporter.status import collect_status, render_status

    url = fresh_schema(postgres_url)
    a = PostgresStateStore(url, max_queued=10, lease=30.0, owner="pod-a:1:x", instance_id="pod-a-instance")
    try:
        a.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
        a.claim_due(time.time(), 10)
        a.acquire_role("discovery", 0.0, ttl=60.0)
        config = config_from_dict(
            {
                "bkmonitor": {"base_url": "http://127.0.0.1:9", "app_code": "c", "app_secret": "s"},
                "state": {"url": url, "path": str(tmp_path / "unused.db")},
            }
        )
        status = collect_status(config)
        text = render_status(status)
    finally:
        a.close()
    (replica,) = status["replicas"]
    assert (replica["owner"], replica["alive"], replica["alarms_owned"], replica["roles"], replica["instance_id"]) == (
        "pod-a:1:x",
        True,
        1,
        ["discovery"],
        "pod-a-instance",
    )
    json.dumps(status)  # the --json form
    assert "replicas seen in the last hour: 1, 1 alive" in text
    (line,) = [x for x in text.splitlines() if x.startswith("pod-a:1:x")]
    assert line.split()[-2:] == ["discovery", "pod-a-instance"], line
    assert str(urlsplit(postgres_url).password) not in text + json.dumps(status)  # never the password


# -- three daemons, one database --------------------------------------------------------------------------
N_ALARMS = 300
POLL = 2.0
LEASE = 5.0


def new_replica(name: str, config: dict[str, Any], tmp_path: Path) -> Daemon:
    """One ``bk-otel-exporter run`` subprocess, not started yet; its log is ``<name>.log``."""
    return Daemon(write_config(tmp_path / f"{name}.yaml", config), log_path=tmp_path / f"{name}.log")


def username(headers: dict[str, str]) -> str | None:
    for key, value in headers.items():
        if key.lower() == "x-bkapi-authorization":
            return json.loads(value).get("bk_username")
    return None


def polls_by_replica(sim: Simulator, before: float = float("inf")) -> Counter[str]:
    return Counter(
        username(r.headers) or "?" for r in list(sim.requests) if r.endpoint == "get_event_log" and r.timestamp < before
    )


def delivered(receiver: OtlpReceiver) -> list[tuple[str, str]]:
    """(uid, replica that sent it) of every log record the receiver accepted."""
    return [(log["attributes"]["log.record.uid"], log["resource"]["test.replica"]) for log in receiver.logs()]


def leased_by(url: str, pid: int) -> tuple[int, int]:
    """(alarms, outbox rows) currently leased by the replica process ``pid``."""
    pattern = f"%:{pid}:%"
    with psycopg.connect(url, autocommit=True) as conn:
        alarms = conn.execute("SELECT count(*) FROM alarms WHERE lease_owner LIKE %s", (pattern,)).fetchone()
        rows = conn.execute("SELECT count(*) FROM outbox WHERE lease_owner LIKE %s", (pattern,)).fetchone()
    return (alarms[0] if alarms else 0, rows[0] if rows else 0)


def test_three_replicas_share_the_work_and_survive_a_sigkill(postgres_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    url = fresh_database(postgres_url, prefix="replicas")
    with simulator() as sim, OtlpReceiver() as receiver:
        alarms = [sim.add_alarm(name=f"disk usage {i}", severity=1 + i % 3) for i in range(N_ALARMS)]
        ids = [a.id for a in alarms]

        def config(name: str) -> dict[str, Any]:
            return {
                "bkmonitor": replica_bkmonitor(sim, name),
                "alarms": {"ids": ids},
                "poll": {"interval": f"{POLL}s", "jitter": 0.1, "retire_after": "10m"},
                "export": {
                    "endpoint": receiver.grpc_endpoint,
                    "protocol": "grpc",
                    "batch_size": 200,
                    "timeout": "5s",
                    "resource_attributes": {"test.replica": name},
                },
                "state": {"url": url, "lease": f"{LEASE}s", "path": str(tmp_path / f"{name}-unused.db")},
                "server": {"listen": ""},
                "logging": {"level": "INFO"},
                "shutdown_timeout": "5s",
            }

        replicas = [new_replica(f"replica-{n}", config(f"replica-{n}"), tmp_path) for n in (1, 2, 3)]
        try:
            for replica in replicas:
                replica.start()

            # 1. the CREATE record of every alarm, once
            first = expected_uids(sim, ids)
            assert len(first) == N_ALARMS
            wait_until(lambda: len({u for u, _ in delivered(receiver)}) >= N_ALARMS, 60, "the first records")
            warm = time.time()  # the first replica up polled everything once: measure the share from here

            # 2. records keep coming: every alarm gets one more per poll interval, for a few intervals
            for round_ in range(3):
                for alarm in alarms:
                    alarm.log("ANOMALY_NOTICE", f"notice {round_}: sent to the on-duty group")
                time.sleep(POLL)
            share = polls_by_replica(sim) - polls_by_replica(sim, before=warm)

            # 3. freeze replica-3 while it holds work (leases in the store), then SIGKILL it
            victim = replicas[2]
            for _ in range(200):
                os.kill(victim.pid, signal.SIGSTOP)
                held = leased_by(url, victim.pid)
                if held[0]:
                    break
                os.kill(victim.pid, signal.SIGCONT)
                time.sleep(0.02)
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            killed_wall = time.time()
            victim.wait(10)
            assert held[0] > 0, "replica-3 never held a lease while frozen"

            # 4. more records after the kill; the two survivors must deliver everything, the dead
            # replica's leased alarms and outbox rows included, within the lease plus one interval
            for alarm in alarms:
                alarm.log("ANOMALY_NOTICE", "after the kill: escalated to the second line")
            everything = expected_uids(sim, ids)
            assert len(everything) == 5 * N_ALARMS
            wait_until(
                lambda: {u for u, _ in delivered(receiver)} >= everything,
                LEASE + POLL + 20,
                "every record after the kill",
            )
            recovered_in = time.monotonic() - killed_at
            survivors_polls = polls_by_replica(sim) - polls_by_replica(sim, before=killed_wall)

            # 5. status, run like an operator would, sees all three (replica-3 lost once its
            # heartbeat is older than its lease)
            time.sleep(max(0.0, killed_at + LEASE + 0.5 - time.monotonic()))
            status = run_cli(["status", "--json", "--config", str(replicas[0].config_path)], timeout=30)
            for survivor in replicas[:2]:
                assert survivor.stop(20) == 0, survivor.output()[-3000:]
        finally:
            for each in replicas:
                each.kill()

        # every record exactly once; a duplicate only where replica-3 may have been killed between
        # the receiver's acknowledgement and its own commit (the documented crash window)
        copies = Counter(u for u, _ in delivered(receiver))
        assert set(copies) == everything
        senders: dict[str, list[str]] = {}
        for uid, sender in delivered(receiver):
            senders.setdefault(uid, []).append(sender)
        twice = {uid: senders[uid] for uid, n in copies.items() if n > 1}
        assert all(n <= 2 and "replica-3" in senders[uid] for uid, n in copies.items() if n > 1), twice
        assert len(twice) <= 200  # at most the one batch in flight when it died

    # each replica polled a real share in the steady state before the kill (fair: a third each)
    total = sum(share[f"replica-{n}"] for n in (1, 2, 3))
    assert total >= 2 * N_ALARMS, share
    for n in (1, 2, 3):
        assert share[f"replica-{n}"] >= 0.2 * total, share
    # one service.instance.id per replica (the log.record.uid is the record's, whoever sends it)
    pairs = {(r["resource"]["test.replica"], r["resource"]["service.instance.id"]) for r in receiver.logs()}
    assert len(pairs) == 3 and len({instance for _, instance in pairs}) == 3, pairs
    assert set(survivors_polls) <= {"replica-1", "replica-2"}
    assert recovered_in <= LEASE + POLL + 2.0, f"took {recovered_in:.1f}s (replica-3 held {held})"

    assert status.returncode == 0, status.stderr
    password = str(urlsplit(url).password)
    assert all(password not in r.output() for r in replicas) and password not in status.stdout + status.stderr
    shown = {r["owner"].split(":")[1]: r for r in json.loads(status.stdout)["replicas"]}
    assert shown[str(replicas[2].pid)]["alive"] is False
    assert all(shown[str(r.pid)]["alive"] for r in replicas[:2])
    assert sum(r["polls"] for r in shown.values()) > 0
    print(
        f"\nreplicas: polls in steady state before the kill {dict(share)}; after it {dict(survivors_polls)}; "
        f"replica-3 held {held[0]} alarms and {held[1]} outbox rows when killed; everything delivered "
        f"{recovered_in:.1f}s after the kill; duplicates in the crash window: {len(twice)}; "
        f"test took {time.monotonic() - started:.1f}s"
    )
