"""Issue 9 end to end: plugins selected from a config, run by the real daemon against the simulator.

* A throwaway plugin distribution (``bkoe-capture`` 0.3.1: a ``capture`` sink and a ``shout``
  mapper) is built as a wheel in a temp dir and installed by pip into a temp ``--target``
  directory, which the exporter subprocesses get on their ``PYTHONPATH``: the venv stays clean,
  and the entry points are found exactly as for any installed distribution.
* The ``ecs`` mapper through a real collector (rotel) to the decoding receiver.
* The ``jsonl`` sink across the crash window (written and fsync-ed, never acknowledged): exactly
  one line per record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.simulator import Simulator
from tests.support.daemon import ROOT, exporter_config, run_cli, write_config
from tests.support.plugins import build_wheel
from tests.support.rotel import RotelCollector
from tests.support.secrets import APP_SECRET
from tests.support.sim import T0, expected_records, story

pytestmark = pytest.mark.integration

ENV = {"TEST_BK_SECRET": APP_SECRET}

CAPTURE = '''
"""A throwaway bk-otel-exporter plugin distribution: a sink and a mapper."""

from __future__ import annotations

import json

from exporter.mapping.contract import DefaultMapper
from exporter.model import LogEvent
from exporter.plugins import NoOptions, Plugin, PluginOptions
from exporter.sinks.base import ExportOutcome, ExportResult


class CaptureOptions(PluginOptions):
    path: str
    fail: bool = False


class CaptureSink:
    name = "capture"

    def __init__(self, options):
        self.options = options

    def export(self, signal, batch):
        if self.options.fail:
            raise RuntimeError("capture told to fail")
        with open(self.options.path, "a", encoding="utf-8") as fh:
            for item in batch:
                row = {"uid": item.uid, "signal": signal, "event_name": item.event_name, "body": item.body,
                       "attributes": dict(item.attributes)}
                fh.write(json.dumps(row) + "\\n")
        return ExportResult(ExportOutcome.SUCCESS)

    def shutdown(self):
        pass


class ShoutMapper(DefaultMapper):
    def map_log(self, record, ctx, *, with_trace):
        event = super().map_log(record, ctx, with_trace=with_trace)
        attributes = {**event.attributes, "shout.by": "bkoe-capture"}
        return LogEvent(**{**vars(event), "body": event.body.upper(), "attributes": attributes})


capture = Plugin(kind="sink", name="capture", options=CaptureOptions, create=lambda o, c: CaptureSink(o),
                 description="writes what it gets to options.path")
shout = Plugin(kind="mapper", name="shout", options=NoOptions, create=lambda o, c: ShoutMapper(),
               description="the default mapping, upper case")
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``bkoe-capture`` 0.3.1 installed by pip into a directory of its own."""
    root = tmp_path_factory.mktemp("plugin-dist")
    wheel = build_wheel(
        root / "dist",
        "bkoe-capture",
        "0.3.1",
        {"bkoe_capture.py": textwrap.dedent(CAPTURE)},
        {
            "bk_otel_exporter.sinks": {"capture": "bkoe_capture:capture"},
            "bk_otel_exporter.mappers": {"shout": "bkoe_capture:shout"},
        },
    )
    target = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "bkoe_capture-0.3.1.dist-info" / "entry_points.txt").is_file()
    yield target
    shutil.rmtree(root, ignore_errors=True)


def with_site(site: Path) -> dict[str, str]:
    return {**ENV, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}


def config(sim: Simulator, state: Path, ids: list[str], **over: Any) -> dict[str, Any]:
    return exporter_config(sim, state, ids, export={"endpoint": "http://127.0.0.1:9", "timeout": "2s"}, **over)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- a third-party distribution -----------------------------------------------------------------------------


def test_a_throwaway_distribution_is_selected_from_the_config(sim: Simulator, site: Path, tmp_path: Path) -> None:
    alarms = story(sim)
    want = expected_records(sim, alarms)
    out = tmp_path / "captured.jsonl"
    plugins = {"mapper": {"name": "shout"}, "sink": {"name": "capture", "options": {"path": str(out)}}}
    cfg = write_config(tmp_path / "c.yaml", config(sim, tmp_path / "s.db", [a.id for a in alarms], plugins=plugins))
    done = run_cli(["once", "--config", str(cfg)], env=with_site(site))
    assert done.returncode == 0, done.stderr
    rows = read_lines(out)
    assert sorted(r["uid"] for r in rows) == sorted(want), "every record exactly once, through the plugin sink"
    for row in rows:
        raw = want[row["uid"]]
        assert row["signal"] == "logs" and row["event_name"] == raw["operate"]
        assert row["body"] == raw["message"].upper()  # the plugin mapper ran
        assert row["attributes"]["shout.by"] == "bkoe-capture"
        assert row["attributes"]["bk.alarm.id"] == raw["alarm"]
        assert row["attributes"]["log.record.uid"] == row["uid"]


def test_plugins_lists_it_with_its_version(site: Path) -> None:
    done = run_cli(["plugins"], env=with_site(site))
    assert done.returncode == 0, done.stderr
    lines = {tuple(line.split()[:4]) for line in done.stdout.splitlines()}
    assert ("sink", "capture", "bkoe-capture", "0.3.1") in lines
    assert ("mapper", "shout", "bkoe-capture", "0.3.1") in lines
    assert ("sink", "jsonl", "bk-otel-exporter", "0.1.0") in lines
    rows = json.loads(run_cli(["plugins", "--json"], env=with_site(site)).stdout)
    capture = next(r for r in rows if r["name"] == "capture")
    assert capture == {
        "kind": "sink",
        "name": "capture",
        "target": "bkoe_capture:capture",
        "distribution": "bkoe-capture",
        "version": "0.3.1",
        "status": "ok",
        "description": "writes what it gets to options.path",
    }
    without = run_cli(["plugins"], env=ENV)
    assert "capture" not in without.stdout and "jsonl" in without.stdout


def test_config_errors_name_the_option_and_the_installed_plugins(sim: Simulator, site: Path, tmp_path: Path) -> None:
    plugins = {"mapper": {"name": "shouting"}, "sink": {"name": "capture", "options": {"paht": "x"}}}
    cfg = write_config(tmp_path / "c.yaml", config(sim, tmp_path / "s.db", [], plugins=plugins))
    done = run_cli(["check-config", "--config", str(cfg)], env=with_site(site))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "plugins.mapper.name: unknown mapper 'shouting' (installed: default, ecs, shout)",
        "plugins.sink.options.path: field required",
        "plugins.sink.options.paht: unknown option (did you mean 'path'?)",
    ]
    run = run_cli(["once", "--config", str(cfg)], env=with_site(site))
    assert run.returncode == 2 and "plugins.mapper.name" in run.stderr


def test_a_plugin_sink_that_raises_keeps_the_records_queued(sim: Simulator, site: Path, tmp_path: Path) -> None:
    alarms = story(sim)
    want = expected_records(sim, alarms)
    out = tmp_path / "captured.jsonl"

    def run(fail: bool) -> subprocess.CompletedProcess[str]:
        plugins = {"sink": {"name": "capture", "options": {"path": str(out), "fail": fail}}}
        raw = config(sim, tmp_path / "s.db", [a.id for a in alarms], plugins=plugins)
        return run_cli(["once", "--config", str(write_config(tmp_path / "c.yaml", raw))], env=with_site(site))

    failed = run(fail=True)
    assert failed.returncode == 1
    assert "sink capture raised RuntimeError: capture told to fail" in failed.stderr
    assert "Traceback" in failed.stderr  # logged with the traceback ...
    assert not out.exists()
    status = run_cli(["status", "--json", "--config", str(tmp_path / "c.yaml")], env=with_site(site))
    assert json.loads(status.stdout)["outbox"]["queued"] == len(want)  # ... and nothing lost
    delivered = run(fail=False)
    assert delivered.returncode == 0, delivered.stderr
    assert sorted(r["uid"] for r in read_lines(out)) == sorted(want)


# -- the ECS mapper through a collector --------------------------------------------------------------------


def test_ecs_mapper_through_a_collector(sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path) -> None:
    rotel, receiver = rotel_collector
    alarms = story(sim)
    want = expected_records(sim, alarms)
    raw = config(sim, tmp_path / "s.db", [a.id for a in alarms], plugins={"mapper": {"name": "ecs"}})
    raw["export"] = {"endpoint": rotel.grpc_endpoint, "protocol": "grpc"}
    done = run_cli(["once", "--config", str(write_config(tmp_path / "c.yaml", raw))], env=ENV)
    assert done.returncode == 0, done.stderr
    logs = receiver.wait_for_logs(len(want), timeout=20)
    assert sorted(r["attributes"]["event.id"] for r in logs) == sorted(want)
    for log in logs:
        attrs, record = log["attributes"], want[log["attributes"]["event.id"]]
        assert log["event_name"] == record["operate"] and log["body"] == record["message"]
        assert attrs["message"] == record["message"]
        assert attrs["event.code"] == record["operate"]
        assert attrs["event.action"] == record["operate"].lower().replace("_", "-")
        assert attrs["event.kind"] == "alert" and attrs["event.outcome"] == "success"
        assert attrs["labels.bk_alarm_id"] == record["alarm"]
        assert attrs["labels.bk_event_log_status"] == "SUCCESS"
        assert attrs["log.record.uid"] == attrs["event.id"]
        assert not [name for name in attrs if name.startswith("bk.")]


# -- the jsonl sink across the crash window ----------------------------------------------------------------


def _db_files(state: Path) -> list[Path]:
    return [p for p in state.parent.iterdir() if p.name.startswith(state.name) and not p.name.endswith(".lock")]


def test_jsonl_exactly_one_line_per_record_across_a_crash(sim: Simulator, tmp_path: Path) -> None:
    """Run 1 writes (and fsyncs) every record; its acknowledgement is then undone by restoring the
    state store from before it, exactly what a SIGKILL between the file write and the outbox commit
    leaves. Run 2 delivers the same rows again, plus a new record: each must be in the files once."""
    alarms = story(sim)
    state = tmp_path / "state" / "s.db"
    state.parent.mkdir()
    out = tmp_path / "out" / "records.jsonl"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the sink wants a directory")
    ids = [a.id for a in alarms]

    def once(path: Path) -> subprocess.CompletedProcess[str]:
        plugins = {"sink": {"name": "jsonl", "options": {"path": str(path), "max_bytes": 1500, "backups": 20}}}
        cfg = write_config(tmp_path / "c.yaml", config(sim, state, ids, plugins=plugins))
        return run_cli(["once", "--config", str(cfg)], env=ENV)

    queued = once(blocked / "records.jsonl")  # the sink cannot write: everything stays queued
    assert queued.returncode == 1 and "jsonl: cannot open" in queued.stderr
    backup = tmp_path / "backup"
    backup.mkdir()
    for f in _db_files(state):
        shutil.copy2(f, backup / f.name)
    first = once(out)
    assert first.returncode == 0, first.stderr
    written = [r["uid"] for r in read_lines(out)] if out.exists() else []
    rotated = sorted(out.parent.glob("records.jsonl.*"))
    assert rotated, "the files rotated"
    assert len(written) + sum(len(read_lines(f)) for f in rotated) == len(expected_records(sim, alarms))
    # the crash: the outbox never heard that run 1 delivered
    for f in _db_files(state):
        f.unlink()
    for f in backup.iterdir():
        shutil.copy2(f, state.parent / f.name)
    alarms[0].log("CLOSE", "closed by admin", at=T0 + 500)
    second = once(out)
    assert second.returncode == 0, second.stderr
    total = len(expected_records(sim, alarms)) - 1
    assert f"jsonl sink: {total} of {total + 1} records are already in" in second.stderr  # the replay happened
    every = [
        row["uid"] for f in [*sorted(out.parent.glob("records.jsonl.*"), reverse=True), out] for row in read_lines(f)
    ]
    assert sorted(every) == sorted(expected_records(sim, alarms)), "exactly one line per record"
    assert len(every) == len(set(every))
