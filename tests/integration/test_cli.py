"""The command line as users script it (docs/reference.md "Command line"): real subprocesses, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from exporter import __version__
from tests.support.daemon import run_cli, write_config
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


@pytest.mark.parametrize("command", [["run"], ["once"], ["status"]])
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
    status = run_cli(["status", "--json", "--config", str(path)], env={"SECRET": APP_SECRET})
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["outbox"] == {"queued": 0, "parked": 0, "by_signal": {}, "oldest_age_seconds": None}
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
