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


def open_store(
    path: str,
    *,
    url: str | None = None,
    max_queued: int = 1_000_000,
    lease: float = 30.0,
    exclusive: bool = False,
    create: bool = True,
    instance_id: str | None = None,
) -> StateStore:
    """Open the configured store: the SQLite file at ``path``, or the shared store at ``url``.

    ``exclusive`` (``run`` and ``once``): the SQLite file is locked for this process; a second
    exporter on the same file is refused (StateError). ``create`` False (``status``, ``requeue``,
    ``purge``): a SQLite file that does not exist is a StateError naming ``state.path``, not a new
    empty store. A shared store is made for several replicas; there ``exclusive`` means this
    process is one of them: its ``service.instance.id`` is
    ``instance_id`` (the operator's), else the one kept in ``<path>.instance-id``.
    """
    if url:
        from exporter.errors import StateError

        try:
            from exporter.state.postgres import PostgresStateStore
        except ImportError as exc:
            # psycopg absent (ModuleNotFoundError), or present without a libpq to load
            if not (exc.name or "").startswith("psycopg") and "libpq" not in str(exc) and "pq wrapper" not in str(exc):
                raise
            raise StateError(
                "state.url: the PostgreSQL driver (psycopg 3) is not installed; "
                "pip install 'bk-otel-exporter[postgres]'"
            ) from None
        return PostgresStateStore(
            url,
            max_queued=max_queued,
            lease=lease,
            instance_id=instance_id,
            instance_file=f"{path}.instance-id" if exclusive else None,
        )
    from exporter.state.sqlite import SqliteStateStore

    return SqliteStateStore(path, max_queued=max_queued, exclusive=exclusive, create=create)
