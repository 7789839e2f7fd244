"""Connections to the shared store: a small pool, transactions retried over a failover, errors
that never show the password. See the package docstring (**Connections**, **Errors**)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from exporter.errors import StateError
from exporter.redact import redact, redact_url, url_passwords

__all__ = ["Connection", "Cursor", "Database", "Dedicated", "Pool", "is_disconnect"]

log = logging.getLogger("exporter.state.postgres")

T = TypeVar("T")
Cursor = psycopg.Cursor[dict[str, Any]]
Connection = psycopg.Connection[Any]


class Pool:
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


class Database:
    """The database at ``url``: transactions on pooled connections, errors naming it masked.

    ``label`` is the URL with its password masked, the only spelling of it in messages and logs.
    ``idle_in_transaction`` bounds how long the server keeps a transaction that a frozen client left
    open (with its row locks); the shared store ties it to the lease.
    """

    def __init__(self, url: str, *, pool_size: int, idle_in_transaction: float = 60.0) -> None:
        self._url = url
        self._secrets = url_passwords(url)
        self.label = redact_url(url)
        self._connect_kwargs = self._connection_defaults()
        self._idle_in_transaction_ms = max(1000, int(idle_in_transaction * 1000))
        self._pool = Pool(self._connect, size=max(1, pool_size), wait=60.0)

    def error(self, what: str, exc: BaseException) -> StateError:
        """``exc`` as a StateError naming the store; its text scrubbed of the password."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return StateError(f"state store {self.label}: {what}: {redact(detail, self._secrets)}")

    def _connection_defaults(self) -> dict[str, Any]:
        try:
            given = conninfo_to_dict(self._url)
        except psycopg.Error as exc:
            raise self.error("not a usable PostgreSQL URL", exc) from None
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

    def connect(self) -> Connection:
        """A new configured connection (the pool's, or a :class:`Dedicated` one)."""
        return self._connect()

    def _connect(self) -> Connection:
        try:
            conn = psycopg.connect(self._url, autocommit=True, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise self.error("cannot connect", exc) from None
        try:
            # Nothing may block forever: a row lock held by a wedged replica, a runaway statement,
            # a transaction left open by a process that froze.
            conn.execute(
                "SET lock_timeout = '30s'; SET statement_timeout = '120s'; "
                f"SET idle_in_transaction_session_timeout = {self._idle_in_transaction_ms}"
            )
        except psycopg.Error as exc:
            conn.close()
            raise self.error("cannot configure the connection", exc) from None
        return conn

    def run(self, what: str, fn: Callable[[Cursor], T]) -> T:
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
                    raise self.error(what, exc) from None
                conflicts -= 1
                log.debug("state store: %s: %s; retrying", what, type(exc).__name__)
            except psycopg.Error as exc:
                if not is_disconnect(exc):
                    raise self.error(what, exc) from None
                self._pool.discard_idle()  # they point at the same lost (or demoted) server
                if reconnects <= 0 or self._pool.closed:
                    raise self.error(what, exc) from None
                reconnects -= 1
                log.warning("state store %s: connection lost during %s; retrying once", self.label, what)

    def dedicated(self) -> Dedicated:
        """A connection of its own, outside the pool (the heartbeat: it never waits behind the pool)."""
        return Dedicated(self)

    def close(self) -> None:
        self._pool.close()


class Dedicated:
    """One connection kept apart from the pool, opened on demand, for single statements
    (autocommit: one round trip each). A lost connection is replaced and the statement retried
    once, as :meth:`Database.run` does; errors are StateErrors naming the store, scrubbed."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._closed = False

    def run(self, what: str, fn: Callable[[Cursor], T]) -> T:
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise StateError(f"state store {self._db.label}: closed")
                try:
                    if self._conn is None or self._conn.closed or self._conn.broken:
                        self._conn = self._db.connect()
                    with self._conn.cursor(row_factory=dict_row) as cur:
                        return fn(cur)
                except psycopg.Error as exc:
                    self._drop()
                    if attempt == 2 or not is_disconnect(exc):
                        raise self._db.error(what, exc) from None
            raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()


def is_disconnect(exc: psycopg.Error) -> bool:
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
