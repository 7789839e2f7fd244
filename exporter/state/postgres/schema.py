"""The shared store's schema: its tables (with the lease columns and the ``roles`` and
``replicas`` tables only a shared store has), created and migrated on open by one replica at a
time under an advisory transaction lock.

Its versions run ahead of the SQLite store's (:data:`PG_SCHEMA_VERSION`): step 2 adds what only
replicas need, the fencing token of every lease (``lease_token``, drawn from the ``lease_tokens``
sequence by each claim), who queued an outbox row (``enqueued_by``: its sender is preferred for
it) and each replica's ``service.instance.id``. A build that predates step 2 refuses such a
database (it would claim without tokens), as it refuses any newer schema. Step 3 is the SQLite
store's schema 2: one outbox row per record and destination (a ``destination`` column; the rows
queued before become the default destination's)."""

from __future__ import annotations

import logging

from exporter.errors import StateCorruptError, StateError
from exporter.state.postgres.pool import Cursor
from exporter.state.sql import APP_ID, POSTGRES, check_identity

__all__ = ["MIGRATIONS", "PG_SCHEMA_VERSION", "open_schema"]

log = logging.getLogger("exporter.state.postgres")

MIGRATIONS: dict[int, str] = {
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
    2: """
    CREATE SEQUENCE lease_tokens;
    ALTER TABLE alarms ADD COLUMN lease_token BIGINT;
    ALTER TABLE outbox ADD COLUMN lease_token BIGINT, ADD COLUMN enqueued_by TEXT;
    ALTER TABLE replicas ADD COLUMN instance_id TEXT;
    """,
    # one outbox row per record and destination: the rows queued before are the default's
    3: """
    ALTER TABLE outbox ADD COLUMN destination TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE outbox DROP CONSTRAINT outbox_kind_uid_key;
    ALTER TABLE outbox ADD CONSTRAINT outbox_destination_kind_uid_key UNIQUE (destination, kind, uid);
    DROP INDEX outbox_ready;
    CREATE INDEX outbox_ready ON outbox (destination, kind, seq) WHERE parked_at IS NULL;
    """,
    # a log record's OTLP bytes, encoded once at poll time (payload is then ''); older rows keep JSON
    4: """
    ALTER TABLE outbox ADD COLUMN encoded BYTEA;
    """,
}

#: the shared store's schema version (steps of :data:`MIGRATIONS`); SQLite's is ``SCHEMA_VERSION``
PG_SCHEMA_VERSION = max(MIGRATIONS)


def open_schema(cur: Cursor, label: str) -> None:
    """Check that the current schema of the database at ``label`` is ours (or empty), then bring
    it to :data:`PG_SCHEMA_VERSION`. The other replicas opening meanwhile wait, then find it done."""
    cur.execute("SELECT current_schema() AS schema")
    row = cur.fetchone()
    schema = row["schema"] if row else None
    if schema is None:
        raise StateError(
            f"state store {label}: no schema to create tables in; check the search_path (or the schema's existence)"
        )
    # One replica migrates; the others wait here, then find the work done.
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{APP_ID}:{schema}",))
    cur.execute("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = %s", (schema,))
    tables = {r["tablename"] for r in cur.fetchall()}
    version = 0
    if tables:
        if "meta" not in tables:
            raise StateCorruptError(
                f"state store {label}: schema {schema!r} holds tables of something else "
                f"({', '.join(sorted(tables)[:10])}); refusing to touch it. Use a dedicated database, "
                "or a dedicated schema through ?options=-csearch_path%3D<name>"
            )
        cur.execute(POSTGRES.identity)
        facts = {r["key"]: r["value"] for r in cur.fetchall()}
        where = f"state store {label}"
        version = check_identity(
            facts,
            store=where,
            subject=f"{where}: schema {schema!r}",
            elsewhere="database",
            newest=PG_SCHEMA_VERSION,
        )
    for step in range(version + 1, PG_SCHEMA_VERSION + 1):
        cur.execute(MIGRATIONS[step])
        for sql, params in POSTGRES.meta_after(step):
            cur.execute(sql, params)
        log.info("state store %s: schema migrated to version %d", label, step)
