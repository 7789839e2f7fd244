"""Benchmark 6: start-up. ``bk-otel-exporter --version``, and daemon start to first poll.

``--version`` runs the installed console script (``.venv/bin/bk-otel-exporter``, else
``python -m exporter``) ``runs`` times; the figure is the median wall time of the whole process.
Time to first poll: the daemon is spawned with one configured alarm; the figure is the simulator's
arrival time of the first ``get_event_log`` request minus the spawn time (imports, config, state
store, scheduler start; everything a restart costs before work resumes).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Result, child_env, config_mapping, median, wall, write_config
from bench.latency import start_daemon, stop_daemon
from bench.receiver import CountingReceiver
from bench.simserver import SimProcess

__all__ = ["run"]


def _version_argv() -> list[str]:
    script = Path(sys.executable).with_name("bk-otel-exporter")
    if script.exists():
        return [str(script), "--version"]
    found = shutil.which("bk-otel-exporter")
    return [found, "--version"] if found else [sys.executable, "-m", "exporter", "--version"]


def _first_poll(workdir: Path, n: int) -> tuple[float, float]:
    """(spawn → first get_event_log, spawn → first record received) of a fresh daemon, seconds."""
    with SimProcess() as sim, CountingReceiver() as receiver:
        ids = sim.call("populate", alarms=1, records=1)["ids"]
        config = config_mapping(sim.base_url, receiver.endpoint, workdir / f"startup-{n}.db", alarms={"ids": ids})
        path = write_config(workdir / f"startup-{n}.json", config)
        log = workdir / f"startup-{n}.log"
        spawned = time.time()
        daemon = start_daemon(path, log)
        try:
            if not receiver.wait_for(1, timeout=60):
                raise RuntimeError(f"startup: no record arrived:\n{log.read_text()[-3000:]}")
            received = time.time() - spawned
            first = sim.call("first_request")["wall"]
        finally:
            stop_daemon(daemon)
    if first is None:
        raise RuntimeError("startup: the simulator saw no get_event_log request")
    return float(first) - spawned, received


def run(*, quick: bool, command: str) -> Result:
    runs, daemons = (3, 1) if quick else (15, 3)
    argv = _version_argv()
    result = Result(
        "startup",
        "6. Start-up",
        command,
        {
            "--version runs": runs,
            "daemon starts": daemons,
            "--version command": f"{Path(argv[0]).name} {' '.join(argv[1:])}",
        },
        target="--version < 0.3 s",
    )
    env = child_env()
    times = []
    for _ in range(runs):
        started = wall()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        times.append(wall() - started)
        if done.returncode != 0 or "bk-otel-exporter" not in done.stdout:
            raise RuntimeError(f"--version failed: {done.stdout} {done.stderr}")
    started = wall()
    subprocess.run([sys.executable, "-c", "pass"], env=env, timeout=60, check=True)
    bare = wall() - started
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        firsts = [_first_poll(Path(tmp), n) for n in range(daemons)]
    version = median(times)
    result.add("`bk-otel-exporter --version`", f"median {version:.3f} s, max {max(times):.3f} s ({runs} runs)")
    result.add("bare `python -c pass` for comparison", f"{bare:.3f} s")
    result.add(
        "daemon spawn → first get_event_log (1 alarm)",
        f"median {median([f[0] for f in firsts]):.2f} s ({', '.join(f'{f[0]:.2f}' for f in firsts)})",
    )
    result.add(
        "daemon spawn → first record at the receiver",
        f"median {median([f[1] for f in firsts]):.2f} s",
    )
    result.measured = f"--version {version:.3f} s"
    result.passed = version < 0.3
    return result
