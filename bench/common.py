"""Shared pieces of the benchmarks: results, configs, synthetic alarms, statistics."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.config import Config, config_from_dict

__all__ = [
    "APP_CODE",
    "APP_SECRET",
    "T0",
    "Result",
    "child_env",
    "config_mapping",
    "exporter_config",
    "median",
    "percentile",
    "story",
    "wall",
    "write_config",
]

APP_CODE = "bk-otel-bench"
APP_SECRET = "bench-secret-0123456789"
T0 = 1_718_000_000.0

#: The operates of a synthetic alarm's flow, oldest first (none folds: no two CONVERGE in a row).
_FLOW = (
    ("CREATE", "AVG(CPU使用率) >= 80.0%, 当前值{v}%, 达到了触发告警条件（5周期内满足1次检测算法）"),
    ("ACTION", "达到通知告警的执行条件【告警触发时】，已通知 admin(邮件),ops(企业微信)"),
    ("CONVERGE", "AVG(CPU使用率) >= 80.0%, 当前值{v}%"),
    ("ACTION", "达到通知告警的执行条件【告警持续时】，已通知 admin(邮件)"),
    ("ACK", "admin确认了该告警事件并备注：,处理中 #{i}"),
    ("CONVERGE", "AVG(CPU使用率) >= 80.0%, 当前值{v}%"),
    ("ACTION", "达到通知告警的执行条件【告警持续时】，已通知 ops(企业微信)"),
    ("SEVERITY_UP", "收到了更高级别的事件，告警级别上升为：致命"),
    ("CONVERGE", "AVG(CPU使用率) >= 95.0%, 当前值{v}%"),
    ("ACTION", "达到通知告警的执行条件【告警升级时】，已通知 admin(电话)"),
)


@dataclass
class Result:
    """One benchmark's outcome, rendered into docs/benchmarks.md by :mod:`bench.report`."""

    name: str
    title: str
    command: str
    sizes: dict[str, Any]
    figures: list[tuple[str, str]] = field(default_factory=list)  # (label, value)
    target: str = ""
    measured: str = ""  # the value compared with the target
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: further figures with a target of their own, measured in the same run: (title, measured, target, passed)
    checks: list[tuple[str, str, str, bool | None]] = field(default_factory=list)
    #: tables of more than two columns, rendered after the figures: (header, rows)
    tables: list[tuple[tuple[str, ...], list[tuple[str, ...]]]] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        self.figures.append((label, value))

    def check(self, title: str, measured: str, target: str, passed: bool | None) -> None:
        self.checks.append((title, measured, target, passed))

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def wall() -> float:
    return time.perf_counter()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def story(i: int, records: int) -> list[tuple[str, str]]:
    """The first ``records`` (operate, message) pairs of synthetic alarm ``i``'s flow, oldest first."""
    out = []
    for k in range(records):
        operate, text = _FLOW[k % len(_FLOW)]
        out.append((operate, text.format(v=80 + (i * 7 + k) % 20, i=k)))
    return out


def exporter_config(
    base_url: str,
    endpoint: str,
    state: Path,
    *,
    bkmonitor: dict[str, Any] | None = None,
    poll: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
    alarms: dict[str, Any] | None = None,
) -> Config:
    raw = config_mapping(base_url, endpoint, state, bkmonitor=bkmonitor, poll=poll, export=export, alarms=alarms)
    return config_from_dict(raw, env={})


def config_mapping(
    base_url: str,
    endpoint: str,
    state: Path,
    *,
    bkmonitor: dict[str, Any] | None = None,
    poll: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
    alarms: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config file's mapping: the simulator's credentials, OTLP/gRPC to ``endpoint``, no
    health server, WARNING logs; the sections given are merged in."""
    return {
        "bkmonitor": {"base_url": base_url, "app_code": APP_CODE, "app_secret": APP_SECRET, **(bkmonitor or {})},
        "alarms": alarms or {},
        "poll": poll or {},
        "export": {"endpoint": endpoint, "protocol": "grpc", **(export or {})},
        "state": {"path": str(state)},
        "server": {"listen": ""},
        "logging": {"level": "WARNING"},
    }


def write_config(path: Path, mapping: dict[str, Any]) -> Path:
    """A config file for an exporter subprocess (JSON, which YAML reads as it is)."""
    path.write_text(json.dumps(mapping, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def child_env() -> dict[str, str]:
    """The environment of benchmark subprocesses: the repository root importable, no OTEL_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BK_OTEL_", "NOTIFY_SOCKET"))}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
