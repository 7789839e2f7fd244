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
from exporter.state.postgres.clock import DatabaseClock
from exporter.state.postgres.identity import InstanceIdFile
from exporter.state.postgres.leases import Replica
from exporter.state.postgres.pool import Cursor, Database
from exporter.state.postgres.schema import PG_SCHEMA_VERSION as SCHEMA_VERSION
from exporter.state.postgres.schema import open_schema
from exporter.state.postgres.transport import transport_warning
from exporter.state.sql import (
    ALARM_COLUMNS,
    POSTGRES,
    alarm_from_row,
    alarm_update,
    destination_stats,
    outbox_item,
    plan_commit,
    row_values,
    span_event_from_row,
)

__all__ = ["SCHEMA_VERSION", "PostgresStateStore"]

log = logging.getLogger("exporter.state.postgres")


class PostgresStateStore:
    """:class:`exporter.state.base.StateStore` on a PostgreSQL database shared by several replicas.

    ``url`` is a ``postgresql://`` URL (libpq parameters in the query string apply, e.g.
    ``?sslmode=verify-full`` or ``?options=-csearch_path%3Dexporter`` for a dedicated schema);
    ``lease`` how long a claim lasts without renewal; ``owner`` this replica's name (default
    ``host:pid:random``). ``instance_id`` this replica's ``service.instance.id`` when the operator
    set one; else it is kept in ``instance_file`` (:mod:`~exporter.state.postgres.identity`), or
    fresh. ``max_hold`` bounds how long the heartbeat keeps renewing one claim (default
    ``max(20 * lease, 600)``); ``steal_after`` how overdue work another live replica is preferred
    for must be before this one takes it (default ``max(lease / 2, 5)``: longer than the daemon's
    poll tick, so a healthy replica keeps its share); ``depth_refresh`` how old the cached outbox
    depth may get. ``clock`` is the database server's clock as read here: the one the poller's due
    times and retirements must use (replicas' own clocks may disagree).
    """

    def __init__(
        self,
        url: str,
        *,
        max_queued: int,
        lease: float,
        owner: str | None = None,
        instance_id: str | None = None,
        instance_file: str | None = None,
        pool_size: int = 4,
        max_hold: float | None = None,
        steal_after: float | None = None,
        depth_refresh: float = 1.0,
    ) -> None:
        if lease <= 0:
            raise StateError("state.lease must be positive")
        # a transaction left open by a frozen replica keeps its row locks at most this long
        self._db = Database(url, pool_size=pool_size, idle_in_transaction=min(60.0, max(2 * lease, 10.0)))
        self.path_or_url = self._db.label
        self.max_queued = max_queued
        self._identity = InstanceIdFile(None if instance_id else instance_file)
        self.instance_id = instance_id or self._identity.id
        self.clock = DatabaseClock()
        self._replica = Replica(
            self._db,
            lease=lease,
            owner=owner,
            instance_id=self.instance_id,
            max_hold=max_hold,
            steal_after=steal_after,
            clock=self.clock,
        )
        self.lease, self.owner = self._replica.lease, self._replica.owner
        self.host, self.pid = self._replica.host, self._replica.pid
        self._depth_refresh = depth_refresh
        self._mu = threading.Lock()  # guards the cached depth
        self._depth: dict[str, int] = {}
        self._depth_at = 0.0
        self._depth_counting = False
        warning = transport_warning(url)
        if warning:
            log.warning("%s", warning)
        try:
            self._db.run("open", lambda cur: open_schema(cur, self.path_or_url))
            self._refresh_depth()
            self._read_clock()
        except BaseException:
            self._identity.close()
            self._db.close()
            raise

    def _read_clock(self) -> None:
        def query(cur: Cursor) -> float:
            cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS now")
            row = cur.fetchone()
            assert row is not None
            return float(row["now"])

        before = self.clock.local()
        server = self._db.run("clock", query)
        self.clock.sample(before, server, self.clock.local())

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

    def alarm_ids(self, phases: Sequence[str] = ("active", "closing"), source: str | None = None) -> list[str]:
        def query(cur: Cursor) -> list[str]:
            cur.execute(
                "SELECT alarm_id FROM alarms WHERE phase = ANY(%s::text[]) AND (%s::text IS NULL OR source = %s)",
                (list(phases), source, source),
            )
            return [r["alarm_id"] for r in cur.fetchall()]

        return self._db.run("alarm_ids", query)

    def claim_due(self, now: float, limit: int, after: tuple[float, str] | None = None) -> list[AlarmState]:
        """Lease up to ``limit`` due alarms, oldest first, spread over the live replicas: see
        :meth:`exporter.state.postgres.leases.Replica.claim_due`."""
        return self._replica.claim_due(now, limit, after)

    def seen_uids(self, alarm_id: str) -> set[str]:
        def query(cur: Cursor) -> set[str]:
            cur.execute(POSTGRES.seen_uids, (alarm_id,))
            return {r["uid"] for r in cur.fetchall()}

        return self._db.run("seen_uids", query)

    def commit_poll(self, commit: PollCommit) -> CommitResult:
        cid = commit.alarm_id
        depth = self._queued_depth() if (commit.queued or commit.extra_queued) else {}

        def apply(cur: Cursor) -> tuple[list[str], bool, tuple[str, ...]] | None:
            # The alarm row lock serialises every commit of one alarm, across replicas. A commit
            # whose claim was superseded (our lease lapsed, another replica claimed the alarm:
            # we froze, or lost the database for longer than the lease) is fenced off whole: the
            # records it read are still in BlueKing, and the new holder, which read after us from
            # the same stored state, commits them; writing ours could queue a span the holder
            # also queues, or undo its lifecycle.
            if not self._replica.alarm_is_ours(cur, cid):
                return [], True, ()

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
                values = [row_values(r) for r in rows]  # (payload, encoded) of each
                cur.execute(
                    "INSERT INTO outbox (kind, uid, alarm_id, payload, encoded, enqueued_at, enqueued_by, destination) "
                    "SELECT k, u, %s, p, e, %s, %s, d "
                    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[]) "
                    "WITH ORDINALITY AS t(k, u, p, e, d, n) ORDER BY n "
                    "ON CONFLICT (destination, kind, uid) DO NOTHING RETURNING destination",
                    (
                        cid,
                        commit.now,
                        self.owner,
                        [r.kind for r in rows],
                        [r.uid for r in rows],
                        [payload for payload, _ in values],
                        [encoded for _, encoded in values],
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
            cur.execute(
                *alarm_update(
                    commit,
                    len(plan.fresh),
                    POSTGRES.mark,
                    ("lease_owner = NULL", "lease_until = NULL", "lease_token = NULL"),
                )
            )
            return inserted, False, plan.overflowed

        outcome = self._db.run("commit_poll", apply)
        if outcome is None:
            return CommitResult(inserted=0, overflow=True)
        inserted, stolen, overflowed = outcome
        self._moved(inserted, +1)
        self._replica.polled(cid, counted=not stolen)
        if stolen:
            log.warning(
                "alarm %s: our lease lapsed and another replica claimed it; this poll's commit is abandoned "
                "(the new holder reads the same records from BlueKing)",
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
        """Delete delivered rows still held under our claim's token. A row another replica claimed
        since (our lease lapsed) is left to it: it sends it again (the crash window, same uid)
        rather than lose track of what it holds."""
        if not seqs:
            return
        gone = self._db.run("ack", lambda cur: self._replica.outbox_fenced(cur, "DELETE FROM outbox o WHERE", seqs, {}))
        self._replica.let_go(seqs, acked=len(gone))
        self._moved([r["destination"] for r in gone if r["parked_at"] is None], -1)

    def release(self, seqs: Sequence[int]) -> None:
        """Count a failed attempt; the rows stay queued, and our lease on them ends."""
        if seqs:
            self._replica.release(seqs)

    def park(self, seqs: Sequence[int], reason: str, now: float) -> None:
        if not seqs:
            return

        def update(cur: Cursor) -> list[str]:
            rows = self._replica.outbox_fenced(
                cur,
                "UPDATE outbox o SET parked_at = %(now)s, park_reason = %(reason)s, attempts = attempts + 1, "
                "lease_owner = NULL, lease_until = NULL WHERE o.parked_at IS NULL AND",
                seqs,
                {"now": now, "reason": reason},
            )
            return [r["destination"] for r in rows]

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
        self._identity.close()


def _counts(value: Any) -> dict[str, int]:
    """A ``json_object_agg`` of counts per kind as a dict."""
    if isinstance(value, str):  # pragma: no cover - json is parsed by default
        value = json.loads(value)
    return {str(k): int(v) for k, v in value.items()}
