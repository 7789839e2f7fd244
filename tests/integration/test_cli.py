"""The command line as users script it (docs/reference.md "Command line"): real subprocesses, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from exporter import __version__
from exporter.model import AlarmContext, SpanRecord
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.sqlite import SqliteStateStore
from tests.support.daemon import run_cli, write_config
from tests.support.records import queued_log
from tests.support.secrets import APP_SECRET, OTLP_TOKEN

pytestmark = pytest.mark.integration


def base(tmp_path: Path) -> dict[str, object]:
    return {
        "bkmonitor": {"base_url": "http://127.0.0.1:9", "app_code": "app", "app_secret": "${SECRET}"},
        "alarms": {"ids": [17180000005819837]},
        "export": {"headers": {"authorization": f"Bearer {OTLP_TOKEN}"}},
        "state": {"path": str(tmp_path / "state.db")},
    }


def test_check_config_reports_every_problem_with_its_path_and_exits_2(tmp_path: Path) -> None:
    cfg = base(tmp_path)
    cfg["bkmonitor"] = {"base_url": "http://127.0.0.1:9", "app_code": "app"}  # no secret at all
    cfg["poll"] = {"interval": "soon"}
    cfg["export"] = {"protocoll": "grpc", "headers": {"authorization": f"Bearer {OTLP_TOKEN}"}}
    done = run_cli(["check-config", "--config", str(write_config(tmp_path / "c.yaml", cfg))])
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 3, done.stderr
    assert any(line.startswith("bkmonitor.app_secret:") for line in lines)
    assert any(line.startswith("poll.interval:") for line in lines)
    assert any(line.startswith("export.protocoll:") and "protocol" in line for line in lines)
    assert OTLP_TOKEN not in done.stderr + done.stdout


def test_check_config_prints_the_effective_config_redacted(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", base(tmp_path))
    done = run_cli(["check-config", "--config", str(path)], env={"SECRET": APP_SECRET})
    assert done.returncode == 0, done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective["bkmonitor"]["app_secret"] == "***"
    assert effective["export"]["headers"] == {"authorization": "***"}
    assert effective["poll"]["interval"] in ("30s", 30, 30.0)
    assert APP_SECRET not in done.stdout and OTLP_TOKEN not in done.stdout


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", base(tmp_path))
    done = run_cli(["check-config"], env={"SECRET": APP_SECRET, "BK_OTEL_EXPORTER_CONFIG": str(path)})
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", [["run"], ["once"], ["status"], ["requeue"], ["purge", "--signal", "spans"]])
def test_bad_config_exits_2_for_every_command(tmp_path: Path, command: list[str]) -> None:
    cfg = base(tmp_path)
    cfg["surprise"] = True
    done = run_cli([*command, "--config", str(write_config(tmp_path / "c.yaml", cfg))], env={"SECRET": APP_SECRET})
    assert done.returncode == 2
    assert "surprise: unknown option" in done.stderr


def test_version_status_and_plugins(tmp_path: Path) -> None:
    version = run_cli(["--version"])
    assert version.returncode == 0 and __version__ in version.stdout
    path = write_config(tmp_path / "c.yaml", base(tmp_path))
    missing = run_cli(["status", "--json", "--config", str(path)], env={"SECRET": APP_SECRET})
    assert missing.returncode == 1  # nothing has run yet: said, and no empty store is made
    assert f"state store {tmp_path / 'state.db'} does not exist (state.path)" in missing.stderr
    assert not (tmp_path / "state.db").exists()
    SqliteStateStore(tmp_path / "state.db").close()
    status = run_cli(["status", "--json", "--config", str(path)], env={"SECRET": APP_SECRET})
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["outbox"] == {
        "queued": 0,
        "parked": 0,
        "by_signal": {},
        "parked_by_signal": {},
        "stranded": {},
        "oldest_age_seconds": None,
    }
    assert report["last_successful_poll"] is None
    plugins = run_cli(["plugins"])
    assert plugins.returncode == 0
    for name in ("bkmonitor", "default", "ecs", "otlp", "console", "jsonl"):
        assert name in plugins.stdout


def test_once_against_an_unreachable_bluekingmonitor_exits_1_and_says_why(tmp_path: Path) -> None:
    cfg = base(tmp_path)
    cfg["bkmonitor"] = {**cfg["bkmonitor"], "timeout": "1s", "retry": {"max_attempts": 1}}  # type: ignore[dict-item]
    done = run_cli(["once", "--config", str(write_config(tmp_path / "c.yaml", cfg))], env={"SECRET": APP_SECRET})
    assert done.returncode == 1
    assert "get_event_log" in done.stderr
    assert APP_SECRET not in done.stderr


def _left_by_an_earlier_config(path: Path) -> None:
    """A state file with 5 queued logs (3 of them parked, one of those long ago) and 4 queued spans."""
    import time

    alarm = "17180000005819837"
    store = SqliteStateStore(path)
    try:
        store.upsert_alarm(AlarmContext(alarm), source="config", now=1.0, due=True)
        logs = [f"l{i}" for i in range(5)]
        spans = [
            SpanRecord(uid=f"s{i}", alarm_id=alarm, trace_id=1, span_id=2 + i, name="a", start_ns=1, end_ns=2)
            for i in range(4)
        ]
        store.commit_poll(
            PollCommit(
                alarm,
                1.0,
                seen=logs,
                queued=[queued_log(u, alarm) for u in logs],
                extra_queued=[QueuedRecord("spans", s.uid, s.to_json()) for s in spans],
            )
        )
        first, second, third, *_ = store.claim_outbox("logs", 10)
        store.park([first.seq], "HTTP 400: bad attribute", time.time() - 7200)
        store.park([second.seq, third.seq], "HTTP 400: bad attribute", time.time())
    finally:
        store.close()


def test_requeue_purge_and_status_deal_with_parked_and_stranded_records(tmp_path: Path) -> None:
    env = {"SECRET": APP_SECRET}
    state = tmp_path / "state.db"
    path = write_config(tmp_path / "c.yaml", base(tmp_path))  # export.signals: [logs]
    gone = run_cli(["requeue", "--config", str(path)], env=env)
    assert gone.returncode == 1 and "does not exist (state.path)" in gone.stderr and not state.exists()
    _left_by_an_earlier_config(state)

    status = run_cli(["status", "--json", "--config", str(path)], env=env)
    outbox = json.loads(status.stdout)["outbox"]
    assert (outbox["queued"], outbox["parked"], outbox["by_signal"]) == (6, 3, {"logs": 2, "spans": 4})
    assert (outbox["parked_by_signal"], outbox["stranded"]) == ({"logs": 3}, {"spans": 4})
    text = run_cli(["status", "--config", str(path)], env=env).stdout
    assert "records parked:         3 (3 logs)" in text and "bk-otel-exporter requeue" in text
    assert "records stranded:       4 spans (spans is not in export.signals" in text
    assert "bk-otel-exporter purge --signal spans" in text

    for bad, option in (
        (["requeue", "--signal", "metrics"], "--signal: must be logs or spans"),
        (["requeue", "--older-than", "soon"], "--older-than: "),
        (["purge", "--signal", "logs"], "--signal: logs is in export.signals"),
    ):
        done = run_cli([*bad, "--config", str(path)], env=env)
        assert done.returncode == 2 and option in done.stderr, (bad, done.stderr)

    old = run_cli(["requeue", "--older-than", "1h", "--config", str(path)], env=env)
    assert (old.returncode, old.stdout) == (0, "requeued 1 parked records\n")  # only the one parked 2h ago
    assert "4 queued spans records wait for spans to be in export.signals" in old.stderr
    rest = run_cli(["requeue", "--parked", "--signal", "logs", "--config", str(path)], env=env)
    assert (rest.returncode, rest.stdout) == (0, "requeued 2 parked records\n")
    purged = run_cli(["purge", "--signal", "spans", "--config", str(path)], env=env)
    assert (purged.returncode, purged.stdout) == (0, "purged 4 queued spans records\n")
    none = run_cli(["purge", "--signal", "logs", "--parked", "--config", str(path)], env=env)
    assert (none.returncode, none.stdout) == (0, "purged 0 parked logs records\n")

    outbox = json.loads(run_cli(["status", "--json", "--config", str(path)], env=env).stdout)["outbox"]
    assert (outbox["queued"], outbox["parked"], outbox["by_signal"], outbox["stranded"]) == (5, 0, {"logs": 5}, {})
