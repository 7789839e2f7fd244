"""Benchmark 8: how the costs grow with the number of followed alarms (1k, 10k, 50k).

For each size, the memory benchmark's worker (:mod:`bench.memworker`, its own process) follows
that many configured alarms (``alarms.ids``; the simulator in its own process holds them all),
then runs one poll cycle of a fixed size — the first ``cycle`` due alarms, 5 flow records each,
nothing sent meanwhile — and drains what it queued. So the 50k run takes about as long as the 1k
run's cycle plus following 50k alarms, and the per-alarm figures compare the same work done with
a larger state behind it:

* CPU per alarm of the cycle (poll, parse, map, commit; 16 workers against the simulator),
* CPU per alarm of following them (``sync_configured_alarms``, at start and on every reload),
* peak RSS of the worker (VmHWM),
* state file bytes per queued record: how much the db + WAL grew over the cycle, divided by the
  records it queued.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import Result
from bench.memory import measure

__all__ = ["run"]


def run(*, quick: bool, command: str) -> Result:
    sizes, cycle, records = ((100, 200, 300), 100, 5) if quick else ((1_000, 10_000, 50_000), 1_000, 5)
    result = Result(
        "growth",
        "8. Cost growth",
        command,
        {
            "followed alarms": ", ".join(f"{n:,}" for n in sizes) + " (alarms.ids)",
            "cycle": f"the first {cycle:,} due alarms, {records} records each, sender stopped; then drained",
            "bkmonitor.max_concurrency": "16, no API latency, rate_limit 0",
            "measured": "the memory benchmark's worker, its own process (CPU: process_time of each phase)",
        },
        target="costs per alarm flat from 1k to 50k followed alarms (reported, not judged)",
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
        for n in sizes:
            workdir = Path(tmp) / str(n)
            workdir.mkdir()
            m = measure(n, records, workdir, limit=cycle)
            queued = int(m["queued"])
            if m["polled"] != min(n, cycle) or m["failed"] or queued != min(n, cycle) * records:
                raise RuntimeError(f"growth {n}: polled {m['polled']}, failed {m['failed']}, queued {queued}")
            grown = m["state_bytes_backlog"] - m["state_bytes_followed"]
            rows.append(
                (
                    n,
                    m["poll_cpu"] / m["polled"] * 1000,
                    m["sync_cpu"] / n * 1e6,
                    m["end"]["VmHWM"] * 1.048576,
                    grown / max(1, queued),
                    m["state_live_bytes"] / n,
                    m["drain_cpu"] / max(1, m["exported"]) * 1e6,
                )
            )
    head: tuple[str, ...] = (
        "followed alarms",
        "cycle CPU per alarm",
        "following: CPU per alarm",
        "peak RSS",
        "state bytes per queued record",
        "state bytes per followed alarm (drained)",
        "drain CPU per record",
    )
    table: list[tuple[str, ...]] = [
        (
            f"{n:,}",
            f"{poll_ms:.2f} ms",
            f"{sync_us:.0f} µs",
            f"{rss:.1f} MB",
            f"{per_record:,.0f} B",
            f"{per_alarm:,.0f} B",
            f"{drain_us:.0f} µs",
        )
        for n, poll_ms, sync_us, rss, per_record, per_alarm, drain_us in rows
    ]
    result.tables.append((head, table))
    result.add("rows", f"{len(rows)} sizes, one worker process each (table below)")
    first, last = rows[0], rows[-1]
    result.measured = (
        f"cycle CPU per alarm {first[1]:.2f} → {last[1]:.2f} ms, peak RSS {first[3]:.0f} → {last[3]:.0f} MB "
        f"({sizes[0]:,} → {sizes[-1]:,} followed)"
    )
    result.passed = None
    return result
