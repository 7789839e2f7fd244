"""Issue 2 end to end: simulator -> daemon subprocess -> rotel (a real collector) -> decoding receiver.

Every record the simulator exposes must arrive exactly once with every field of docs/reference.md right.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from exporter.simulator import Simulator
from tests.support.daemon import Daemon, exporter_config, merge, run_cli, write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.rotel import RotelCollector
from tests.support.secrets import APP_SECRET, OTLP_AUTH_HEADER, OTLP_TOKEN
from tests.support.sim import T0, expected_records, simulator, story

pytestmark = pytest.mark.integration

SECRET = APP_SECRET  # tests/support/secrets.py: the session-wide leak check looks for it


def config(sim: Simulator, endpoint: str, protocol: str, state: Path, ids: list[str], **over: Any) -> dict[str, Any]:
    export = {
        "endpoint": endpoint,
        "protocol": protocol,
        "compression": "gzip",
        "timeout": "5s",
        "headers": {"authorization": OTLP_AUTH_HEADER},
    }
    return merge(exporter_config(sim, state, ids, export=export, shutdown_timeout="10s"), over)


ENV = {"TEST_BK_SECRET": SECRET}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_every_record_once_with_contract_fields(
    protocol: str, sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path
) -> None:
    rotel, receiver = rotel_collector
    alarms = story(sim)
    want = expected_records(sim, alarms)
    assert len(want) == 11
    endpoint = rotel.grpc_endpoint if protocol == "grpc" else rotel.http_endpoint
    path = write_config(tmp_path / "c.yaml", config(sim, endpoint, protocol, tmp_path / "s.db", [a.id for a in alarms]))
    with Daemon(path, env=ENV) as daemon:
        logs = receiver.wait_for_logs(len(want), timeout=20)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.output()
    output = daemon.output()
    uids = [r["attributes"]["log.record.uid"] for r in receiver.logs()]
    assert sorted(uids) == sorted(want), "every record exactly once"
    by_uid = {r["attributes"]["log.record.uid"]: r for r in logs}
    for uid, raw in want.items():
        got = by_uid[uid]
        assert got["event_name"] == raw["operate"]
        assert got["body"] == raw["message"]
        assert got["attributes"]["bk.alarm.id"] == raw["alarm"]
        assert got["attributes"]["bk.alarm.operate"] == raw["operate"]
        assert got["attributes"]["bk.event_log.status"] == "SUCCESS"
        assert got["attributes"]["bk.event.id"] == raw["alarm"]
        assert got["observed_time_unix_nano"] >= got["time_unix_nano"]
        assert got["trace_id"] == "" and got["span_id"] == ""
    # timestamps: naive Asia/Shanghai strings back to the UTC epoch the simulator logged at
    cpu = [r for r in logs if r["attributes"]["bk.alarm.id"] == alarms[0].id]
    assert {r["event_name"]: r["time_unix_nano"] for r in cpu if r["event_name"] in ("CREATE", "ACK")} == {
        "CREATE": T0 * 10**9,
        "ACK": (T0 + 200) * 10**9,
    }
    # severity: no search_alert context for configured ids -> problem records WARN, the rest INFO
    assert {(r["event_name"], r["severity_text"], r["severity_number"]) for r in logs} >= {
        ("CREATE", "WARN", 13),
        ("RECOVER", "INFO", 9),
        ("ACK", "INFO", 9),
        ("ACTION", "INFO", 9),
    }
    resource = logs[0]["resource"]
    assert resource["service.name"] == "bk-otel-exporter"
    assert resource["service.instance.id"] and resource["host.name"] and resource["service.version"]
    # no secret in the daemon's output or in any BlueKing URL (auth goes in the header)
    assert SECRET not in output and OTLP_TOKEN not in output
    assert sim.requests and all(SECRET not in (r.query or "") for r in sim.requests)
    assert all("X-Bkapi-Authorization" in r.headers or "x-bkapi-authorization" in r.headers for r in sim.requests)


def test_restart_resumes_without_resending(sim: Simulator, rotel_collector: RotelCollector, tmp_path: Path) -> None:
    rotel, receiver = rotel_collector
    alarms = story(sim)
    want = expected_records(sim, alarms)
    path = write_config(
        tmp_path / "c.yaml", config(sim, rotel.grpc_endpoint, "grpc", tmp_path / "s.db", [a.id for a in alarms])
    )
    with Daemon(path, env=ENV):
        receiver.wait_for_logs(len(want), timeout=20)
    alarms[0].log("CLOSE", "closed by admin", at=T0 + 500)
    with Daemon(path, env=ENV):
        receiver.wait_for_logs(len(want) + 1, timeout=20)
    uids = [r["attributes"]["log.record.uid"] for r in receiver.logs()]
    assert len(uids) == len(set(uids)) == len(want) + 1


def test_legacy_server_extend_info_and_uid_stable_across_runs(rotel_collector: RotelCollector, tmp_path: Path) -> None:
    """A 3.x-style server: string event_id, rich extend_info -> dotted attributes; uids identical on two hosts."""
    rotel, receiver = rotel_collector
    with simulator(legacy=True) as sim:
        alarm = sim.add_alarm(name="CPU", severity=1, begin_time=T0, create_time=T0)
        alarm.log(
            "CONVERGE",
            "converged 50 points",
            at=T0 + 60,
            extend_info={
                "process_time": {"max": 1583914154, "min": 1583911227},
                "data_time": {"max": 1583914020, "min": 1583911080},
                "anomaly_count": 50,
                "anomaly_record": {},
            },
        )
        alarm.log("ANOMALY_NOTICE", "notice sent", at=T0 + 61, extend_info={"action": {"id": 7, "way": ["mail"]}})
        runs: list[list[str]] = []
        for n in range(2):  # two independent "hosts": separate state files, `once` each
            path = write_config(
                tmp_path / f"c{n}.yaml", config(sim, rotel.grpc_endpoint, "grpc", tmp_path / f"s{n}.db", [alarm.id])
            )
            done = run_cli(["once", "--config", str(path)], env=ENV)
            assert done.returncode == 0, done.stderr
            logs = receiver.wait_for_logs(3 * (n + 1), timeout=10)
            runs.append(sorted(r["attributes"]["log.record.uid"] for r in logs[3 * n :]))
    assert runs[0] == runs[1]
    converge = next(r for r in receiver.logs() if r["event_name"] == "CONVERGE")
    attrs = converge["attributes"]
    assert attrs["process_time.max"] == 1583914154 and attrs["process_time.min"] == 1583911227
    assert attrs["data_time.max"] == 1583914020 and attrs["anomaly_count"] == 50
    assert attrs["anomaly_record"] == "{}"
    assert attrs["bk.event.id"] != alarm.id  # the 3.x string event id
    notice = next(r for r in receiver.logs() if r["event_name"] == "ANOMALY_NOTICE")
    assert notice["attributes"]["action.id"] == 7 and notice["attributes"]["action.way"] == ["mail"]


def test_http_gzip_and_headers_reach_the_backend(sim: Simulator, otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    """Pointed straight at the receiver: our own gzip and headers are visible on the wire."""
    alarms = story(sim)[:1]
    path = write_config(
        tmp_path / "c.yaml",
        config(sim, otlp_receiver.http_endpoint, "http/protobuf", tmp_path / "s.db", [a.id for a in alarms]),
    )
    done = run_cli(["once", "--config", str(path)], env=ENV)
    assert done.returncode == 0, done.stderr
    assert otlp_receiver.logs()
    request = otlp_receiver.requests[0]
    assert request.transport == "http" and request.compressed
    assert request.headers.get("authorization") == OTLP_AUTH_HEADER


def test_once_exits_0_when_only_rows_of_a_signal_it_does_not_export_are_left(
    sim: Simulator, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Spans queued under an earlier config that exported them: this run cannot send them, so
    they do not make it fail; it says so (a WARNING naming the signal, the count, the remedy)."""
    from exporter.model import AlarmContext, SpanRecord
    from exporter.state.base import PollCommit, QueuedRecord
    from exporter.state.sqlite import SqliteStateStore

    alarms = story(sim)[:1]
    want = expected_records(sim, alarms)
    state = tmp_path / "s.db"
    store = SqliteStateStore(state)
    try:
        store.upsert_alarm(AlarmContext(alarms[0].id), source="config", now=1.0, due=True)
        spans = [
            SpanRecord(uid=f"old{i}", alarm_id=alarms[0].id, trace_id=1, span_id=2 + i, name="a", start_ns=1, end_ns=2)
            for i in range(3)
        ]
        store.commit_poll(
            PollCommit(alarms[0].id, 1.0, extra_queued=[QueuedRecord("spans", s.uid, s.to_json()) for s in spans])
        )
    finally:
        store.close()
    path = write_config(
        tmp_path / "c.yaml", config(sim, otlp_receiver.grpc_endpoint, "grpc", state, [a.id for a in alarms])
    )
    done = run_cli(["once", "--config", str(path)], env=ENV)
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "stranded" in line]
    assert "WARNING" in warning and "3 queued spans records are stranded" in warning
    assert "bk-otel-exporter purge --signal spans" in warning
    assert sorted(r["attributes"]["log.record.uid"] for r in otlp_receiver.logs()) == sorted(want)


def test_once_exits_1_and_keeps_records_when_backend_is_down(
    sim: Simulator, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    alarms = story(sim)[:1]
    want = expected_records(sim, alarms)
    otlp_receiver.mode = "unavailable"
    path = write_config(
        tmp_path / "c.yaml",
        config(
            sim,
            otlp_receiver.grpc_endpoint,
            "grpc",
            tmp_path / "s.db",
            [a.id for a in alarms],
            export={"timeout": "2s"},
        ),
    )
    first = run_cli(["once", "--config", str(path)], env=ENV)
    assert first.returncode == 1, first.stderr
    status = run_cli(["status", "--config", str(path), "--json"], env=ENV)
    assert status.returncode == 0
    import json

    assert json.loads(status.stdout)["outbox"]["queued"] == len(want)
    otlp_receiver.mode = "ok"
    second = run_cli(["once", "--config", str(path)], env=ENV)
    assert second.returncode == 0, second.stderr
    assert sorted(r["attributes"]["log.record.uid"] for r in otlp_receiver.logs()) == sorted(want)
