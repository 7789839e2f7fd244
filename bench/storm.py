"""Benchmark 2: an alarm storm. The first complete poll cycle over many followed alarms.

The simulator runs in its own process (:mod:`bench.simserver`) with a fixed latency per request;
the exporter runs here as the daemon runs it: ``App.poll()`` for the cycle on one thread, the
sender draining the outbox every second on another (the ``send`` job), and one more drain when
the cycle ends (the ``poll`` job does that). The figure is the wall time of ``App.poll()``, set
against the ideal ``alarms × latency / max_concurrency``; the time until the receiver has every
record is reported beside it. The same cycle is then run again on a fresh state file with nothing
sent until it ends (what ``once`` does), to show the sender's share of the one interpreter.

The floor, measured in the same run against the same simulator and alarms: a bare
``requests.get`` plus ``json.loads`` of each answer, on as many threads as ``max_concurrency``
(:func:`bench.calls.floor_call`). The exporter's CPU per alarm divided by the floor's CPU per call
is the figure that travels between machines.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from bench.calls import floor_call, time_calls
from bench.common import Result, exporter_config, median, wall
from bench.receiver import CountingReceiver
from bench.simserver import SimProcess

__all__ = ["run", "storm_cycle"]


def _cpu() -> float:
    return time.process_time()


def storm_cycle(
    sim: SimProcess, ids: list[str], records: int, concurrency: int, state: Path, *, send_job: bool
) -> dict[str, float]:
    """One first cycle over ``ids`` (fresh state); ``send_job`` runs the sender every second meanwhile."""
    from exporter.app import App

    with CountingReceiver() as receiver:
        config = exporter_config(
            sim.base_url,
            receiver.endpoint,
            state,
            bkmonitor={"max_concurrency": concurrency, "rate_limit": 0, "timeout": "60s"},
            alarms={"ids": ids},
        )
        app = App(config)
        stop = threading.Event()

        def sender_loop() -> None:
            while not stop.wait(1.0):
                app.send()

        sender = threading.Thread(target=sender_loop, name="bench-send", daemon=True)
        try:
            app.sync_configured_alarms()
            sim.call("clear")
            sim_cpu0 = float(sim.call("cpu")["seconds"])
            if send_job:
                sender.start()
            cpu0, started = _cpu(), wall()
            report = app.poll()
            cycle = wall() - started
            cpu_cycle = _cpu() - cpu0
            app.send()
            expected = len(ids) * records
            if not receiver.wait_for(expected, timeout=300):
                raise RuntimeError(f"storm: {receiver.records} of {expected} records delivered")
            delivered = wall() - started
            stop.set()
            if send_job:
                sender.join()
            calls = sim.call("calls")["get_event_log"]
            sim_cpu = float(sim.call("cpu")["seconds"]) - sim_cpu0
        finally:
            stop.set()
            app.close()
    if report.polled != len(ids) or report.failed:
        raise RuntimeError(f"storm: {report.polled} polled, {report.failed} failed: {report.errors[:3]}")
    return {
        "cycle": cycle,
        "delivered": delivered,
        "calls": calls,
        "records": expected,
        "exporter_cpu": cpu_cycle,
        "sim_cpu": sim_cpu,
    }


def run(*, quick: bool, command: str) -> Result:
    alarms, records, latency, concurrency = (200, 5, 0.05, 16) if quick else (5000, 5, 0.05, 16)
    repeats = 1 if quick else 3
    ideal = alarms * latency / concurrency
    result = Result(
        "storm",
        "2. Alarm storm",
        command,
        {
            "followed alarms": alarms,
            "records per alarm": records,
            "API latency": f"{latency * 1000:.0f} ms (simulator, separate process)",
            "bkmonitor.max_concurrency": concurrency,
            "bkmonitor.rate_limit": "0 (off)",
            "runs": f"{repeats} as the daemon runs (median reported), then 1 with the sender idle",
        },
        target="first cycle ≤ 1.10 × ideal",
    )
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp, SimProcess(latency=latency) as sim:
        ids = sim.call("populate", alarms=alarms, records=records)["ids"]
        runs = [
            storm_cycle(sim, ids, records, concurrency, Path(tmp) / f"daemon-{i}.db", send_job=True)
            for i in range(repeats)
        ]
        alone = storm_cycle(sim, ids, records, concurrency, Path(tmp) / "once.db", send_job=False)
        call = floor_call(sim.base_url)
        time_calls(call, ids[:100], concurrency)  # warm-up: the threads' sessions and connections
        floors = [time_calls(call, ids, concurrency) for _ in range(repeats)]
    m = sorted(runs, key=lambda r: r["cycle"])[len(runs) // 2]  # the median run
    ratio = m["cycle"] / ideal
    result.add("ideal (alarms × latency / max_concurrency)", f"{ideal:.2f} s")
    result.add(
        "**first complete poll cycle**, sender draining every second meanwhile (the daemon)", f"**{m['cycle']:.2f} s**"
    )
    result.add("**ratio cycle / ideal**", f"**{ratio:.3f}**")  # judged unrounded: shown so
    if len(runs) > 1:
        result.add(
            "all runs (each on a fresh state file; the median is shown above)",
            ", ".join(f"{r['cycle']:.2f} s ({r['cycle'] / ideal:.2f}×)" for r in runs),
        )
    result.add("get_event_log requests", f"{m['calls']:,.0f} ({m['calls'] / m['cycle']:.0f} req/s)")
    result.add(
        "until every record was acknowledged by the receiver", f"{m['delivered']:.2f} s ({m['records']:,.0f} records)"
    )
    result.add(
        "exporter process CPU during the cycle",
        f"{m['exporter_cpu']:.2f} s ({m['exporter_cpu'] / m['cycle'] * 100:.0f}% of one core; "
        f"{m['exporter_cpu'] / max(1, m['calls']) * 1000:.2f} ms per alarm)",
    )
    result.add("simulator process CPU", f"{m['sim_cpu']:.2f} s")
    result.add(
        "the same cycle with nothing sent until it ends (`once`)",
        f"{alone['cycle']:.2f} s = {alone['cycle'] / ideal:.2f} × ideal; "
        f"{alone['exporter_cpu'] / max(1, alone['calls']) * 1000:.2f} ms CPU per alarm; "
        f"everything delivered after {alone['delivered']:.2f} s",
    )
    floor = median([cpu for cpu, _ in floors])
    floor_pass = median([w for _, w in floors])
    per_alarm = m["exporter_cpu"] / max(1, m["calls"])
    result.add(
        "floor: bare `requests` GET + `json.loads` of the same answers, same simulator, "
        f"{concurrency} threads (median of {len(floors)})",
        f"{floor * 1000:.2f} ms CPU a call; a pass took {floor_pass:.2f} s = {floor_pass / ideal:.3f} × ideal "
        "(the simulator and the machine without the exporter's work)",
    )
    cost = per_alarm / floor
    result.add("**exporter CPU per alarm / floor CPU per call**", f"**{cost:.2f}**")
    result.measured = (
        f"{ratio:.3f} × ideal ({m['cycle']:.1f} s vs {ideal:.1f} s; the bare client's pass {floor_pass / ideal:.3f} ×)"
    )
    result.passed = ratio <= 1.10
    result.check(
        "CPU per alarm / bare-client floor",
        f"{cost:.2f} ({per_alarm * 1000:.2f} ms vs {floor * 1000:.2f} ms)",
        "≤ 1.5",
        cost <= 1.5,
    )
    return result
