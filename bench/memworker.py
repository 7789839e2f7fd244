"""The exporter side of the memory benchmark, in its own process so its peak RSS is its own.

``python -m bench.memworker CONFIG.json [LIMIT]`` builds the App from the config file, follows the
configured alarms, polls every one of them once (only the first ``LIMIT`` due ones when given:
one cycle of a fixed size, however many alarms are followed) with the sender stopped (a backend
outage: everything they hold is queued), then drains the outbox into the OTLP endpoint. It
prints one JSON line with the resident set (``VmRSS``) and its high-water mark (``VmHWM``) after
each phase, in MiB, the CPU seconds of each phase and the state files' sizes.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "memory_status"]


def memory_status() -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of this process in MiB (Linux)."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    return out


def _state_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _live_bytes(path: Path) -> int:
    """Bytes in use in the (closed, checkpointed) database: its pages minus the free ones."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages, free, size = (
            db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size")
        )
    finally:
        db.close()
    return int((pages - free) * size)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    limit = int(args[1]) if len(args) > 1 else None
    from exporter.runtime import limit_malloc_arenas

    limit_malloc_arenas()  # what the run and once commands do first
    report: dict[str, Any] = {"start": memory_status()}
    from exporter.app import App
    from exporter.config import load_config

    config = load_config(args[0], env={})
    report["imported"] = memory_status()
    app = App(config)
    try:
        cpu = time.process_time()
        app.sync_configured_alarms()
        report["sync_cpu"] = time.process_time() - cpu
        report["followed"] = memory_status()
        report["state_bytes_followed"] = _state_bytes(Path(config.state.path))
        started, cpu = time.perf_counter(), time.process_time()
        cycle = app.poll(force=True) if limit is None else app.poller.run_cycle(force=True, limit=limit)
        report["poll_seconds"] = time.perf_counter() - started
        report["poll_cpu"] = time.process_time() - cpu
        report["polled"], report["failed"] = cycle.polled, cycle.failed
        report["queued"] = app.store.outbox_stats().depth
        report["backlog"] = memory_status()
        report["state_bytes_backlog"] = _state_bytes(Path(config.state.path))
        started, cpu = time.perf_counter(), time.process_time()
        drain = app.send(force=True)
        report["drain_seconds"] = time.perf_counter() - started
        report["drain_cpu"] = time.process_time() - cpu
        report["exported"] = drain.exported
        report["drained"] = memory_status()
    finally:
        app.close()
    report["state_bytes_drained"] = _state_bytes(Path(config.state.path))
    report["state_live_bytes"] = _live_bytes(Path(config.state.path))
    report["end"] = memory_status()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
