"""Issue 5, case 8: a corrupted or foreign state file is a clear error naming it, never a reset;
and one state file serves one exporter at a time.

Each damaged file is offered to ``run``, ``once`` and ``status``: every one exits 1 with a
message naming the file and what is wrong with it, and the file is left byte for byte as it was
(nothing was reset, migrated or "repaired"). Damage inside the file (pages in the middle of a
valid database) is found at start-up, not later as a job failing every second.

Two exporters on one SQLite file would both poll and both send every record: the second one is
refused (exit 1, naming the file and the pid holding it), ``status`` still reads it, and a lock
left behind by a SIGKILLed exporter does not block the next start.
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from exporter.errors import StateError
from exporter.model import AlarmContext, LogEvent
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.sqlite import SqliteStateStore
from tests.support.daemon import run_cli, write_config
from tests.support.rotel import RotelCollector

from ._harness import ENV, Run, Story, assert_exactly_once, exporter_config, simulator, wait_delivered

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _real_store(path: Path) -> None:
    """A state file as the exporter writes it, a few dozen pages long."""
    store = SqliteStateStore(path)
    try:
        store.upsert_alarm(AlarmContext("17180000301"), source="config", now=1.0, due=True)
        events = [
            LogEvent(f"{i:032x}", "17180000301", 10**18, 10**18, "ACTION", "m" * 300, 9, "INFO") for i in range(300)
        ]
        rows = [QueuedRecord("logs", e.uid, e.to_json()) for e in events]
        store.commit_poll(PollCommit("17180000301", 1.0, seen=[e.uid for e in events], queued=rows))
    finally:
        store.close()


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(1).randbytes(16384))


def _truncated(path: Path) -> None:
    _real_store(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _damaged_pages(path: Path) -> None:
    _real_store(path)
    with path.open("r+b") as f:
        f.seek(4096 * 3)
        f.write(random.Random(2).randbytes(4096 * 4))


def _sqlite(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()


def _foreign(path: Path) -> None:
    _sqlite(path, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO users VALUES (1, 'x')")


def _other_app(path: Path) -> None:
    _sqlite(path, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)", "INSERT INTO meta VALUES ('app', 'grafana')")


def _newer(path: Path) -> None:
    _real_store(path)
    _sqlite(path, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage": (_garbage, "is not a usable SQLite database"),
    "truncated": (_truncated, "is not a usable SQLite database"),
    "damaged pages": (_damaged_pages, "is damaged"),
    "another program's database": (_foreign, "is a SQLite database of something else"),
    "another program's meta table": (_other_app, "was not written by bk-otel-exporter"),
    "written by a newer exporter": (_newer, "has schema version 99, newer than this exporter"),
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", list(CASES))
def test_unusable_state_file_is_refused_by_the_store_untouched(case: str, tmp_path: Path) -> None:
    make, problem = CASES[case]
    state = tmp_path / "state.db"
    make(state)
    before = _digest(state)
    for exclusive in (True, False):  # run and once take the lock; status does not
        with pytest.raises(StateError, match=re.escape(f"state store {state} ") + ".*" + re.escape(problem)):
            SqliteStateStore(state, exclusive=exclusive)
    assert _digest(state) == before, "the file was changed"
    SqliteStateStore(tmp_path / "fresh.db", exclusive=True).close()  # the lock was released


@pytest.mark.parametrize("case", ["garbage", "damaged pages", "another program's database"])
def test_unusable_state_file_stops_every_command_naming_the_file(case: str, tmp_path: Path) -> None:
    make, problem = CASES[case]
    state = tmp_path / "state.db"
    make(state)
    before = _digest(state)
    config = {
        "bkmonitor": {"base_url": "http://127.0.0.1:9", "app_code": "a", "app_secret": "${TEST_BK_SECRET}"},
        "alarms": {"ids": ["17180000301"]},
        "export": {"endpoint": "http://127.0.0.1:9"},
        "state": {"path": str(state)},
        "server": {"listen": ""},
    }
    path = write_config(tmp_path / "c.yaml", config)
    commands = [["run", "--config", str(path)], ["once", "--config", str(path)], ["status", "--config", str(path)]]
    # one after another: run and once both take the state file's lock, so side by side one of them
    # could stop first on the other's lock ("is in use by another bk-otel-exporter") instead of on
    # the file's own problem; each command here meets the damaged file on its own
    results = [run_cli(args, env=ENV, timeout=30) for args in commands]
    for args, done in zip(commands, results, strict=True):
        assert done.returncode == 1, (args[0], done.returncode, done.stderr)
        message = done.stderr.strip().splitlines()[-1]
        assert f"state store {state} " in message and problem in message, (args[0], message)
    assert _digest(state) == before, "the file was changed"


def test_one_exporter_per_state_file(tmp_path: Path, rotel_collector: RotelCollector) -> None:
    rotel, receiver = rotel_collector
    with simulator() as sim:
        story = Story(sim, seed=12)
        story.add_alarms(3, records=4)
        state = tmp_path / "s.db"
        path = write_config(tmp_path / "c.yaml", exporter_config(sim, rotel.grpc_endpoint, state, story.ids))
        first = Run(path)
        try:
            first.wait_for("bk-otel-exporter running", 30)
            with ThreadPoolExecutor(3) as pool:
                second, once, status = pool.map(
                    lambda command: run_cli([command, "--config", str(path)], env=ENV, timeout=30),
                    ["run", "once", "status"],
                )
            for done in (second, once):
                assert done.returncode == 1, done.stderr
                assert f"state store {state} is in use by another bk-otel-exporter (pid {first.pid})" in done.stderr
            assert status.returncode == 0 and "alarms followed:        3" in status.stdout, status.stderr
            first.sigkill()  # the lock file stays behind; the kernel released the lock itself
        finally:
            first.stop_quietly()
        assert (tmp_path / "s.db.lock").exists()
        again = Run(path)
        try:
            want = story.expected_uids()
            assert_exactly_once(wait_delivered(receiver, want), want)
            again.finish()
        finally:
            again.stop_quietly()
