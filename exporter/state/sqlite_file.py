"""The SQLite store's file itself: its schema (the migrations), its creation with a private mode,
and the lock that keeps one exporter per file. The store is :mod:`exporter.state.sqlite`."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from exporter.errors import StateError

__all__ = ["MIGRATIONS", "create_private", "take_lock"]

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE alarms (
        alarm_id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        phase TEXT NOT NULL,
        context TEXT NOT NULL,
        first_seen REAL NOT NULL,
        next_poll REAL NOT NULL,
        last_poll REAL,
        last_full_read REAL,
        terminal_at REAL,
        retired_at REAL,
        change_token TEXT,
        records INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX alarms_due ON alarms (phase, next_poll);
    CREATE TABLE seen (
        alarm_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        PRIMARY KEY (alarm_id, uid)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        uid TEXT NOT NULL,
        alarm_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        enqueued_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        parked_at REAL,
        park_reason TEXT
    );
    CREATE UNIQUE INDEX outbox_uid ON outbox (kind, uid);
    CREATE INDEX outbox_ready ON outbox (kind, parked_at, seq);
    CREATE TABLE span_events (
        alarm_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        payload TEXT NOT NULL,
        sliced INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (alarm_id, uid)
    ) WITHOUT ROWID;
    """,
    # one outbox row per record and destination: the rows queued before are the default's
    2: """
    ALTER TABLE outbox ADD COLUMN destination TEXT NOT NULL DEFAULT 'default';
    DROP INDEX outbox_uid;
    DROP INDEX outbox_ready;
    CREATE UNIQUE INDEX outbox_uid ON outbox (destination, kind, uid);
    CREATE INDEX outbox_ready ON outbox (destination, kind, parked_at, seq);
    """,
    # a log record's OTLP bytes, encoded once at poll time (payload is then ''); older rows keep JSON.
    # Uniqueness is kept by the index for spans only (re-enqueued under the same uid): a log row
    # is written once, in the transaction that marks its uid seen, so its index entry was pure
    # cost (a third of a log row's insert time, measured).
    3: """
    ALTER TABLE outbox ADD COLUMN encoded BLOB;
    DROP INDEX outbox_uid;
    CREATE UNIQUE INDEX outbox_uid ON outbox (destination, kind, uid) WHERE kind = 'spans';
    """,
}


def create_private(path: Path) -> None:
    """Create the database file ``0600`` (whatever the umask) unless it exists: SQLite then gives
    its ``-wal`` and ``-shm`` the same mode. An existing file keeps its mode."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def take_lock(path: Path) -> int:
    """Hold ``<path>.lock`` exclusively (``flock``) for as long as the returned fd stays open.

    Two exporters on one state file would both poll and both send every record. The lock is
    released by the kernel when the process ends, however it ends (SIGKILL included), so a stale
    lock file never blocks a restart. The file holds the owner's pid, for the error message.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"state store {path}: cannot open the lock file {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        finally:
            os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            raise StateError(
                f"state store {path} is in use by another bk-otel-exporter (pid {owner}); "
                "stop it first, or give this one its own state.path"
            ) from None
        raise StateError(f"state store {path}: cannot lock {lock_path}: {exc}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
