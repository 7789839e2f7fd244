"""Benchmark 9: where the time goes. A cProfile of one poll cycle and its drain.

The exporter polls ``alarms`` alarms (5 flow records each) from the simulator (its own process, no
latency) on one worker thread, so cProfile sees all of the work, then sends everything to the
in-process OTLP receiver. Reported: the functions with the most time of their own, and the time
by area (the module a function lives in), as shares of the profiled total. Profiling slows
Python code down unevenly; the shares, not the absolute times, are the figure.
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import Result, exporter_config
from bench.receiver import CountingReceiver
from bench.simserver import SimProcess

__all__ = ["run"]

#: (area, a substring of the file path), first match wins
_AREAS = (
    ("state store (SQLite)", "/exporter/state/"),
    ("OTLP encoding and transport", "/exporter/sinks/"),
    ("sender", "/pipeline/sender"),
    ("poller and lifecycle", "/exporter/pipeline/"),
    ("BlueKing client", "/sources/bkmonitor/client"),
    ("BlueKing answer: body, envelope, records", "/sources/bkmonitor/"),
    ("mapping", "/exporter/mapping/"),
    ("exporter: model, metrics, other", "/exporter/"),
    ("urllib3", "/urllib3/"),
    ("requests", "/requests/"),
    ("gRPC", "/grpc/"),
    ("OpenTelemetry SDK, protobuf", "/opentelemetry/"),
    ("protobuf", "/google/"),
    ("prometheus_client", "/prometheus_client/"),
    ("json", "/json/"),
    ("other libraries", "site-packages"),
    ("stdlib: http.client, socket, ssl, threading…", "/lib/python3"),
)


def _area(filename: str, name: str) -> str:
    if filename == "~":
        if "sqlite3" in name or "execute" in name or "fetch" in name:
            return "state store (SQLite)"
        if "socket" in name or "recv" in name or "send" in name:
            return "stdlib: http.client, socket, ssl, threading…"
        return "built-ins (C)"
    for area, part in _AREAS:
        if part in filename:
            return area
    return "other"


def run(*, quick: bool, command: str) -> Result:
    alarms, records = (100, 5) if quick else (2000, 5)
    result = Result(
        "hotspots",
        "9. Where the time goes",
        command,
        {
            "alarms": f"{alarms:,} ({records} records each), polled then drained",
            "poll workers": "1 (bkmonitor.max_concurrency 1: the profiler sees every call)",
            "profiler": "cProfile (deterministic; it slows Python code down, so read the shares)",
        },
        target="(a profile: reported, not judged)",
    )
    with tempfile.TemporaryDirectory(prefix="bench-hotspots-") as tmp, SimProcess() as sim:
        ids = sim.call("populate", alarms=alarms, records=records)["ids"]
        from exporter.app import App

        with CountingReceiver() as receiver:
            config = exporter_config(
                sim.base_url,
                receiver.endpoint,
                Path(tmp) / "profile.db",
                bkmonitor={"max_concurrency": 1, "rate_limit": 0},
                alarms={"ids": ids},
            )
            app = App(config)
            try:
                app.sync_configured_alarms()
                profiler = cProfile.Profile(time.process_time)  # CPU time: waits for the network do not count
                profiler.enable()
                cycle = app.poll(force=True)
                drain = app.send(force=True)
                profiler.disable()
            finally:
                app.close()
    if cycle.polled != alarms or drain.exported != alarms * records:
        raise RuntimeError(f"profile: polled {cycle.polled}, exported {drain.exported}")
    stats = pstats.Stats(profiler)
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values()) or 1e-9
    by_area: Counter[str] = Counter()
    for (filename, _line, name), entry in table.items():
        by_area[_area(filename, name)] += entry[2]
    result.add("profiled total (own time of every function)", f"{total:.2f} s for {alarms * records:,} records")
    areas: list[tuple[str, ...]] = [
        (area, f"{t / total * 100:.1f}%", f"{t / alarms * 1e6:,.0f} µs") for area, t in by_area.most_common()
    ]
    result.tables.append((("area", "share of the CPU time", "per alarm (profiled)"), areas))
    top = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    rows: list[tuple[str, ...]] = []
    for (filename, line, name), entry in top:
        where = filename.split("site-packages/")[-1].split("/wt-perf/")[-1].split("/lib/python3.11/")[-1]
        rows.append((f"`{name}` ({where}:{line})", f"{entry[2] / total * 100:.1f}%", f"{entry[1]:,}"))
    result.tables.append((("function (own time)", "share", "calls"), rows))
    result.measured = ", ".join(f"{area} {t / total * 100:.0f}%" for area, t in by_area.most_common(3))
    return result
