"""This process as one replica of the shared store: its name, the claims it still works on, the
roles it holds, and the heartbeat that keeps them. See the package docstring (**Leases**,
**Roles**, **Replicas**)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from exporter.errors import StateError
from exporter.state.base import AlarmState
from exporter.state.postgres.pool import Cursor, Database
from exporter.state.sql import ALARM_FIELDS, alarm_from_row

__all__ = ["Replica"]

log = logging.getLogger("exporter.state.postgres")

T = TypeVar("T")
K = TypeVar("K", str, int)

#: how long replicas() keeps showing a replica after it was last seen
_RECENT = "interval '1 hour'"


class Replica:
    """One replica's claims and roles, on ``db``. Thread-safe.

    ``lease`` is how long a claim lasts without renewal; ``owner`` this replica's name (default
    ``host:pid:random``); ``max_hold`` bounds how long the heartbeat keeps renewing one claim
    (default ``max(10 * lease, 60)``); ``steal_after`` how overdue an alarm another live replica
    is preferred for must be before this one takes it (default ``max(lease / 2, 5)``).
    """

    def __init__(
        self,
        db: Database,
        *,
        lease: float,
        owner: str | None = None,
        max_hold: float | None = None,
        steal_after: float | None = None,
    ) -> None:
        self._db = db
        self.lease = float(lease)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = owner or f"{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self._beat_every = max(0.2, self.lease / 3)
        self._max_hold = max_hold if max_hold is not None else max(10 * self.lease, 60.0)
        self.steal_after = steal_after if steal_after is not None else max(self.lease / 2, 5.0)
        self._mu = threading.Lock()  # guards everything below
        self._held_alarms: dict[str, float] = {}  # claimed, not yet committed: monotonic claim time
        self._held_outbox: dict[int, float] = {}
        self._roles: set[str] = set()
        self._polls = 0  # not yet flushed to replicas.polls
        self._acked = 0
        self._touched_at: float | None = None  # last replicas upsert (None: never registered)
        self._closed = False
        self._stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._beat_failing = False

    # -- claims -------------------------------------------------------------------------------------
    def claim_due(self, now: float, limit: int) -> list[AlarmState]:
        """Lease up to ``limit`` due alarms (active/closing, ``next_poll <= now``), oldest first:
        those this replica is preferred for, and any overdue by ``steal_after``; never one another
        live replica holds.

        Preference spreads the polling. Each due alarm goes to the live replica ranking highest
        for it (rendezvous hashing: ``md5(owner/alarm_id)``, live = heartbeat within its lease), so
        every replica polls about an equal share, the same alarms from one interval to the next,
        and a joining or vanishing replica moves only its own share. Without it, claims are
        first-come: the replica whose scheduler tick happens to fall just after the alarms'
        (phase-locked) due times would take nearly all of them. No replica is told how many
        others run; each only compares itself with the live rows of ``replicas`` for each alarm.
        Preference never strands work: an alarm overdue by ``steal_after`` goes to whoever looks
        (a busy or dead preferred replica), so does one whose last poll failed (its preferred
        replica may be the one that cannot reach BlueKing), and ``force`` (``now`` = infinity)
        takes every alarm.
        """

        def claim(cur: Cursor) -> list[AlarmState]:
            cur.execute(
                "WITH live AS ("
                "  SELECT owner FROM replicas WHERE owner <> %(me)s AND stopped_at IS NULL"
                "    AND last_seen > now() - lease_seconds * interval '1 second'"
                "), due AS ("
                "  SELECT d.alarm_id FROM alarms d"
                "  WHERE d.phase IN ('active', 'closing') AND d.next_poll <= %(now)s"
                "    AND (d.lease_owner IS NULL OR d.lease_owner = %(me)s OR d.lease_until < now())"
                "    AND (d.last_error IS NOT NULL OR d.next_poll <= %(now)s - %(steal)s OR NOT EXISTS ("
                "      SELECT 1 FROM live WHERE md5(live.owner || '/' || d.alarm_id) > md5(%(me)s || '/' || d.alarm_id)"
                "    ))"
                "  ORDER BY d.next_poll, d.alarm_id LIMIT %(limit)s"
                "  FOR UPDATE OF d SKIP LOCKED"
                ") "
                "UPDATE alarms AS a SET lease_owner = %(me)s, lease_until = now() + %(lease)s * interval '1 second' "
                f"FROM due WHERE a.alarm_id = due.alarm_id RETURNING {', '.join('a.' + c for c in ALARM_FIELDS)}",
                {
                    "now": now,
                    "me": self.owner,
                    "limit": max(0, limit),
                    "lease": self.lease,
                    "steal": self.steal_after,
                },
            )
            return sorted((alarm_from_row(r) for r in cur.fetchall()), key=lambda a: (a.next_poll, a.alarm_id))

        claimed = self._claim("claim_due", claim)
        self._hold(self._held_alarms, [alarm.alarm_id for alarm in claimed])
        return claimed

    def claim_outbox(self, kind: str, limit: int, destination: str = "default") -> list[dict[str, Any]]:
        """Lease the oldest queued (not parked) rows of ``kind`` that no other live replica holds:
        their seq, kind, payload, enqueued_at and attempts, in seq order."""

        def claim(cur: Cursor) -> list[dict[str, Any]]:
            cur.execute(
                "WITH c AS ("
                "  SELECT seq FROM outbox WHERE destination = %(dest)s AND kind = %(kind)s AND parked_at IS NULL"
                "    AND (lease_owner IS NULL OR lease_owner = %(me)s OR lease_until < now())"
                "  ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
                ") "
                "UPDATE outbox AS o SET lease_owner = %(me)s, lease_until = now() + %(lease)s * interval '1 second' "
                "FROM c WHERE o.seq = c.seq RETURNING o.seq, o.kind, o.payload, o.enqueued_at, o.attempts",
                {"kind": kind, "dest": destination, "me": self.owner, "limit": max(0, limit), "lease": self.lease},
            )
            return sorted(cur.fetchall(), key=lambda r: r["seq"])

        rows = self._claim("claim_outbox", claim)
        self._hold(self._held_outbox, [r["seq"] for r in rows])
        return rows

    def release(self, seqs: Sequence[int]) -> None:
        """Count a failed attempt on these outbox rows; they stay queued, and our lease on them ends."""

        def update(cur: Cursor) -> None:
            cur.execute(
                "UPDATE outbox SET attempts = attempts + 1, "
                "lease_until = CASE WHEN lease_owner = %(me)s THEN NULL ELSE lease_until END, "
                "lease_owner = CASE WHEN lease_owner = %(me)s THEN NULL ELSE lease_owner END "
                "WHERE seq = ANY(%(seqs)s::bigint[])",
                {"me": self.owner, "seqs": list(seqs)},
            )

        self._db.run("release", update)
        self.let_go(seqs)

    def _claim(self, what: str, fn: Callable[[Cursor], T]) -> T:
        """Run a claim: ``fn`` in one transaction that also registers this replica (or marks it
        seen) when that is due; the first one starts the heartbeat."""
        touch = self._touch_due()

        def claim(cur: Cursor) -> T:
            if touch:
                self._touch(cur)
            return fn(cur)

        out = self._db.run(what, claim)
        if touch:
            self._touched()
        return out

    def _hold(self, held: dict[K, float], keys: Iterable[K]) -> None:
        """Keep renewing these claims (alarm ids or outbox seqs) until they are resolved."""
        stamp = time.monotonic()
        with self._mu:
            for key in keys:
                held[key] = stamp

    def polled(self, alarm_id: str, *, counted: bool) -> None:
        """The claim on ``alarm_id`` is committed; ``counted``: as a poll of this replica."""
        with self._mu:
            if self._held_alarms.pop(alarm_id, None) is not None and counted:
                self._polls += 1

    def let_go(self, seqs: Sequence[int], acked: int = 0) -> None:
        """The claims on these outbox rows are resolved, ``acked`` of them delivered."""
        with self._mu:
            for seq in seqs:
                self._held_outbox.pop(seq, None)
            self._acked += acked

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
                "SELECT r.owner, r.host, r.pid, "
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

    # -- the heartbeat ------------------------------------------------------------------------------
    def _touch_due(self) -> bool:
        with self._mu:
            return self._touched_at is None or time.monotonic() - self._touched_at >= self._beat_every

    def _touch(self, cur: Cursor, polls: int = 0, acked: int = 0) -> None:
        """Register this replica, or mark it seen now (and add the counters not yet flushed)."""
        cur.execute(
            "INSERT INTO replicas (owner, host, pid, lease_seconds, started_at, last_seen, polls, acked) "
            "VALUES (%s, %s, %s, %s, now(), now(), %s, %s) "
            "ON CONFLICT (owner) DO UPDATE SET last_seen = now(), stopped_at = NULL, "
            "lease_seconds = EXCLUDED.lease_seconds, "
            "polls = replicas.polls + EXCLUDED.polls, acked = replicas.acked + EXCLUDED.acked",
            (self.owner, self.host, self.pid, self.lease, polls, acked),
        )

    def _touched(self) -> None:
        with self._mu:
            first = self._touched_at is None
            self._touched_at = time.monotonic()
            if first and not self._closed and self._beat_thread is None:
                self._beat_thread = threading.Thread(target=self._beat_loop, name="state-heartbeat", daemon=True)
                self._beat_thread.start()
        if first:
            log.info("state store %s: this replica is %s (lease %.0fs)", self._db.label, self.owner, self.lease)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self._beat_every):
            try:
                self._beat()
            except StateError as exc:
                if not self._beat_failing:
                    log.warning("state store: heartbeat failed, will keep trying: %s", exc)
                self._beat_failing = True
            else:
                if self._beat_failing:
                    log.info("state store: heartbeat works again")
                self._beat_failing = False

    def _beat(self) -> None:
        """Mark this replica alive; renew the leases of the claims it still works on."""
        now = time.monotonic()
        with self._mu:
            # A claim held longer than max_hold was abandoned or is wedged: let its lease lapse.
            self._held_alarms = {k: t for k, t in self._held_alarms.items() if now - t <= self._max_hold}
            self._held_outbox = {k: t for k, t in self._held_outbox.items() if now - t <= self._max_hold}
            alarms, seqs = list(self._held_alarms), list(self._held_outbox)
            polls, acked = self._polls, self._acked
            self._polls = self._acked = 0

        def renew(cur: Cursor) -> None:
            self._touch(cur, polls, acked)
            if alarms:
                cur.execute(
                    "UPDATE alarms SET lease_until = now() + %s * interval '1 second' "
                    "WHERE lease_owner = %s AND alarm_id = ANY(%s::text[])",
                    (self.lease, self.owner, alarms),
                )
            if seqs:
                cur.execute(
                    "UPDATE outbox SET lease_until = now() + %s * interval '1 second' "
                    "WHERE lease_owner = %s AND seq = ANY(%s::bigint[])",
                    (self.lease, self.owner, seqs),
                )

        try:
            self._db.run("heartbeat", renew)
        except StateError:
            with self._mu:  # flush them next time
                self._polls += polls
                self._acked += acked
            raise
        self._touched()

    def close(self) -> None:
        """Stop the heartbeat, hand our leases and roles back (others take over at once instead of
        after the lease), mark this replica stopped. Idempotent."""
        with self._mu:
            if self._closed:
                return
            self._closed = True
            thread, registered = self._beat_thread, self._touched_at is not None
            polls, acked = self._polls, self._acked
            self._held_alarms.clear()
            self._held_outbox.clear()
        self._stop.set()
        if thread is not None:
            thread.join(timeout=30)
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
        except StateError as exc:
            log.warning("state store: could not hand our leases back (they expire by themselves): %s", exc)
