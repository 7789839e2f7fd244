"""This process as one replica of the shared store: its name, the claims it still works on (each
with its fencing token), the roles it holds, and the heartbeat that keeps them. See the package
docstring (**Leases**, **Fencing**, **Spreading the work**, **Roles**, **Replicas**)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from exporter.state.base import AlarmState
from exporter.state.postgres.clock import DatabaseClock
from exporter.state.postgres.heartbeat import Heartbeat
from exporter.state.postgres.pool import Cursor, Database
from exporter.state.sql import ALARM_FIELDS, OUTBOX_FIELDS, alarm_from_row

__all__ = ["Replica"]

log = logging.getLogger("exporter.state.postgres")

T = TypeVar("T")

#: how long replicas() keeps showing a replica after it was last seen
_RECENT = "interval '1 hour'"

#: the live replicas, this one included (it is claiming): the ones the work is spread over
_LIVE = (
    "live AS (SELECT owner FROM replicas WHERE owner = %(me)s OR (stopped_at IS NULL"
    " AND last_seen > now() - lease_seconds * interval '1 second'))"
)


class Replica:
    """One replica's claims and roles, on ``db``. Thread-safe.

    ``lease`` is how long a claim lasts without renewal; ``owner`` this replica's name (default
    ``host:pid:random``); ``instance_id`` its ``service.instance.id`` (shown by ``status``);
    ``max_hold`` bounds how long the heartbeat keeps renewing one claim (default
    ``max(20 * lease, 600)``: a backstop against a wedged worker, far beyond any send or poll);
    ``steal_after`` how overdue work another live replica is preferred for must be before this one
    takes it (default ``max(lease / 2, 5)``). ``clock`` is the database's clock, as read locally.
    """

    def __init__(
        self,
        db: Database,
        *,
        lease: float,
        owner: str | None = None,
        instance_id: str = "unknown",
        max_hold: float | None = None,
        steal_after: float | None = None,
        clock: DatabaseClock | None = None,
    ) -> None:
        self._db = db
        self.lease = float(lease)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = owner or f"{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self.instance_id = instance_id
        self.clock = clock or DatabaseClock()
        self.steal_after = steal_after if steal_after is not None else max(self.lease / 2, 5.0)
        self._mu = threading.Lock()  # guards the claims and counters below
        # claimed, not yet resolved: key -> (fencing token, monotonic claim time)
        self._alarms: dict[str, tuple[int, float]] = {}
        self._outbox: dict[int, tuple[int, float]] = {}
        self._roles: set[str] = set()
        self._polls = 0  # not yet flushed to replicas.polls
        self._acked = 0
        self.heartbeat = Heartbeat(
            self,
            db.dedicated(),
            every=max(0.2, self.lease / 3),
            max_hold=max_hold if max_hold is not None else max(20 * self.lease, 600.0),
        )

    # -- claims -------------------------------------------------------------------------------------
    def claim_due(self, now: float, limit: int, after: tuple[float, str] | None = None) -> list[AlarmState]:
        """Lease up to ``limit`` due alarms (active/closing, ``next_poll <= now``), oldest first:
        those in this replica's share, and any overdue by ``steal_after``; never one another live
        replica holds. With ``after`` None (a cycle's first page) the claims of earlier calls are over
        and no longer renewed; with ``after`` (the cycle's next page, claimed while the previous
        page's last alarms are still being polled) they are kept until each alarm is polled.

        The shares are even: the followed alarms, ordered by ``md5(alarm_id)``, are cut into as many
        equal runs as there are live replicas (heartbeat within their lease), and the replica at
        position ``k`` (ordered by ``md5(owner)``) takes run ``k``. So every replica polls the same
        number of alarms (±1), the same ones from one interval to the next while the set of
        replicas and alarms stays; a replica that joins or leaves moves the cut points. No replica
        is told how many others run; each counts the live rows of ``replicas``. The share never
        strands work: an alarm overdue by ``steal_after`` goes to whoever looks (a busy, dead or
        cut-off replica), so does one whose last poll failed (its replica may be the one that
        cannot reach BlueKing), and ``force`` (``now`` = infinity) takes every alarm.
        """

        def claim(cur: Cursor) -> list[tuple[AlarmState, int]]:
            cur.execute(
                f"WITH {_LIVE}, slot AS ("
                "  SELECT count(*) AS n, count(*) FILTER (WHERE md5(owner) < md5(%(me)s)) AS k FROM live"
                "), ranked AS ("
                "  SELECT alarm_id, row_number() OVER (ORDER BY md5(alarm_id), alarm_id) - 1 AS r,"
                "    count(*) OVER () AS total FROM alarms WHERE phase IN ('active', 'closing')"
                "), due AS ("
                "  SELECT d.alarm_id FROM alarms d JOIN ranked USING (alarm_id) CROSS JOIN slot"
                "  WHERE d.phase IN ('active', 'closing') AND d.next_poll <= %(now)s"
                "    AND (%(after_id)s::text IS NULL"
                "      OR (d.next_poll, d.alarm_id) > (%(after_poll)s::double precision, %(after_id)s::text))"
                "    AND (d.lease_owner IS NULL OR d.lease_owner = %(me)s OR d.lease_until < now())"
                "    AND (d.last_error IS NOT NULL OR d.next_poll <= %(now)s - %(steal)s"
                "      OR (ranked.r * slot.n) / ranked.total = slot.k)"
                "  ORDER BY d.next_poll, d.alarm_id LIMIT %(limit)s"
                "  FOR UPDATE OF d SKIP LOCKED"
                ") "
                "UPDATE alarms AS a SET lease_owner = %(me)s, lease_until = now() + %(lease)s * interval '1 second', "
                "lease_token = nextval('lease_tokens') "
                f"FROM due WHERE a.alarm_id = due.alarm_id RETURNING {', '.join('a.' + c for c in ALARM_FIELDS)}, "
                "a.lease_token",
                {
                    "now": now,
                    "me": self.owner,
                    "limit": max(0, limit),
                    "lease": self.lease,
                    "steal": self.steal_after,
                    "after_poll": after[0] if after else None,
                    "after_id": after[1] if after else None,
                },
            )
            return [(alarm_from_row(r), int(r["lease_token"])) for r in cur.fetchall()]

        claimed = self._claim("claim_due", claim)
        stamp = time.monotonic()
        with self._mu:
            fresh = {alarm.alarm_id: (token, stamp) for alarm, token in claimed}
            if after is None:  # a cycle's first page: the claims of earlier cycles are over
                self._alarms = fresh
            else:  # the next page of the cycle: the previous page's alarms may still be in flight
                self._alarms.update(fresh)
        return sorted((alarm for alarm, _ in claimed), key=lambda a: (a.next_poll, a.alarm_id))

    def claim_outbox(self, kind: str, limit: int, destination: str = "default") -> list[dict[str, Any]]:
        """Lease the oldest queued (not parked) rows of ``kind`` that no other live replica holds:
        their :data:`~exporter.state.sql.OUTBOX_COLUMNS` and lease token, in seq order. The claims of the previous
        call are over (the sender resolves a batch before it claims the next one).

        Sending is spread like polling: a row goes first to the replica that queued it (so each
        sends about what it polled), and to anyone once it has waited ``steal_after`` (by the
        database clock) or its replica is no longer live.
        """

        def claim(cur: Cursor) -> list[dict[str, Any]]:
            cur.execute(
                f"WITH {_LIVE}, c AS ("
                "  SELECT seq FROM outbox o WHERE destination = %(dest)s AND kind = %(kind)s AND parked_at IS NULL"
                "    AND (lease_owner IS NULL OR lease_owner = %(me)s OR lease_until < now())"
                "    AND (enqueued_by IS NULL OR enqueued_by = %(me)s"
                "      OR enqueued_at < extract(epoch FROM now()) - %(steal)s"
                "      OR NOT EXISTS (SELECT 1 FROM live WHERE live.owner = o.enqueued_by))"
                "  ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
                ") "
                "UPDATE outbox AS o SET lease_owner = %(me)s, lease_until = now() + %(lease)s * interval '1 second', "
                "lease_token = nextval('lease_tokens') "
                "FROM c WHERE o.seq = c.seq "
                f"RETURNING {', '.join('o.' + c for c in OUTBOX_FIELDS)}, o.lease_token",
                {"kind": kind, "dest": destination, "me": self.owner, "limit": max(0, limit), "lease": self.lease}
                | {"steal": self.steal_after},
            )
            return sorted(cur.fetchall(), key=lambda r: r["seq"])

        rows = self._claim("claim_outbox", claim)
        stamp = time.monotonic()
        with self._mu:
            self._outbox = {int(r["seq"]): (int(r["lease_token"]), stamp) for r in rows}
        return rows

    def _claim(self, what: str, fn: Callable[[Cursor], T]) -> T:
        """Run a claim: ``fn`` in one transaction that also registers this replica (or marks it
        seen) when that is due; the first one starts the heartbeat."""
        touch = self.heartbeat.touch_due()

        def claim(cur: Cursor) -> T:
            if touch:
                cur.execute(*self.touch_statement())
            return fn(cur)

        out = self._db.run(what, claim)
        if touch:
            self.heartbeat.touched()
        return out

    # -- fencing: act only on what is still held under our token ------------------------------------
    def _fence(self, seqs: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """Our seqs split into (seqs with a token, their tokens, seqs we never claimed)."""
        with self._mu:
            held = [(s, self._outbox[s][0]) for s in seqs if s in self._outbox]
        known = {s for s, _ in held}
        return [s for s, _ in held], [t for _, t in held], [s for s in seqs if s not in known]

    def outbox_fenced(self, cur: Cursor, sql: str, seqs: Sequence[int], params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run ``sql`` (an UPDATE or DELETE on ``outbox o`` ending in ``WHERE`` or ``AND``) on the rows of
        ``seqs`` still held under our token (nobody claimed them since), or, for rows we never
        claimed, not under another replica's live lease. Returns the destination and (former)
        ``parked_at`` of each row it touched."""
        with_token, tokens, unclaimed = self._fence(seqs)
        cur.execute(
            f"{sql} ((o.seq, o.lease_token) IN (SELECT * FROM unnest(%(seqs)s::bigint[], %(tokens)s::bigint[])) "
            "OR (o.seq = ANY(%(unclaimed)s::bigint[]) AND (o.lease_owner IS NULL OR o.lease_owner = %(me)s "
            "OR o.lease_until < now()))) RETURNING o.destination, o.parked_at",
            {**params, "seqs": with_token, "tokens": tokens, "unclaimed": unclaimed, "me": self.owner},
        )
        touched = list(cur.fetchall())
        if len(touched) < len(seqs):
            log.warning(
                "outbox: %d of %d rows are no longer ours (our lease lapsed and another replica claimed "
                "them); left to it, we change nothing of them",
                len(seqs) - len(touched),
                len(seqs),
            )
        return touched

    def alarm_is_ours(self, cur: Cursor, alarm_id: str) -> bool:
        """Lock the alarm's row; whether our claim on it still stands (nobody claimed it since), or,
        when we never claimed it, whether no other replica holds a live lease on it."""
        cur.execute(
            "SELECT lease_owner, lease_token, lease_until < now() AS lapsed FROM alarms WHERE alarm_id = %s FOR UPDATE",
            (alarm_id,),
        )
        row = cur.fetchone()
        if row is None:
            return True
        with self._mu:
            held = self._alarms.get(alarm_id)
        if held is not None:
            return bool(row["lease_token"] == held[0])
        return row["lease_owner"] in (None, self.owner) or bool(row["lapsed"])

    def release(self, seqs: Sequence[int]) -> None:
        """Count a failed attempt on these outbox rows; they stay queued, and our lease on them ends."""
        self._db.run(
            "release",
            lambda cur: self.outbox_fenced(
                cur,
                "UPDATE outbox o SET attempts = attempts + 1, lease_owner = NULL, lease_until = NULL WHERE",
                seqs,
                {},
            ),
        )
        self.let_go(seqs)

    def polled(self, alarm_id: str, *, counted: bool) -> None:
        """The claim on ``alarm_id`` is resolved; ``counted``: as a poll of this replica."""
        with self._mu:
            if self._alarms.pop(alarm_id, None) is not None and counted:
                self._polls += 1

    def let_go(self, seqs: Sequence[int], acked: int = 0) -> None:
        """The claims on these outbox rows are resolved, ``acked`` of them delivered."""
        with self._mu:
            for seq in seqs:
                self._outbox.pop(seq, None)
            self._acked += acked

    def renewable(self, max_hold: float) -> tuple[list[int], list[int], int, int]:
        """For the heartbeat: the tokens of the alarm and outbox claims still worked on (claimed
        within ``max_hold``), and the poll and ack counts to flush (taken: give them back with
        :meth:`unflushed` if the flush fails)."""
        now = time.monotonic()
        with self._mu:
            alarms = [t for t, at in self._alarms.values() if now - at <= max_hold]
            rows = [t for t, at in self._outbox.values() if now - at <= max_hold]
            polls, acked = self._polls, self._acked
            self._polls = self._acked = 0
        return alarms, rows, polls, acked

    def unflushed(self, polls: int, acked: int) -> None:
        with self._mu:
            self._polls += polls
            self._acked += acked

    def touch_statement(self, polls: int = 0, acked: int = 0) -> tuple[str, dict[str, Any]]:
        """Register this replica, or mark it seen now (adding the counters not yet flushed)."""
        return (
            "INSERT INTO replicas (owner, host, pid, instance_id, lease_seconds, started_at, last_seen, polls, acked) "
            "VALUES (%(me)s, %(host)s, %(pid)s, %(instance)s, %(lease)s, now(), now(), %(polls)s, %(acked)s) "
            "ON CONFLICT (owner) DO UPDATE SET last_seen = now(), stopped_at = NULL, "
            "lease_seconds = EXCLUDED.lease_seconds, instance_id = EXCLUDED.instance_id, "
            "polls = replicas.polls + EXCLUDED.polls, acked = replicas.acked + EXCLUDED.acked",
            {
                "me": self.owner,
                "host": self.host,
                "pid": self.pid,
                "instance": self.instance_id,
                "lease": self.lease,
                "polls": polls,
                "acked": acked,
            },
        )

    # -- roles and replicas -------------------------------------------------------------------------
    def acquire_role(self, role: str, ttl: float) -> bool:
        """Hold ``role`` for ``ttl`` seconds of the database clock; renewed by calling again;
        taken over by anyone once expired."""

        def take(cur: Cursor) -> bool:
            cur.execute(
                "INSERT INTO roles AS r (role, owner, lease_until, acquired_at) "
                "VALUES (%(role)s, %(me)s, now() + %(ttl)s * interval '1 second', now()) "
                "ON CONFLICT (role) DO UPDATE SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until, "
                "acquired_at = CASE WHEN r.owner = EXCLUDED.owner THEN r.acquired_at ELSE EXCLUDED.acquired_at END "
                "WHERE r.owner = EXCLUDED.owner OR r.lease_until < now() "
                "RETURNING r.owner",
                {"role": role, "me": self.owner, "ttl": max(0.0, ttl)},
            )
            return cur.fetchone() is not None

        held = self._claim("acquire_role", take)
        with self._mu:
            changed = held != (role in self._roles)
            if held:
                self._roles.add(role)
            else:
                self._roles.discard(role)
        if changed:
            log.info("role %s: %s by this replica (%s)", role, "now held" if held else "no longer held", self.owner)
        return held

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas seen in the last hour: who, where, how alive, and what each holds now."""

        def query(cur: Cursor) -> list[dict[str, Any]]:
            cur.execute(
                "SELECT r.owner, r.host, r.pid, r.instance_id, "
                "extract(epoch FROM r.started_at)::float8 AS started_at, "
                "extract(epoch FROM r.last_seen)::float8 AS last_seen, "
                "extract(epoch FROM r.stopped_at)::float8 AS stopped_at, "
                "(r.stopped_at IS NULL AND r.last_seen > now() - r.lease_seconds * interval '1 second') AS alive, "
                "r.lease_seconds AS lease, r.polls, r.acked, "
                "(SELECT count(*) FROM alarms a WHERE a.lease_owner = r.owner AND a.lease_until > now()) "
                "AS alarms_owned, "
                "(SELECT count(*) FROM outbox o WHERE o.lease_owner = r.owner AND o.lease_until > now()) "
                "AS outbox_rows_owned, "
                "ARRAY(SELECT role FROM roles WHERE roles.owner = r.owner AND roles.lease_until > now() "
                "ORDER BY role) AS roles "
                f"FROM replicas r WHERE r.last_seen > now() - {_RECENT} ORDER BY r.started_at, r.owner"
            )
            return [dict(row) for row in cur.fetchall()]

        rows = self._db.run("replicas", query)
        for row in rows:
            row["roles"] = list(row["roles"] or [])
        return rows

    def close(self) -> None:
        """Stop the heartbeat, hand our leases and roles back (others take over at once instead of
        after the lease), mark this replica stopped. Idempotent."""
        registered = self.heartbeat.stop()
        if registered is None:
            return
        with self._mu:
            polls, acked = self._polls, self._acked
            self._polls = self._acked = 0
            self._alarms.clear()
            self._outbox.clear()
        if not registered:
            return

        def hand_back(cur: Cursor) -> None:
            me = (self.owner,)
            cur.execute("UPDATE alarms SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = %s", me)
            cur.execute("UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = %s", me)
            cur.execute("DELETE FROM roles WHERE owner = %s", me)
            cur.execute(
                "UPDATE replicas SET last_seen = now(), stopped_at = now(), polls = polls + %s, "
                "acked = acked + %s WHERE owner = %s",
                (polls, acked, self.owner),
            )

        try:
            self._db.run("close", hand_back)
        except Exception as exc:  # a StateError: the leases expire by themselves
            log.warning("state store: could not hand our leases back (they expire by themselves): %s", exc)
