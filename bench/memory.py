"""Benchmark 4: memory. Peak RSS of the exporter with many followed alarms and a large backlog.

Three processes: the simulator (:mod:`bench.simserver`), the exporter (:mod:`bench.memworker`,
whose ``VmHWM`` is the figure), and this one with the OTLP receiver. The exporter follows
``alarms`` configured alarms of ``records`` flow records each, polls them all while nothing is
sent (so ``alarms × records`` records wait in the outbox), then drains the backlog.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import Result, child_env, config_mapping, write_config
from bench.receiver import CountingReceiver
from bench.simserver import SimProcess

__all__ = ["measure", "run"]


def measure(
    alarms: int, records: int, workdir: Path, *, concurrency: int = 16, limit: int | None = None
) -> dict[str, Any]:
    with SimProcess() as sim, CountingReceiver() as receiver:
        ids = sim.call("populate", alarms=alarms, records=records)["ids"]
        state = workdir / "memory.db"
        config = config_mapping(
            sim.base_url,
            receiver.endpoint,
            state,
            bkmonitor={"max_concurrency": concurrency, "rate_limit": 0},
            alarms={"ids": ids},
        )
        path = write_config(workdir / "memory.json", config)
        done = subprocess.run(
            [sys.executable, "-m", "bench.memworker", str(path), *([str(limit)] if limit else [])],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memworker failed ({done.returncode}):\n{done.stderr[-3000:]}")
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        report["received"] = receiver.records
    return report


def run(*, quick: bool, command: str) -> Result:
    alarms, records = (200, 10) if quick else (10_000, 10)
    result = Result(
        "memory",
        "4. Memory",
        command,
        {
            "followed alarms": f"{alarms:,} (alarms.ids)",
            "backlog": f"{alarms * records:,} records ({records} per alarm, all queued before the first send)",
            "bkmonitor.max_concurrency": 16,
            "measured": "VmHWM of the exporter process (its own process; simulator and receiver elsewhere)",
        },
        target="peak RSS ≤ 75 MB",
    )
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        m = measure(alarms, records, Path(tmp))
    if m["queued"] != alarms * records or m["exported"] != alarms * records:
        raise RuntimeError(f"memory: queued {m['queued']}, exported {m['exported']} of {alarms * records}")
    peak = m["end"]["VmHWM"] * 1.048576  # MiB -> MB
    result.add("RSS after imports (baseline)", f"{m['imported']['VmRSS']:.1f} MiB")
    result.add(
        f"RSS after following {alarms:,} alarms",
        f"{m['followed']['VmRSS']:.1f} MiB (peak {m['followed']['VmHWM']:.1f})",
    )
    result.add(
        f"RSS with {m['queued']:,} records queued",
        f"{m['backlog']['VmRSS']:.1f} MiB (peak {m['backlog']['VmHWM']:.1f}); poll took {m['poll_seconds']:.1f} s",
    )
    result.add(
        "RSS after draining the backlog",
        f"{m['drained']['VmRSS']:.1f} MiB; drain took {m['drain_seconds']:.1f} s "
        f"({m['exported'] / max(m['drain_seconds'], 1e-9):,.0f} records/s)",
    )
    result.add("peak RSS (VmHWM) of the whole run", f"{m['end']['VmHWM']:.1f} MiB = {peak:.1f} MB")
    result.add(
        "state file (db + wal) with the backlog",
        f"{m['state_bytes_backlog'] / 1e6:.1f} MB ({m['state_bytes_backlog'] / alarms / 1e3:.1f} kB per alarm)",
    )
    result.add(
        "state after the drain (each alarm's seen uids and row; pages in use)",
        f"{m['state_live_bytes'] / 1e6:.1f} MB = **{m['state_live_bytes'] / alarms:,.0f} bytes per alarm** "
        f"({records} records each); the file stays {m['state_bytes_drained'] / 1e6:.1f} MB, "
        "SQLite keeps the freed outbox pages for reuse",
    )
    result.measured = f"{peak:.1f} MB"
    result.passed = peak <= 75.0
    return result
