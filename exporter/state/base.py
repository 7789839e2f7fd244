"""The state store's interface: what the pipeline needs to be durable, and nothing more.

Three things live in a store:

* **alarms**: every followed alarm, its context, lifecycle phase and polling schedule;
* **seen**: per alarm, the uids of the flow records already taken (exact de-duplication);
* **outbox**: mapped records (logs, spans) waiting for a sink to accept them.

The one guarantee everything hangs on: :meth:`StateStore.commit_poll` marks records seen and puts
them in the outbox **in one transaction**, so a crash can neither lose nor duplicate them. Rows
leave the outbox only through :meth:`StateStore.ack` (after the sink said SUCCESS) or
:meth:`StateStore.park` (the sink rejected them for good; they stay for inspection, until an
operator moves them back with :meth:`StateStore.requeue` or removes them with
:meth:`StateStore.purge`, or ``state.parked_retention`` ends: :meth:`StateStore.prune_parked`).

Cached counters (the outbox depth the cap is checked against) change only once the transaction
that changed the rows committed: a failed commit (a full disk) leaves them as they were.

Implementations: :mod:`exporter.state.sqlite` (one file, one process) and
:mod:`exporter.state.postgres` (shared by several replicas, which claim work with leases: the
``claim_*`` names). What both mean is written once, in :mod:`exporter.state.sql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from exporter.model import AlarmContext, OutboxItem

__all__ = [
    "PHASES",
    "AlarmState",
    "CommitResult",
    "OutboxStats",
    "PollCommit",
    "QueuedRecord",
    "StateStore",
    "StoredSpanEvent",
]

#: active: followed; closing: terminal record seen, read until retire_after; retired: done;
#: expired: BlueKing no longer knows it (3324002).
PHASES = ("active", "closing", "retired", "expired")


@dataclass(frozen=True)
class AlarmState:
    alarm_id: str
    source: str  # "config" | "discovered"
    phase: str
    context: AlarmContext
    first_seen: float
    next_poll: float
    last_poll: float | None = None
    last_full_read: float | None = None
    terminal_at: float | None = None
    retired_at: float | None = None
    change_token: str | None = None
    records: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class QueuedRecord:
    """One row to enqueue: ``kind`` is the signal (``logs`` or ``spans``); ``payload`` the record:
    its OTLP bytes (logs: :func:`exporter.mapping.otlp.encode_log`) or its JSON."""

    kind: str
    uid: str
    payload: str | bytes
    #: the destination the row is for (``default``: ``export:``); one row per record and destination
    destination: str = "default"


@dataclass(frozen=True)
class StoredSpanEvent:
    """A flow record kept for the alarm's span (only when spans are exported)."""

    uid: str
    time_ns: int
    payload: str  # SpanEventData as JSON
    sliced: bool = False


@dataclass
class PollCommit:
    """Everything one poll of one alarm changes, applied atomically.

    ``seen`` are the uids to mark taken; ``queued`` the outbox rows for those of them that are new
    (a row whose uid was already seen is dropped: that is the de-duplication). ``span_events``
    are kept for the alarm's span; ``sliced`` marks stored span events as sent in a slice span.
    The alarm row is updated with ``phase``/``next_poll``/… when given.
    """

    alarm_id: str
    now: float
    seen: Sequence[str] = ()
    queued: Sequence[QueuedRecord] = ()
    span_events: Sequence[StoredSpanEvent] = ()
    sliced: Sequence[str] = ()
    extra_queued: Sequence[QueuedRecord] = ()  # not tied to a seen uid (spans)
    context: AlarmContext | None = None
    phase: str | None = None
    next_poll: float | None = None
    terminal_at: float | None = None
    change_token: str | None = None
    full_read: bool = False
    last_error: str | None = None
    clear_error: bool = True


@dataclass(frozen=True)
class CommitResult:
    inserted: int  # new outbox rows
    overflow: bool = False  # nothing was committed: the outbox is at max_queued_records
    #: destinations whose backlog was at max_queued_records: their rows of this commit were dropped
    #: (counted, logged), the other destinations' rows were committed
    overflowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutboxStats:
    depth: int  # queued, not parked
    parked: int
    oldest_enqueued_at: float | None
    by_kind: dict[str, int] = field(default_factory=dict)  # queued rows per signal
    parked_by_kind: dict[str, int] = field(default_factory=dict)
    #: per destination: (queued, parked, oldest enqueued_at of its queued rows)
    by_destination: dict[str, tuple[int, int, float | None]] = field(default_factory=dict)


class StateStore(Protocol):
    """The durable state. Methods are thread-safe and may block on disk I/O; none blocks forever.

    Errors: :class:`exporter.errors.StateError` (and subclasses) for a store that cannot be used.
    """

    path_or_url: str
    max_queued: int

    # -- alarms --------------------------------------------------------------------------------
    def upsert_alarm(
        self, ctx: AlarmContext, *, source: str, now: float, due: bool, change_token: str | None = None
    ) -> AlarmState:
        """Follow ``ctx.alarm_id`` (insert, or refresh context; a retired alarm made ``due`` is
        followed again). ``due`` schedules a poll now. Returns the stored state."""
        ...

    def get_alarm(self, alarm_id: str) -> AlarmState | None: ...

    def list_alarms(self, phases: Sequence[str] = ("active", "closing")) -> list[AlarmState]: ...

    def alarm_ids(self, phases: Sequence[str] = ("active", "closing"), source: str | None = None) -> list[str]:
        """The ids of the alarms in ``phases`` (of ``source`` when given): what counting and
        syncing need, without decoding every alarm's context."""
        ...

    def claim_due(self, now: float, limit: int, after: tuple[float, str] | None = None) -> list[AlarmState]:
        """Alarms in phase active/closing whose ``next_poll`` has come, oldest first (by
        ``(next_poll, alarm_id)``); ``after``: only those ordered after that key (the next page)."""
        ...

    def seen_uids(self, alarm_id: str) -> set[str]: ...

    def commit_poll(self, commit: PollCommit) -> CommitResult: ...

    def span_events(self, alarm_id: str) -> list[StoredSpanEvent]: ...

    def prune(self, now: float, retired_before: float) -> int:
        """Forget retired alarms (and their seen uids and span events) retired before the cut-off."""
        ...

    # -- outbox --------------------------------------------------------------------------------
    def claim_outbox(self, kind: str, limit: int, destination: str = "default") -> list[OutboxItem]:
        """The oldest queued (not parked) rows of ``kind`` for ``destination``."""
        ...

    def ack(self, seqs: Sequence[int]) -> None:
        """Delete delivered rows."""
        ...

    def release(self, seqs: Sequence[int]) -> None:
        """Count a failed attempt; the rows stay queued."""
        ...

    def park(self, seqs: Sequence[int], reason: str, now: float) -> None:
        """Set rows aside for good (the sink rejected them); kept for inspection."""
        ...

    def outbox_stats(self) -> OutboxStats: ...

    def requeue(
        self, *, signal: str | None = None, parked_before: float | None = None, destination: str | None = None
    ) -> int:
        """Move parked rows (of ``signal``; parked before ``parked_before``) back into the outbox,
        as fresh rows in their original order; returns how many."""
        ...

    def purge(self, signal: str, *, parked: bool = False) -> int:
        """Delete the queued (or, with ``parked``, the parked) rows of ``signal``; returns how many."""
        ...

    def prune_parked(self, parked_before: float) -> int:
        """Delete rows parked before the cut-off (``state.parked_retention``); returns how many."""
        ...

    # -- coordination between replicas ------------------------------------------------------------
    def acquire_role(self, role: str, now: float, ttl: float) -> bool:
        """Hold ``role`` (e.g. ``"discovery"``) for ``ttl`` seconds; True if this process holds it.

        A single-process store always answers True; a shared store grants it to one live replica
        at a time and lets it move on when the holder stops renewing it.
        """
        ...

    # -- small key/value facts (checkpoints, last successes, instance id) ---------------------
    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...
