"""A throwaway Prometheus server on loopback, and promtool: Debian's ``prometheus`` package, which
``scripts/ensure-prometheus.sh`` installs.

* :func:`prometheus_bin` finds the directory holding ``prometheus`` and ``promtool``
  (``$BK_OTEL_PROMETHEUS_BIN``, PATH, /usr/bin); :func:`require_prometheus` returns it or skips the
  test, and fails it under ``CI=true`` (there a missing Prometheus is a broken machine).
* :class:`PrometheusServer` scrapes the given targets every second, evaluates the given rule files
  every second, keeps its data in a temporary directory and answers PromQL over its HTTP API.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.wait import wait_until

__all__ = ["PrometheusServer", "free_port", "prometheus_bin", "promtool", "require_prometheus"]

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def prometheus_bin() -> Path | None:
    candidates: list[Path] = []
    if os.environ.get("BK_OTEL_PROMETHEUS_BIN"):
        candidates.append(Path(os.environ["BK_OTEL_PROMETHEUS_BIN"]))
    found = shutil.which("prometheus")
    if found:
        candidates.append(Path(found).resolve().parent)
    candidates += [Path("/usr/bin"), Path("/usr/local/bin")]
    for directory in candidates:
        if (directory / "prometheus").is_file() and (directory / "promtool").is_file():
            return directory
    return None


def require_prometheus() -> Path:
    bindir = prometheus_bin()
    if bindir is None:
        message = "prometheus/promtool not found; run scripts/ensure-prometheus.sh"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(message + " (CI=true: required, not skipped)", pytrace=False)
        pytest.skip(message)
    return bindir


def promtool(
    bindir: Path, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bindir / "promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """``prometheus`` scraping ``targets`` (job name -> ``host:port`` list) every second."""

    def __init__(self, bindir: Path, workdir: Path, targets: dict[str, Sequence[str]], rule_files: Sequence[Path] = ()):
        self.bindir = bindir
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(hosts)}]} for job, hosts in targets.items()
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        check = promtool(self.bindir, "check", "config", str(self.config_path))
        assert check.returncode == 0, check.stdout + check.stderr
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "prometheus"),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, 30, lambda: f"prometheus ready; its log:\n{self.log()[-3000:]}", every=0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"prometheus exited:\n{self.log()[-3000:]}"
        try:
            with _NO_PROXY.open(self.url + "/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer (an error answer fails)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with _NO_PROXY.open(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the result vector (each ``{"metric": {...}, "value": [t, "v"]}``)."""
        data = self.api("query", query=expr, time=f"{time.time():.3f}")
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return list(data["result"])

    def target_health(self) -> dict[str, str]:
        return {t["labels"]["instance"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
