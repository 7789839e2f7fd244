"""The shared state store: PostgreSQL (psycopg 3), for several replicas of the exporter.

Same tables and the same semantics as :mod:`exporter.state.sqlite` (one replica on PostgreSQL
behaves exactly like the SQLite store), plus what lets replicas share the work without knowing
about each other:

**Leases.** ``claim_due`` and ``claim_outbox`` lock candidate rows with ``FOR UPDATE SKIP LOCKED``
and stamp them ``lease_owner = <this replica>``, ``lease_until = now() + lease`` in one statement,
so two replicas never claim the same row; rows leased by another replica are skipped until their
lease expires. ``commit_poll`` clears the alarm's lease; ``ack`` deletes rows, ``release`` and
``park`` clear their lease. While this process still works on a claim, a heartbeat thread renews
it every ``lease / 3`` (for at most ``max_hold``); a replica that dies stops renewing and its work
becomes claimable ``lease`` seconds later. A replica's own leases never hide work from itself: the
pipeline resolves every claim before claiming again (one poll cycle and one drain at a time per
process), so a row still leased to us at claim time is one we abandoned (an auth failure, a stop)
and is handed out again at once, as SQLite would. Lease times are the *database server's* clock
(``now()``), never the replicas' clocks; ``next_poll`` stays in the callers' clock, as with SQLite.

**Spreading the polling.** Each due alarm is claimed first by the live replica that ranks highest
for it (rendezvous hashing over the live rows of ``replicas``), and by anyone once it is overdue
by ``steal_after``: see :meth:`PostgresStateStore.claim_due`.

**Roles.** ``acquire_role`` (discovery runs on one replica at a time) is a row in ``roles``
holding an owner and an expiry, taken over by anyone once expired. A row, not
``pg_try_advisory_lock``: an advisory lock lives and dies with one session, so a connection blip
(PgBouncer, a failover, an idle timeout) silently drops it while the process believes it still
holds it, it cannot work behind a transaction-pooling PgBouncer, and nobody can see who holds it.
A lease row survives reconnects, is visible in ``status``, and its only cost is that a dead
holder's role moves on after ``ttl`` rather than at once.

**Replicas.** ``replicas`` has one row per process (``owner`` = host:pid:random), registered by its
first claim, touched by claims and by the heartbeat, marked stopped by ``close()``;
:meth:`PostgresStateStore.replicas` is what ``status`` shows. A store that never claims (``status``
itself) never registers.

**Connections.** A small lock-guarded pool of our own (at most ``pool_size``, created on demand,
reused, dropped when broken), not ``psycopg_pool`` (a separate package with its own background
workers, more than four connections need) and not one connection per thread (the poller runs each
cycle in a fresh thread pool: per-thread connections would pile up and could not be closed
deterministically). Connections use autocommit with explicit transaction blocks, TCP keepalives,
``tcp_user_timeout`` and lock/statement/idle-in-transaction timeouts, so no call blocks forever.
Every method is safe to run twice (inserts are ``ON CONFLICT DO NOTHING``, claims see our own
leases, updates set values): a call whose connection broke is retried once on a new connection,
which is what carries the exporter through a PostgreSQL failover.

**Errors.** Connection problems raise :class:`~exporter.errors.StateError` naming the URL with its
password masked; the password never appears in a message or a log line (the driver's exception
is not chained, its text is scrubbed). A database with tables that are not ours is a
:class:`~exporter.errors.StateCorruptError`; a schema newer than this build a
:class:`~exporter.errors.StateSchemaError`. The schema is created and migrated by the exporter
itself (``meta.schema_version``), under an advisory transaction lock so replicas starting together
migrate once.

**The outbox cap** (``max_queued``) is checked against a cached depth, recounted at most once a
second and moved by this replica's own enqueues and acks in between: an exact ``COUNT(*)`` per
commit is too slow at a million rows. Across replicas the cap is therefore approximate by up to
one second of the other replicas' enqueues.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from exporter.errors import StateCorruptError, StateError, StateSchemaError
from exporter.model import AlarmContext, OutboxItem
from exporter.redact import redact, redact_url, url_passwords
from exporter.state.base import AlarmState, CommitResult, OutboxStats, PollCommit, StoredSpanEvent
from exporter.state.sql import alarm_from_row, alarm_update, outbox_payload, refollow

__all__ = ["SCHEMA_VERSION", "PostgresStateStore"]

log = logging.getLogger(__name__)

APP_ID = "bk-otel-exporter"
SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE alarms (
        alarm_id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        phase TEXT NOT NULL,
        context TEXT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        next_poll DOUBLE PRECISION NOT NULL,
        last_poll DOUBLE PRECISION,
        last_full_read DOUBLE PRECISION,
        terminal_at DOUBLE PRECISION,
        retired_at DOUBLE PRECISION,
        change_token TEXT,
        records BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        lease_owner TEXT,
        lease_until TIMESTAMPTZ
    );
    CREATE INDEX alarms_due ON alarms (next_poll) WHERE phase IN ('active', 'closing');
    CREATE INDEX alarms_ended ON alarms (retired_at) WHERE phase IN ('retired', 'expired');
    CREATE INDEX alarms_lease ON alarms (lease_owner) WHERE lease_owner IS NOT NULL;
    CREATE TABLE seen (
        alarm_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        PRIMARY KEY (alarm_id, uid)
    );
    CREATE TABLE outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind TEXT NOT NULL,
        uid TEXT NOT NULL,
        alarm_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        enqueued_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        parked_at DOUBLE PRECISION,
        park_reason TEXT,
        lease_owner TEXT,
        lease_until TIMESTAMPTZ,
        UNIQUE (kind, uid)
    );
    CREATE INDEX outbox_ready ON outbox (kind, seq) WHERE parked_at IS NULL;
    CREATE INDEX outbox_age ON outbox (enqueued_at) WHERE parked_at IS NULL;
    CREATE INDEX outbox_parked ON outbox (seq) WHERE parked_at IS NOT NULL;
    CREATE INDEX outbox_lease ON outbox (lease_owner) WHERE lease_owner IS NOT NULL;
    CREATE TABLE span_events (
        alarm_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        time_ns BIGINT NOT NULL,
        payload TEXT NOT NULL,
        sliced BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (alarm_id, uid)
    );
    CREATE TABLE roles (
        role TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL,
        acquired_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE replicas (
        owner TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        lease_seconds DOUBLE PRECISION NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        stopped_at TIMESTAMPTZ,
        polls BIGINT NOT NULL DEFAULT 0,
        acked BIGINT NOT NULL DEFAULT 0
    );
    """,
}

_ALARM_FIELDS = (
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
_ALARM_COLUMNS = ", ".join(_ALARM_FIELDS)
#: how long replicas() keeps showing a replica after it was last seen
_RECENT = "interval '1 hour'"

T = TypeVar("T")
Cursor = psycopg.Cursor[dict[str, Any]]
Connection = psycopg.Connection[Any]


class _Pool:
    """At most ``size`` connections, opened on demand and kept for reuse; thread-safe.

    A connection goes back to the pool only when it is idle and healthy: one that broke, or that
    an exception left inside a transaction, is closed instead.
    """

    def __init__(self, connect: Callable[[], Connection], size: int, wait: float) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._wait = wait
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self.closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        if not self._slots.acquire(timeout=self._wait):
            raise StateError(f"no database connection free after {self._wait:.0f}s")
        conn: Connection | None = None
        try:
            with self._lock:
                if self.closed:
                    raise StateError("the state store is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = self._connect()
            yield conn
        finally:
            if conn is not None:
                reusable = (
                    not conn.closed
                    and not conn.broken
                    and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                )
                with self._lock:
                    if reusable and not self.closed:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()
            self._slots.release()

    def discard_idle(self) -> None:
        """Close the idle connections (after one broke: the others are likely broken too)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self.closed = True
        self.discard_idle()


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
        self._url = url
        self._secrets = url_passwords(url)
        self.path_or_url = redact_url(url)
        self.max_queued = max_queued
        self.lease = float(lease)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = owner or f"{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self._beat_every = max(0.2, self.lease / 3)
        self._max_hold = max_hold if max_hold is not None else max(10 * self.lease, 60.0)
        self._steal_after = steal_after if steal_after is not None else max(self.lease / 2, 5.0)
        self._depth_refresh = depth_refresh
        self._connect_kwargs = self._connection_defaults()
        self._pool = _Pool(self._connect, size=max(1, pool_size), wait=60.0)
        self._mu = threading.Lock()  # guards everything below
        self._held_alarms: dict[str, float] = {}  # claimed, not yet committed: monotonic claim time
        self._held_outbox: dict[int, float] = {}
        self._roles: set[str] = set()
        self._depth = 0
        self._depth_at = 0.0
        self._depth_counting = False
        self._polls = 0  # not yet flushed to replicas.polls
        self._acked = 0
        self._touched_at: float | None = None  # last replicas upsert (None: never registered)
        self._closed = False
        self._stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._beat_failing = False
        try:
            self._run("open", self._open)
            self._refresh_depth()
        except BaseException:
            self._pool.close()
            raise

    # -- connections and transactions ---------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return redact(text, self._secrets)

    def _error(self, what: str, exc: BaseException) -> StateError:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return StateError(f"state store {self.path_or_url}: {what}: {self._scrub(detail)}")

    def _connection_defaults(self) -> dict[str, Any]:
        try:
            given = conninfo_to_dict(self._url)
        except psycopg.Error as exc:
            raise self._error("not a usable PostgreSQL URL", exc) from None
        defaults: dict[str, Any] = {
            "connect_timeout": 10,
            "application_name": "bk-otel-exporter",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 60000,  # ms: a vanished primary is noticed even mid-write
        }
        return {key: value for key, value in defaults.items() if key not in given}

    def _connect(self) -> Connection:
        try:
            conn = psycopg.connect(self._url, autocommit=True, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise self._error("cannot connect", exc) from None
        try:
            # Nothing may block forever: a row lock held by a wedged replica, a runaway statement,
            # a transaction left open by a process that froze.
            conn.execute(
                "SET lock_timeout = '30s'; SET statement_timeout = '120s'; "
                "SET idle_in_transaction_session_timeout = '60s'"
            )
        except psycopg.Error as exc:
            conn.close()
            raise self._error("cannot configure the connection", exc) from None
        return conn

    def _run(self, what: str, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn`` in one transaction. A lost connection (or one that reached a read-only server
        after a failover) is retried once on a fresh connection; a deadlock or serialization
        failure twice. Driver errors become StateError, scrubbed and unchained."""
        reconnects, conflicts = 1, 2
        while True:
            try:
                with self._pool.connection() as conn:
                    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                        return fn(cur)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                if conflicts <= 0:
                    raise self._error(what, exc) from None
                conflicts -= 1
                log.debug("state store: %s: %s; retrying", what, type(exc).__name__)
            except psycopg.Error as exc:
                if not _is_disconnect(exc):
                    raise self._error(what, exc) from None
                self._pool.discard_idle()  # they point at the same lost (or demoted) server
                if reconnects <= 0 or self._pool.closed:
                    raise self._error(what, exc) from None
                reconnects -= 1
                log.warning("state store %s: connection lost during %s; retrying once", self.path_or_url, what)

    # -- opening and migrating --------------------------------------------------------------------
    def _open(self, cur: Cursor) -> None:
        cur.execute("SELECT current_schema() AS schema")
        row = cur.fetchone()
        schema = row["schema"] if row else None
        if schema is None:
            raise StateError(
                f"state store {self.path_or_url}: no schema to create tables in; "
                "check the search_path (or the schema's existence)"
            )
        # One replica migrates; the others wait here, then find the work done.
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{APP_ID}:{schema}",))
        cur.execute("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = %s", (schema,))
        tables = {r["tablename"] for r in cur.fetchall()}
        version = 0
        if tables:
            if "meta" not in tables:
                raise StateCorruptError(
                    f"state store {self.path_or_url}: schema {schema!r} holds tables of something else "
                    f"({', '.join(sorted(tables)[:10])}); refusing to touch it. Use a dedicated database, "
                    "or a dedicated schema through ?options=-csearch_path%3D<name>"
                )
            cur.execute("SELECT key, value FROM meta WHERE key IN ('app', 'schema_version')")
            facts = {r["key"]: r["value"] for r in cur.fetchall()}
            if facts.get("app") != APP_ID:
                raise StateCorruptError(
                    f"state store {self.path_or_url}: schema {schema!r} was not written by {APP_ID}; "
                    "refusing to touch it"
                )
            try:
                version = int(facts.get("schema_version", "0"))
            except ValueError:
                raise StateCorruptError(f"state store {self.path_or_url}: unreadable schema version") from None
            if version > SCHEMA_VERSION:
                raise StateSchemaError(
                    f"state store {self.path_or_url} has schema version {version}, newer than this exporter "
                    f"understands ({SCHEMA_VERSION}); upgrade the exporter or use another database"
                )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            cur.execute(_MIGRATIONS[step])
            if step == 1:
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES ('app', %s), ('instance_id', %s), ('created_at', %s)",
                    (APP_ID, uuid.uuid4().hex, str(time.time())),
                )
            cur.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(step),),
            )
            log.info("state store %s: schema migrated to version %d", self.path_or_url, step)

    # -- replica bookkeeping ----------------------------------------------------------------------
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
            log.info("state store %s: this replica is %s (lease %.0fs)", self.path_or_url, self.owner, self.lease)

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
            self._run("heartbeat", renew)
        except StateError:
            with self._mu:  # flush them next time
                self._polls += polls
                self._acked += acked
            raise
        self._touched()

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

        rows = self._run("replicas", query)
        for row in rows:
            row["roles"] = list(row["roles"] or [])
        return rows

    # -- alarms -------------------------------------------------------------------------------------
    def upsert_alarm(
        self, ctx: AlarmContext, *, source: str, now: float, due: bool, change_token: str | None = None
    ) -> AlarmState:
        select = f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE alarm_id = %s FOR UPDATE"

        def upsert(cur: Cursor) -> AlarmState:
            cur.execute(select, (ctx.alarm_id,))
            row = cur.fetchone()
            if row is None:
                # Replicas starting together all insert the configured alarms: one wins.
                cur.execute(
                    "INSERT INTO alarms (alarm_id, source, phase, context, first_seen, next_poll, change_token) "
                    f"VALUES (%s, %s, 'active', %s, %s, %s, %s) ON CONFLICT (alarm_id) DO NOTHING "
                    f"RETURNING {_ALARM_COLUMNS}",
                    (ctx.alarm_id, source, ctx.to_json(), now, now, change_token),
                )
                inserted = cur.fetchone()
                if inserted is not None:
                    return alarm_from_row(inserted)
                cur.execute(select, (ctx.alarm_id,))
                row = cur.fetchone()
                assert row is not None  # the conflicting insert committed it
            phase, next_poll, new_source = refollow(alarm_from_row(row), source=source, now=now, due=due)
            cur.execute(
                "UPDATE alarms SET context = %(ctx)s, phase = %(phase)s, next_poll = %(next)s, source = %(source)s, "
                "change_token = COALESCE(%(token)s, change_token), "
                "terminal_at = CASE WHEN %(phase)s = 'active' AND phase = 'retired' THEN NULL ELSE terminal_at END, "
                "retired_at = CASE WHEN %(phase)s = 'active' THEN NULL ELSE retired_at END "
                f"WHERE alarm_id = %(id)s RETURNING {_ALARM_COLUMNS}",
                {
                    "ctx": ctx.to_json(),
                    "phase": phase,
                    "next": next_poll,
                    "source": new_source,
                    "token": change_token,
                    "id": ctx.alarm_id,
                },
            )
            out = cur.fetchone()
            assert out is not None
            return alarm_from_row(out)

        return self._run("upsert_alarm", upsert)

    def get_alarm(self, alarm_id: str) -> AlarmState | None:
        def query(cur: Cursor) -> AlarmState | None:
            cur.execute(f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE alarm_id = %s", (alarm_id,))
            row = cur.fetchone()
            return alarm_from_row(row) if row else None

        return self._run("get_alarm", query)

    def list_alarms(self, phases: Sequence[str] = ("active", "closing")) -> list[AlarmState]:
        def query(cur: Cursor) -> list[AlarmState]:
            cur.execute(
                f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE phase = ANY(%s::text[]) ORDER BY first_seen, alarm_id",
                (list(phases),),
            )
            return [alarm_from_row(r) for r in cur.fetchall()]

        return self._run("list_alarms", query)

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
        touch = self._touch_due()

        def claim(cur: Cursor) -> list[AlarmState]:
            if touch:
                self._touch(cur)
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
                f"FROM due WHERE a.alarm_id = due.alarm_id RETURNING {', '.join('a.' + c for c in _ALARM_FIELDS)}",
                {
                    "now": now,
                    "me": self.owner,
                    "limit": max(0, limit),
                    "lease": self.lease,
                    "steal": self._steal_after,
                },
            )
            return sorted((alarm_from_row(r) for r in cur.fetchall()), key=lambda a: (a.next_poll, a.alarm_id))

        claimed = self._run("claim_due", claim)
        if touch:
            self._touched()
        stamp = time.monotonic()
        with self._mu:
            for alarm in claimed:
                self._held_alarms[alarm.alarm_id] = stamp
        return claimed

    def seen_uids(self, alarm_id: str) -> set[str]:
        def query(cur: Cursor) -> set[str]:
            cur.execute("SELECT uid FROM seen WHERE alarm_id = %s", (alarm_id,))
            return {r["uid"] for r in cur.fetchall()}

        return self._run("seen_uids", query)

    def commit_poll(self, commit: PollCommit) -> CommitResult:
        cid = commit.alarm_id
        depth = self._queued_depth() if (commit.queued or commit.extra_queued) else 0

        def apply(cur: Cursor) -> tuple[int, int, bool] | None:
            # The alarm row lock serialises every commit of one alarm, across replicas.
            cur.execute("SELECT lease_owner FROM alarms WHERE alarm_id = %s FOR UPDATE", (cid,))
            row = cur.fetchone()
            stolen = row is not None and row["lease_owner"] not in (None, self.owner)
            queued = {q.uid: q for q in commit.queued}
            candidates = list(dict.fromkeys(uid for uid in commit.seen if uid in queued))
            known: set[str] = set()
            if candidates:
                cur.execute("SELECT uid FROM seen WHERE alarm_id = %s AND uid = ANY(%s::text[])", (cid, candidates))
                known = {r["uid"] for r in cur.fetchall()}
            fresh = [queued[uid] for uid in candidates if uid not in known]
            rows = [*fresh, *commit.extra_queued]
            # Over the cap nothing is written: the records stay unseen and are read again later.
            # An empty outbox takes a poll whole even when it alone exceeds the cap (otherwise an
            # alarm with more new records than max_queued could never be taken), as with SQLite.
            if rows and depth > 0 and depth + len(rows) > self.max_queued:
                return None
            if commit.seen:
                cur.execute(
                    "INSERT INTO seen (alarm_id, uid) SELECT %s, u FROM unnest(%s::text[]) AS u ON CONFLICT DO NOTHING",
                    (cid, list(dict.fromkeys(commit.seen))),
                )
            inserted = 0
            if rows:
                cur.execute(
                    "INSERT INTO outbox (kind, uid, alarm_id, payload, enqueued_at) "
                    "SELECT k, u, %s, p, %s FROM unnest(%s::text[], %s::text[], %s::text[]) "
                    "WITH ORDINALITY AS t(k, u, p, n) ORDER BY n "
                    "ON CONFLICT (kind, uid) DO NOTHING",
                    (cid, commit.now, [r.kind for r in rows], [r.uid for r in rows], [r.payload for r in rows]),
                )
                inserted = max(0, cur.rowcount)
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
                cur.execute("UPDATE alarms SET records = records + %s WHERE alarm_id = %s", (len(fresh), cid))
            else:
                self._update_alarm(cur, commit, len(fresh))
            return inserted, len(fresh), stolen

        outcome = self._run("commit_poll", apply)
        if outcome is None:
            return CommitResult(inserted=0, overflow=True)
        inserted, _, stolen = outcome
        with self._mu:
            self._depth += inserted
            if self._held_alarms.pop(cid, None) is not None and not stolen:
                self._polls += 1
        if stolen:
            log.warning(
                "alarm %s: our lease lapsed and another replica took it over; records kept, lifecycle left to it",
                cid,
            )
        return CommitResult(inserted=inserted)

    def _update_alarm(self, cur: Cursor, c: PollCommit, new_records: int) -> None:
        cur.execute(*alarm_update(c, new_records, "%s", ("lease_owner = NULL", "lease_until = NULL")))

    def span_events(self, alarm_id: str) -> list[StoredSpanEvent]:
        def query(cur: Cursor) -> list[StoredSpanEvent]:
            cur.execute(
                "SELECT uid, time_ns, payload, sliced FROM span_events WHERE alarm_id = %s ORDER BY time_ns, uid",
                (alarm_id,),
            )
            return [StoredSpanEvent(r["uid"], r["time_ns"], r["payload"], bool(r["sliced"])) for r in cur.fetchall()]

        return self._run("span_events", query)

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

        return self._run("prune", delete)

    # -- outbox -------------------------------------------------------------------------------------
    def _count_queued(self, cur: Cursor) -> int:
        cur.execute("SELECT count(*) AS n FROM outbox WHERE parked_at IS NULL")
        row = cur.fetchone()
        return int(row["n"]) if row else 0

    def _refresh_depth(self) -> int:
        depth = self._run("outbox depth", self._count_queued)
        with self._mu:
            self._depth, self._depth_at = depth, time.monotonic()
        return depth

    def _queued_depth(self) -> int:
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

    def claim_outbox(self, kind: str, limit: int) -> list[OutboxItem]:
        """Lease the oldest queued (not parked) rows of ``kind`` that no other live replica holds."""
        touch = self._touch_due()

        def claim(cur: Cursor) -> list[dict[str, Any]]:
            if touch:
                self._touch(cur)
            cur.execute(
                "WITH c AS ("
                "  SELECT seq FROM outbox WHERE kind = %(kind)s AND parked_at IS NULL"
                "    AND (lease_owner IS NULL OR lease_owner = %(me)s OR lease_until < now())"
                "  ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
                ") "
                "UPDATE outbox AS o SET lease_owner = %(me)s, lease_until = now() + %(lease)s * interval '1 second' "
                "FROM c WHERE o.seq = c.seq RETURNING o.seq, o.kind, o.payload, o.enqueued_at, o.attempts",
                {"kind": kind, "me": self.owner, "limit": max(0, limit), "lease": self.lease},
            )
            return sorted(cur.fetchall(), key=lambda r: r["seq"])

        rows = self._run("claim_outbox", claim)
        if touch:
            self._touched()
        stamp = time.monotonic()
        with self._mu:
            for r in rows:
                self._held_outbox[r["seq"]] = stamp
        return [
            OutboxItem(r["seq"], r["kind"], outbox_payload(r["kind"], r["payload"]), r["enqueued_at"], r["attempts"])
            for r in rows
        ]

    def _let_go(self, seqs: Sequence[int]) -> None:
        with self._mu:
            for seq in seqs:
                self._held_outbox.pop(seq, None)

    def ack(self, seqs: Sequence[int]) -> None:
        """Delete delivered rows (whoever holds them now: they were delivered)."""
        if not seqs:
            return

        def delete(cur: Cursor) -> int:
            cur.execute("DELETE FROM outbox WHERE seq = ANY(%s::bigint[])", (list(seqs),))
            return max(0, cur.rowcount)

        deleted = self._run("ack", delete)
        self._let_go(seqs)
        with self._mu:
            self._depth -= deleted
            self._acked += deleted

    def release(self, seqs: Sequence[int]) -> None:
        """Count a failed attempt; the rows stay queued, and our lease on them ends."""
        if not seqs:
            return

        def update(cur: Cursor) -> None:
            cur.execute(
                "UPDATE outbox SET attempts = attempts + 1, "
                "lease_until = CASE WHEN lease_owner = %(me)s THEN NULL ELSE lease_until END, "
                "lease_owner = CASE WHEN lease_owner = %(me)s THEN NULL ELSE lease_owner END "
                "WHERE seq = ANY(%(seqs)s::bigint[])",
                {"me": self.owner, "seqs": list(seqs)},
            )

        self._run("release", update)
        self._let_go(seqs)

    def park(self, seqs: Sequence[int], reason: str, now: float) -> None:
        if not seqs:
            return

        def update(cur: Cursor) -> int:
            cur.execute(
                "UPDATE outbox SET parked_at = %s, park_reason = %s, attempts = attempts + 1, "
                "lease_owner = NULL, lease_until = NULL "
                "WHERE parked_at IS NULL AND seq = ANY(%s::bigint[])",
                (now, reason, list(seqs)),
            )
            return max(0, cur.rowcount)

        parked = self._run("park", update)
        self._let_go(seqs)
        with self._mu:
            self._depth -= parked

    def outbox_stats(self) -> OutboxStats:
        def query(cur: Cursor) -> OutboxStats:
            # Three index-backed aggregates in one statement (one snapshot, one round trip).
            cur.execute(
                "SELECT (SELECT COALESCE(json_object_agg(kind, n), '{}'::json) FROM (SELECT kind, count(*) AS n "
                "          FROM outbox WHERE parked_at IS NULL GROUP BY kind) k) AS by_kind, "
                "       (SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL) AS parked, "
                "       (SELECT min(enqueued_at) FROM outbox WHERE parked_at IS NULL) AS oldest"
            )
            row = cur.fetchone()
            assert row is not None
            by_kind = row["by_kind"]
            if isinstance(by_kind, str):  # pragma: no cover - json is parsed by default
                by_kind = json.loads(by_kind)
            by_kind = {str(k): int(v) for k, v in by_kind.items()}
            return OutboxStats(
                depth=sum(by_kind.values()),
                parked=int(row["parked"]),
                oldest_enqueued_at=row["oldest"],
                by_kind=by_kind,
            )

        return self._run("outbox_stats", query)

    # -- coordination between replicas ------------------------------------------------------------
    def acquire_role(self, role: str, now: float, ttl: float) -> bool:
        """Hold ``role`` for ``ttl`` seconds of the database clock (``now`` is not used: replicas'
        clocks may disagree); renewed by calling again; taken over by anyone once expired."""
        touch = self._touch_due()

        def take(cur: Cursor) -> bool:
            if touch:
                self._touch(cur)
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

        held = self._run("acquire_role", take)
        if touch:
            self._touched()
        with self._mu:
            changed = held != (role in self._roles)
            if held:
                self._roles.add(role)
            else:
                self._roles.discard(role)
        if changed:
            log.info("role %s: %s by this replica (%s)", role, "now held" if held else "no longer held", self.owner)
        return held

    # -- meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        def query(cur: Cursor) -> str | None:
            cur.execute("SELECT value FROM meta WHERE key = %s", (key,))
            row = cur.fetchone()
            return row["value"] if row else None

        return self._run("get_meta", query)

    def set_meta(self, key: str, value: str) -> None:
        def upsert(cur: Cursor) -> None:
            cur.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, value),
            )

        self._run("set_meta", upsert)

    def close(self) -> None:
        """Stop the heartbeat, hand our leases and roles back (others take over at once instead of
        after the lease), mark this replica stopped, close the connections. Idempotent."""
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
        if registered:

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
                self._run("close", hand_back)
            except StateError as exc:
                log.warning("state store: could not hand our leases back (they expire by themselves): %s", exc)
        self._pool.close()


def _is_disconnect(exc: psycopg.Error) -> bool:
    """A lost or unusable connection, worth one retry on a fresh one (not a timeout, a lock wait
    or an error in our own SQL)."""
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return True  # a standby (the old primary after a failover): reconnect to find the new one
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if isinstance(exc, (pg_errors.QueryCanceled, pg_errors.LockNotAvailable)):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    # None: a libpq-side failure (connection dropped); 08xxx: connection exceptions;
    # 57P01/57P02/57P03: administrator shutdown, crash shutdown, cannot connect now.
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")
