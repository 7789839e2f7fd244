"""Run the exporter as a real subprocess (``python -m exporter ...``) from a config dict: the one
daemon wrapper (:class:`Daemon`, ``run``) and the one CLI runner (:func:`run_cli`) of the suite.

Every output of those subprocesses (the daemon's log file, a CLI command's stdout and stderr) is
registered in :data:`OUTPUTS`; ``tests/conftest.py`` scans them for the test secrets
(``tests.support.secrets``) when the test that produced them ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.simulator import Simulator
from tests.support.wait import wait_until

__all__ = [
    "OUTPUTS",
    "CapturedOutput",
    "Daemon",
    "exporter_config",
    "merge",
    "run_cli",
    "take_outputs",
    "write_config",
]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CapturedOutput:
    """One output of an exporter subprocess: a file still being written, or text."""

    label: str
    path: Path | None = None
    text: str = ""

    def read(self) -> str:
        if self.path is None:
            return self.text
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


#: Outputs registered since the last :func:`take_outputs` (appended from the test's thread).
OUTPUTS: list[CapturedOutput] = []


def take_outputs() -> list[CapturedOutput]:
    """Hand over (and forget) the outputs registered so far."""
    taken = list(OUTPUTS)
    del OUTPUTS[: len(taken)]
    return taken


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, mapping by mapping (any other value replaces)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def exporter_config(sim: Simulator, state: Path, ids: Sequence[str], **over: Any) -> dict[str, Any]:
    """The config a test daemon starts from: the simulator's alarms ``ids``, fast polls and
    retries, the state file ``state``, no health server; the app secret comes from
    ``${TEST_BK_SECRET}``. ``over`` (``export=`` at least) is merged in with :func:`merge`."""
    config: dict[str, Any] = {
        "bkmonitor": {
            "base_url": sim.base_url,
            "app_code": sim.app_code,
            "app_secret": "${TEST_BK_SECRET}",
            "rate_limit": 0,
            "retry": {"initial_backoff": "100ms", "max_backoff": "500ms"},
        },
        "alarms": {"ids": list(ids)},
        "poll": {"interval": "1s", "retire_after": "1h", "jitter": 0},
        "state": {"path": str(state)},
        "server": {"listen": ""},
    }
    return merge(config, over)


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BK_OTEL_", "NOTIFY_SOCKET"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion."""
    done = subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(env),
        cwd=ROOT,
    )
    OUTPUTS.append(CapturedOutput(f"cli {' '.join(args)}", text=f"{done.stdout}\n{done.stderr}"))
    return done


class Daemon:
    """``bk-otel-exporter run`` as a subprocess; its stdout and stderr go to a file so it never blocks.

    It may be started again once it has stopped (a restart on the same state file): the next
    process appends to the same log file.
    """

    def __init__(
        self,
        config_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        """``wrap``: a command that runs the daemon's command line (its arguments follow), exec'ing
        it so the daemon keeps the pid (``unshare -m sh -c '… exec "$@"' sh`` for a private mount)."""
        self.config_path = config_path
        self.env = env
        self.wrap = tuple(wrap)
        self.log_path = log_path or config_path.with_suffix(f".{int(time.time() * 1000)}.log")
        self.proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    def start(self) -> Daemon:
        assert not self.alive, "already running"
        self._close_log()
        if self.proc is None:
            OUTPUTS.append(CapturedOutput(f"daemon log {self.log_path.name}", path=self.log_path))
        # the first process starts the log afresh, a restart appends to it; closed in wait()
        self._log = open(self.log_path, "w" if self.proc is None else "a", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "exporter", "run", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(self.env),
            cwd=ROOT,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time (then the test fails on the code)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.wait(1) if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.wait(10)

    def wait_for_output(self, text: str, timeout: float = 20.0) -> str:
        wait_until(lambda: text in self.output(), timeout, f"daemon output to show {text!r}", every=0.1, daemon=self)
        return self.output()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
