"""Delivery at the edges of OTLP: what operators' setups really answer, against the daemon.

Each scenario runs ``bk-otel-exporter run`` as a subprocess against the simulator and a decoding
receiver (tests/support/otlp_receiver.py) on loopback, pointed straight at it or through a
reverse proxy (tests/support/proxy.py): a collector would acknowledge first and hide the answer.

* an ingress or SSO proxy answering 301/302/308: not a delivery; the records stay queued, the
  error names the Location, and they all arrive once the proxy forwards;
* a backend answering ``partial_success``: the refused records are counted and the backend's
  message logged, nothing is resent;
* a gRPC backend without a traces service (UNIMPLEMENTED) and ``signals: [spans, logs]``: the
  logs flow, the spans wait, the cause is named;
* the default 4 MiB gRPC receive limit: a backlog of big records is split and fully delivered,
  a record too large even alone is parked with the reason; an alarm of 2,500 records is one
  span of 1,000 events saying how many it left out, and 2,500 log records;
* ``OTEL_EXPORTER_OTLP_HEADERS=Authorization=...`` over gRPC; a header name no transport can
  send is refused by ``check-config``.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from contextlib import closing
from pathlib import Path

import pytest

from tests.integration.faults._harness import (
    ENV,
    T0,
    Run,
    Story,
    assert_exactly_once,
    exporter_config,
    simulator,
    status_of,
    uids_of,
    wait_delivered,
)
from tests.support.daemon import run_cli, write_config
from tests.support.otlp_receiver import GRPC_MAX_RECEIVE, OtlpReceiver
from tests.support.proxy import RedirectingProxy
from tests.support.secrets import OTLP_AUTH_HEADER
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def _queued(state: Path, kind: str) -> int:
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)) as db:
        row = db.execute("SELECT COUNT(*) FROM outbox WHERE kind = ? AND parked_at IS NULL", (kind,)).fetchone()
    return int(row[0])


def _parked(state: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)) as db:
        rows = db.execute("SELECT uid, park_reason FROM outbox WHERE parked_at IS NOT NULL").fetchall()
    return [(str(uid), str(reason)) for uid, reason in rows]


# -- 1. a redirect is not a delivery ---------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 308])
def test_a_redirect_is_not_a_delivery_records_stay_queued_then_arrive(status: int, tmp_path: Path) -> None:
    login = "https://sso.example.com/login"
    with (
        simulator() as sim,
        OtlpReceiver() as receiver,
        RedirectingProxy(receiver.http_endpoint, location=login) as proxy,
    ):
        proxy.redirect = status
        story = Story(sim, seed=status)
        story.add_alarms(2, records=6)
        want = story.expected_uids()
        state = tmp_path / "s.db"
        path = write_config(
            tmp_path / "c.yaml", exporter_config(sim, proxy.url, state, story.ids, protocol="http/protobuf")
        )
        run = Run(path)
        try:
            wait_until(lambda: proxy.answered(status) >= 3, 20, "three redirected attempts", daemon=run.daemon)
            assert receiver.requests == []  # nothing went past the proxy
            assert _queued(state, "logs") == len(want), "a redirect was taken for a delivery: records lost"
            output = run.wait_for(f"HTTP {status} redirect to {login}/v1/logs")
            assert "only a 2xx answer is" in output
            assert run.metric("bk_otel_records_exported_total", signal="logs") == 0
            assert status_of(path)["outbox"]["queued"] == len(want)

            proxy.redirect = None  # the operator fixed the ingress
            assert_exactly_once(wait_delivered(receiver, want), want)
            wait_until(lambda: _queued(state, "logs") == 0, 10, "an empty outbox")
            output = run.finish()
        finally:
            run.stop_quietly()
    # an outage: logged when it starts and when it ends, not per attempt
    assert sum(f"HTTP {status} redirect" in line for line in output.splitlines()) == 1
    assert "works again" in output


# -- 2. partial success ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_partial_success_is_counted_and_logged_not_resent(protocol: str, tmp_path: Path) -> None:
    message = "1 log record refused: timestamp older than the retention"
    with simulator() as sim, OtlpReceiver() as receiver:
        receiver.partial_success = (1, message)
        story = Story(sim, seed=7)
        story.add_alarms(3, records=5)
        want = story.expected_uids()
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        path = write_config(
            tmp_path / "c.yaml", exporter_config(sim, endpoint, tmp_path / "s.db", story.ids, protocol=protocol)
        )
        run = Run(path)
        try:

            def accounted() -> bool:
                refused = sum(r.rejected for r in receiver.requests)
                return len(receiver.logs()) + refused == len(want)

            wait_until(accounted, 30, "every record stored or refused", daemon=run.daemon)
            wait_until(lambda: _queued(tmp_path / "s.db", "logs") == 0, 10, "an empty outbox")
            refused = sum(r.rejected for r in receiver.requests)
            assert refused == len(receiver.requests) >= 1  # one refused in every answer
            assert run.metric("bk_otel_records_refused_total", signal="logs") == refused
            assert run.metric("bk_otel_records_exported_total", signal="logs") == len(want)
            assert run.metric("bk_otel_records_parked_total", signal="logs") == 0

            # not resent: one more record brings one more request, for that record alone
            requests = len(receiver.requests)
            story.note()
            wait_until(lambda: len(receiver.requests) == requests + 1, 10, "one more request")
            assert [r.items for r in receiver.requests[requests:]] == [1]
            got = uids_of(receiver)
            assert len(got) == len(set(got)) and set(got) <= story.expected_uids()
            output = run.finish()
        finally:
            run.stop_quietly()
    lines = [line for line in output.splitlines() if message in line]
    assert len(lines) == 1, lines  # rate-limited: the first answer, then once a minute
    assert "refused 1 of its records" in lines[0] and "not resent" in lines[0]


# -- 3. a backend without a traces service ---------------------------------------------------------


def test_grpc_backend_without_traces_service_logs_still_flow(tmp_path: Path) -> None:
    with simulator() as sim, OtlpReceiver(services=("logs",)) as receiver:
        story = Story(sim, seed=11)
        story.add_alarms(3, records=4)
        want = story.expected_uids()
        state = tmp_path / "s.db"
        config = exporter_config(sim, receiver.grpc_endpoint, state, story.ids, export={"signals": ["spans", "logs"]})
        path = write_config(tmp_path / "c.yaml", config)
        run = Run(path)
        try:
            assert_exactly_once(wait_delivered(receiver, want), want)
            # the spans backing off never hold later logs back
            story.notes(5)
            want = story.expected_uids()
            assert_exactly_once(wait_delivered(receiver, want), want)
            output = run.wait_for("has no OTLP traces service")
            assert receiver.spans() == [] and _queued(state, "spans") >= 3  # the slices wait, kept
            assert run.metric("bk_otel_records_exported_total", signal="spans") == 0
            assert status_of(path)["last_successful_export"] is not None  # the logs' exports count
            output = run.finish()
        finally:
            run.stop_quietly()
    [line] = [line for line in output.splitlines() if "has no OTLP traces service" in line]
    assert "gRPC UNIMPLEMENTED" in line and "export.signals" in line and "spans stay queued" in line


# -- 4. the collector's 4 MiB limit ----------------------------------------------------------------

BIG = 200_000  # bytes of one big record's message: 21 of them are over 4 MiB


@pytest.mark.parametrize("max_batch_bytes", ["3MiB", "64MiB"], ids=["default-limit", "limit-above-the-collector"])
def test_big_backlog_is_split_under_the_4mib_limit_and_a_giant_is_parked(max_batch_bytes: str, tmp_path: Path) -> None:
    with simulator() as sim, OtlpReceiver() as receiver:  # grpc's default 4 MiB receive limit
        story = Story(sim, seed=5)
        alarms = story.add_alarms(4, records=1)
        for n in range(60):  # 60 x 200 kB = 12 MB of backlog, in one claim of 512
            story.note(alarms[n % 4], text=f"big record #{n} " + "x" * BIG)
        giant = alarms[0]
        giant.log("ACTION", "giant " + "y" * (GRPC_MAX_RECEIVE + 500_000), at=T0 + 10_000)
        giant_uid = story.expected_uids(lambda raw: str(raw["message"]).startswith("giant"))
        want = story.expected_uids(lambda raw: not str(raw["message"]).startswith("giant"))
        state = tmp_path / "s.db"
        config = exporter_config(
            sim,
            receiver.grpc_endpoint,
            state,
            story.ids,
            export={"batch_size": 512, "max_batch_bytes": max_batch_bytes, "timeout": "10s"},
        )
        run = Run(write_config(tmp_path / "c.yaml", config))
        try:
            assert_exactly_once(wait_delivered(receiver, want, timeout=60), want)
            wait_until(lambda: len(_parked(state)) == 1, 20, "the giant record parked", daemon=run.daemon)
            wait_until(lambda: _queued(state, "logs") == 0, 10, "an empty outbox")
            [(uid, reason)] = _parked(state)
            assert {uid} == giant_uid and "too large" in reason
            assert run.metric("bk_otel_records_parked_total", signal="logs") == 1
            accepted = [r for r in receiver.requests if r.accepted]
            assert all(r.size <= GRPC_MAX_RECEIVE for r in accepted)
            refused = [r for r in receiver.requests if r.status == "RESOURCE_EXHAUSTED"]
            if max_batch_bytes == "3MiB":
                assert refused == []  # the sender never sends what the collector would refuse
                assert all(r.size <= 3 * 1024 * 1024 for r in accepted)
            else:
                assert refused  # the collector's answer split the batches
            output = run.finish()
        finally:
            run.stop_quietly()
    [line] = [line for line in output.splitlines() if "parked, not retried" in line]
    assert "too large to be accepted even alone" in line and next(iter(giant_uid)) in line


def test_an_alarm_with_thousands_of_records_is_one_capped_span_and_every_log(tmp_path: Path) -> None:
    with simulator() as sim, OtlpReceiver() as receiver:
        story = Story(sim, seed=17)
        [alarm] = story.add_alarms(1, records=2499)
        alarm.recover(at=T0 + 100_000)
        want = story.expected_uids()
        assert len(want) == 2500
        config = exporter_config(
            sim,
            receiver.grpc_endpoint,
            tmp_path / "s.db",
            story.ids,
            export={"signals": ["logs", "spans"], "batch_size": 512},
            poll={"retire_after": "1s"},
        )
        run = Run(write_config(tmp_path / "c.yaml", config))
        try:
            assert_exactly_once(wait_delivered(receiver, want, timeout=60), want)  # the logs keep every record
            [span] = receiver.wait_for_spans(1, timeout=30)
            run.finish()
        finally:
            run.stop_quietly()
    assert span["attributes"]["bk.span.role"] == "alarm" and span["status"]["code"] == 1  # OK: recovered
    assert len(span["events"]) == 1000 and span["dropped_events_count"] == 1500
    names = [e["name"] for e in span["events"]]
    assert names[0] == "CREATE" and names[-1] == "RECOVER"  # how it began and how it ended


# -- 5. headers -------------------------------------------------------------------------------------


def test_otel_exporter_otlp_headers_authorization_works_over_grpc(tmp_path: Path) -> None:
    with simulator() as sim, OtlpReceiver() as receiver:
        story = Story(sim, seed=13)
        story.add_alarms(2, records=3)
        want = story.expected_uids()
        config = exporter_config(sim, receiver.grpc_endpoint, tmp_path / "s.db", story.ids)
        del config["export"]["headers"]  # from the standard variable instead
        env = {**ENV, "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=" + urllib.parse.quote(OTLP_AUTH_HEADER)}
        run = Run(write_config(tmp_path / "c.yaml", config), env=env)
        try:
            assert_exactly_once(wait_delivered(receiver, want), want)
            assert {r.headers.get("authorization") for r in receiver.requests} == {OTLP_AUTH_HEADER}
            run.finish()
        finally:
            run.stop_quietly()


def test_check_config_refuses_a_header_name_no_transport_can_send(tmp_path: Path) -> None:
    with simulator() as sim:
        config = exporter_config(sim, "http://127.0.0.1:4317", tmp_path / "s.db", ["1"])
        config["export"]["headers"] = {"X Auth Token": "${TEST_OTLP_AUTH}"}
        done = run_cli(["check-config", "--config", str(write_config(tmp_path / "c.yaml", config))], env=ENV)
        assert done.returncode == 2, done.stderr
        assert "export.headers: header 'X Auth Token': not a valid header name" in done.stderr

        del config["export"]["headers"]
        env = {**ENV, "OTEL_EXPORTER_OTLP_HEADERS": "x-token:a=" + urllib.parse.quote(OTLP_AUTH_HEADER)}
        done = run_cli(["check-config", "--config", str(write_config(tmp_path / "c.yaml", config))], env=env)
        assert done.returncode == 2, done.stderr
        assert "export.headers: header 'x-token:a'" in done.stderr and "OTEL_EXPORTER_OTLP_HEADERS" in done.stderr

        env = {**ENV, "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=" + urllib.parse.quote(OTLP_AUTH_HEADER)}
        done = run_cli(["check-config", "--config", str(write_config(tmp_path / "c.yaml", config))], env=env)
        assert done.returncode == 0, done.stderr
        assert "Authorization: '***'" in done.stdout
