"""Benchmark 5: end-to-end latency, in real time, through the real daemon.

Three processes: the simulator (real clock, fixed API latency), the daemon
(``python -m exporter run``, APScheduler and all) and this one with the OTLP receiver. After the
daemon has delivered the alarms' first records, probes are appended to random alarms at a steady
rate; a probe's latency runs from the moment the simulator made it visible (its
``time.time()`` after appending) to the moment the receiver handled the export carrying it. Every
process reads the same host clock.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Result, child_env, config_mapping, median, percentile, write_config
from bench.receiver import CountingReceiver
from bench.simserver import SimProcess

__all__ = ["run", "start_daemon", "stop_daemon"]


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9
    return int(proc.returncode)


def run(*, quick: bool, command: str) -> Result:
    if quick:
        alarms, interval, probe_seconds, rate, latency, concurrency = 30, 2.0, 4.0, 5.0, 0.02, 8
    else:
        alarms, interval, probe_seconds, rate, latency, concurrency = 1000, 5.0, 60.0, 10.0, 0.05, 16
    result = Result(
        "latency",
        "5. Latency",
        command,
        {
            "followed alarms": f"{alarms:,} (alarms.ids)",
            "poll.interval": f"{interval:.0f} s (jitter 0.1, the default)",
            "API latency": f"{latency * 1000:.0f} ms; bkmonitor.max_concurrency {concurrency}, rate_limit 0",
            "probes": f"{rate:.0f} per second for {probe_seconds:.0f} s, each on a random alarm",
            "exporter": "the daemon (`python -m exporter run`) in its own process",
        },
        target=f"p99 ≤ poll.interval + 1 s = {interval + 1:.0f} s",
    )
    rng = random.Random(11)
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
        SimProcess(latency=latency) as sim,
        CountingReceiver(collect=True) as receiver,
    ):
        ids = sim.call("populate", alarms=alarms, records=1)["ids"]
        config = config_mapping(
            sim.base_url,
            receiver.endpoint,
            Path(tmp) / "latency.db",
            bkmonitor={"max_concurrency": concurrency, "rate_limit": 0},
            alarms={"ids": ids},
            poll={"interval": f"{interval}s"},
        )
        log = Path(tmp) / "daemon.log"
        spawned = time.time()
        daemon = start_daemon(write_config(Path(tmp) / "latency.json", config), log)
        try:
            if not receiver.wait_for(alarms, timeout=120):
                raise RuntimeError(f"latency: the first records did not arrive:\n{log.read_text()[-3000:]}")
            warm = time.time() - spawned
            first_poll = sim.call("first_request")["wall"]
            receiver.take_arrivals()
            sent: dict[str, float] = {}
            step = 1.0 / rate
            next_at = time.time()
            for i in range(int(probe_seconds * rate)):
                time.sleep(max(0.0, next_at - time.time()))
                message = f"latency probe #{i}"
                sent[message] = float(sim.call("append", ids=[rng.choice(ids)], messages=[message])["wall"])
                next_at += step
            receiver.wait_for(alarms + len(sent), timeout=3 * interval + 10)
            arrivals = {a.body: a.arrived for a in receiver.take_arrivals() if a.body in sent}
            daemon_cpu = _cpu_seconds(daemon.pid)
        finally:
            code = stop_daemon(daemon)
    if code != 0:
        raise RuntimeError(f"latency: the daemon exited with {code}:\n{log.read_text()[-3000:]}")
    delays = [arrivals[m] - t for m, t in sent.items() if m in arrivals]
    missing = len(sent) - len(delays)
    p50, p99 = median(delays), percentile(delays, 99)
    result.add("probes delivered", f"{len(delays)} of {len(sent)}")
    result.add(
        "latency visible → received",
        f"p50 {p50:.2f} s, p90 {percentile(delays, 90):.2f} s, p99 {p99:.2f} s, max {max(delays):.2f} s",
    )
    if first_poll is not None:
        result.add(
            "daemon start → first get_event_log / first records all delivered",
            f"{first_poll - spawned:.2f} s / {warm:.2f} s ({alarms:,} alarms)",
        )
    if daemon_cpu is not None:
        result.add("daemon CPU over the whole run", f"{daemon_cpu:.1f} s")
    result.measured = f"p99 {p99:.2f} s"
    result.passed = missing == 0 and p99 <= interval + 1.0
    return result


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live child (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
