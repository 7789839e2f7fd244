"""The embedded state store: atomic seen+outbox commits, dedup, outbox life, safety checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exporter.errors import StateCorruptError, StateSchemaError
from exporter.model import AlarmContext, LogEvent
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.sqlite import SCHEMA_VERSION, SqliteStateStore


def event(uid: str, alarm_id: str = "1") -> QueuedRecord:
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


@pytest.fixture
def store(tmp_path: Path) -> SqliteStateStore:
    s = SqliteStateStore(tmp_path / "state.db", max_queued=10)
    yield s
    s.close()


def commit(store: SqliteStateStore, uids: list[str], alarm_id: str = "1", **kw: object) -> int:
    c = PollCommit(alarm_id, 100.0, seen=uids, queued=[event(u, alarm_id) for u in uids], **kw)  # type: ignore[arg-type]
    return store.commit_poll(c).inserted


def test_commit_marks_seen_and_enqueues_once(store: SqliteStateStore) -> None:
    store.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    assert commit(store, ["a", "b"]) == 2
    assert commit(store, ["a", "b", "c"]) == 1  # a, b already seen: only c is new
    assert store.seen_uids("1") == {"a", "b", "c"}
    items = store.claim_outbox("logs", 10)
    assert [i.payload.uid for i in items] == ["a", "b", "c"]
    assert items[0].payload.attributes == {"k": [1, 2]}
    assert store.get_alarm("1").records == 3  # type: ignore[union-attr]


def test_ack_release_park(store: SqliteStateStore) -> None:
    store.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    commit(store, ["a", "b", "c"])
    a, b, c = store.claim_outbox("logs", 10)
    store.ack([a.seq])
    store.release([b.seq])
    store.park([c.seq], "HTTP 400", 5.0)
    stats = store.outbox_stats()
    assert (stats.depth, stats.parked) == (1, 1)
    (left,) = store.claim_outbox("logs", 10)
    assert left.payload.uid == "b" and left.attempts == 1


def test_overflow_commits_nothing(store: SqliteStateStore) -> None:
    store.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    assert commit(store, [f"u{i}" for i in range(8)]) == 8
    result = store.commit_poll(PollCommit("1", 1.0, seen=["x", "y", "z"], queued=[event("x"), event("y"), event("z")]))
    assert result.overflow and result.inserted == 0
    assert "x" not in store.seen_uids("1")  # left unseen: read again once there is room
    store.ack([i.seq for i in store.claim_outbox("logs", 5)])
    assert commit(store, ["x", "y", "z"]) == 3


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = SqliteStateStore(path)
    s.upsert_alarm(AlarmContext("9", name="n", dimensions=(("ip", "1.2.3.4"),)), source="discovered", now=1.0, due=True)
    commit(s, ["a"], alarm_id="9")
    instance = s.get_meta("instance_id")
    s.close()
    s = SqliteStateStore(path)
    try:
        alarm = s.get_alarm("9")
        assert alarm is not None and alarm.context.dimensions == (("ip", "1.2.3.4"),)
        assert s.seen_uids("9") == {"a"}
        assert s.outbox_stats().depth == 1
        assert s.get_meta("instance_id") == instance
    finally:
        s.close()


def test_lifecycle_and_due(store: SqliteStateStore) -> None:
    store.upsert_alarm(AlarmContext("1"), source="config", now=10.0, due=True)
    store.upsert_alarm(AlarmContext("2"), source="discovered", now=10.0, due=True)
    assert {a.alarm_id for a in store.claim_due(10.0, 100)} == {"1", "2"}
    store.commit_poll(PollCommit("1", 10.0, next_poll=40.0))
    store.commit_poll(PollCommit("2", 10.0, phase="retired", next_poll=40.0))
    assert [a.alarm_id for a in store.claim_due(50.0, 100)] == ["1"]
    # discovery reports the retired alarm changed: it is followed again
    again = store.upsert_alarm(AlarmContext("2"), source="discovered", now=60.0, due=True)
    assert again.phase == "active" and again.retired_at is None
    # a configured alarm stays "config" when discovery also reports it
    assert store.upsert_alarm(AlarmContext("1"), source="discovered", now=60.0, due=False).source == "config"


def test_prune_forgets_long_retired(store: SqliteStateStore) -> None:
    store.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    commit(store, ["a"])
    store.commit_poll(PollCommit("1", 100.0, phase="retired"))
    assert store.prune(1000.0, retired_before=50.0) == 0
    assert store.prune(1000.0, retired_before=200.0) == 1
    assert store.get_alarm("1") is None and store.seen_uids("1") == set()


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateCorruptError, match=str(path)):
        SqliteStateStore(path)
    assert path.read_bytes().startswith(b"this is not sqlite")  # untouched


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    db.close()
    with pytest.raises(StateCorruptError, match="something else"):
        SqliteStateStore(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStateStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()
    with pytest.raises(StateSchemaError, match="newer"):
        SqliteStateStore(path)
