"""Benchmark 3: API economy with discovery, and the delivery delay it costs.

The simulator runs in its own process on a simulated clock; the exporter runs here on the same
clock (``App(config, clock=...)``), so an hour of cycles passes in seconds while every hop stays
real (HTTP to the simulator, OTLP/gRPC to the receiver). The daemon's schedule is replayed: a poll
tick every ``poll_tick(interval)`` seconds (``poll()`` then ``send()``), and at the end of every
interval (``alarms.recent.interval`` = ``poll.interval`` = 30 s) a ``discover()`` before the tick's
poll, as the discover job does. During each interval, 1% of the followed alarms get one new flow
record each, at random moments (the simulator's clock is moved to each moment first).

Counted at the simulator: ``get_event_log`` calls per cycle in the steady state (every cycle
after the first, over two whole ``poll.full_reread_interval`` periods, so the safety-net
re-reads are included at their real rate), against a poll-everything run (discovery with
``full_reread_interval: 0``: every followed alarm read every interval) measured the same way.
The delay of a record is simulated time from being appended to the cycle whose send delivered
it (processing time is not simulated time: the latency benchmark measures that in real time).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from bench.common import T0, Result, exporter_config, median, percentile
from bench.receiver import CountingReceiver
from bench.simserver import SimProcess

__all__ = ["run", "simulate"]


def simulate(
    alarms: int,
    cycles: int,
    *,
    change_rate: float,
    interval: float,
    full_reread: float,
    workdir: Path,
    seed: int = 7,
) -> dict[str, Any]:
    from exporter.app import App
    from exporter.scheduler import poll_tick

    rng = random.Random(seed)
    tick = poll_tick(interval)
    ticks = max(1, round(interval / tick))
    now = [T0]
    with SimProcess(start=T0) as sim, CountingReceiver(collect=True) as receiver:
        ids = sim.call("populate", alarms=alarms, records=1)["ids"]
        config = exporter_config(
            sim.base_url,
            receiver.endpoint,
            workdir / f"economy-{int(full_reread)}.db",
            bkmonitor={"rate_limit": 0},
            alarms={"recent": {"enabled": True, "bk_biz_ids": [2], "interval": f"{interval}s", "lookback": "1h"}},
            poll={"interval": f"{interval}s", "full_reread_interval": f"{full_reread}s"},
        )
        app = App(config, clock=lambda: now[0])
        per_cycle: list[dict[str, int]] = []
        appended: dict[str, float] = {}  # message -> simulated time it was appended
        delays: list[float] = []

        def step(discover: bool) -> None:
            """What the daemon does at one poll tick (and, every interval, its discover job first)."""
            if discover:
                app.discover()
            app.poll()
            if app.send(force=True).failed:
                raise RuntimeError("economy: export failed")
            for arrival in receiver.take_arrivals():
                if arrival.body in appended:
                    delays.append(now[0] - appended.pop(arrival.body))

        try:
            step(discover=True)  # cycle 0: every alarm is new
            last = sim.call("calls")
            per_cycle.append({k: int(v) for k, v in last.items()})
            for cycle in range(1, cycles + 1):
                start = now[0]
                changing = rng.sample(ids, max(1, round(alarms * change_rate)))
                pending = sorted((start + rng.uniform(0.5, interval - 0.5), alarm_id) for alarm_id in changing)
                for k in range(1, ticks + 1):
                    tick_end = start + interval * k / ticks
                    while pending and pending[0][0] <= tick_end:
                        at, alarm_id = pending.pop(0)
                        message = f"probe {cycle}/{len(appended)}/{alarm_id}"
                        sim.call("set_time", t=at)
                        appended[message] = float(sim.call("append", ids=[alarm_id], messages=[message])["sim_time"])
                    now[0] = tick_end
                    sim.call("set_time", t=tick_end)
                    step(discover=k == ticks)
                calls = sim.call("calls")
                per_cycle.append({k: int(calls[k]) - int(last[k]) for k in last})
                last = calls
        finally:
            app.close()
    return {"per_cycle": per_cycle, "delays": delays, "undelivered": len(appended)}


def run(*, quick: bool, command: str) -> Result:
    interval = 30.0
    if quick:
        alarms, change_rate, full_reread, cycles = 100, 0.01, 300.0, 8
    else:
        alarms, change_rate, full_reread, cycles = 2000, 0.01, 1800.0, 120
    baseline_cycles, baseline_skip = (4, 1) if quick else (8, 2)  # skip cycles still aligned on the first read
    result = Result(
        "economy",
        "3. API economy (with discovery)",
        command,
        {
            "followed alarms": alarms,
            "changing per cycle": f"{change_rate:.0%} ({max(1, round(alarms * change_rate))} alarms, one record each)",
            "poll.interval = alarms.recent.interval": f"{interval:.0f} s",
            "poll.full_reread_interval": f"{full_reread / 60:.0f} min (default 30 min)",
            "steady-state cycles": f"{cycles} ({cycles * interval / 60:.0f} simulated minutes)",
            "clock": "simulated, shared by the simulator (separate process) and the exporter",
        },
        target="≤ 5% of poll-everything; every record delivered within 2 poll intervals",
    )
    with tempfile.TemporaryDirectory(prefix="bench-economy-") as tmp:
        found = simulate(
            alarms, cycles, change_rate=change_rate, interval=interval, full_reread=full_reread, workdir=Path(tmp)
        )
        everything = simulate(
            alarms, baseline_cycles, change_rate=change_rate, interval=interval, full_reread=0.0, workdir=Path(tmp)
        )
    steady = found["per_cycle"][1:]
    reads = [c["get_event_log"] for c in steady]
    searches = [c["search_alert"] for c in steady]
    base_reads = [c["get_event_log"] for c in everything["per_cycle"][1 + baseline_skip :]]
    mean_reads = sum(reads) / len(reads)
    mean_base = sum(base_reads) / len(base_reads)
    share = mean_reads / mean_base
    delays = found["delays"]
    worst = max(delays) if delays else float("inf")
    result.add("first cycle (every alarm is new)", f"{found['per_cycle'][0]['get_event_log']:,} get_event_log")
    result.add(
        "get_event_log per cycle, steady state",
        f"mean {mean_reads:.1f}, median {median(reads):.0f}, min {min(reads)}, max {max(reads)}",
    )
    result.add("search_alert per cycle", f"mean {sum(searches) / len(searches):.1f}")
    result.add("poll-everything (measured, full_reread_interval 0)", f"{mean_base:,.0f} get_event_log per cycle")
    result.add("share of poll-everything (mean get_event_log)", f"{share:.2%}")
    result.add(
        "all API calls incl. search_alert vs poll-everything's",
        f"{(mean_reads + sum(searches) / len(searches)) / mean_base:.2%}",
    )
    result.add(
        "delivery delay of new records (simulated time)",
        f"{len(delays)} records: p50 {median(delays):.0f} s, p99 {percentile(delays, 99):.0f} s, "
        f"max {worst:.0f} s = {worst / interval:.2f} poll intervals; {found['undelivered']} not delivered",
    )
    result.measured = f"{share:.2%} of poll-everything; worst delay {worst / interval:.2f} intervals"
    result.passed = share <= 0.05 and worst <= 2 * interval and found["undelivered"] == 0
    return result
