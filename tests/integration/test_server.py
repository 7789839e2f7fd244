"""The health server over real HTTP on an ephemeral loopback port."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import METRIC_NAMES, Metrics
from exporter.server import HealthServer, parse_listen

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(clock=clock, poll_stale_after=60, export_stale_after=60)


@pytest.fixture
def server(metrics: Metrics) -> Iterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, metrics, poll_interval=0.05).start()
    try:
        yield srv
    finally:
        srv.close()


def request(
    srv: HealthServer, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_binds_an_ephemeral_port(server: HealthServer) -> None:
    assert server.port != 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_healthz_follows_the_scheduler(server: HealthServer, metrics: Metrics) -> None:
    status, headers, body = request(server, "/healthz")
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == "fail"

    metrics.set_scheduler_running(True)
    status, _, body = request(server, "/healthz")
    doc = json.loads(body)
    assert status == 200
    assert doc["status"] == "ok"
    assert doc["scheduler_running"] is True


def test_readyz_reports_reasons(server: HealthServer, metrics: Metrics, clock: Clock) -> None:
    metrics.set_scheduler_running(True)
    status, headers, body = request(server, "/readyz")
    assert status == 200, body  # start-up grace
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["reasons"] == []

    metrics.auth_failure("search_alert: credentials refused code=1306000")
    status, _, body = request(server, "/readyz")
    doc = json.loads(body)
    assert status == 503
    assert doc["status"] == "fail"
    assert doc["auth_failure"] == "search_alert: credentials refused code=1306000"

    metrics.auth_failure(None)
    clock.now += 61
    status, _, body = request(server, "/readyz")
    assert status == 503
    assert json.loads(body)["reasons"] == ["no successful poll since start 61s ago"]

    metrics.poll_cycle(ok=True, alarms_polled=1, seconds=0.1)
    assert request(server, "/readyz")[0] == 200


def test_metrics_exposition_parses_and_has_every_name(server: HealthServer, metrics: Metrics) -> None:
    metrics.set_scheduler_running(True)
    metrics.api_request("get_event_log", "ok", 0.3)
    metrics.poll_cycle(ok=True, alarms_polled=2, seconds=0.5)
    metrics.records_fetched(4)
    metrics.records_exported(4, "logs")
    metrics.export_attempt(signal="logs", ok=True, seconds=0.1)
    metrics.set_outbox(depth=3, oldest_age_seconds=7, parked=1)
    metrics.set_alarms_followed(2)

    status, headers, body = request(server, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    families = list(text_string_to_metric_families(body.decode()))
    # The parser drops a counter's _total suffix from the family name; put it back.
    exposed = {f.name + "_total" if f.type == "counter" else f.name for f in families}
    missing = set(METRIC_NAMES) - exposed
    assert not missing
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    assert samples[("bk_otel_api_requests_total", (("api_endpoint", "get_event_log"), ("outcome", "ok")))] == 1
    assert samples[("bk_otel_records_exported_total", (("signal", "logs"),))] == 4
    assert samples[("bk_otel_outbox_depth", ())] == 3
    assert samples[("bk_otel_up", ())] == 1
    assert samples[("bk_otel_ready", ())] == 1


def test_metrics_openmetrics_on_request(server: HealthServer) -> None:
    status, headers, body = request(
        server, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_unknown_paths_and_methods(server: HealthServer) -> None:
    assert request(server, "/")[0] == 404
    assert request(server, "/healthz/extra")[0] == 404
    assert request(server, "/metrics", method="POST")[0] == 501


def test_head_and_query_strings(server: HealthServer, metrics: Metrics) -> None:
    metrics.set_scheduler_running(True)
    status, headers, body = request(server, "/healthz", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    assert request(server, "/healthz?verbose=1")[0] == 200


def test_no_access_log_noise_on_stderr(server: HealthServer, capfd: pytest.CaptureFixture[str]) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/nope"):
        request(server, path)
    assert capfd.readouterr().err == ""


def test_two_servers_coexist_and_close_is_idempotent(clock: Clock) -> None:
    a_metrics, b_metrics = Metrics(clock=clock), Metrics(clock=clock)
    b_metrics.set_scheduler_running(True)
    with (
        HealthServer("127.0.0.1", 0, a_metrics, poll_interval=0.05) as a,
        HealthServer("127.0.0.1", 0, b_metrics, poll_interval=0.05) as b,
    ):
        assert a.port != b.port
        assert request(a, "/healthz")[0] == 503
        assert request(b, "/healthz")[0] == 200
        port = a.port
    a.close()  # again: no error
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_port_in_use_raises(server: HealthServer, metrics: Metrics) -> None:
    with pytest.raises(OSError):
        HealthServer("127.0.0.1", server.port, metrics, poll_interval=0.05).start()


def test_ipv6_loopback(metrics: Metrics) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        srv = HealthServer("::1", 0, metrics, poll_interval=0.05).start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert srv.url == f"http://[::1]:{srv.port}"
        assert request(srv, "/healthz")[0] == 503
    finally:
        srv.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        (":9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
        ("", None),
        ("  ", None),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["9464", "host:", "host:port", "::1:9464", "h:70000"])
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"host:port|brackets|out of range"):
        parse_listen(value)
