"""Benchmark: throughput with one destination against three, in one run.

``python -m bench.destinations [--alarms N] [--records N] [--rounds N]`` (from the repository root,
with the project's venv). Writes its section of ``docs/benchmarks.md`` (between the markers
``<!-- destinations -->``) and prints it.

The same dataset as the throughput benchmark (``get_event_log`` bodies answered from memory, so no
HTTP to BlueKing is timed) goes through the exporter twice per round: once with ``export:`` only,
once with ``export:`` plus two more OTLP destinations (each its own in-process gRPC receiver, so
three receivers acknowledge every record). The figure is records per second *per destination*
delivered from the first poll to the last acknowledgement, and the ratio of the three-destination
run to the one-destination run, each the median of the rounds. One row is queued per record and
destination, so the ideal for the poll side is three times the writes; the senders of the
destinations drain side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import T0, config_mapping
from bench.receiver import CountingReceiver
from bench.report import ROOT, machine
from bench.throughput import Dataset, _MemorySource, make_dataset
from exporter.config import config_from_dict

__all__ = ["main", "run_once"]

MARK = "<!-- destinations -->"


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def run_once(ds: Dataset, receivers: list[CountingReceiver], workdir: Path) -> dict[str, float]:
    """One timed pass of ``ds`` to ``len(receivers)`` destinations (the first is ``export:``)."""
    from exporter.app import App
    from exporter.sources.bkmonitor import BkMonitorSource

    extra: list[dict[str, Any]] = [
        {"name": f"d{i}", "sink": "otlp", "options": {"endpoint": rx.endpoint, "protocol": "grpc"}}
        for i, rx in enumerate(receivers[1:], start=1)
    ]
    raw = config_mapping(
        "http://127.0.0.1:9",
        receivers[0].endpoint,
        workdir / f"dest-{uuid.uuid4().hex[:8]}.db",
        bkmonitor={"max_concurrency": 8, "rate_limit": 0},
        export={"batch_size": 512},
    )
    raw["destinations"] = extra
    app = App(config_from_dict(raw, env={}))
    try:
        for ctx in ds.contexts.values():
            app.store.upsert_alarm(ctx, source="discovered", now=T0, due=True, change_token="t")
        app.poller.source = BkMonitorSource(_MemorySource(ds.bodies))
        for rx in receivers:
            rx.reset()
        cpu0, started = _cpu(), time.perf_counter()
        app.poll(force=True)
        app.send(force=True)
        for rx in receivers:
            if not rx.wait_for(ds.records, timeout=300):
                raise RuntimeError(f"{rx.records} of {ds.records} records acknowledged")
        elapsed, cpu = time.perf_counter() - started, _cpu() - cpu0
    finally:
        app.close()
    return {"seconds": elapsed, "cpu": cpu, "records_per_s": ds.records / elapsed}


def measure(alarms: int, records: int, rounds: int) -> dict[str, Any]:
    ds = make_dataset(alarms, records)
    one: list[dict[str, float]] = []
    three: list[dict[str, float]] = []
    receivers = [CountingReceiver().start() for _ in range(3)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(rounds):  # alternately, so a noisy neighbour hurts both alike
                one.append(run_once(ds, receivers[:1], Path(tmp)))
                three.append(run_once(ds, receivers, Path(tmp)))
    finally:
        for rx in receivers:
            rx.stop()
    rate1 = statistics.median(r["records_per_s"] for r in one)
    rate3 = statistics.median(r["records_per_s"] for r in three)
    cpu1 = statistics.median(r["cpu"] for r in one) / ds.records * 1e6
    cpu3 = statistics.median(r["cpu"] for r in three) / ds.records * 1e6
    return {"records": ds.records, "rounds": rounds, "rate1": rate1, "rate3": rate3, "cpu1": cpu1, "cpu3": cpu3}


def render(figures: dict[str, Any], info: dict[str, str]) -> str:
    ratio = figures["rate3"] / figures["rate1"]
    return "\n".join(
        [
            MARK,
            "## Destinations: one against three",
            "",
            f"Command: `.venv/bin/python -m bench.destinations` ({figures['records']:,} records, "
            f"median of {figures['rounds']} alternating rounds, one run; machine: {info.get('CPU model', '?')}, "
            f"{info.get('CPUs (nproc)', '?')} CPUs). Each record is delivered to every destination; the rate is "
            "records per second per destination, first poll to last acknowledgement.",
            "",
            "| destinations | records/s per destination | exporter CPU per record (all destinations) |",
            "| --- | --- | --- |",
            f"| 1 (`export:`) | {figures['rate1']:,.0f} | {figures['cpu1']:,.0f} µs |",
            f"| 3 (`export:` + 2 `destinations:`) | {figures['rate3']:,.0f} | {figures['cpu3']:,.0f} µs |",
            "",
            f"Ratio 3 / 1: **{ratio:.2f}** of the one-destination rate per destination (1.00 would mean a "
            "destination costs nothing; 0.33 that three cost three times one on one core).",
            MARK,
        ]
    )


def write(section: str, path: Path) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if MARK in text:
        head, _, rest = text.partition(MARK)
        _, _, tail = rest.partition(MARK)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.destinations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--alarms", type=int, default=400)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    section = render(measure(args.alarms, args.records, args.rounds), machine())
    write(section, args.output)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
