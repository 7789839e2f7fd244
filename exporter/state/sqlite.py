"""The embedded state store: one SQLite file in WAL mode, one connection guarded by a lock.

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (SIGKILL) without losing a
committed transaction; a power cut may lose the last transactions, which then are re-read from
BlueKing and are not lost either (they were never acknowledged to anyone). Set
``BK_OTEL_EXPORTER_SQLITE_SYNC=FULL`` to fsync every commit.

Files: the database, its ``-wal`` and ``-shm`` (SQLite gives them the database's mode) and the
``.lock`` file are created ``0600`` whatever the umask: they hold alarm texts and hosts. A file
that exists keeps the mode its owner gave it.

Cached depth: the outbox cap is checked against a depth kept in memory, moved by this process's
commits only after they committed (a commit that fails, say on a full disk, is rolled back and
moves nothing), and recounted when another process changed the file (``requeue`` and ``purge``
run beside the daemon: ``PRAGMA data_version`` tells).

The file is checked on open: a file that is not SQLite, or a SQLite file of something else, is a
:class:`~exporter.errors.StateCorruptError` naming the file (never silently reset); a schema newer
than this build knows is a :class:`~exporter.errors.StateSchemaError`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from exporter.errors import StateCorruptError, StateError
from exporter.model import AlarmContext, OutboxItem
from exporter.state.base import AlarmState, CommitResult, OutboxStats, PollCommit, QueuedRecord, StoredSpanEvent
from exporter.state.sql import (
    ALARM_COLUMNS,
    OUTBOX_COLUMNS,
    SCHEMA_VERSION,
    SQLITE,
    alarm_from_row,
    alarm_update,
    check_identity,
    destination_stats,
    outbox_item,
    plan_commit,
    row_values,
    span_event_from_row,
)
from exporter.state.sqlite_file import MIGRATIONS, create_private, take_lock

__all__ = ["SCHEMA_VERSION", "SqliteStateStore"]

log = logging.getLogger(__name__)

_CACHE_KIB = 512


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqliteStateStore:
    """:class:`exporter.state.base.StateStore` on one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queued: int = 1_000_000,
        exclusive: bool = False,
        create: bool = True,
    ) -> None:
        """Open (``create``: or create) the store at ``path``; ``exclusive``: lock it for this process."""
        self.path = Path(path)
        self.path_or_url = str(self.path)
        self.max_queued = max_queued
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._data_version: int | None = None
        if not create and not self.path.exists():
            raise StateError(
                f"state store {self.path} does not exist (state.path): nothing has run with this "
                "configuration yet, or state.path points elsewhere"
            )
        if self.path.parent and not self.path.parent.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"state store {self.path}: cannot create directory: {exc}") from exc
        if exclusive:
            self._lock_fd = take_lock(self.path)
        try:
            create_private(self.path)
        except OSError as exc:
            self._release_lock()
            raise StateError(f"state store {self.path}: cannot create: {exc}") from exc
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            self._release_lock()
            raise StateError(f"state store {self.path}: cannot open: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            self._release_lock()
            raise StateCorruptError(
                f"state store {self.path} is not a usable SQLite database ({exc}); "
                "move it aside to start afresh, or point state.path elsewhere"
            ) from exc
        except StateError:
            self._db.close()
            self._release_lock()
            raise
        self._depth: dict[str, int] = self._count_queued()

    # -- opening and migrating --------------------------------------------------------------------
    def _open(self) -> None:
        db = self._db
        db.execute("PRAGMA busy_timeout = 30000")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            self._configure()
            self._migrate(0)
            return
        if "meta" not in tables:
            raise StateCorruptError(
                f"state store {self.path} is a SQLite database of something else "
                f"(tables: {', '.join(sorted(tables))}); refusing to touch it"
            )
        facts = dict(db.execute(SQLITE.identity).fetchall())
        where = f"state store {self.path}"
        version = check_identity(facts, store=where, subject=where, elsewhere="state.path")
        # Damaged pages further in would otherwise only show up later, as a failing job every
        # tick: check every page now (a fraction of a second for a million seen records).
        problems = [" ".join(str(row[0]).split()) for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StateCorruptError(
                f"state store {self.path} is damaged ({'; '.join(problems)}); "
                "move it aside to start afresh, or point state.path elsewhere"
            )
        self._configure()  # only now that the file is known to be ours: WAL is persistent
        self._migrate(version)

    def _configure(self) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("state store %s: WAL journal not available (got %s)", self.path, mode)
        sync = os.environ.get("BK_OTEL_EXPORTER_SQLITE_SYNC", "NORMAL").upper()
        db.execute(f"PRAGMA synchronous = {'FULL' if sync == 'FULL' else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys = ON")
        # SQLite's own page cache, in KiB (its default is 2 MiB): a commit touches a few pages, and
        # the others come from the OS's file cache at a cost the benchmarks cannot see, while
        # 2 MiB is a tenth of the daemon's growth at 10,000 followed alarms (docs/benchmarks.md)
        db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")

    def _migrate(self, current: int) -> None:
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self._tx() as db:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                for sql, params in SQLITE.meta_after(version):
                    db.execute(sql, params)
            log.info("state store %s: schema migrated to version %d", self.path, version)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A failure anywhere, COMMIT included (a full disk, a deferred
        constraint), is rolled back, so the next transaction starts clean; sqlite3 errors come out
        as StateError naming the file. Callers change cached counters after the block, once the
        COMMIT went through."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: cannot begin a transaction: {exc}") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise StateError(f"state store {self.path}: write failed, nothing changed: {exc}") from exc
                raise

    def _rollback(self) -> None:
        # SQLite ends some failed transactions by itself (SQLITE_FULL, SQLITE_IOERR); a COMMIT
        # refused for a deferred constraint or SQLITE_BUSY leaves it open.
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # pragma: no cover - the connection itself is gone
            log.error("state store %s: rollback failed: %s", self.path, exc)

    def _synced_depth(self, db: sqlite3.Connection) -> dict[str, int]:
        """The cached depth, recounted first if another connection (a ``requeue`` or ``purge``
        run beside us) committed since we last looked. Inside a transaction: exact."""
        version = int(db.execute("PRAGMA data_version").fetchone()[0])
        if version != self._data_version:
            self._depth = {r[0]: int(r[1]) for r in db.execute(SQLITE.count_by_destination)}
            self._data_version = version
        return self._depth

    def _moved(self, destinations: Sequence[object], sign: int) -> None:
        """Committed rows of these destinations joined (+1) or left (-1) the queue: the cached depths."""
        for destination in destinations:
            key = str(destination)
            self._depth[key] = self._depth.get(key, 0) + sign

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _count_queued(self) -> dict[str, int]:
        with self._lock:
            self._data_version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            return {r[0]: int(r[1]) for r in self._query(SQLITE.count_by_destination)}

    # -- alarms -------------------------------------------------------------------------------------
    def upsert_alarm(
        self, ctx: AlarmContext, *, source: str, now: float, due: bool, change_token: str | None = None
    ) -> AlarmState:
        with self._tx() as db:
            row = db.execute(SQLITE.get_alarm, (ctx.alarm_id,)).fetchone()
            if row is None:
                db.execute(SQLITE.insert_alarm, (ctx.alarm_id, source, ctx.to_json(), now, now, change_token))
            else:
                current = alarm_from_row(row)
                db.execute(*SQLITE.refollow(current, ctx, source=source, now=now, due=due, change_token=change_token))
            out = db.execute(SQLITE.get_alarm, (ctx.alarm_id,)).fetchone()
        return alarm_from_row(out)

    def get_alarm(self, alarm_id: str) -> AlarmState | None:
        rows = self._query(SQLITE.get_alarm, (alarm_id,))
        return alarm_from_row(rows[0]) if rows else None

    def list_alarms(self, phases: Sequence[str] = ("active", "closing")) -> list[AlarmState]:
        rows = self._query(
            f"SELECT {ALARM_COLUMNS} FROM alarms WHERE phase IN ({_marks(len(phases))}) ORDER BY first_seen",
            list(phases),
        )
        return [alarm_from_row(r) for r in rows]

    def alarm_ids(self, phases: Sequence[str] = ("active", "closing"), source: str | None = None) -> list[str]:
        where, params = f"phase IN ({_marks(len(phases))})", list(phases)
        if source is not None:
            where, params = f"{where} AND source = ?", [*params, source]
        return [r[0] for r in self._query(f"SELECT alarm_id FROM alarms WHERE {where}", params)]

    def claim_due(self, now: float, limit: int, after: tuple[float, str] | None = None) -> list[AlarmState]:
        page, params = ("AND (next_poll, alarm_id) > (?, ?) ", [*after]) if after else ("", [])
        rows = self._query(
            f"SELECT {ALARM_COLUMNS} FROM alarms WHERE phase IN ('active', 'closing') AND next_poll <= ? "
            f"{page}ORDER BY next_poll, alarm_id LIMIT ?",
            (now, *params, limit),
        )
        return [alarm_from_row(r) for r in rows]

    def seen_uids(self, alarm_id: str) -> set[str]:
        return {r[0] for r in self._query(SQLITE.seen_uids, (alarm_id,))}

    def commit_poll(self, commit: PollCommit) -> CommitResult:
        with self._lock:  # held past the COMMIT: the cached depth moves with it, not before
            return self._commit_poll(commit)

    def _commit_poll(self, commit: PollCommit) -> CommitResult:
        inserted: list[str] = []
        with self._tx() as db:

            def known(uids: list[str]) -> set[str]:
                found: set[str] = set()
                for at in range(0, len(uids), 500):  # under SQLite's limit of bound parameters
                    part = uids[at : at + 500]
                    check = f"SELECT uid FROM seen WHERE alarm_id = ? AND uid IN ({_marks(len(part))})"
                    found.update(r[0] for r in db.execute(check, (commit.alarm_id, *part)))
                return found

            plan = plan_commit(commit, known, self._synced_depth(db), self.max_queued)
            if plan is None:
                return CommitResult(inserted=0, overflow=True)
            db.executemany(
                "INSERT OR IGNORE INTO seen (alarm_id, uid) VALUES (?, ?)",
                [(commit.alarm_id, uid) for uid in plan.seen],
            )
            by_destination: dict[str, list[QueuedRecord]] = {}
            for row in plan.rows:
                by_destination.setdefault(row.destination, []).append(row)
            for destination, rows in by_destination.items():
                cur = db.executemany(
                    "INSERT OR IGNORE INTO outbox (kind, uid, alarm_id, payload, encoded, enqueued_at, destination) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(r.kind, r.uid, commit.alarm_id, *row_values(r), commit.now, destination) for r in rows],
                )
                inserted.extend([destination] * cur.rowcount)
            db.executemany(
                "INSERT OR IGNORE INTO span_events (alarm_id, uid, time_ns, payload) VALUES (?, ?, ?, ?)",
                [(commit.alarm_id, e.uid, e.time_ns, e.payload) for e in commit.span_events],
            )
            if commit.sliced:
                db.executemany(
                    "UPDATE span_events SET sliced = 1 WHERE alarm_id = ? AND uid = ?",
                    [(commit.alarm_id, uid) for uid in commit.sliced],
                )
            db.execute(*alarm_update(commit, len(plan.fresh), SQLITE.mark))
        self._moved(inserted, +1)  # committed; under the lock: ack() changes it from the sender's thread
        return CommitResult(inserted=len(inserted), overflowed=plan.overflowed)

    def span_events(self, alarm_id: str) -> list[StoredSpanEvent]:
        return [span_event_from_row(r) for r in self._query(SQLITE.span_events, (alarm_id,))]

    def prune(self, now: float, retired_before: float) -> int:
        with self._tx() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT alarm_id FROM alarms WHERE phase IN ('retired', 'expired') AND retired_at < ?",
                    (retired_before,),
                )
            ]
            for alarm_id in ids:
                db.execute("DELETE FROM seen WHERE alarm_id = ?", (alarm_id,))
                db.execute("DELETE FROM span_events WHERE alarm_id = ?", (alarm_id,))
                db.execute("DELETE FROM alarms WHERE alarm_id = ?", (alarm_id,))
        return len(ids)

    # -- outbox -------------------------------------------------------------------------------------
    def claim_outbox(self, kind: str, limit: int, destination: str = "default") -> list[OutboxItem]:
        rows = self._query(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox "
            "WHERE destination = ? AND kind = ? AND parked_at IS NULL ORDER BY seq LIMIT ?",
            (destination, kind, limit),
        )
        return [outbox_item(r) for r in rows]

    def ack(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._lock:
            with self._tx() as db:
                gone = db.execute(
                    f"DELETE FROM outbox WHERE seq IN ({_marks(len(seqs))}) RETURNING destination, parked_at",
                    list(seqs),
                ).fetchall()
            self._moved([r[0] for r in gone if r[1] is None], -1)  # committed

    def release(self, seqs: Sequence[int]) -> None:
        if seqs:
            with self._tx() as db:
                db.execute(
                    f"UPDATE outbox SET attempts = attempts + 1 WHERE seq IN ({_marks(len(seqs))})",
                    list(seqs),
                )

    def park(self, seqs: Sequence[int], reason: str, now: float) -> None:
        if not seqs:
            return
        with self._lock:
            with self._tx() as db:
                gone = db.execute(
                    f"UPDATE outbox SET parked_at = ?, park_reason = ?, attempts = attempts + 1 "
                    f"WHERE parked_at IS NULL AND seq IN ({_marks(len(seqs))}) RETURNING destination",
                    [now, reason, *seqs],
                ).fetchall()
            self._moved([r[0] for r in gone], -1)  # committed

    def outbox_stats(self) -> OutboxStats:
        depth = parked = 0
        oldest: float | None = None
        by_kind: dict[str, int] = {}
        parked_by_kind: dict[str, int] = {}
        for r in self._query(SQLITE.counts_by_kind):
            if r["parked"]:
                parked += r["n"]
                parked_by_kind[r["kind"]] = r["n"]
                continue
            depth += r["n"]
            by_kind[r["kind"]] = r["n"]
            oldest = r["oldest"] if oldest is None else min(oldest, r["oldest"])
        return OutboxStats(
            depth=depth,
            parked=parked,
            oldest_enqueued_at=oldest,
            by_kind=by_kind,
            parked_by_kind=parked_by_kind,
            by_destination=destination_stats(self._query(SQLITE.destination_stats)),
        )

    def requeue(
        self, *, signal: str | None = None, parked_before: float | None = None, destination: str | None = None
    ) -> int:
        with self._lock:
            with self._tx() as db:
                sql, params = SQLITE.requeue(signal=signal, parked_before=parked_before, destination=destination)
                back = db.execute(sql + " RETURNING destination", params).fetchall()
                moved = len(back)
            self._moved([r[0] for r in back], +1)  # committed
        return moved

    def purge(self, signal: str, *, parked: bool = False) -> int:
        with self._lock:
            with self._tx() as db:
                sql, params = SQLITE.delete_rows(parked=parked, signal=signal)
                gone = db.execute(sql + " RETURNING destination", params).fetchall()
                deleted = len(gone)
            if not parked:
                self._moved([r[0] for r in gone], -1)  # committed
        return deleted

    def prune_parked(self, parked_before: float) -> int:
        with self._tx() as db:
            return int(db.execute(*SQLITE.delete_rows(parked=True, parked_before=parked_before)).rowcount)

    def acquire_role(self, role: str, now: float, ttl: float) -> bool:
        return True  # one process owns the file

    # -- meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._query(SQLITE.get_meta, (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(SQLITE.set_meta, (key, value))

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error as exc:  # pragma: no cover - closing a broken handle
                log.debug("state store %s: close failed: %s", self.path, exc)
            self._release_lock()

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock
