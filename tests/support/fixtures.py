"""pytest fixtures for the OTLP side: load with ``pytest_plugins = ["tests.support.fixtures"]``.

* ``otlp_receiver``: a started ``OtlpReceiver`` (the backend), stopped after the test.
* ``sim``: a started BlueKing simulator on the real clock, with the test app code and secret
  (``tests.support.sim.simulator``).
* ``store``: a fresh ``SqliteStateStore`` (``s.db`` in ``tmp_path``), closed after the test
  (tests/unit/test_state_contract.py has its own, over both backends).
* ``rotel_collector``: a ``RotelCollector(rotel, receiver)``: a running rotel forwarding logs
  and traces over OTLP/gRPC to a fresh receiver. Point the code under test at
  ``rotel.grpc_endpoint`` or ``rotel.http_endpoint``; assert on ``receiver``.

rotel is a hard test dependency (pinned in the lock file): a missing binary fails the test
with a RotelError saying how to install it; nothing is skipped.

Load this module only through ``pytest_plugins`` (importing it first makes pytest warn that
it cannot rewrite its asserts, an error under ``filterwarnings = error``); the fixture's
type, ``RotelCollector``, lives in ``tests.support.rotel``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.simulator import Simulator
from exporter.state.sqlite import SqliteStateStore
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.rotel import Rotel, RotelCollector
from tests.support.sim import simulator

__all__ = ["otlp_receiver", "postgres_url", "rotel_collector", "sim", "store"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with simulator() as s:
        yield s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    s = SqliteStateStore(tmp_path / "s.db")
    yield s
    s.close()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def rotel_collector(otlp_receiver: OtlpReceiver) -> Iterator[RotelCollector]:
    rotel = Rotel(receiver=otlp_receiver).start()
    try:
        yield RotelCollector(rotel, otlp_receiver)
    finally:
        # Let rotel flush instead of retrying into a receiver a test left failing: a SIGTERM
        # while its exporter retries costs ~3 s (rotel's own shutdown deadline).
        otlp_receiver.mode = "ok"
        rotel.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (tests/support/postgres.py): the URL of an
    empty database, password included. Isolate with ``fresh_schema(url)``/``fresh_database(url)``.

    Skipped only when the PostgreSQL binaries are genuinely absent, and never under ``CI=true``:
    there a missing PostgreSQL fails (scripts/ensure-postgres.sh installs it).
    """
    import os

    from tests.support.postgres import PostgresCluster, find_pg_bin

    bindir = find_pg_bin()
    if bindir is None:
        message = "PostgreSQL binaries (initdb, pg_ctl, postgres) not found; run scripts/ensure-postgres.sh"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(message + " (CI=true: required, not skipped)", pytrace=False)
        pytest.skip(message)
    with PostgresCluster(bindir) as cluster:
        yield cluster.url
