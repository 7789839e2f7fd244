"""The ``python -m exporter.simulator`` command line, and the demo alarms it (and ``bk-otel-exporter demo``) loads."""

from __future__ import annotations

import argparse
import sys
import time

from exporter.simulator.server import Simulator
from exporter.simulator.store import SimAlarm, SimClock

__all__ = ["main", "populate_demo"]


def populate_demo(sim: Simulator) -> list[SimAlarm]:
    """Load three lifelike alarms relative to ``sim.clock.now()`` and return them: a CPU alarm still ABNORMAL
    with a notification and a folding CONVERGE run, a recovered disk alarm and an acknowledged, closed one."""
    now = int(sim.clock.now())
    cpu = sim.add_alarm(
        name="CPU使用率告警",
        begin_time=now - 600,
        create_time=now - 570,
        dimensions={"ip": "10.0.0.1", "bk_cloud_id": "0"},
        message="AVG(CPU使用率) >= 80.0%, 当前值92.5%, 达到了触发告警条件（5周期内满足1次检测算法）",
    )
    cpu.log("ACTION", "达到通知告警的执行条件【告警触发时】，已通知 admin(邮件)", at=now - 569)
    for i, value in enumerate((93.1, 91.0, 95.4)):
        cpu.converge(f"AVG(CPU使用率) >= 80.0%, 当前值{value}%", at=now - 450 + 120 * i)
    disk = sim.add_alarm(
        name="磁盘使用率告警",
        severity=3,
        strategy_id=41870,
        begin_time=now - 3600,
        dimensions={"ip": "10.0.0.2", "bk_cloud_id": "0", "mount_point": "/data"},
    )
    disk.converge(at=now - 3000)
    disk.recover(at=now - 1200, message="连续 5 个周期不满足触发条件，告警已恢复，当前值为71.2%")
    ping = sim.add_alarm(
        name="PING不可达告警",
        severity=1,
        strategy_id=41871,
        begin_time=now - 7200,
        dimensions={"ip": "10.0.0.3", "bk_cloud_id": "0"},
    )
    ping.ack("admin", "已知问题，处理中", at=now - 7000)
    ping.close(at=now - 5400)
    return [cpu, disk, ping]


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C (real-time clock), printing ``base_url`` and the credentials."""
    parser = argparse.ArgumentParser(prog="python -m exporter.simulator", description="BlueKing Monitor simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (default 8080)")
    parser.add_argument("--app-code", default="bk-otel-demo")
    parser.add_argument("--app-secret", default="demo-secret")
    parser.add_argument("--legacy", action="store_true", help="answer like monitor 3.x")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="fraction of requests that fail")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    parser.add_argument("--demo", action="store_true", help="load a few demo alarms")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    sim = Simulator(
        app_code=args.app_code,
        app_secret=args.app_secret,
        clock=SimClock.real(),
        legacy=args.legacy,
        host=args.host,
        port=args.port,
        latency=args.latency,
        seed=args.seed,
    )
    sim.fault_rate = args.fault_rate
    sim.verbose = args.verbose
    with sim:
        alarms = populate_demo(sim) if args.demo else []
        print(f"BlueKing simulator on {sim.base_url}  (app_code={sim.app_code} app_secret={sim.app_secret})")
        for alarm in alarms:
            print(f"  alarm {alarm.id}  {alarm.status:<9} {alarm.name}")
        print("Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
