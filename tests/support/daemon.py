"""Run the exporter as a real subprocess (``python -m exporter ...``) from a config dict.

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

__all__ = ["OUTPUTS", "CapturedOutput", "Daemon", "run_cli", "take_outputs", "write_config"]

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
    """``bk-otel-exporter run`` as a subprocess; stderr goes to a file so it never blocks."""

    def __init__(self, config_path: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.env = env
        self.log_path = config_path.with_suffix(f".{int(time.time() * 1000)}.log")
        self.proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    def start(self) -> Daemon:
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in wait()
        OUTPUTS.append(CapturedOutput(f"daemon log {self.log_path.name}", path=self.log_path))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(self.env),
            cwd=ROOT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None and self._log is not None:
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"daemon output never showed {text!r}; output:\n{self.output()[-4000:]}")

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
