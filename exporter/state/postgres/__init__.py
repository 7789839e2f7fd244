"""The shared state store: PostgreSQL (psycopg 3), for several replicas of the exporter.

Modules: :mod:`~exporter.state.postgres.store` (the StateStore), :mod:`~exporter.state.postgres.leases`
(this replica's claims, roles and heartbeat), :mod:`~exporter.state.postgres.pool` (connections,
retries, masked errors), :mod:`~exporter.state.postgres.schema` (tables and migrations). What the
SQLite store means too is in :mod:`exporter.state.sql`.

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
second and moved by this replica's own enqueues, acks, parks, requeues and purges in between,
once their transaction committed (a failed one moves nothing): an exact ``COUNT(*)`` per
commit is too slow at a million rows. Across replicas the cap is therefore approximate by up to
one second of the other replicas' enqueues.
"""

from __future__ import annotations

from exporter.state.postgres.store import PostgresStateStore
from exporter.state.sql import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "PostgresStateStore"]
