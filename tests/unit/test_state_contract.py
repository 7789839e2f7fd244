"""The StateStore contract, run against every implementation: SQLite and PostgreSQL.

One suite, the same assertions, so the two stores stay equivalent. The PostgreSQL params use a
socket (a throwaway cluster, ``postgres_url``) and are marked ``integration``; each test gets a
fresh schema. What only a shared store has (leases between replicas, roles, ``replicas()``) is
tested in ``tests/integration/test_replicas.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from exporter.errors import StateCorruptError, StateError, StateSchemaError
from exporter.model import AlarmContext, LogEvent, SpanRecord
from exporter.state.base import PollCommit, QueuedRecord, StateStore, StoredSpanEvent
from exporter.state.sqlite import SqliteStateStore
from tests.support.postgres import fresh_schema
from tests.support.records import queued_log


@dataclass
class Backend:
    """How to open one kind of store on one location, and how to tamper with it behind its back."""

    name: str
    open: Callable[..., StateStore]
    execute: Callable[[str], None]  # raw SQL on the same location, outside the store
    #: SQL that makes every transaction inserting an outbox row with a uid starting "poison"
    #: fail at its COMMIT (a deferred constraint): a commit that fails after every statement worked
    commit_trap: tuple[str, ...] = ()


def _sqlite(tmp_path: Path) -> Backend:
    path = tmp_path / "state.db"

    def execute(sql: str) -> None:
        db = sqlite3.connect(path)
        try:
            with db:
                db.execute(sql)
        finally:
            db.close()

    trap = (
        "CREATE TABLE trap_parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE trap_child (parent INTEGER REFERENCES trap_parent (id) DEFERRABLE INITIALLY DEFERRED)",
        "CREATE TRIGGER trap AFTER INSERT ON outbox WHEN NEW.uid LIKE 'poison%' "
        "BEGIN INSERT INTO trap_child VALUES (1); END",
    )
    return Backend(
        "sqlite", lambda **kw: SqliteStateStore(path, max_queued=kw.get("max_queued", 10)), execute, commit_trap=trap
    )


def _postgres(url: str) -> Backend:
    schema_url = fresh_schema(url)

    def execute(sql: str) -> None:
        with psycopg.connect(schema_url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type] # test-only SQL

    def open_store(**kw: Any) -> StateStore:
        from exporter.state.postgres import PostgresStateStore

        return PostgresStateStore(schema_url, max_queued=kw.get("max_queued", 10), lease=kw.get("lease", 30.0))

    trap = (
        "CREATE FUNCTION trap() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF NEW.uid LIKE 'poison%' THEN RAISE EXCEPTION 'trap'; END IF; RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER trap AFTER INSERT ON outbox DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION trap()",
    )
    return Backend("postgres", open_store, execute, commit_trap=trap)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite(tmp_path)
    return _postgres(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(backend: Backend) -> Iterator[StateStore]:
    s = backend.open(max_queued=10)
    try:
        yield s
    finally:
        s.close()


def span(uid: str, alarm_id: str = "1") -> QueuedRecord:
    record = SpanRecord(uid=uid, alarm_id=alarm_id, trace_id=1, span_id=2, name="alarm", start_ns=1, end_ns=2)
    return QueuedRecord("spans", uid, record.to_json())


def commit(store: StateStore, uids: list[str], alarm_id: str = "1", **kw: Any) -> int:
    c = PollCommit(alarm_id, 100.0, seen=uids, queued=[queued_log(u, alarm_id) for u in uids], **kw)
    return store.commit_poll(c).inserted


def follow(store: StateStore, *ids: str, now: float = 1.0) -> None:
    for alarm_id in ids:
        store.upsert_alarm(AlarmContext(alarm_id), source="config", now=now, due=True)


# -- commits: atomic, de-duplicated ------------------------------------------------------------------
def test_commit_marks_seen_and_enqueues_once(store: StateStore) -> None:
    follow(store, "1")
    assert commit(store, ["a", "b"]) == 2
    assert commit(store, ["a", "b", "c"]) == 1  # a, b already seen: only c is new
    assert store.seen_uids("1") == {"a", "b", "c"}
    items = store.claim_outbox("logs", 10)
    assert [i.payload.uid for i in items] == ["a", "b", "c"]
    assert [i.seq for i in items] == sorted(i.seq for i in items)
    assert items[0].payload.attributes == {"k": [1, 2]}
    assert items[0].enqueued_at == 100.0 and items[0].attempts == 0
    alarm = store.get_alarm("1")
    assert alarm is not None and alarm.records == 3 and alarm.last_poll == 100.0


def test_commit_updates_the_alarm_with_its_records(store: StateStore) -> None:
    follow(store, "1")
    ctx = AlarmContext("1", name="disk full", severity=1)
    result = store.commit_poll(
        PollCommit(
            "1",
            50.0,
            seen=["a"],
            queued=[queued_log("a")],
            span_events=[StoredSpanEvent("a", 7, "{}"), StoredSpanEvent("b", 3, "{}")],
            context=ctx,
            phase="closing",
            next_poll=80.0,
            terminal_at=45.0,
            change_token="t1",
            full_read=True,
            last_error="boom",
        )
    )
    assert result.inserted == 1 and not result.overflow
    alarm = store.get_alarm("1")
    assert alarm is not None
    assert (alarm.phase, alarm.next_poll, alarm.terminal_at, alarm.change_token) == ("closing", 80.0, 45.0, "t1")
    assert (alarm.context.name, alarm.last_full_read, alarm.last_error, alarm.records) == ("disk full", 50.0, "boom", 1)
    assert [(e.uid, e.time_ns, e.sliced) for e in store.span_events("1")] == [("b", 3, False), ("a", 7, False)]
    store.commit_poll(PollCommit("1", 60.0, sliced=["a"]))  # clear_error by default
    alarm = store.get_alarm("1")
    assert alarm is not None and alarm.last_error is None and alarm.phase == "closing"
    assert {e.uid: e.sliced for e in store.span_events("1")} == {"a": True, "b": False}


def test_commit_is_all_or_nothing(store: StateStore) -> None:
    follow(store, "1")
    bad = QueuedRecord("logs", "b", object())  # type: ignore[arg-type] # cannot be stored: fails mid-commit
    with pytest.raises((sqlite3.Error, StateError)):
        store.commit_poll(PollCommit("1", 5.0, seen=["a", "b"], queued=[queued_log("a"), bad], next_poll=9.0))
    assert store.seen_uids("1") == set()  # the seen marks went with the failed outbox insert
    assert store.outbox_stats().depth == 0
    alarm = store.get_alarm("1")
    assert alarm is not None and alarm.next_poll == 1.0 and alarm.records == 0
    assert commit(store, ["a", "b"]) == 2  # and the store is still usable


def test_a_commit_refused_at_commit_changes_nothing_not_even_the_cached_depth(
    backend: Backend, store: StateStore
) -> None:
    """A COMMIT that fails after every statement went through (a full disk, a deferred
    constraint) is rolled back: no row, no seen mark, and the depth the cap counts stays what was
    committed, so a later poll that fits is taken (a depth moved by the failed commits is the
    phantom outbox that says "full" until a restart)."""
    for sql in backend.commit_trap:
        backend.execute(sql)
    follow(store, "1")
    assert commit(store, [f"u{i}" for i in range(6)]) == 6  # max_queued is 10
    for _ in range(3):
        with pytest.raises(StateError):
            commit(store, ["poison", "p1", "p2"])
    assert store.outbox_stats().depth == 6
    assert store.seen_uids("1") == {f"u{i}" for i in range(6)}
    alarm = store.get_alarm("1")
    assert alarm is not None and alarm.records == 6
    assert commit(store, ["v1", "v2", "v3", "v4"]) == 4  # 6 + 4 fits; the store is usable
    assert store.outbox_stats().depth == 10


def test_extra_queued_rows_are_not_tied_to_seen_uids(store: StateStore) -> None:
    follow(store, "1")
    assert store.commit_poll(PollCommit("1", 5.0, extra_queued=[span("span-1")])).inserted == 1
    assert store.seen_uids("1") == set()
    assert store.outbox_stats().by_kind == {"spans": 1}


# -- the outbox -----------------------------------------------------------------------------------------
def test_overflow_commits_nothing(store: StateStore) -> None:
    follow(store, "1")
    assert commit(store, [f"u{i}" for i in range(8)]) == 8
    result = store.commit_poll(
        PollCommit("1", 1.0, seen=["x", "y", "z"], queued=[queued_log("x"), queued_log("y"), queued_log("z")])
    )
    assert result.overflow and result.inserted == 0
    assert "x" not in store.seen_uids("1")  # left unseen: read again once there is room
    store.ack([i.seq for i in store.claim_outbox("logs", 5)])
    assert commit(store, ["x", "y", "z"]) == 3


def test_an_empty_outbox_takes_a_poll_bigger_than_the_cap(store: StateStore) -> None:
    follow(store, "1")
    assert commit(store, [f"u{i}" for i in range(12)]) == 12  # max_queued is 10
    assert store.commit_poll(PollCommit("1", 1.0, seen=["x"], queued=[queued_log("x")])).overflow


def test_ack_release_park(store: StateStore) -> None:
    follow(store, "1")
    commit(store, ["a", "b", "c"])
    a, b, c = store.claim_outbox("logs", 10)
    store.ack([a.seq])
    store.release([b.seq])
    store.park([c.seq], "HTTP 400", 5.0)
    stats = store.outbox_stats()
    assert (stats.depth, stats.parked, stats.by_kind) == (1, 1, {"logs": 1})
    (left,) = store.claim_outbox("logs", 10)
    assert left.payload.uid == "b" and left.attempts == 1
    store.park([c.seq], "again", 6.0)  # parking twice changes nothing
    assert store.outbox_stats().parked == 1
    store.ack([])
    store.release([])
    store.park([], "nothing", 7.0)


def test_requeue_moves_parked_rows_back_in_their_order_and_counts_them_in_the_cap(store: StateStore) -> None:
    follow(store, "1")
    commit(store, ["a", "b", "c", "d"])
    store.commit_poll(PollCommit("1", 100.0, extra_queued=[span("s")]))
    a, b, c, _ = store.claim_outbox("logs", 10)
    (s,) = store.claim_outbox("spans", 10)
    for item, at in ((a, 10.0), (b, 20.0), (c, 30.0), (s, 10.0)):
        store.park([item.seq], "HTTP 400", at)
    stats = store.outbox_stats()
    assert (stats.depth, stats.parked) == (1, 4)
    assert (stats.by_kind, stats.parked_by_kind) == ({"logs": 1}, {"logs": 3, "spans": 1})
    assert store.requeue(signal="logs", parked_before=25.0) == 2  # a and b; not c (parked at 30), not s
    again = store.claim_outbox("logs", 10)
    assert [i.payload.uid for i in again] == ["a", "b", "d"]  # in their original order
    assert [i.attempts for i in again] == [0, 0, 0]  # fresh rows
    assert store.outbox_stats().parked_by_kind == {"logs": 1, "spans": 1}
    assert store.requeue() == 2  # every signal, any age: c and s
    assert store.requeue() == 0
    stats = store.outbox_stats()
    assert (stats.depth, stats.parked, stats.by_kind) == (5, 0, {"logs": 4, "spans": 1})
    # requeued rows count toward max_queued (10): 5 + 6 does not fit
    fresh = [f"n{i}" for i in range(6)]
    assert store.commit_poll(PollCommit("1", 200.0, seen=fresh, queued=[queued_log(u) for u in fresh])).overflow


def test_purge_deletes_the_queued_or_the_parked_rows_of_one_signal(store: StateStore) -> None:
    follow(store, "1")
    commit(store, ["a", "b", "c", "d"])
    store.commit_poll(PollCommit("1", 100.0, extra_queued=[span(f"s{i}") for i in range(5)]))
    (a, *_) = store.claim_outbox("logs", 10)
    store.park([a.seq], "HTTP 400", 10.0)
    assert store.outbox_stats().depth == 8
    assert store.purge("spans") == 5
    assert store.purge("spans") == 0
    stats = store.outbox_stats()
    assert (stats.by_kind, stats.parked_by_kind) == ({"logs": 3}, {"logs": 1})
    assert store.purge("logs", parked=True) == 1  # only the parked one
    stats = store.outbox_stats()
    assert (stats.depth, stats.parked, stats.by_kind) == (3, 0, {"logs": 3})
    # the purged rows no longer count toward max_queued (10): 3 + 7 fits
    assert commit(store, [f"n{i}" for i in range(7)]) == 7


def test_prune_parked_forgets_rows_parked_before_the_cut_off(store: StateStore) -> None:
    follow(store, "1")
    commit(store, ["a", "b", "c"])
    a, b, _ = store.claim_outbox("logs", 10)
    store.park([a.seq], "old", 10.0)
    store.park([b.seq], "new", 20.0)
    assert store.prune_parked(15.0) == 1
    assert store.prune_parked(15.0) == 0
    stats = store.outbox_stats()
    assert (stats.depth, stats.parked) == (1, 1)  # queued rows are never pruned
    assert store.requeue() == 1 and [i.payload.uid for i in store.claim_outbox("logs", 10)] == ["b", "c"]


def test_claim_outbox_by_kind_oldest_first_within_limit(store: StateStore) -> None:
    follow(store, "1")
    commit(store, ["a", "b", "c"])
    store.commit_poll(PollCommit("1", 200.0, extra_queued=[span("s")]))
    assert [i.payload.uid for i in store.claim_outbox("logs", 2)] == ["a", "b"]
    (claimed,) = store.claim_outbox("spans", 10)
    assert isinstance(claimed.payload, SpanRecord) and claimed.payload.uid == "s"
    stats = store.outbox_stats()
    assert (stats.depth, stats.oldest_enqueued_at, stats.by_kind) == (4, 100.0, {"logs": 3, "spans": 1})


def test_log_rows_keep_their_encoded_bytes_beside_rows_queued_as_json(store: StateStore) -> None:
    """A log row written by this version holds the record's OTLP bytes, returned as they were
    stored; a row queued as JSON by an older version is still read, in the same outbox order."""
    from exporter.mapping.otlp import encode_log

    follow(store, "1")
    old, new = queued_log("old"), queued_log("new")
    event = new_event = LogEvent.from_json(str(new.payload))
    blob = encode_log(new_event)
    store.commit_poll(PollCommit("1", 100.0, seen=["old", "new"], queued=[old, QueuedRecord("logs", "new", blob)]))
    first, second = store.claim_outbox("logs", 10)
    assert (first.uid, first.encoded, first.alarm_id) == ("old", None, "1")
    assert first.payload == LogEvent.from_json(str(old.payload))
    assert (second.uid, second.encoded, second.alarm_id) == ("new", blob, "1")
    assert second.payload == event and second.encoded_log() == blob
    assert first.encoded_log() == encode_log(LogEvent.from_json(str(old.payload)))


def test_unclaimed_rows_are_claimed_again_until_acked(store: StateStore) -> None:
    """One process draining: a batch it never resolved is handed to it again (nothing is stuck)."""
    follow(store, "1")
    commit(store, ["a", "b"])
    first = store.claim_outbox("logs", 10)
    again = store.claim_outbox("logs", 10)
    assert [i.seq for i in again] == [i.seq for i in first]
    store.ack([i.seq for i in again])
    assert store.claim_outbox("logs", 10) == [] and store.outbox_stats().depth == 0


# -- alarms: due, lifecycle, prune ------------------------------------------------------------------
def test_lifecycle_and_due(store: StateStore) -> None:
    store.upsert_alarm(AlarmContext("1"), source="config", now=10.0, due=True)
    store.upsert_alarm(AlarmContext("2"), source="discovered", now=10.0, due=True)
    assert {a.alarm_id for a in store.claim_due(10.0, 100)} == {"1", "2"}
    store.commit_poll(PollCommit("1", 10.0, next_poll=40.0))
    store.commit_poll(PollCommit("2", 10.0, phase="retired", next_poll=40.0))
    assert [a.alarm_id for a in store.claim_due(50.0, 100)] == ["1"]
    assert store.claim_due(30.0, 100) == []
    # discovery reports the retired alarm changed: it is followed again
    again = store.upsert_alarm(AlarmContext("2"), source="discovered", now=60.0, due=True)
    assert again.phase == "active" and again.retired_at is None and again.next_poll == 40.0
    # a configured alarm stays "config" when discovery also reports it
    assert store.upsert_alarm(AlarmContext("1"), source="discovered", now=60.0, due=False).source == "config"


def test_claim_due_oldest_first_within_limit(store: StateStore) -> None:
    for alarm_id, now in (("a", 30.0), ("b", 10.0), ("c", 20.0)):
        store.upsert_alarm(AlarmContext(alarm_id), source="config", now=now, due=True)
    assert [a.alarm_id for a in store.claim_due(100.0, 2)] == ["b", "c"]
    assert [a.alarm_id for a in store.claim_due(float("inf"), 10)] == ["b", "c", "a"]


def test_claim_due_pages_by_next_poll_then_id(store: StateStore) -> None:
    for alarm_id, now in (("a", 10.0), ("b", 10.0), ("c", 20.0), ("d", 5.0)):
        store.upsert_alarm(AlarmContext(alarm_id), source="config", now=now, due=True)
    first = store.claim_due(100.0, 2)
    assert [a.alarm_id for a in first] == ["d", "a"]
    after = (first[-1].next_poll, first[-1].alarm_id)
    assert [a.alarm_id for a in store.claim_due(100.0, 2, after)] == ["b", "c"]
    assert store.claim_due(100.0, 2, (20.0, "c")) == []


def test_upsert_keeps_schedule_unless_due(store: StateStore) -> None:
    first = store.upsert_alarm(AlarmContext("1", name="x"), source="discovered", now=5.0, due=False)
    assert (first.phase, first.source, first.first_seen, first.next_poll) == ("active", "discovered", 5.0, 5.0)
    store.commit_poll(PollCommit("1", 6.0, next_poll=50.0))
    kept = store.upsert_alarm(AlarmContext("1", name="y"), source="discovered", now=7.0, due=False, change_token="t")
    assert (kept.next_poll, kept.context.name, kept.change_token) == (50.0, "y", "t")
    sooner = store.upsert_alarm(AlarmContext("1"), source="discovered", now=8.0, due=True)
    assert sooner.next_poll == 8.0 and sooner.change_token == "t"
    assert [a.alarm_id for a in store.list_alarms()] == ["1"]
    assert store.list_alarms(("retired",)) == []


def test_expired_alarm_is_retired_with_a_time(store: StateStore) -> None:
    follow(store, "1")
    store.commit_poll(PollCommit("1", 30.0, phase="expired", last_error="3324002"))
    alarm = store.get_alarm("1")
    assert alarm is not None and (alarm.phase, alarm.retired_at, alarm.last_error) == ("expired", 30.0, "3324002")
    assert store.claim_due(float("inf"), 10) == []
    assert [a.alarm_id for a in store.list_alarms(("retired", "expired"))] == ["1"]


def test_an_expired_alarm_is_followed_again_when_made_due(store: StateStore) -> None:
    """3324002 once, then BlueKing lists it again (discovery) or alarms.ids names it: polled again,
    from where it was (closing when its end was seen)."""
    follow(store, "1", "2")
    store.commit_poll(PollCommit("1", 30.0, phase="expired", last_error="3324002"))
    store.commit_poll(PollCommit("2", 30.0, phase="closing", terminal_at=25.0))
    store.commit_poll(PollCommit("2", 31.0, phase="expired", last_error="3324002"))
    kept = store.upsert_alarm(AlarmContext("1"), source="discovered", now=40.0, due=False)
    assert kept.phase == "expired"  # not due: left alone
    again = store.upsert_alarm(AlarmContext("1"), source="discovered", now=50.0, due=True)
    assert (again.phase, again.retired_at, again.next_poll, again.source) == ("active", None, 1.0, "config")
    closing = store.upsert_alarm(AlarmContext("2"), source="config", now=50.0, due=True)
    assert (closing.phase, closing.terminal_at, closing.retired_at) == ("closing", 25.0, None)
    assert {a.alarm_id for a in store.claim_due(50.0, 10)} == {"1", "2"}


def test_prune_forgets_long_retired(store: StateStore) -> None:
    follow(store, "1", "2")
    commit(store, ["a"])
    store.commit_poll(PollCommit("1", 100.0, phase="retired", span_events=[StoredSpanEvent("a", 1, "{}")]))
    assert store.prune(1000.0, retired_before=50.0) == 0
    assert store.prune(1000.0, retired_before=200.0) == 1
    assert store.get_alarm("1") is None and store.seen_uids("1") == set() and store.span_events("1") == []
    assert store.get_alarm("2") is not None
    assert store.outbox_stats().depth == 1  # queued records are not pruned: they still go out


# -- meta, roles, reopen, safety ------------------------------------------------------------------
def test_alarm_ids_by_phase_and_source(store: StateStore) -> None:
    store.upsert_alarm(AlarmContext("c1"), source="config", now=1.0, due=True)
    store.upsert_alarm(AlarmContext("d1"), source="discovered", now=1.0, due=True)
    store.upsert_alarm(AlarmContext("d2"), source="discovered", now=1.0, due=True)
    store.commit_poll(PollCommit("d2", 2.0, phase="retired"))
    assert sorted(store.alarm_ids()) == ["c1", "d1"]
    assert store.alarm_ids(source="config") == ["c1"]
    assert store.alarm_ids(("retired", "expired")) == ["d2"]
    assert store.alarm_ids(("retired",), source="config") == []


def test_meta(store: StateStore) -> None:
    assert store.get_meta("nothing") is None
    assert store.get_meta("instance_id")
    store.set_meta("last_poll_ok", "1.5")
    store.set_meta("last_poll_ok", "2.5")
    assert store.get_meta("last_poll_ok") == "2.5"


def test_a_single_store_holds_its_roles(store: StateStore) -> None:
    assert store.acquire_role("discovery", 1.0, ttl=30.0)
    assert store.acquire_role("discovery", 2.0, ttl=30.0)  # renewing


def test_state_survives_reopen(backend: Backend) -> None:
    s = backend.open()
    s.upsert_alarm(AlarmContext("9", name="n", dimensions=(("ip", "1.2.3.4"),)), source="discovered", now=1.0, due=True)
    commit(s, ["a"], alarm_id="9")
    instance = s.get_meta("instance_id")
    s.close()
    s.close()  # idempotent
    s = backend.open()
    try:
        alarm = s.get_alarm("9")
        assert alarm is not None and alarm.context.dimensions == (("ip", "1.2.3.4"),)
        assert s.seen_uids("9") == {"a"}
        assert s.outbox_stats().depth == 1
        assert s.get_meta("instance_id") == instance
        assert commit(s, ["a", "b"], alarm_id="9") == 1
    finally:
        s.close()


def test_newer_schema_is_refused(backend: Backend) -> None:
    backend.open().close()
    backend.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StateSchemaError, match="newer"):
        backend.open()


def test_foreign_database_is_refused(backend: Backend) -> None:
    backend.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StateCorruptError, match="something else"):
        backend.open()


def test_database_of_another_app_is_refused(backend: Backend) -> None:
    backend.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    with pytest.raises(StateCorruptError, match="not written by"):
        backend.open()


# -- destinations: one row per record and destination ------------------------------------------------
def _to(uid: str, *destinations: str) -> list[QueuedRecord]:
    row = queued_log(uid)
    return [QueuedRecord(row.kind, row.uid, row.payload, destination=d) for d in destinations]


def test_each_destination_has_its_own_rows_acks_and_stats(store: StateStore) -> None:
    follow(store, "1")
    queued = [*_to("a", "default", "loki"), *_to("b", "default", "loki"), *_to("c", "loki")]
    result = store.commit_poll(PollCommit("1", 100.0, seen=["a", "b", "c"], queued=queued))
    assert result.inserted == 5
    assert store.get_alarm("1").records == 3  # records, not rows
    default = store.claim_outbox("logs", 10)
    loki = store.claim_outbox("logs", 10, "loki")
    assert [i.payload.uid for i in default] == ["a", "b"] and [i.payload.uid for i in loki] == ["a", "b", "c"]
    store.ack([i.seq for i in default])  # default delivered: loki's rows are untouched
    assert store.claim_outbox("logs", 10) == []
    assert [i.seq for i in store.claim_outbox("logs", 10, "loki")] == [i.seq for i in loki]
    store.park([loki[0].seq], "refused", 5.0)
    stats = store.outbox_stats()
    assert stats.by_destination["loki"][:2] == (2, 1) and "default" not in stats.by_destination
    # a second poll of the same records queues nothing for anyone (de-duplication by uid)
    again = store.commit_poll(PollCommit("1", 101.0, seen=["a", "c"], queued=[*_to("a", "default", "loki")]))
    assert again.inserted == 0
    assert store.requeue(destination="default") == 0
    assert store.requeue(destination="loki") == 1
    assert store.outbox_stats().by_destination["loki"][:2] == (3, 0)


def test_the_cap_applies_per_destination(store: StateStore) -> None:
    follow(store, "1")
    uids = [f"u{i}" for i in range(9)]
    rows = [r for u in uids for r in _to(u, "slow")]
    assert store.commit_poll(PollCommit("1", 100.0, seen=uids, queued=rows)).inserted == 9  # slow: 9 of 10
    # slow is full: its rows are left out, the default destination's are taken
    result = store.commit_poll(
        PollCommit("1", 101.0, seen=["x", "y"], queued=[*_to("x", "default", "slow"), *_to("y", "default", "slow")])
    )
    assert not result.overflow and result.overflowed == ("slow",) and result.inserted == 2
    assert [i.payload.uid for i in store.claim_outbox("logs", 10)] == ["x", "y"]
    assert len(store.claim_outbox("logs", 20, "slow")) == 9
    # only full destinations: nothing is committed, the records stay unseen
    full = store.commit_poll(PollCommit("1", 102.0, seen=["z", "w"], queued=[*_to("z", "slow"), *_to("w", "slow")]))
    assert full.overflow and "z" not in store.seen_uids("1")
