"""The shared state store: PostgreSQL (psycopg 3), for several replicas of the exporter.

Modules: :mod:`~exporter.state.postgres.store` (the StateStore), :mod:`~exporter.state.postgres.leases`
(this replica's claims with their fencing tokens, its shares, its roles),
:mod:`~exporter.state.postgres.heartbeat` (renewal on a connection of its own),
:mod:`~exporter.state.postgres.clock` (the database's clock, read locally),
:mod:`~exporter.state.postgres.identity` (the kept ``service.instance.id``),
:mod:`~exporter.state.postgres.transport` (the start-up TLS warning),
:mod:`~exporter.state.postgres.pool` (connections, retries, masked errors),
:mod:`~exporter.state.postgres.schema` (tables and migrations). What the SQLite store means too is
in :mod:`exporter.state.sql`.

Same tables and the same semantics as :mod:`exporter.state.sqlite` (one replica on PostgreSQL
behaves exactly like the SQLite store), plus what lets replicas share the work without knowing
about each other:

**Leases.** ``claim_due`` and ``claim_outbox`` lock candidate rows with ``FOR UPDATE SKIP LOCKED``
and stamp them ``lease_owner = <this replica>``, ``lease_until = now() + lease`` and a new
``lease_token`` (from the ``lease_tokens`` sequence) in one statement, so two replicas never claim
the same row; rows leased by another replica are skipped until their lease expires.
``commit_poll`` clears the alarm's lease; ``ack`` deletes rows, ``release`` and ``park`` clear their
lease. While this process still works on a claim, the heartbeat renews it every ``lease / 3``, for
as long as the work is in flight (up to ``max_hold``, a backstop against a wedged thread); a
replica that dies stops renewing and its work becomes claimable ``lease`` seconds later. A
replica's own leases never hide work from itself: the pipeline resolves every claim before
claiming again (one poll cycle and one drain at a time per process), so a claim supersedes the
previous one of its kind, and a row still leased to us at claim time is one we abandoned (an auth
failure, a stop), handed out again at once, as SQLite would.

**Fencing.** ``ack``, ``release``, ``park`` and ``commit_poll`` act only on rows still held under
the token of this replica's claim (nobody claimed them since; for a row it never claimed: one no
other replica holds a live lease on). A replica whose lease lapsed and was taken over (it froze,
or lost the database for longer than the lease) thus abandons that batch's bookkeeping: its poll
commit writes nothing (the new holder reads the same records from BlueKing), its ack deletes
nothing the new holder owns (the crash window: those rows are sent again, same uid), and the
heartbeat renews only claims whose token still matches. The server ends a transaction a frozen
replica left open after ``max(2 * lease, 10 s)`` (at most 60 s), so its row locks do not last.

**Spreading the work.** Due alarms are cut into even runs over the live replicas (see
:meth:`exporter.state.postgres.leases.Replica.claim_due`): each replica polls the same number
(±1), and anyone takes an alarm overdue by ``steal_after`` or whose last poll failed. An outbox
row goes first to the replica that queued it (``enqueued_by``), to anyone after ``steal_after`` or
once that replica is not live, so sending follows polling.

**Clock.** Lease times are the database server's ``now()``. The poller's due times, retirements
and steals come from :attr:`PostgresStateStore.clock`: ``time.time()`` plus the offset to the
server's ``clock_timestamp()``, read by every heartbeat (the reading with the shortest round trip
wins; its error is at most half that round trip), so replicas with skewed clocks still agree.

**Identity.** Each replica has its own ``service.instance.id`` (:attr:`PostgresStateStore.instance_id`,
shown per replica by ``status``): the operator's, else one kept in ``<state.path>.instance-id``
(:mod:`~exporter.state.postgres.identity`). The store's ``meta.instance_id`` names the store.

**Roles.** ``acquire_role`` (discovery runs on one replica at a time) is a row in ``roles``
holding an owner and an expiry, taken over by anyone once expired. A row, not
``pg_try_advisory_lock``: an advisory lock lives and dies with one session, so a connection blip
(PgBouncer, a failover, an idle timeout) silently drops it while the process believes it still
holds it, it cannot work behind a transaction-pooling PgBouncer, and nobody can see who holds it.
A lease row survives reconnects, is visible in ``status``, and its only cost is that a dead
holder's role moves on after ``ttl`` rather than at once.

**Replicas.** ``replicas`` has one row per process (``owner`` = host:pid:random, with its
``instance_id``), registered by its first claim, touched by claims and by the heartbeat, marked
stopped by ``close()``;
:meth:`PostgresStateStore.replicas` is what ``status`` shows. A store that never claims (``status``
itself) never registers.

**Connections.** A small lock-guarded pool of our own (at most ``pool_size``, created on demand,
reused, dropped when broken), not ``psycopg_pool`` (a separate package with its own background
workers, more than four connections need) and not one connection per thread (the poller runs each
cycle in a fresh thread pool: per-thread connections would pile up and could not be closed
deterministically). The heartbeat has one connection of its own, outside the pool. Connections
use autocommit with explicit transaction blocks, TCP keepalives, ``tcp_user_timeout`` and
lock/statement/idle-in-transaction timeouts, so no call blocks forever on a server that answers.
Every method is safe to run twice (inserts are ``ON CONFLICT DO NOTHING``, claims see our own
leases, updates set values, fenced operations find their rows gone or still theirs): a call whose
connection broke is retried once on a new connection, which is what carries the exporter through
a PostgreSQL failover or restart.

**Errors.** Connection problems raise :class:`~exporter.errors.StateError` naming the URL with its
password masked; the password never appears in a message or a log line (the driver's exception
is not chained, its text is scrubbed). A database with tables that are not ours is a
:class:`~exporter.errors.StateCorruptError`; a schema newer than this build a
:class:`~exporter.errors.StateSchemaError`. The schema is created and migrated by the exporter
itself (``meta.schema_version``; the shared store's version runs ahead of SQLite's), under an
advisory transaction lock so replicas starting together migrate once. ``state.url`` allowing
plaintext or unverified TLS to a non-loopback host is a start-up warning
(:mod:`~exporter.state.postgres.transport`).

**The outbox cap** (``max_queued``) is checked against a cached depth, recounted at most once a
second and moved by this replica's own enqueues, acks, parks, requeues and purges in between,
once their transaction committed (a failed one moves nothing): an exact ``COUNT(*)`` per
commit is too slow at a million rows. Across replicas the cap is therefore approximate by up to
one second of the other replicas' enqueues.
"""

from __future__ import annotations

from exporter.state.postgres.schema import PG_SCHEMA_VERSION as SCHEMA_VERSION
from exporter.state.postgres.store import PostgresStateStore

__all__ = ["SCHEMA_VERSION", "PostgresStateStore"]
