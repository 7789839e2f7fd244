"""The shared store's StateStore: the alarms, seen uids, span events and outbox of
:mod:`exporter.state.sqlite` in PostgreSQL's SQL, claimed under this replica's leases
(:mod:`exporter.state.postgres.leases`). See the package docstring for the design."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from exporter.errors import StateError
from exporter.model import AlarmContext, OutboxItem
from exporter.state.base import AlarmState, CommitResult, OutboxStats, PollCommit, StoredSpanEvent
from exporter.state.postgres.leases import Replica
from exporter.state.postgres.pool import Cursor, Database
from exporter.state.postgres.schema import open_schema
from exporter.state.sql import (
    ALARM_COLUMNS,
    POSTGRES,
    SCHEMA_VERSION,
    alarm_from_row,
    alarm_update,
    destination_stats,
    outbox_item,
    plan_commit,
    span_event_from_row,
)

__all__ = ["SCHEMA_VERSION", "PostgresStateStore"]

log = logging.getLogger("exporter.state.postgres")


class PostgresStateStore:
    """:class:`exporter.state.base.StateStore` on a PostgreSQL database shared by several replicas.

    ``url`` is a ``postgresql://`` URL (libpq parameters in the query string apply, e.g.
    ``?sslmode=verify-full`` or ``?options=-csearch_path%3Dexporter`` for a dedicated schema);
    ``lease`` how long a claim lasts without renewal; ``owner`` this replica's name (default
    ``host:pid:random``). ``max_hold`` bounds how long the heartbeat keeps renewing one claim
    (default ``max(10 * lease, 60)``); ``steal_after`` how overdue an alarm another live replica is
    preferred for must be before this one takes it (default ``max(lease / 2, 5)``: longer than the
    daemon's poll tick, so a healthy replica keeps its share); ``depth_refresh`` how old the cached
    outbox depth may get.
    """

    def __init__(
        self,
        url: str,
        *,
        max_queued: int,
        lease: float,
        owner: str | None = None,
        pool_size: int = 4,
        max_hold: float | None = None,
        steal_after: float | None = None,
        depth_refresh: float = 1.0,
    ) -> None:
        if lease <= 0:
            raise StateError("state.lease must be positive")
        self._db = Database(url, pool_size=pool_size)
        self.path_or_url = self._db.label
        self.max_queued = max_queued
        self._replica = Replica(self._db, lease=lease, owner=owner, max_hold=max_hold, steal_after=steal_after)
        self.lease, self.owner = self._replica.lease, self._replica.owner
        self.host, self.pid = self._replica.host, self._replica.pid
        self._depth_refresh = depth_refresh
        self._mu = threading.Lock()  # guards the cached depth
        self._depth: dict[str, int] = {}
        self._depth_at = 0.0
        self._depth_counting = False
        try:
            self._db.run("open", lambda cur: open_schema(cur, self.path_or_url))
            self._refresh_depth()
        except BaseException:
            self._db.close()
            raise

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas seen in the last hour: who, where, how alive, and what each holds now."""
        return self._replica.replicas()

    # -- alarms -------------------------------------------------------------------------------------
    def upsert_alarm(
        self, ctx: AlarmContext, *, source: str, now: float, due: bool, change_token: str | None = None
    ) -> AlarmState:
        select = f"{POSTGRES.get_alarm} FOR UPDATE"

        def upsert(cur: Cursor) -> AlarmState:
            cur.execute(select, (ctx.alarm_id,))
            row = cur.fetchone()
            if row is None:
                # Replicas starting together all insert the configured alarms: one wins.
                cur.execute(
                    f"{POSTGRES.insert_alarm} ON CONFLICT (alarm_id) DO NOTHING RETURNING {ALARM_COLUMNS}",
                    (ctx.alarm_id, source, ctx.to_json(), now, now, change_token),
                )
                inserted = cur.fetchone()
                if inserted is not None:
                    return alarm_from_row(inserted)
                cur.execute(select, (ctx.alarm_id,))
                row = cur.fetchone()
                assert row is not None  # the conflicting insert committed it
            current = alarm_from_row(row)
            sql, params = POSTGRES.refollow(current, ctx, source=source, now=now, due=due, change_token=change_token)
            cur.execute(f"{sql} RETURNING {ALARM_COLUMNS}", params)
            out = cur.fetchone()
            assert out is not None
            return alarm_from_row(out)

        return self._db.run("upsert_alarm", upsert)

    def get_alarm(self, alarm_id: str) -> AlarmState | None:
        def query(cur: Cursor) -> AlarmState | None:
            cur.execute(POSTGRES.get_alarm, (alarm_id,))
            row = cur.fetchone()
            return alarm_from_row(row) if row else None

        return self._db.run("get_alarm", query)

    def list_alarms(self, phases: Sequence[str] = ("active", "closing")) -> list[AlarmState]:
        def query(cur: Cursor) -> list[AlarmState]:
            cur.execute(
                f"SELECT {ALARM_COLUMNS} FROM alarms WHERE phase = ANY(%s::text[]) ORDER BY first_seen, alarm_id",
                (list(phases),),
            )
            return [alarm_from_row(r) for r in cur.fetchall()]

        return self._db.run("list_alarms", query)

    def claim_due(self, now: float, limit: int) -> list[AlarmState]:
        """Lease up to ``limit`` due alarms, oldest first, spread over the live replicas: see
        :meth:`exporter.state.postgres.leases.Replica.claim_due`."""
        return self._replica.claim_due(now, limit)

    def seen_uids(self, alarm_id: str) -> set[str]:
        def query(cur: Cursor) -> set[str]:
            cur.execute(POSTGRES.seen_uids, (alarm_id,))
            return {r["uid"] for r in cur.fetchall()}

        return self._db.run("seen_uids", query)

    def commit_poll(self, commit: PollCommit) -> CommitResult:
        cid = commit.alarm_id
        depth = self._queued_depth() if (commit.queued or commit.extra_queued) else {}

        def apply(cur: Cursor) -> tuple[list[str], bool, tuple[str, ...]] | None:
            # The alarm row lock serialises every commit of one alarm, across replicas.
            cur.execute("SELECT lease_owner FROM alarms WHERE alarm_id = %s FOR UPDATE", (cid,))
            row = cur.fetchone()
            stolen = row is not None and row["lease_owner"] not in (None, self.owner)

            def known(uids: list[str]) -> set[str]:
                cur.execute("SELECT uid FROM seen WHERE alarm_id = %s AND uid = ANY(%s::text[])", (cid, uids))
                return {r["uid"] for r in cur.fetchall()}

            plan = plan_commit(commit, known, depth, self.max_queued)
            if plan is None:
                return None
            if plan.seen:
                cur.execute(
                    "INSERT INTO seen (alarm_id, uid) SELECT %s, u FROM unnest(%s::text[]) AS u ON CONFLICT DO NOTHING",
                    (cid, plan.seen),
                )
            inserted: list[str] = []
            rows = plan.rows
            if rows:
                cur.execute(
                    "INSERT INTO outbox (kind, uid, alarm_id, payload, enqueued_at, destination) "
                    "SELECT k, u, %s, p, %s, d FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                    "WITH ORDINALITY AS t(k, u, p, d, n) ORDER BY n "
                    "ON CONFLICT (destination, kind, uid) DO NOTHING RETURNING destination",
                    (
                        cid,
                        commit.now,
                        [r.kind for r in rows],
                        [r.uid for r in rows],
                        [r.payload for r in rows],
                        [r.destination for r in rows],
                    ),
                )
                inserted = [r["destination"] for r in cur.fetchall()]
            if commit.span_events:
                events = commit.span_events
                cur.execute(
                    "INSERT INTO span_events (alarm_id, uid, time_ns, payload) "
                    "SELECT %s, u, t, p FROM unnest(%s::text[], %s::bigint[], %s::text[]) AS x(u, t, p) "
                    "ON CONFLICT DO NOTHING",
                    (cid, [e.uid for e in events], [e.time_ns for e in events], [e.payload for e in events]),
                )
            if commit.sliced:
                cur.execute(
                    "UPDATE span_events SET sliced = true WHERE alarm_id = %s AND uid = ANY(%s::text[])",
                    (cid, list(commit.sliced)),
                )
            if stolen:
                # Our lease expired and another replica claimed the alarm while we were polling it
                # (we froze, or lost the database for longer than the lease). What we read is still
                # true, and writing it is safe: this transaction holds the alarm row lock, so it runs
                # strictly before or after the other replica's commit; "fresh" was computed under
                # that lock, and seen/outbox inserts are ON CONFLICT DO NOTHING on (alarm_id, uid) and
                # (kind, uid). Whichever commit comes second finds the records already seen and
                # enqueues nothing: no record is lost and none is queued twice. The lifecycle part
                # (phase, next_poll, context, errors) is left to the lease holder, which read the
                # alarm after us; we only count the records we added.
                cur.execute("UPDATE alarms SET records = records + %s WHERE alarm_id = %s", (len(plan.fresh), cid))
            else:
                cur.execute(
                    *alarm_update(commit, len(plan.fresh), POSTGRES.mark, ("lease_owner = NULL", "lease_until = NULL"))
                )
            return inserted, stolen, plan.overflowed

        outcome = self._db.run("commit_poll", apply)
        if outcome is None:
            return CommitResult(inserted=0, overflow=True)
        inserted, stolen, overflowed = outcome
        self._moved(inserted, +1)
        self._replica.polled(cid, counted=not stolen)
        if stolen:
            log.warning(
                "alarm %s: our lease lapsed and another replica took it over; records kept, lifecycle left to it",
                cid,
            )
        return CommitResult(inserted=len(inserted), overflowed=overflowed)

    def span_events(self, alarm_id: str) -> list[StoredSpanEvent]:
        def query(cur: Cursor) -> list[StoredSpanEvent]:
            cur.execute(POSTGRES.span_events, (alarm_id,))
            return [span_event_from_row(r) for r in cur.fetchall()]

        return self._db.run("span_events", query)

    def prune(self, now: float, retired_before: float) -> int:
        def delete(cur: Cursor) -> int:
            cur.execute(
                "WITH gone AS (DELETE FROM alarms WHERE phase IN ('retired', 'expired') AND retired_at < %s "
                "RETURNING alarm_id), "
                "s AS (DELETE FROM seen WHERE alarm_id IN (SELECT alarm_id FROM gone)), "
                "e AS (DELETE FROM span_events WHERE alarm_id IN (SELECT alarm_id FROM gone)) "
                "SELECT count(*) AS n FROM gone",
                (retired_before,),
            )
            row = cur.fetchone()
            return int(row["n"]) if row else 0

        return self._db.run("prune", delete)

    # -- outbox -------------------------------------------------------------------------------------
    def _count_queued(self, cur: Cursor) -> dict[str, int]:
        cur.execute(POSTGRES.count_by_destination)
        return {r["destination"]: int(r["n"]) for r in cur.fetchall()}

    def _moved(self, destinations: Sequence[object], sign: int) -> None:
        """Committed rows of these destinations joined (+1) or left (-1) the queue: the cached depths."""
        with self._mu:
            for destination in destinations:
                key = str(destination)
                self._depth[key] = self._depth.get(key, 0) + sign

    def _refresh_depth(self) -> dict[str, int]:
        depth = self._db.run("outbox depth", self._count_queued)
        with self._mu:
            self._depth, self._depth_at = depth, time.monotonic()
        return depth

    def _queued_depth(self) -> dict[str, int]:
        """The outbox depth for the cap: cached, recounted at most every ``depth_refresh`` seconds
        (by one thread; the others use the cached value meanwhile)."""
        with self._mu:
            if self._depth_counting or time.monotonic() - self._depth_at < self._depth_refresh:
                return self._depth
            self._depth_counting = True
        try:
            return self._refresh_depth()
        finally:
            with self._mu:
                self._depth_counting = False

    def claim_outbox(self, kind: str, limit: int, destination: str = "default") -> list[OutboxItem]:
        """Lease the oldest queued (not parked) rows of ``kind`` for ``destination`` that no other
        live replica holds."""
        return [outbox_item(r) for r in self._replica.claim_outbox(kind, limit, destination)]

    def ack(self, seqs: Sequence[int]) -> None:
        """Delete delivered rows (whoever holds them now: they were delivered)."""
        if not seqs:
            return

        def delete(cur: Cursor) -> list[tuple[str, float | None]]:
            cur.execute(
                "DELETE FROM outbox WHERE seq = ANY(%s::bigint[]) RETURNING destination, parked_at", (list(seqs),)
            )
            return [(r["destination"], r["parked_at"]) for r in cur.fetchall()]

        gone = self._db.run("ack", delete)
        self._replica.let_go(seqs, acked=len(gone))
        self._moved([d for d, parked_at in gone if parked_at is None], -1)

    def release(self, seqs: Sequence[int]) -> None:
        """Count a failed attempt; the rows stay queued, and our lease on them ends."""
        if seqs:
            self._replica.release(seqs)

    def park(self, seqs: Sequence[int], reason: str, now: float) -> None:
        if not seqs:
            return

        def update(cur: Cursor) -> list[str]:
            cur.execute(
                "UPDATE outbox SET parked_at = %s, park_reason = %s, attempts = attempts + 1, "
                "lease_owner = NULL, lease_until = NULL "
                "WHERE parked_at IS NULL AND seq = ANY(%s::bigint[]) RETURNING destination",
                (now, reason, list(seqs)),
            )
            return [r["destination"] for r in cur.fetchall()]

        parked = self._db.run("park", update)
        self._replica.let_go(seqs)
        self._moved(parked, -1)

    def outbox_stats(self) -> OutboxStats:
        def query(cur: Cursor) -> OutboxStats:
            # Three index-backed aggregates in one statement (one snapshot, one round trip).
            cur.execute(
                "SELECT (SELECT COALESCE(json_object_agg(kind, n), '{}'::json) FROM (SELECT kind, count(*) AS n "
                "          FROM outbox WHERE parked_at IS NULL GROUP BY kind) k) AS by_kind, "
                "       (SELECT COALESCE(json_object_agg(kind, n), '{}'::json) FROM (SELECT kind, count(*) AS n "
                "          FROM outbox WHERE parked_at IS NOT NULL GROUP BY kind) p) AS parked_by_kind, "
                "       (SELECT min(enqueued_at) FROM outbox WHERE parked_at IS NULL) AS oldest"
            )
            row = cur.fetchone()
            assert row is not None
            cur.execute(POSTGRES.destination_stats)
            destinations = destination_stats(cur.fetchall())
            by_kind, parked_by_kind = _counts(row["by_kind"]), _counts(row["parked_by_kind"])
            return OutboxStats(
                depth=sum(by_kind.values()),
                parked=sum(parked_by_kind.values()),
                oldest_enqueued_at=row["oldest"],
                by_kind=by_kind,
                parked_by_kind=parked_by_kind,
                by_destination=destinations,
            )

        return self._db.run("outbox_stats", query)

    def requeue(
        self, *, signal: str | None = None, parked_before: float | None = None, destination: str | None = None
    ) -> int:
        def update(cur: Cursor) -> list[str]:
            sql, params = POSTGRES.requeue(signal=signal, parked_before=parked_before, destination=destination)
            cur.execute(sql + " RETURNING destination", params)
            return [r["destination"] for r in cur.fetchall()]

        moved = self._db.run("requeue", update)
        self._moved(moved, +1)  # committed
        return len(moved)

    def purge(self, signal: str, *, parked: bool = False) -> int:
        def delete(cur: Cursor) -> list[str]:
            sql, params = POSTGRES.delete_rows(parked=parked, signal=signal)
            cur.execute(sql + " RETURNING destination", params)
            return [r["destination"] for r in cur.fetchall()]

        deleted = self._db.run("purge", delete)
        if not parked:
            self._moved(deleted, -1)  # committed
        return len(deleted)

    def prune_parked(self, parked_before: float) -> int:
        def delete(cur: Cursor) -> int:
            cur.execute(*POSTGRES.delete_rows(parked=True, parked_before=parked_before))
            return max(0, cur.rowcount)

        return self._db.run("prune_parked", delete)

    # -- coordination between replicas ------------------------------------------------------------
    def acquire_role(self, role: str, now: float, ttl: float) -> bool:
        """Hold ``role`` for ``ttl`` seconds of the database clock (``now`` is not used: replicas'
        clocks may disagree); renewed by calling again; taken over by anyone once expired."""
        return self._replica.acquire_role(role, ttl)

    # -- meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        def query(cur: Cursor) -> str | None:
            cur.execute(POSTGRES.get_meta, (key,))
            row = cur.fetchone()
            return row["value"] if row else None

        return self._db.run("get_meta", query)

    def set_meta(self, key: str, value: str) -> None:
        def upsert(cur: Cursor) -> None:
            cur.execute(POSTGRES.set_meta, (key, value))

        self._db.run("set_meta", upsert)

    def close(self) -> None:
        """Stop the heartbeat, hand our leases and roles back (others take over at once instead of
        after the lease), mark this replica stopped, close the connections. Idempotent."""
        self._replica.close()
        self._db.close()


def _counts(value: Any) -> dict[str, int]:
    """A ``json_object_agg`` of counts per kind as a dict."""
    if isinstance(value, str):  # pragma: no cover - json is parsed by default
        value = json.loads(value)
    return {str(k): int(v) for k, v in value.items()}
