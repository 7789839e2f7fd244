"""Unit tests of the operator's kit: ``status --check``'s judgement, ``once``'s progress line and
its drain that goes on while it makes progress, the completion generator."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path
from typing import Any

import pytest

from exporter.app import App
from exporter.completion import bash_script, describe, zsh_script
from exporter.config import config_from_dict
from exporter.metrics import Metrics, Progress
from exporter.progress import ProgressReporter, format_eta, render_progress
from exporter.sinks.base import Batch, ExportOutcome, ExportResult
from exporter.sinks.memory import MemorySink
from exporter.state.sqlite import SqliteStateStore
from exporter.status import judge_status
from tests.support.pipeline import Clock, Rig, row

NOW = 1_718_000_000.0
BK = {"base_url": "https://paas.example.com", "app_code": "bk-app", "app_secret": "S3cr3t-app-VALUE"}


# -- status --check -----------------------------------------------------------------------------------


def status(**over: Any) -> dict[str, Any]:
    alarms = {
        "followed": 2,
        "closing": 0,
        "retired": 0,
        "expired": 0,
        "list": [{"id": "1", "last_error": None}, {"id": "2", "last_error": None}],
    }
    outbox = {"queued": 0, "parked": 0, "by_signal": {}, "oldest_age_seconds": None}
    alarms.update(over.pop("alarms", {}))
    outbox.update(over.pop("outbox", {}))
    return {
        "store": "s.db",
        "alarms": alarms,
        "outbox": outbox,
        "last_successful_poll": NOW - 30,
        "last_successful_export": NOW - 30,
        **over,
    }


def test_a_healthy_reading() -> None:
    verdict = judge_status(status(outbox={"queued": 4, "oldest_age_seconds": 12.0}), max_age=900, now=NOW)
    assert verdict.healthy and verdict.reasons == []
    assert verdict.line() == "healthy: 2 alarms followed, 4 records queued, none parked"


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        (
            {"alarms": {"list": [{"id": "1", "last_error": "es_error 3314001"}, {"id": "2", "last_error": None}]}},
            "the last poll of 1 of 2 alarms failed (alarm 1: es_error 3314001)",
        ),
        ({"last_successful_poll": None}, "no successful poll yet"),
        ({"last_successful_poll": NOW - 1000}, "last successful poll 1000s ago (limit 900s)"),
        (
            {"outbox": {"queued": 7, "oldest_age_seconds": 901.0}},
            "oldest queued record 901s old (limit 900s), 7 queued",
        ),
        ({"outbox": {"parked": 3}}, "3 records parked (refused by the backend: `requeue --parked` sends them again)"),
    ],
)
def test_each_degradation_is_named(over: dict[str, Any], reason: str) -> None:
    verdict = judge_status(status(**over), max_age=900, now=NOW)
    assert not verdict.healthy
    assert verdict.reasons == [reason]
    assert verdict.line() == f"degraded: {reason}"


def test_nothing_followed_needs_no_poll_and_reasons_add_up() -> None:
    idle = status(alarms={"followed": 0, "list": []}, last_successful_poll=None)
    assert judge_status(idle, max_age=900, now=NOW).healthy
    both = judge_status(status(outbox={"parked": 1, "queued": 1, "oldest_age_seconds": 5000.0}), max_age=900, now=NOW)
    assert len(both.reasons) == 2 and both.line().count("; ") == 1


# -- once: progress -------------------------------------------------------------------------------------


def reading(**kw: int) -> Progress:
    base = {
        "alarms_followed": 0,
        "alarms_read": 0,
        "records_read": 0,
        "records_new": 0,
        "records_exported": 0,
        "outbox_depth": 0,
    }
    return Progress(**{**base, **kw})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "?"), (-1, "?"), (float("nan"), "?"), (0, "0s"), (59.4, "59s"), (185, "3m05s"), (7620, "2h07m")],
)
def test_format_eta(seconds: float | None, text: str) -> None:
    assert format_eta(seconds) == text


def test_progress_lines() -> None:
    start = reading(alarms_read=10, records_read=100, records_new=40)
    now = reading(alarms_read=30, records_read=160, records_new=70, records_exported=5)
    assert (
        render_progress("polling", 60, start, now, 10.0)
        == "polling: 20/60 alarms, 60 records (30 new), 2.0 alarms/s, ETA 20s"
    )
    assert (
        render_progress("polling", 60, start, start, 0.0)
        == "polling: 0/60 alarms, 0 records (0 new), 0.0 alarms/s, ETA ?"
    )
    done = reading(records_exported=300)
    assert (
        render_progress("exporting", 400, reading(), done, 3.0) == "exporting: 300/400 records, 100.0 records/s, ETA 1s"
    )
    assert (
        render_progress("discovering", 0, reading(), reading(alarms_followed=7), 1.0)
        == "discovering: 7 alarms followed"
    )


def test_metrics_progress_counts_reads_records_and_exports() -> None:
    metrics = Metrics()
    metrics.set_alarms_followed(3)
    metrics.records_fetched(5)
    metrics.records_fetched(0)  # an alarm read with no records is still an alarm read
    metrics.records_enqueued(4)
    metrics.records_exported(2, "logs")
    metrics.set_outbox(depth=2, oldest_age_seconds=1, parked=0)
    assert metrics.progress() == Progress(3, 2, 5, 4, 2, 2)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_redrawn_line_and_a_final_newline() -> None:
    counters = {"read": 0}
    clock = Clock(0.0)

    def read() -> Progress:
        return reading(alarms_read=counters["read"])

    out = FakeTerminal()
    reporter = ProgressReporter(read, out, every=3600, clock=clock)
    assert reporter.interactive
    reporter.phase("polling", 4)
    counters["read"], clock.t = 2, 4.0
    reporter._draw()
    assert out.getvalue() == "\r\x1b[Kpolling: 2/4 alarms, 0 records (0 new), 0.5 alarms/s, ETA 4s"
    reporter.clear()  # before a log line: the line is rubbed out
    assert out.getvalue().endswith("\r\x1b[K")
    counters["read"] = 4
    reporter.close()
    assert out.getvalue().endswith("\r\x1b[Kpolling: 4/4 alarms, 0 records (0 new), 1.0 alarms/s, ETA 0s\n")


def test_elsewhere_progress_is_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    with caplog.at_level("INFO", logger="exporter.progress"):
        with ProgressReporter(lambda: reading(), out, every=0.01) as reporter:
            assert not reporter.interactive
            reporter.phase("exporting", 10)
            import time

            time.sleep(0.2)
    assert out.getvalue() == ""  # nothing drawn
    lines = [r.getMessage() for r in caplog.records if r.name == "exporter.progress"]
    assert lines and all(re.fullmatch(r"progress: (starting|exporting): .*", line) for line in lines)


# -- once: the final drain goes on while it makes progress ------------------------------------------------


class SlowSink(MemorySink):
    """Acknowledges every batch, each taking ``seconds`` of the (fake) clock."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def export(self, signal: str, batch: Batch) -> ExportResult:
        self.clock.t += self.seconds
        return super().export(signal, batch)


class DeadSink(MemorySink):
    def export(self, signal: str, batch: Batch) -> ExportResult:
        return ExportResult(ExportOutcome.RETRY, "down")


def queued_app(tmp_path: Path, sink: MemorySink, clock: Clock, records: int = 12) -> App:
    store = SqliteStateStore(tmp_path / "s.db")
    rig = Rig(store)
    rig.clock.t = clock.t
    rig.source.data["1"] = [row("ACTION", 1_718_000_000 - 3600 + i, f"note {i}") for i in range(records)]
    rig.follow("1")
    rig.poller.run_cycle()
    assert store.outbox_stats().depth == records
    config = config_from_dict({"bkmonitor": BK, "export": {"batch_size": 4, "timeout": "10s"}}, env={})
    return App(config, sink=sink, clock=clock, store=store)


def test_the_final_drain_goes_on_past_its_window_while_batches_get_through(tmp_path: Path) -> None:
    clock = Clock(NOW)
    sink = SlowSink(clock, seconds=20.0)  # 3 batches of 4, 20 s each: 60 s, twice the 30 s window
    app = queued_app(tmp_path, sink, clock)
    try:
        report = app.run_once()
    finally:
        app.close()
    assert (report.drain.exported, report.queued, report.exit_code) == (12, 0, 0)
    assert len(sink.logs) == 12


def test_the_final_drain_stops_when_the_backend_fails(tmp_path: Path) -> None:
    clock = Clock(NOW)
    app = queued_app(tmp_path, DeadSink(), clock)
    try:
        report = app.run_once()
    finally:
        app.close()
    assert (report.drain.exported, report.drain.failed, report.queued, report.exit_code) == (0, True, 12, 1)


def test_once_reports_its_phases(tmp_path: Path) -> None:
    clock = Clock(NOW)
    app = queued_app(tmp_path, SlowSink(clock, 0.0), clock)
    phases: list[tuple[str, int]] = []
    try:
        app.run_once(on_phase=lambda name, total: phases.append((name, total)))
    finally:
        app.close()
    assert phases == [("discovering", 0), ("polling", 0), ("exporting", 12)]


# -- completion -----------------------------------------------------------------------------------------


def toy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy")
    parser.add_argument("--level", choices=["a", "b"], help="the [level]: a or b")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run it")
    run.add_argument("--config", "-c", metavar="FILE", help="it's a file")
    run.add_argument("--json", action="store_true")
    shell = sub.add_parser("shell", help="a shell")
    shell.add_argument("name", choices=["bash", "zsh"])
    return parser


def test_describe_walks_the_parser() -> None:
    tree = describe(toy_parser())
    assert [c.name for c in tree.commands] == ["run", "shell"]
    run = tree.commands[0]
    by_flag = {o.flags[0]: o for o in run.options}
    assert (
        by_flag["--config"].flags == ("--config", "-c")
        and by_flag["--config"].is_file
        and by_flag["--config"].takes_value
    )
    assert not by_flag["--json"].takes_value
    assert tree.commands[1].positionals[0].choices == ("bash", "zsh")
    assert {o.flags[0]: o.choices for o in tree.options}["--level"] == ("a", "b")


def test_the_scripts_quote_what_the_shells_would_misread() -> None:
    tree = describe(toy_parser())
    bash = bash_script(tree)
    assert "complete -F _toy toy" in bash
    assert '--config|-c) COMPREPLY=($(compgen -f -- "$cur")); return ;;' in bash
    zsh = zsh_script(tree)
    assert "'--level[the \\[level\\]\\: a or b]:value:(a b)'" in zsh
    assert "'(--config -c)'{--config,-c}'[it'\\''s a file]:value:_files'" in zsh
    assert "'1:name:(bash zsh)'" in zsh


# -- metrics hygiene --------------------------------------------------------------------------------------


def test_the_exposition_has_process_and_python_series_a_capacity_and_no_created() -> None:
    metrics = Metrics(outbox_capacity=5000)
    metrics.api_request("get_event_log", "ok", 0.1)
    metrics.records_exported(3, "logs")
    text = metrics.render()[0].decode()
    assert not re.search(r"^\w+_created[ {]", text, re.M)
    for family in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_objects_collected_total",
    ):
        assert re.search(rf"^{family}[ {{]", text, re.M), family
    assert "bk_otel_outbox_capacity 5000.0" in text
    assert 'bk_otel_api_requests_total{api_endpoint="get_event_log",outcome="ok"} 1.0' in text
    assert 'endpoint="get_event_log",outcome' not in text.replace("api_endpoint", "")
    assert "# TYPE bk_otel_api_retries_total counter" in text
    metrics.api_retry("get_event_log", "1306201")
    assert 'bk_otel_api_retries_total{api_endpoint="get_event_log",code="1306201"} 1.0' in metrics.render()[0].decode()
