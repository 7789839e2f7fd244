"""The BlueKing simulator in its own process, driven over stdin/stdout (one JSON object per line).

Benchmarks that time the exporter run the simulator here, so its request handling does not share
the exporter's GIL. ``python -m bench.simserver --latency 0.05 [--start T]`` prints one line
``{"base_url": …}`` once serving, then answers each command line with one result line:

``{"op": "populate", "alarms": N, "records": K}``      N alarms of K flow records each (the last
                                                       record at the clock's now) -> ``{"ids": [...]}``
``{"op": "append", "ids": [...], "operate": O, "messages": [...]}``  one record per id, now ->
                                                       ``{"sim_time": t, "wall": time.time()}``
``{"op": "set_time", "t": T}``                         move the simulated clock
``{"op": "calls"}``                                    ``{"get_event_log": n, "search_alert": m}``
``{"op": "first_request"}``                            ``{"wall": time.time() of the first
                                                       get_event_log request, or null}``
``{"op": "clear"}``                                    forget recorded requests and counts
``{"op": "cpu"}``                                      ``{"seconds": CPU time of this process}``
``{"op": "exit"}``

``--start T`` freezes the clock at T (moved only by ``set_time``); without it the clock is real.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.common import APP_CODE, APP_SECRET, child_env, story
from exporter.simulator import SimClock, Simulator

__all__ = ["SimProcess", "main"]


class SimProcess:
    """The driver's side: starts ``python -m bench.simserver`` and sends it commands."""

    def __init__(self, *, latency: float = 0.0, start: float | None = None) -> None:
        argv = [sys.executable, "-m", "bench.simserver", "--latency", str(latency)]
        if start is not None:
            argv += ["--start", repr(start)]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(), bufsize=1
        )
        self.base_url = str(self._read()["base_url"])

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator process ended (exit status {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"simulator: {reply['error']}")
        return reply

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _populate(sim: Simulator, alarms: int, records: int, biz: int) -> list[str]:
    now = int(sim.clock.now())
    begin = now - 60 * max(0, records - 1)
    ids = []
    for i in range(alarms):
        dims = {"ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "bk_cloud_id": "0"}
        alarm = sim.add_alarm(bk_biz_id=biz, name=f"CPU使用率告警 {i}", begin_time=begin, create=False, dimensions=dims)
        for k, (operate, message) in enumerate(story(i, records)):
            alarm.log(operate, message, at=begin + 60 * k)
        ids.append(alarm.id)
    return ids


def _handle(sim: Simulator, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd.get("op")
    if op == "populate":
        return {"ids": _populate(sim, int(cmd["alarms"]), int(cmd["records"]), int(cmd.get("biz", 2)))}
    if op == "append":
        at = sim.clock.now()
        for alarm_id, message in zip(cmd["ids"], cmd["messages"], strict=True):
            sim.alarm(alarm_id).log(cmd.get("operate", "ACTION"), message, at=at)
        return {"sim_time": at, "wall": time.time()}
    if op == "set_time":
        sim.clock.set(float(cmd["t"]))
        return {}
    if op == "calls":
        return {"get_event_log": sim.calls("get_event_log"), "search_alert": sim.calls("search_alert")}
    if op == "first_request":
        first = next((r.timestamp for r in list(sim.requests) if r.endpoint == "get_event_log"), None)
        return {"wall": first}
    if op == "clear":
        sim.clear_requests()
        return {}
    if op == "cpu":
        times = os.times()
        return {"seconds": times.user + times.system}
    raise ValueError(f"unknown op {op!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simserver")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--start", type=float, default=None, help="freeze the clock at this epoch")
    args = parser.parse_args(argv)
    clock = SimClock(args.start) if args.start is not None else SimClock.real()
    sim = Simulator(app_code=APP_CODE, app_secret=APP_SECRET, clock=clock, latency=args.latency)
    with sim:
        print(json.dumps({"base_url": sim.base_url}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            if cmd.get("op") == "exit":
                break
            try:
                reply = _handle(sim, cmd)
            except Exception as exc:  # reported to the driver, which raises it there
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
