"""What only the SQLite store does; everything both stores promise is in test_state_contract.py."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.errors import StateCorruptError, StateError
from exporter.model import AlarmContext
from exporter.state.base import PollCommit
from exporter.state.sqlite import SCHEMA_VERSION, SqliteStateStore
from tests.support.records import queued_log


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateCorruptError, match=str(path)):
        SqliteStateStore(path)
    assert path.read_bytes().startswith(b"this is not sqlite")  # untouched


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_the_database_its_wal_shm_and_lock_are_created_private(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path, exclusive=True)
    try:
        store.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
        store.commit_poll(PollCommit("1", 2.0, seen=["a"], queued=[queued_log("a")]))
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")]
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
    finally:
        store.close()


def test_an_existing_file_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "state.db"
    SqliteStateStore(path).close()
    path.chmod(0o640)  # the operator's choice (a group that backs it up)
    SqliteStateStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_without_create_a_missing_file_is_an_error_naming_state_path(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "state.db"
    with pytest.raises(StateError, match=rf"{path} does not exist \(state\.path\)"):
        SqliteStateStore(path, create=False)
    assert not path.parent.exists()


def test_the_cap_sees_what_another_process_changed(tmp_path: Path) -> None:
    """``purge`` and ``requeue`` run beside the daemon: its cached depth follows (data_version)."""
    path = tmp_path / "state.db"
    daemon = SqliteStateStore(path, max_queued=10)
    try:
        daemon.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
        uids = [f"u{i}" for i in range(8)]
        daemon.commit_poll(PollCommit("1", 2.0, seen=uids, queued=[queued_log(u) for u in uids]))
        cli = SqliteStateStore(path, create=False)
        assert cli.purge("logs") == 8
        cli.close()
        more = [f"v{i}" for i in range(6)]
        result = daemon.commit_poll(PollCommit("1", 3.0, seen=more, queued=[queued_log(u) for u in more]))
        assert result.inserted == 6 and not result.overflow  # 0 + 6 fits; the stale 8 + 6 would not
        cli = SqliteStateStore(path, create=False)
        (first, *_) = cli.claim_outbox("logs", 10)
        cli.park([first.seq], "HTTP 400", 4.0)
        cli.close()
        five = [f"w{i}" for i in range(5)]
        result = daemon.commit_poll(PollCommit("1", 5.0, seen=five, queued=[queued_log(u) for u in five]))
        assert result.inserted == 5  # 5 queued after the park + 5 fits; the stale 6 + 5 would not
    finally:
        daemon.close()


def test_a_schema_1_store_with_queued_rows_is_migrated_and_its_rows_are_the_defaults(tmp_path: Path) -> None:
    import sqlite3 as _sqlite3

    from exporter.state.sqlite_file import MIGRATIONS as _MIGRATIONS

    path = tmp_path / "old.db"
    db = _sqlite3.connect(path)
    db.executescript(_MIGRATIONS[1])
    db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)", [("app", "bk-otel-exporter"), ("schema_version", "1")]
    )
    row = queued_log("old-1")
    db.execute(
        "INSERT INTO outbox (kind, uid, alarm_id, payload, enqueued_at) VALUES (?, ?, '1', ?, 1.0)",
        (row.kind, row.uid, row.payload),
    )
    db.commit()
    db.close()
    store = SqliteStateStore(path)
    try:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        items = store.claim_outbox("logs", 10)  # the default destination's
        assert [i.payload.uid for i in items] == ["old-1"]
        assert store.claim_outbox("logs", 10, "other") == []
        store.ack([i.seq for i in items])
        assert store.outbox_stats().depth == 0
    finally:
        store.close()
