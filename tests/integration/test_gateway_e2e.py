"""Issue 13 end to end: the daemon against a gateway-only, multi-tenant BlueKing, through rotel.

The simulator serves no ESB path (1640401) and refuses a gateway call without ``X-Bk-Tenant-Id``
(1640302); the daemon runs as a subprocess with ``bkmonitor.api: apigw``, discovery on, and ships
OTLP/gRPC through a real collector (rotel) to the decoding receiver. The daemon is SIGKILLed while
it waits for an action search answer and started again on the same state file.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import BkTransportError
from exporter.simulator import SimAlarm, Simulator
from exporter.sources.bkmonitor import BkClient, BkClientSettings
from tests.support.daemon import Daemon, exporter_config, run_cli, write_config
from tests.support.rotel import RotelCollector
from tests.support.secrets import APP_SECRET
from tests.support.sim import simulator
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

TENANT = "system"
ENV = {"TEST_BK_SECRET": APP_SECRET}


@pytest.fixture
def gw() -> Iterator[Simulator]:
    with simulator(gateway_only=True, tenant_id=TENANT) as sim:
        yield sim


def gateway_story(sim: Simulator) -> list[SimAlarm]:
    """Three alarms in the past: recovered, closed, still open; with notices, a webhook, an ACK."""
    now = int(time.time())
    a = sim.add_alarm(name="CPU", severity=2, begin_time=now - 900)
    a.act("notified admin by mail", at=now - 890)
    a.recover(at=now - 600)
    b = sim.add_alarm(name="Disk", severity=1, begin_time=now - 800)
    b.act("notified admin by mail", at=now - 790)
    b.act("called the webhook", at=now - 780, plugin_type="webhook", status="failure")
    b.ack("admin", at=now - 700)
    b.close(at=now - 500)
    c = sim.add_alarm(name="Ping", severity=3, begin_time=now - 400)
    c.act("notified admin by sms", at=now - 390)
    return [a, b, c]


def expected(alarms: list[SimAlarm]) -> dict[tuple[str, str, int], int]:
    """(alarm id, operate, time in s) -> how many records: what the gateway flow table promises."""
    want: dict[tuple[str, str, int], int] = {}

    def add(alarm: SimAlarm, operate: str, at: int) -> None:
        want[(alarm.id, operate, at)] = want.get((alarm.id, operate, at), 0) + 1

    for alarm in alarms:
        add(alarm, "CREATE", alarm.begin_time)
        for action in alarm.actions:
            add(alarm, "ACTION", action["create_time"])
        if alarm.status in ("RECOVERED", "CLOSED"):
            assert alarm.end_time is not None
            add(alarm, "RECOVER" if alarm.status == "RECOVERED" else "CLOSE", alarm.end_time)
        if alarm.is_ack:
            assert alarm.ack_time is not None
            add(alarm, "ACK", alarm.ack_time)  # the simulator gives ack_duration: begin + ack_duration
    return want


def _kill_at_action_search(victim: int, pid: Callable[[], int], killed: threading.Event) -> Any:
    answers = itertools.count(1)

    def hook(endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        if endpoint == "search_action" and next(answers) == victim and not killed.is_set():
            killed.set()
            os.kill(pid(), signal.SIGKILL)
        return payload

    return hook


def test_gateway_only_discovery_delivers_the_synthesised_flow_exactly_once_across_sigkill(
    gw: Simulator, rotel_collector: RotelCollector, tmp_path: Path
) -> None:
    rotel, receiver = rotel_collector
    alarms = gateway_story(gw)
    want = expected(alarms)
    config = exporter_config(
        gw,
        tmp_path / "s.db",
        [],
        bkmonitor={"api": "apigw", "tenant_id": TENANT},
        alarms={"recent": {"enabled": True, "bk_biz_ids": [2], "interval": "1s"}},
        export={"endpoint": rotel.grpc_endpoint, "timeout": "5s"},
    )
    daemon = Daemon(write_config(tmp_path / "c.yaml", config), env=ENV)
    killed = threading.Event()
    gw.response_hook = _kill_at_action_search(2, lambda: daemon.pid, killed)
    daemon.start()
    try:
        wait_until(killed.is_set, 30, "the SIGKILL during the second action search")
        daemon.wait(10)
        daemon.start()  # the same state file
        total = sum(want.values())
        wait_until(lambda: len(receiver.logs()) >= total, 30, "every synthesised record", daemon=daemon)
        time.sleep(2.5)  # a few more discovery rounds and polls: nothing may arrive twice
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.output()[-3000:]
    finally:
        if daemon.alive:
            daemon.stop()
    logs = receiver.logs()
    got: dict[tuple[str, str, int], int] = {}
    for r in logs:
        key = (r["attributes"]["bk.alarm.id"], r["event_name"], r["time_unix_nano"] // 1_000_000_000)
        got[key] = got.get(key, 0) + 1
    assert got == want, "CREATE at begin_time, one ACTION per action at its create_time, RECOVER/CLOSE at end_time"
    uids = [r["attributes"]["log.record.uid"] for r in logs]
    assert len(uids) == len(set(uids)), "exactly once, across the SIGKILL and restart"
    actions = [r for r in logs if r["event_name"] == "ACTION"]
    webhook = next(r for r in actions if r["attributes"].get("action.plugin_type") == "webhook")
    assert "failure" in webhook["body"] and "HTTP回调" in webhook["body"], "the message names type and status"
    closed = next(r for r in logs if r["event_name"] == "CLOSE")
    assert closed["attributes"]["bk.alarm.status"] == "CLOSED"
    assert closed["attributes"]["bk.alarm.name"] == "Disk"
    # the wire: the gateway only, the tenant on every request, the secret never in a URL
    assert gw.requests, "the simulator saw the daemon"
    assert not [r.path for r in gw.requests if not r.path.startswith("/api/bk-monitor/prod/app/")]
    assert all(r.headers.get("X-Bk-Tenant-Id") == TENANT for r in gw.requests)
    assert all(APP_SECRET not in r.path + "?" + r.query for r in gw.requests)
    assert {r.status for r in gw.requests} == {200}, "no refused call"
    assert {r.endpoint for r in gw.requests} == {"search_alert", "search_action"}


def test_gateway_ids_resolve_through_alert_search_with_once(
    gw: Simulator, rotel_collector: RotelCollector, tmp_path: Path
) -> None:
    rotel, receiver = rotel_collector
    alarms = gateway_story(gw)
    config = exporter_config(
        gw,
        tmp_path / "s.db",
        [alarms[1].id],
        bkmonitor={"api": "apigw", "tenant_id": TENANT},
        export={"endpoint": rotel.grpc_endpoint, "timeout": "5s"},
    )
    done = run_cli(["once", "--config", str(write_config(tmp_path / "c.yaml", config))], env=ENV)
    assert done.returncode == 0, done.stderr
    logs = receiver.wait_for_logs(sum(expected([alarms[1]]).values()), timeout=15)
    assert {r["event_name"] for r in logs} == {"CREATE", "ACTION", "ACK", "CLOSE"}
    assert {r["attributes"]["bk.alarm.name"] for r in logs} == {"Disk"}, "the context came from alert search"
    lookups = [r for r in gw.requests if r.endpoint == "search_alert"]
    assert lookups and lookups[0].json["conditions"] == [
        {"key": "id", "value": [alarms[1].id], "method": "eq", "condition": "and"}
    ]


def test_gateway_without_tenant_says_to_set_tenant_id(gw: Simulator, tmp_path: Path) -> None:
    gateway_story(gw)
    config = exporter_config(
        gw,
        tmp_path / "s.db",
        [],
        bkmonitor={"api": "apigw"},
        alarms={"recent": {"enabled": True, "bk_biz_ids": [2]}},
        export={"endpoint": "http://127.0.0.1:9"},
    )
    done = run_cli(["once", "--config", str(write_config(tmp_path / "c.yaml", config))], env=ENV)
    assert "1640302" in done.stderr and "bkmonitor.tenant_id" in done.stderr, done.stderr
    assert APP_SECRET not in done.stderr


def test_esb_config_against_a_gateway_only_bluekng_says_to_use_apigw(gw: Simulator, tmp_path: Path) -> None:
    (alarm, *_) = gateway_story(gw)
    config = exporter_config(gw, tmp_path / "s.db", [alarm.id], export={"endpoint": "http://127.0.0.1:9"})
    done = run_cli(["once", "--config", str(write_config(tmp_path / "c.yaml", config))], env=ENV)
    assert done.returncode == 1
    assert "1640401" in done.stderr and "bkmonitor.api: apigw" in done.stderr, done.stderr


def test_demo_against_a_gateway_only_bluekng() -> None:
    done = run_cli(["demo", "--api", "apigw"], timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    names = [line.split('"event_name":')[1].split('"')[1] for line in done.stdout.splitlines() if "event_name" in line]
    assert {"CREATE", "ACTION", "ACK", "SEVERITY_UP", "RECOVER", "CLOSE"} <= set(names), names
    assert "CONVERGE" not in names, "the gateway gives no CONVERGE records"


# -- timeouts that do not race the server -------------------------------------------------------------------


class Trickle:
    """A server that answers headers at once, then one body byte every ``every`` seconds, for ever."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not self.stop.wait(self.every):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_trickling_server_cannot_hold_a_request_past_its_total_deadline() -> None:
    server = Trickle(every=0.2)  # each read succeeds well within the timeout
    try:
        settings = BkClientSettings(
            base_url=f"http://127.0.0.1:{server.port}", app_code="a", app_secret="s", timeout=1.5, max_attempts=1
        )
        with BkClient(settings) as client:
            started = time.monotonic()
            with pytest.raises(BkTransportError, match="total deadline"):
                client.search_alert({})
            assert time.monotonic() - started < 10, "bounded by the deadline, not by the 100 kB trickle"
    finally:
        server.close()
