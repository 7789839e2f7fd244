"""``state.url`` over TLS: ``sslmode=verify-full`` with ``sslrootcert`` against a throwaway cluster
with ``ssl=on`` and a certificate from a throwaway CA (tests/support/tls.py).

verify-full connects, and every connection of the store (its pool and its heartbeat) is
encrypted; a server it cannot verify (a certificate from another CA, or one for another host
name) is refused with a clear error that never shows the password; verify-ca, which the
start-up warning calls out, accepts the wrong host name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from exporter.errors import StateError
from exporter.model import AlarmContext
from exporter.state.postgres import PostgresStateStore
from tests.support.postgres import PostgresCluster, find_pg_bin
from tests.support.tls import TlsFiles, find_openssl, make_tls
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[tuple[PostgresCluster, TlsFiles]]:
    bindir = find_pg_bin()
    if bindir is None or find_openssl() is None:
        message = "PostgreSQL or openssl not installed; run scripts/ensure-postgres.sh"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(message + " (CI=true: required, not skipped)", pytrace=False)
        pytest.skip(message)
    # the server runs as another account (under root): its files go where it can read them
    where = Path(tempfile.mkdtemp(prefix="bk-otel-tls-"))
    where.chmod(0o755)
    try:
        tls = make_tls(where, hosts=("localhost",))
        cluster = PostgresCluster(
            bindir, settings={"ssl": "on", "ssl_cert_file": str(tls.cert), "ssl_key_file": str(tls.key)}
        )
        for path in (tls.cert, tls.key):
            cluster.own(path)
        with cluster:
            yield cluster, tls
    finally:
        shutil.rmtree(where, ignore_errors=True)


def url(cluster: PostgresCluster, host: str, **params: str) -> str:
    password = quote(cluster.password, safe="")
    query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params.items())
    return f"postgresql://{cluster.user}:{password}@{host}:{cluster.port}/{cluster.database}?{query}"


def test_verify_full_with_the_ca_connects_and_every_connection_is_encrypted(
    tls_cluster: tuple[PostgresCluster, TlsFiles],
) -> None:
    cluster, tls = tls_cluster
    store = PostgresStateStore(
        url(cluster, "localhost", sslmode="verify-full", sslrootcert=str(tls.ca)), max_queued=10, lease=1.0
    )
    try:
        store.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
        assert [a.alarm_id for a in store.claim_due(10.0, 10)] == ["1"]  # registers: the heartbeat starts

        def sessions() -> list[tuple[bool, str | None]]:
            with psycopg.connect(cluster.url, autocommit=True) as admin:  # plain TCP: the test's own
                rows = admin.execute(
                    "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                    "WHERE a.application_name = 'bk-otel-exporter'"
                ).fetchall()
            return [(bool(r[0]), r[1]) for r in rows]

        wait_until(lambda: len(sessions()) >= 2, 10, "the pool's and the heartbeat's connections")
        assert all(ssl and version and version.startswith("TLS") for ssl, version in sessions()), sessions()
    finally:
        store.close()


@pytest.mark.parametrize(
    ("host", "ca", "problem"),
    [
        ("localhost", "other_ca", "certificate verify failed"),  # not signed by the CA we trust
        ("127.0.0.1", "ca", "does not match host name"),  # signed, but for localhost only
    ],
)
def test_verify_full_refuses_a_server_it_cannot_verify(
    tls_cluster: tuple[PostgresCluster, TlsFiles], host: str, ca: str, problem: str
) -> None:
    cluster, tls = tls_cluster
    with pytest.raises(StateError, match="cannot connect") as failure:
        PostgresStateStore(
            url(cluster, host, sslmode="verify-full", sslrootcert=str(getattr(tls, ca))), max_queued=10, lease=30.0
        )
    assert problem in str(failure.value)
    assert cluster.password not in str(failure.value)


def test_verify_ca_accepts_a_certificate_for_another_host(tls_cluster: tuple[PostgresCluster, TlsFiles]) -> None:
    cluster, tls = tls_cluster
    store = PostgresStateStore(
        url(cluster, "127.0.0.1", sslmode="verify-ca", sslrootcert=str(tls.ca)), max_queued=10, lease=30.0
    )
    store.close()
