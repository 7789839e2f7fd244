"""The heartbeat of one replica: every ``lease / 3`` it marks the replica alive, renews the claims
still worked on (under their fencing tokens only) and reads the database clock, in one statement
on a connection of its own, so it never waits behind the pool (a slow database, a burst of
commits) and costs one round trip. See the package docstring (**Leases**, **Clock**)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from exporter.errors import StateError
from exporter.state.postgres.pool import Cursor, Dedicated

if TYPE_CHECKING:
    from exporter.state.postgres.leases import Replica

__all__ = ["Heartbeat"]

log = logging.getLogger("exporter.state.postgres")


class Heartbeat:
    """The heartbeat thread of ``replica``, on its own connection ``conn``; started by the first
    claim (a store that never claims, such as ``status``, never registers)."""

    def __init__(self, replica: Replica, conn: Dedicated, *, every: float, max_hold: float) -> None:
        self._replica = replica
        self._conn = conn
        self.every = every
        self.max_hold = max_hold
        self._mu = threading.Lock()
        self._touched_at: float | None = None  # last replicas upsert (None: never registered)
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def touch_due(self) -> bool:
        with self._mu:
            return self._touched_at is None or time.monotonic() - self._touched_at >= self.every

    def touched(self) -> None:
        """The replica was marked seen just now; the first time, the thread starts."""
        r = self._replica
        with self._mu:
            first = self._touched_at is None
            self._touched_at = time.monotonic()
            if first and not self._closed and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="state-heartbeat", daemon=True)
                self._thread.start()
        if first:
            log.info(
                "state store: this replica is %s, service.instance.id %s (lease %.0fs)",
                r.owner,
                r.instance_id,
                r.lease,
            )

    def _loop(self) -> None:
        delay = self.every
        while not self._stop.wait(delay):
            started = time.monotonic()
            try:
                self.beat()
            except StateError as exc:
                if not self._failing:
                    log.warning("state store: heartbeat failed, will keep trying: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("state store: heartbeat works again")
                self._failing = False
            delay = max(0.05, self.every - (time.monotonic() - started))  # a slow beat shortens the wait

    def beat(self) -> None:
        """Mark the replica alive, renew its claims still in work, read the database clock."""
        r = self._replica
        alarms, rows, polls, acked = r.renewable(self.max_hold)
        touch, params = r.touch_statement(polls, acked)
        sql = (
            f"WITH me AS ({touch} RETURNING 1), "
            "a AS (UPDATE alarms SET lease_until = now() + %(lease)s * interval '1 second' "
            "  WHERE lease_owner = %(me)s AND lease_token = ANY(%(alarms)s::bigint[]) RETURNING 1), "
            "o AS (UPDATE outbox SET lease_until = now() + %(lease)s * interval '1 second' "
            "  WHERE lease_owner = %(me)s AND lease_token = ANY(%(rows)s::bigint[]) RETURNING 1) "
            "SELECT extract(epoch FROM clock_timestamp())::float8 AS server, "
            "(SELECT count(*) FROM me) AS me, (SELECT count(*) FROM a) AS alarms, (SELECT count(*) FROM o) AS rows"
        )
        before = r.clock.local()

        def renew(cur: Cursor) -> tuple[float, int, int]:
            cur.execute(sql, {**params, "alarms": alarms, "rows": rows})
            row = cur.fetchone()
            assert row is not None
            return float(row["server"]), int(row["alarms"]), int(row["rows"])

        try:
            server, kept_alarms, kept_rows = self._conn.run("heartbeat", renew)
        except StateError:
            r.unflushed(polls, acked)  # flush them next time
            raise
        r.clock.sample(before, server, r.clock.local())
        if kept_alarms < len(alarms) or kept_rows < len(rows):
            log.info(
                "state store: %d alarm and %d outbox claims of this replica were taken over by another "
                "(our lease lapsed); what we do with them is fenced off",
                len(alarms) - kept_alarms,
                len(rows) - kept_rows,
            )
        self.touched()

    def stop(self) -> bool | None:
        """Stop the thread and close its connection: None when already stopped, else whether the
        replica ever registered."""
        with self._mu:
            if self._closed:
                return None
            self._closed = True
            thread, registered = self._thread, self._touched_at is not None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=30)
        self._conn.close()
        return registered
