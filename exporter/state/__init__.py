"""Durable state: followed alarms, seen record uids, and the outbox. See :mod:`exporter.state.base`."""

from __future__ import annotations

from exporter.state.base import (
    AlarmState,
    CommitResult,
    OutboxStats,
    PollCommit,
    QueuedRecord,
    StateStore,
    StoredSpanEvent,
)

__all__ = [
    "AlarmState",
    "CommitResult",
    "OutboxStats",
    "PollCommit",
    "QueuedRecord",
    "StateStore",
    "StoredSpanEvent",
    "open_store",
]


def open_store(path: str, *, url: str | None = None, max_queued: int = 1_000_000, lease: float = 30.0) -> StateStore:
    """Open the configured store: the SQLite file at ``path``, or the shared store at ``url``."""
    if url:
        from exporter.errors import StateError

        raise StateError("state.url: the shared PostgreSQL store is not available in this build")
    from exporter.state.sqlite import SqliteStateStore

    return SqliteStateStore(path, max_queued=max_queued)
