"""What every fault scenario shares: a story of alarms, the exporter's config, the daemon, the checks.

* :class:`Story` puts alarms and flow records into the simulator whose identities never change
  while a test runs (distinct times and messages, no CONVERGE runs that BlueKing would re-fold),
  so ``expected_uids()`` (computed from ``sim.visible_records`` with the product's own parser, as
  ``tests/integration/test_daemon_e2e.py`` does) is exactly what must arrive.
* :func:`exporter_config` is the config every scenario starts from (fast polls and backoffs, the
  health server on an ephemeral port, the test secrets from ``tests/support/secrets.py``).
* :class:`Run` is one daemon process: its health endpoints, SIGKILL, and :meth:`Run.finish`, the
  closing health check.
* :func:`wait_delivered` and :func:`assert_exactly_once` are the closing delivery check.
* :class:`HookedReceiver` is the OTLP backend with a per-request decision (refuse this request,
  kill the exporter now), for faults rotel would hide (it acknowledges before forwarding).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator import SimAlarm, Simulator
from tests.support import daemon as daemon_support
from tests.support import sim as sim_support
from tests.support.daemon import Daemon, merge, run_cli
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.secrets import APP_SECRET, OTLP_AUTH_HEADER
from tests.support.sim import T0
from tests.support.wait import wait_until

APP_CODE = "bk-otel-faults"
#: The daemon's environment: the secrets reach the config through ${VAR} substitution.
ENV = {"TEST_BK_SECRET": APP_SECRET, "TEST_OTLP_AUTH": OTLP_AUTH_HEADER}


@contextmanager
def simulator(**kw: Any) -> Iterator[Simulator]:
    with sim_support.simulator(app_code=APP_CODE, **kw) as sim:
        yield sim


# -- the story ----------------------------------------------------------------------------------------


class Story:
    """Alarms with stable records. Thread-safe: a background thread may add records meanwhile."""

    def __init__(self, sim: Simulator, *, seed: int = 0) -> None:
        self.sim = sim
        self.alarms: list[SimAlarm] = []
        self._rng = random.Random(seed)
        self._n = 0
        self._lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.alarms]

    def add_alarms(self, count: int, records: int = 5) -> list[SimAlarm]:
        """``count`` alarms of ``records`` records each (CREATE, then ACTION notes)."""
        added = []
        for _ in range(count):
            with self._lock:
                number = len(self.alarms)
            alarm = self.sim.add_alarm(name=f"alarm {number}", severity=1 + number % 3, begin_time=T0, create_time=T0)
            with self._lock:
                self.alarms.append(alarm)
            added.append(alarm)
            for _ in range(records - 1):
                self.note(alarm)
        return added

    def note(self, alarm: SimAlarm | None = None, text: str | None = None) -> None:
        """One more record (an ACTION at a time of its own) on ``alarm`` (default: a random one)."""
        with self._lock:
            self._n += 1
            n = self._n
            target = alarm if alarm is not None else self._rng.choice(self.alarms)
        target.log("ACTION", text or f"notified the on-call engineer #{n}", at=T0 + n)

    def notes(self, count: int) -> None:
        for _ in range(count):
            self.note()

    def expected_uids(self, where: Callable[[dict[str, Any]], bool] | None = None) -> set[str]:
        """The uids of every record BlueKing shows now (those ``where`` accepts)."""
        return sim_support.expected_uids(self.sim, list(self.alarms), where)


class Grower(threading.Thread):
    """Adds a record to a random alarm every ``every`` seconds until :meth:`stop`."""

    def __init__(self, story: Story, every: float) -> None:
        super().__init__(name="story-grower", daemon=True)
        self.story = story
        self.every = every
        self.added = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            self.story.note()
            self.added += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# -- the config ---------------------------------------------------------------------------------------


def exporter_config(
    sim: Simulator,
    endpoint: str,
    state_path: Path,
    ids: list[str],
    *,
    protocol: str = "grpc",
    store: Any = None,
    **over: Any,
) -> dict[str, Any]:
    """The scenarios' starting config; ``over`` is merged in section by section. ``store`` (the
    ``store`` fixture of ``conftest.py``) selects the state store: the SQLite file at
    ``state_path``, or a shared PostgreSQL store."""
    if store is not None:
        over = merge({"state": store.state()}, over)
    faults: dict[str, Any] = {
        "bkmonitor": {"timeout": "2s", "max_concurrency": 4, "retry": {"max_attempts": 5}},
        "export": {
            "endpoint": endpoint,
            "protocol": protocol,
            "timeout": "2s",
            "batch_size": 16,
            "headers": {"authorization": "${TEST_OTLP_AUTH}"},
            "retry": {"initial_backoff": "200ms", "max_backoff": "1s"},
        },
        "server": {"listen": "127.0.0.1:0"},
        "logging": {"level": "INFO"},
        "shutdown_timeout": "10s",
    }
    return merge(daemon_support.exporter_config(sim, state_path, ids, **faults), over)


# -- the daemon ---------------------------------------------------------------------------------------

_HEALTH_RE = re.compile(r"health and metrics on (http://[^/\s]+)/")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def metric_value(exposition: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


class Run:
    """One ``bk-otel-exporter run`` process."""

    def __init__(self, config_path: Path, *, env: Mapping[str, str] = ENV, wrap: Sequence[str] = ()) -> None:
        self.daemon = Daemon(config_path, env=dict(env), wrap=wrap).start()
        self._base: str | None = None

    @property
    def pid(self) -> int:
        return self.daemon.pid

    @property
    def alive(self) -> bool:
        return self.daemon.alive

    def output(self) -> str:
        return self.daemon.output()

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        return self.daemon.wait_for_output(text, timeout)

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` of its health server (logged at start-up)."""
        if self._base is None:
            match = _HEALTH_RE.search(self.wait_for("health and metrics on http://", 30))
            assert match, self.output()[-2000:]
            self._base = match.group(1)
        return self._base

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.base + path)

    def metric(self, name: str, **labels: str) -> float | None:
        status, text = self.get("/metrics")
        assert status == 200
        return metric_value(text, name, **labels)

    def sigkill(self) -> None:
        if self.alive:
            self.daemon.signal(signal.SIGKILL)
        assert self.daemon.wait(10) == -signal.SIGKILL

    def finish(self, *, ready: bool = True, ready_within: float = 20.0) -> str:
        """The closing health check: alive, /healthz 200 (and /readyz 200 when ``ready``), then a
        clean stop (SIGTERM, exit 0). Returns the whole output."""
        assert self.alive, f"the daemon died:\n{self.output()[-4000:]}"
        status, body = self.get("/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok", body
        if ready:
            wait_until(
                lambda: self.get("/readyz")[0] == 200,
                ready_within,
                lambda: f"/readyz 200 (last: {self.get('/readyz')})",
            )
        self.daemon.signal(signal.SIGTERM)
        code = self.daemon.wait(30)
        output = self.output()
        assert code == 0, f"exit code {code} after SIGTERM:\n{output[-4000:]}"
        return output

    def stop_quietly(self) -> None:
        """Teardown: whatever state the test left it in."""
        if self.alive:
            self.daemon.stop(20)


def status_of(config_path: Path) -> dict[str, Any]:
    """``bk-otel-exporter status --json`` (it reads the store without taking the daemon's lock)."""
    done = run_cli(["status", "--config", str(config_path), "--json"], env=ENV)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- delivery -----------------------------------------------------------------------------------------


def uids_of(receiver: OtlpReceiver) -> list[str]:
    return [r["attributes"]["log.record.uid"] for r in receiver.logs()]


def wait_delivered(receiver: OtlpReceiver, want: set[str], timeout: float = 30.0, settle: float = 0.5) -> list[str]:
    """Every uid of ``want`` at the receiver; then ``settle`` more seconds for late duplicates."""

    def progress() -> str:
        got = uids_of(receiver)
        return f"{len(want)} records ({len(want - set(got))} never arrived; {len(got)} log records received)"

    wait_until(lambda: want <= set(uids_of(receiver)), timeout, progress, every=0.1)
    time.sleep(settle)
    return uids_of(receiver)


def assert_exactly_once(got: list[str], want: set[str], *, allowed_duplicates: int = 0) -> int:
    """Every wanted uid delivered, nothing else, duplicates within ``allowed_duplicates``; returns them."""
    counts = Counter(got)
    missing = want - counts.keys()
    unexpected = counts.keys() - want
    duplicates = sum(n - 1 for n in counts.values())
    assert not missing, f"{len(missing)} records lost"
    assert not unexpected, f"{len(unexpected)} records delivered that BlueKing does not show"
    assert duplicates <= allowed_duplicates, f"{duplicates} duplicates (allowed {allowed_duplicates})"
    return duplicates


# -- the state file -----------------------------------------------------------------------------------


def lost_since_crash(state: Path, delivered: set[str]) -> set[str]:
    """Check the state file of a killed daemon; returns the uids that are neither queued nor delivered.

    Asserts what a crash must never break: the file is intact (``integrity_check``), every queued
    row is marked seen (one transaction), and nothing reached the backend without having been
    committed first. A uid marked seen but neither queued nor delivered would be lost for good:
    the caller waits for that set to become empty (a collector may still be forwarding).
    """
    db = sqlite3.connect(state, timeout=10)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seen = set(db.execute("SELECT alarm_id, uid FROM seen").fetchall())
        queued = set(db.execute("SELECT alarm_id, uid FROM outbox WHERE kind = 'logs'").fetchall())
    finally:
        db.close()
    assert queued <= seen, "a queued record is not marked seen"
    seen_uids = {uid for _, uid in seen}
    assert delivered <= seen_uids, "a record was delivered before it was committed"
    return seen_uids - {uid for _, uid in queued} - delivered


# -- a backend that decides per request ---------------------------------------------------------------


def _bodies(raw: bytes, encoding: str) -> list[str]:
    try:
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        request = logs_service_pb2.ExportLogsServiceRequest.FromString(raw)
    except Exception:  # let the receiver itself refuse what does not decode
        return []
    return [r.body.string_value for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


class HookedReceiver(OtlpReceiver):
    """An :class:`OtlpReceiver` that asks ``decide(bodies)`` about every logs request before storing
    and answering it: ``None`` = as ``mode`` says, else the mode for this request alone
    (``"reject"``: INVALID_ARGUMENT / HTTP 400). ``decide`` may also act (kill the exporter).
    Requests are handled one at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.decide: Callable[[list[str]], str | None] | None = None
        self.decisions: Counter[str] = Counter()
        self._decide_lock = threading.Lock()

    def _process(
        self, transport: Any, signal: Any, raw: bytes, encoding: str, headers: Mapping[str, Any]
    ) -> tuple[str, str]:
        with self._decide_lock:
            decide = self.decide
            verdict = decide(_bodies(raw, encoding)) if decide is not None and signal == "logs" else None
            if verdict is None:
                return super()._process(transport, signal, raw, encoding, headers)
            self.decisions[verdict] += 1
            saved, self.mode = self.mode, verdict  # type: ignore[assignment]
            try:
                return super()._process(transport, signal, raw, encoding, headers)
            finally:
                self.mode = saved
