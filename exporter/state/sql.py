"""What the SQLite and PostgreSQL stores both mean, written once.

The two stores keep the same tables with the same semantics; they differ in placeholders, in how
they take locks and in the statements only one of them has (leases, ``unnest``, pragmas). Here is
everything they share:

* who wrote a store (:data:`APP_ID`), which schema it has (:data:`SCHEMA_VERSION`), the checks on
  open and their messages (:func:`check_identity`), the meta rows a migration writes;
* the rule of a commit (:func:`plan_commit`: what is new, what the outbox cap refuses) and the
  ``UPDATE alarms`` it implies (:func:`alarm_update`);
* the rule of an upsert (:func:`refollow`, and the statement in :meth:`Statements.refollow`);
* what operators do to the outbox by hand or by retention (:meth:`Statements.requeue`,
  :meth:`Statements.delete_rows`: parked rows back into the outbox, rows removed);
* the statements whose text is the same up to placeholders (:class:`Statements`: :data:`SQLITE`,
  :data:`POSTGRES`), and decoding rows into the model.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.errors import StateCorruptError, StateSchemaError
from exporter.model import AlarmContext, OutboxItem
from exporter.state.base import AlarmState, PollCommit, QueuedRecord, StoredSpanEvent

__all__ = [
    "ALARM_COLUMNS",
    "ALARM_FIELDS",
    "APP_ID",
    "OUTBOX_COLUMNS",
    "OUTBOX_FIELDS",
    "POSTGRES",
    "SCHEMA_VERSION",
    "SQLITE",
    "CommitPlan",
    "Statements",
    "alarm_from_row",
    "alarm_update",
    "check_identity",
    "destination_stats",
    "outbox_item",
    "row_values",
    "outbox_where",
    "plan_commit",
    "refollow",
    "span_event_from_row",
]

#: ``meta.app``: a store without it was written by something else and is never touched
APP_ID = "bk-otel-exporter"
#: the schema this build writes; a store with a newer one is refused
SCHEMA_VERSION = 3

# Layout (schema 2): one outbox row per record and destination (a ``destination`` column), not a
# cursor per destination over one shared outbox. Each destination's rows are acknowledged, parked,
# requeued and capped on their own, with the same statements as before plus one equality; a
# cursor layout would need the slowest destination's cursor to decide when a row may go, and
# per-destination parking beside it. (The cost of the extra rows is not measured yet.)
#
# Schema 3: an ``encoded`` column holds a log record's OTLP bytes (encoded once, at poll time);
# ``payload`` is then empty. Rows queued before keep their JSON ``payload`` and are delivered
# from it (encoded at send time, as they were).

ALARM_FIELDS = (
    "alarm_id",
    "source",
    "phase",
    "context",
    "first_seen",
    "next_poll",
    "last_poll",
    "last_full_read",
    "terminal_at",
    "retired_at",
    "change_token",
    "records",
    "last_error",
)
ALARM_COLUMNS = ", ".join(ALARM_FIELDS)


# -- opening --------------------------------------------------------------------------------------
def check_identity(
    facts: Mapping[str, str], *, store: str, subject: str, elsewhere: str, newest: int = SCHEMA_VERSION
) -> int:
    """The schema version of an existing store, from its ``app`` and ``schema_version`` meta rows.

    ``store`` names the store in messages (``state store <where>``), ``subject`` what was or was
    not written by us (the store, or one schema of it), ``elsewhere`` where else to point the
    exporter. A store of another application or with an unreadable version is a
    StateCorruptError; one newer than this build (``newest``: the shared store has steps of its
    own) a StateSchemaError.
    """
    if facts.get("app") != APP_ID:
        raise StateCorruptError(f"{subject} was not written by {APP_ID}; refusing to touch it")
    try:
        version = int(facts.get("schema_version", "0"))
    except ValueError:
        raise StateCorruptError(f"{store}: unreadable schema version") from None
    if version > newest:
        raise StateSchemaError(
            f"{store} has schema version {version}, newer than this exporter "
            f"understands ({newest}); upgrade the exporter or use another {elsewhere}"
        )
    return version


class Statements:
    """The statements both stores run, in one driver's placeholder (``mark``)."""

    def __init__(self, mark: str) -> None:
        self.mark = mark
        m = mark
        self.identity = "SELECT key, value FROM meta WHERE key IN ('app', 'schema_version')"
        self.get_meta = f"SELECT value FROM meta WHERE key = {m}"
        self.set_meta = (
            f"INSERT INTO meta (key, value) VALUES ({m}, {m}) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self.initial_meta = f"INSERT INTO meta (key, value) VALUES ({m}, {m}), ({m}, {m}), ({m}, {m})"
        self.get_alarm = f"SELECT {ALARM_COLUMNS} FROM alarms WHERE alarm_id = {m}"
        self.insert_alarm = (
            "INSERT INTO alarms (alarm_id, source, phase, context, first_seen, next_poll, change_token) "
            f"VALUES ({m}, {m}, 'active', {m}, {m}, {m}, {m})"
        )
        self._refollow = (
            f"UPDATE alarms SET context = {m}, phase = {m}, next_poll = {m}, source = {m}, "
            f"change_token = COALESCE({m}, change_token), "
            f"terminal_at = CASE WHEN {m} = 'active' AND phase = 'retired' THEN NULL ELSE terminal_at END, "
            f"retired_at = CASE WHEN {m} IN ('active', 'closing') THEN NULL ELSE retired_at END "
            f"WHERE alarm_id = {m}"
        )
        self.seen_uids = f"SELECT uid FROM seen WHERE alarm_id = {m}"
        self.span_events = (
            f"SELECT uid, time_ns, payload, sliced FROM span_events WHERE alarm_id = {m} ORDER BY time_ns, uid"
        )
        self.count_queued = "SELECT count(*) AS n FROM outbox WHERE parked_at IS NULL"
        self.count_by_destination = (
            "SELECT destination, count(*) AS n FROM outbox WHERE parked_at IS NULL GROUP BY destination"
        )
        self.destination_stats = (
            "SELECT destination, parked_at IS NOT NULL AS parked, count(*) AS n, min(enqueued_at) AS oldest "
            "FROM outbox GROUP BY destination, parked_at IS NOT NULL"
        )
        self.counts_by_kind = (
            "SELECT kind, parked_at IS NOT NULL AS parked, count(*) AS n, min(enqueued_at) AS oldest "
            "FROM outbox GROUP BY kind, parked_at IS NOT NULL"
        )

    def meta_after(self, step: int) -> list[tuple[str, tuple[object, ...]]]:
        """The meta rows migration ``step`` writes: who wrote the store (at its creation), its version."""
        out: list[tuple[str, tuple[object, ...]]] = []
        if step == 1:
            facts = ("app", APP_ID, "instance_id", uuid.uuid4().hex, "created_at", str(time.time()))
            out.append((self.initial_meta, facts))
        out.append((self.set_meta, ("schema_version", str(step))))
        return out

    def refollow(
        self, current: AlarmState, ctx: AlarmContext, *, source: str, now: float, due: bool, change_token: str | None
    ) -> tuple[str, tuple[object, ...]]:
        """The ``UPDATE alarms`` for ``ctx`` upserted again while ``current`` is stored (see
        :func:`refollow`): a reopened alarm forgets its end, its terminal time only if it was retired."""
        phase, next_poll, new_source = refollow(current, source=source, now=now, due=due)
        params = (ctx.to_json(), phase, next_poll, new_source, change_token, phase, phase, ctx.alarm_id)
        return self._refollow, params

    def requeue(
        self, *, signal: str | None, parked_before: float | None, destination: str | None = None
    ) -> tuple[str, list[object]]:
        """Parked rows (of ``signal``, parked before ``parked_before``) back into the outbox, as
        fresh rows: no park reason, no attempts counted. Their ``seq`` stays, so they go out in
        their original order, ahead of newer rows."""
        where, params = outbox_where(
            self.mark, parked=True, signal=signal, parked_before=parked_before, destination=destination
        )
        return f"UPDATE outbox SET parked_at = NULL, park_reason = NULL, attempts = 0 WHERE {where}", params

    def delete_rows(
        self, *, parked: bool, signal: str | None = None, parked_before: float | None = None
    ) -> tuple[str, list[object]]:
        """Delete queued (``parked`` False) or parked rows, of ``signal``, parked before ``parked_before``."""
        where, params = outbox_where(self.mark, parked=parked, signal=signal, parked_before=parked_before)
        return f"DELETE FROM outbox WHERE {where}", params


def outbox_where(
    mark: str, *, parked: bool, signal: str | None, parked_before: float | None = None, destination: str | None = None
) -> tuple[str, list[object]]:
    """The ``WHERE`` of the operator's outbox statements: queued or parked rows, of one signal
    (``kind``) when given, parked before a time when given (parked rows only)."""
    clauses = ["parked_at IS NOT NULL" if parked else "parked_at IS NULL"]
    params: list[object] = []
    if signal is not None:
        clauses.append(f"kind = {mark}")
        params.append(signal)
    if destination is not None:
        clauses.append(f"destination = {mark}")
        params.append(destination)
    if parked_before is not None:
        if not parked:
            raise ValueError("parked_before applies to parked rows only")
        clauses.append(f"parked_at < {mark}")
        params.append(parked_before)
    return " AND ".join(clauses), params


SQLITE = Statements("?")
POSTGRES = Statements("%s")


# -- rows -----------------------------------------------------------------------------------------
def alarm_from_row(row: Any) -> AlarmState:
    """An ``alarms`` row (sqlite3.Row or a psycopg dict row) as an AlarmState."""
    return AlarmState(
        alarm_id=row["alarm_id"],
        source=row["source"],
        phase=row["phase"],
        context=AlarmContext.from_json(row["context"]),
        first_seen=row["first_seen"],
        next_poll=row["next_poll"],
        last_poll=row["last_poll"],
        last_full_read=row["last_full_read"],
        terminal_at=row["terminal_at"],
        retired_at=row["retired_at"],
        change_token=row["change_token"],
        records=row["records"],
        last_error=row["last_error"],
    )


def span_event_from_row(row: Any) -> StoredSpanEvent:
    """A ``span_events`` row (uid, time_ns, payload, sliced) as a StoredSpanEvent."""
    return StoredSpanEvent(row["uid"], row["time_ns"], row["payload"], bool(row["sliced"]))


def destination_stats(rows: Sequence[Any]) -> dict[str, tuple[int, int, float | None]]:
    """``(queued, parked, oldest queued enqueued_at)`` per destination, from
    :attr:`Statements.destination_stats` rows."""
    out: dict[str, tuple[int, int, float | None]] = {}
    for r in rows:
        queued, parked, oldest = out.get(r["destination"], (0, 0, None))
        if r["parked"]:
            parked += int(r["n"])
        else:
            queued, oldest = queued + int(r["n"]), r["oldest"]
        out[r["destination"]] = (queued, parked, oldest)
    return out


#: the ``outbox`` columns :func:`outbox_item` reads
OUTBOX_FIELDS = ("seq", "kind", "uid", "alarm_id", "payload", "encoded", "enqueued_at", "attempts")
OUTBOX_COLUMNS = ", ".join(OUTBOX_FIELDS)


def outbox_item(row: Any) -> OutboxItem:
    """An ``outbox`` row (:data:`OUTBOX_COLUMNS`) as an OutboxItem."""
    encoded = row["encoded"]
    return OutboxItem(
        row["seq"],
        row["kind"],
        row["uid"],
        row["alarm_id"],
        row["payload"],
        None if encoded is None else bytes(encoded),
        row["enqueued_at"],
        row["attempts"],
    )


def row_values(row: QueuedRecord) -> tuple[str, bytes | None]:
    """``(payload, encoded)`` of a row to insert: bytes go to ``encoded``, JSON to ``payload``."""
    if isinstance(row.payload, bytes):
        return "", row.payload
    return row.payload, None


# -- commits --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommitPlan:
    """What one poll commit writes, once the store said which of its uids are seen already."""

    seen: list[str]  # the uids to mark seen, each once
    fresh: list[str]  # the queued uids not seen before: counted in alarms.records
    rows: list[QueuedRecord]  # the outbox rows to insert: one per fresh record and destination, and the extra ones
    overflowed: tuple[str, ...] = ()  # destinations at their cap: their rows were left out


def plan_commit(
    commit: PollCommit, known: Callable[[list[str]], set[str]], depths: Mapping[str, int], max_queued: int
) -> CommitPlan | None:
    """Plan ``commit`` against the outbox ``depths`` (queued rows per destination); None when the
    cap refuses it whole.

    ``known`` answers which of the given uids are seen already (asked only when some are queued).
    A queued row whose uid was seen before is dropped: that is the de-duplication. The cap applies
    per destination: the rows of a destination whose backlog would pass ``max_queued`` are left
    out (``overflowed``: counted and logged by the caller) while the others' are written, so one
    destination's outage never holds the others. When every destination with rows is over, nothing
    is written: the records stay unseen and are read again later. An empty backlog takes a poll
    whole even when it alone exceeds the cap: otherwise an alarm with more new records than
    ``max_queued`` could never be taken.
    """
    queued: dict[str, list[QueuedRecord]] = {}
    for q in commit.queued:
        queued.setdefault(q.uid, []).append(q)
    candidates = list(dict.fromkeys(uid for uid in commit.seen if uid in queued))
    seen_before = known(candidates) if candidates else set()
    fresh = [uid for uid in candidates if uid not in seen_before]
    # one row per record and destination, even when an answer held the same record twice
    wanted = list({(r.destination, r.kind, r.uid): r for uid in fresh for r in queued[uid]}.values())
    wanted.extend(commit.extra_queued)
    adding: dict[str, int] = {}
    for row in wanted:
        adding[row.destination] = adding.get(row.destination, 0) + 1
    over = tuple(sorted(d for d, n in adding.items() if depths.get(d, 0) > 0 and depths.get(d, 0) + n > max_queued))
    rows = [row for row in wanted if row.destination not in over]
    if wanted and not rows:
        return None
    return CommitPlan(seen=list(dict.fromkeys(commit.seen)), fresh=fresh, rows=rows, overflowed=over)


def alarm_update(c: PollCommit, new_records: int, mark: str, extra: Sequence[str] = ()) -> tuple[str, list[object]]:
    """The ``UPDATE alarms`` statement a poll commit implies. ``mark`` is the driver's placeholder."""
    sets = [f"last_poll = {mark}", f"records = records + {mark}", *extra]
    params: list[object] = [c.now, new_records]
    for column, value in (
        ("context", c.context.to_json() if c.context else None),
        ("phase", c.phase),
        ("next_poll", c.next_poll),
        ("terminal_at", c.terminal_at),
        ("change_token", c.change_token),
    ):
        if value is not None:
            sets.append(f"{column} = {mark}")
            params.append(value)
    if c.full_read:
        sets.append(f"last_full_read = {mark}")
        params.append(c.now)
    if c.phase in ("retired", "expired"):
        sets.append(f"retired_at = {mark}")
        params.append(c.now)
    if c.last_error is not None:
        sets.append(f"last_error = {mark}")
        params.append(c.last_error)
    elif c.clear_error:
        sets.append("last_error = NULL")
    params.append(c.alarm_id)
    return f"UPDATE alarms SET {', '.join(sets)} WHERE alarm_id = {mark}", params


def refollow(current: AlarmState, *, source: str, now: float, due: bool) -> tuple[str, float, str]:
    """``(phase, next_poll, source)`` for an alarm that is upserted again.

    ``due`` makes it poll now, and follows a retired alarm again (reopened), and an expired one
    (BlueKing answered 3324002 once, but discovery lists it, or ``alarms.ids`` names it, again):
    it resumes where it was, ``closing`` when its end was seen, else ``active``. A configured
    alarm stays ``config`` when discovery also reports it.
    """
    phase = current.phase
    if due and phase == "retired":
        phase = "active"
    elif due and phase == "expired":
        phase = "closing" if current.terminal_at is not None else "active"
    next_poll = min(current.next_poll, now) if due else current.next_poll
    new_source = "config" if "config" in (current.source, source) else source
    return phase, next_poll, new_source
