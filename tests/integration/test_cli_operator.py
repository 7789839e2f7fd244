"""The operator's command line: ``status --check`` exit codes, ``--log-level``/``--log-format``,
``completion bash|zsh``, and ``once``'s progress on a terminal (a pty) and off one."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.simulator import Simulator
from tests.integration.faults._harness import Story
from tests.support.daemon import OUTPUTS, ROOT, CapturedOutput, exporter_config, run_cli, write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.secrets import APP_SECRET
from tests.support.sim import expected_uids, story

pytestmark = pytest.mark.integration

ENV = {"TEST_BK_SECRET": APP_SECRET}


def config_file(tmp_path: Path, sim: Simulator, ids: list[str], endpoint: str, name: str = "c", **over: Any) -> Path:
    export = {"endpoint": endpoint, "timeout": "2s", **over.pop("export", {})}
    raw = exporter_config(sim, tmp_path / f"{name}.db", ids, export=export, **over)
    return write_config(tmp_path / f"{name}.yaml", raw)


def check(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["status", "--check", "--config", str(path), *extra], env=ENV)


# -- status --check ---------------------------------------------------------------------------------


def test_status_check_exit_codes(sim: Simulator, otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    ids = [a.id for a in story(sim)]
    n = len(expected_uids(sim, ids))

    # healthy: everything fetched was delivered
    healthy = config_file(tmp_path, sim, ids, otlp_receiver.grpc_endpoint, "healthy")
    assert run_cli(["once", "--config", str(healthy)], env=ENV).returncode == 0
    done = check(healthy)
    assert (done.returncode, done.stdout.splitlines()) == (
        0,
        ["healthy: 2 alarms followed, 0 records queued, none parked"],
    )

    # degraded: records queued (the backend is unreachable) and older than --max-age
    queued = config_file(tmp_path, sim, ids, "http://127.0.0.1:9", "queued")
    assert run_cli(["once", "--config", str(queued)], env=ENV).returncode == 1
    assert check(queued).returncode == 0  # young enough for the default 15m
    time.sleep(1.5)
    done = check(queued, "--max-age", "1s")
    assert done.returncode == 1
    (line,) = done.stdout.splitlines()
    assert re.fullmatch(
        r"degraded: last successful poll \d+s ago \(limit 1s\); "
        rf"oldest queued record \d+s old \(limit 1s\), {n} queued",
        line,
    ), line
    plain = run_cli(["status", "--config", str(queued)], env=ENV)
    assert plain.returncode == 0 and f"records queued:         {n}" in plain.stdout  # plain status: always 0

    # degraded: the backend refused records for good (parked)
    otlp_receiver.mode = "reject"
    parked = config_file(tmp_path, sim, ids, otlp_receiver.grpc_endpoint, "parked")
    assert run_cli(["once", "--config", str(parked)], env=ENV).returncode == 1
    done = check(parked)
    assert done.returncode == 1
    assert done.stdout.startswith(f"degraded: {n} records parked"), done.stdout
    as_json = json.loads(run_cli(["status", "--check", "--json", "--config", str(parked)], env=ENV).stdout)
    assert as_json["check"]["healthy"] is False and as_json["outbox"]["parked"] == n

    # degraded: the last poll failed (BlueKing answered errors to every read)
    otlp_receiver.mode = "ok"
    failing = config_file(
        tmp_path, sim, ids, otlp_receiver.grpc_endpoint, "failing", bkmonitor={"retry": {"max_attempts": 1}}
    )
    sim.inject("es_error", times=1000, endpoint="get_event_log")
    assert run_cli(["once", "--config", str(failing)], env=ENV).returncode == 1
    done = check(failing)
    assert done.returncode == 1
    assert done.stdout.startswith("degraded: the last poll of 3 of 3 alarms failed (alarm "), done.stdout
    assert "no successful poll yet" in done.stdout

    # bad config, bad threshold: 2
    bad = write_config(tmp_path / "bad.yaml", {"bkmonitor": {"base_url": "x"}, "unknown": 1})
    done = check(bad)
    assert done.returncode == 2 and "unknown" in done.stderr
    done = check(healthy, "--max-age", "soon")
    assert done.returncode == 2 and done.stderr.startswith("--max-age:")


# -- --log-level / --log-format -------------------------------------------------------------------------


def test_log_flags_override_the_config_for_one_run(sim: Simulator, tmp_path: Path) -> None:
    ids = [a.id for a in story(sim)]
    path = config_file(
        tmp_path, sim, ids, "http://127.0.0.1:9", export={"timeout": "500ms"}, logging={"level": "ERROR"}
    )
    quiet = run_cli(["once", "--config", str(path)], env=ENV)
    assert quiet.returncode == 1 and "INFO" not in quiet.stderr and "WARNING" not in quiet.stderr
    # per command, after it
    loud = run_cli(["once", "--config", str(path), "--log-level", "info", "--log-format", "json"], env=ENV)
    lines = [json.loads(line) for line in loud.stderr.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len(loud.stderr.splitlines())
    assert {"INFO", "WARNING"} <= {line["level"] for line in lines}
    # global, before the command
    loud = run_cli(["--log-level", "WARNING", "once", "--config", str(path)], env=ENV)
    assert "WARNING" in loud.stderr and " INFO " not in loud.stderr
    # a command's own flag wins over the global one
    both = run_cli(["--log-level", "ERROR", "once", "--log-level", "INFO", "--config", str(path)], env=ENV)
    assert " INFO exporter.cli: once:" in both.stderr
    wrong = run_cli(["once", "--log-level", "LOUD", "--config", str(path)], env=ENV)
    assert wrong.returncode == 2 and "--log-level" in wrong.stderr


# -- completion ---------------------------------------------------------------------------------------


def complete(script: str, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` after ``bk-otel-exporter``."""
    line = ["bk-otel-exporter", *words]
    program = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in line)}); COMP_CWORD={len(line) - 1}\n"
        '_bk_otel_exporter; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_is_generated_from_the_parser(tmp_path: Path) -> None:
    done = run_cli(["completion", "bash"])
    assert done.returncode == 0
    script = done.stdout
    assert {"run", "once", "status", "check-config", "completion"} <= set(complete(script, ""))
    assert complete(script, "st") == ["status"]
    assert complete(script, "status", "--c") == ["--config", "--check"]
    assert complete(script, "--log-level", "INFO", "once", "--log-format", "") == ["text", "json"]
    assert complete(script, "completion", "z") == ["zsh"]
    (tmp_path / "exporter.yaml").touch()
    assert complete(script, "run", "--config", str(tmp_path / "exp")) == [str(tmp_path / "exporter.yaml")]


def test_zsh_completion_names_every_command_and_option() -> None:
    from exporter.cli import _parser
    from exporter.completion import describe

    done = run_cli(["completion", "zsh"])
    assert done.returncode == 0
    script = done.stdout
    assert script.startswith("#compdef bk-otel-exporter\n")
    tree = describe(_parser())
    for command in tree.commands:
        assert f"'{command.name}:" in script
        for option in command.options:
            assert all(flag in script for flag in option.flags), (command.name, option.flags)
    assert ":value:(text json)" in script and ":value:_files" in script
    assert "compdef _bk_otel_exporter bk-otel-exporter" in script
    wrong = run_cli(["completion", "fish"])
    assert wrong.returncode == 2


# -- once: progress ------------------------------------------------------------------------------------


def slow_backfill(sim: Simulator, tmp_path: Path, receiver: OtlpReceiver) -> Path:
    """Twelve alarms read one at a time from a BlueKing that takes 0.5 s a call: a few seconds."""
    s = Story(sim)
    s.add_alarms(12, records=3)
    sim.latency = 0.5
    return config_file(tmp_path, sim, s.ids, receiver.grpc_endpoint, bkmonitor={"max_concurrency": 1})


def run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run with stderr (and stdout) on a pseudo-terminal; returns the exit code and what it showed."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BK_OTEL_", "NOTIFY_SOCKET"))}
    env.update(PYTHONPATH=str(ROOT), **ENV)
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=ROOT,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = proc.wait(120)
    reader.join(10)
    os.close(master)
    shown = b"".join(chunks).decode("utf-8", "replace")
    OUTPUTS.append(CapturedOutput(f"pty {' '.join(args)}", text=shown))
    return code, shown


def test_once_shows_a_live_progress_line_on_a_terminal(
    sim: Simulator, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    path = slow_backfill(sim, tmp_path, otlp_receiver)
    code, shown = run_on_a_terminal(["once", "--config", str(path), "--since", "1d"])
    assert code == 0, shown
    # redrawn in place: a carriage return and erase-line before each drawing, no newline between
    drawings = [d.split("\r")[0].strip() for d in shown.split("\r\x1b[K")[1:]]
    polling = [d for d in drawings if d.startswith("polling: ")]
    assert len(polling) >= 2, drawings  # several redraws while the alarms are read
    for line in polling:
        match = re.match(r"polling: (\d+)/12 alarms, (\d+) records \((\d+) new\), [\d.]+ alarms/s, ETA (\S+)$", line)
        assert match, line
    counts = [int(re.match(r"polling: (\d+)", line)[1]) for line in polling]  # type: ignore[index]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    assert any(re.search(r"ETA \d+s$", line) for line in polling)
    # the last drawing stays, ended by a newline: the export, complete
    assert re.search(r"\r\x1b\[Kexporting: 36/36 records, [\d.]+ records/s, ETA 0s\r?\n", shown), shown[-500:]
    assert "once: 12 alarms read, 36 new records, 36 exported" in shown
    assert "progress:" not in shown  # no log lines of progress on a terminal


def test_once_logs_progress_every_few_seconds_off_a_terminal(
    sim: Simulator, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    path = slow_backfill(sim, tmp_path, otlp_receiver)
    done = run_cli(["once", "--config", str(path), "--since", "1d"], env=ENV)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    progress = [line for line in done.stderr.splitlines() if " INFO exporter.progress: progress: " in line]
    assert progress, done.stderr  # the run lasts more than one interval
    assert all(
        re.search(r"progress: (polling: \d+/12 alarms|exporting: \d+/36 records|discovering)", line)
        for line in progress
    )
    assert "once: 12 alarms read, 36 new records, 36 exported" in done.stderr
