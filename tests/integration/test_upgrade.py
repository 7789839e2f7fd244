"""An upgrade in place: a state file written by release 41c521a, its records still queued as JSON
(schema 1), is opened by this version (migrated to the encoded outbox) and delivered in full.

The file is ``tests/fixtures/state-41c521a.db``, written by 41c521a's own code
(``tests/fixtures/make_state_41c521a.py`` says how): 13 log records of three alarms and 3 spans.
The daemon runs as a subprocess (``once``) and sends through rotel, a real collector.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from exporter.simulator import Simulator
from exporter.state.sqlite import SCHEMA_VERSION
from tests.support.daemon import exporter_config, run_cli, write_config
from tests.support.rotel import RotelCollector
from tests.support.secrets import APP_SECRET

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "state-41c521a.db"


def _queued(path: Path) -> dict[str, list[dict[str, object]]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT kind, payload FROM outbox WHERE parked_at IS NULL ORDER BY seq").fetchall()
        (version,) = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        db.close()
    assert version == "1", "the fixture is a schema 1 file, as 41c521a wrote it"
    out: dict[str, list[dict[str, object]]] = {"logs": [], "spans": []}
    for kind, payload in rows:
        out[kind].append(json.loads(payload))
    return out


def test_a_41c521a_state_file_with_queued_rows_is_migrated_and_fully_delivered(
    sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path
) -> None:
    rotel, receiver = rotel_collector
    state = tmp_path / "state.db"
    shutil.copy(FIXTURE, state)
    want = _queued(state)
    assert (len(want["logs"]), len(want["spans"])) == (13, 3)
    export = {"endpoint": rotel.grpc_endpoint, "signals": ["logs", "spans"], "timeout": "5s"}
    # no alarm configured: this run only sends what the old version left queued
    config = write_config(tmp_path / "c.yaml", exporter_config(sim, state, [], export=export))
    done = run_cli(["once", "--config", str(config)], env={"TEST_BK_SECRET": APP_SECRET})
    assert done.returncode == 0, done.stderr
    assert "schema migrated to version" in done.stderr

    logs = receiver.wait_for_logs(13, timeout=20)
    spans = receiver.wait_for_spans(3, timeout=20)
    got = {r["attributes"]["log.record.uid"]: r for r in logs}
    assert sorted(got) == sorted(str(e["uid"]) for e in want["logs"]), "every queued record, once"
    for event in want["logs"]:
        record = got[str(event["uid"])]
        assert record["body"] == event["body"]
        assert record["event_name"] == event["event_name"]
        assert record["time_unix_nano"] == event["timestamp_ns"]
        assert record["severity_number"] == event["severity_number"]
        assert record["attributes"] == event["attributes"]
    assert sorted(s["name"] for s in spans) == sorted(str(s["name"]) for s in want["spans"])

    db = sqlite3.connect(state)
    try:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    finally:
        db.close()
