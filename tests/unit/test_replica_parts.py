"""The pure parts of the shared store's replicas: the transport warning, the kept instance id,
the database clock, which service.instance.id a process reports, and status's replica lines.
No sockets: the URL is only parsed, never connected to."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")

from exporter.app import instance_id  # noqa: E402
from exporter.config import config_from_dict  # noqa: E402
from exporter.state.postgres.clock import DatabaseClock  # noqa: E402
from exporter.state.postgres.identity import InstanceIdFile  # noqa: E402
from exporter.state.postgres.transport import is_loopback, transport_warning  # noqa: E402
from exporter.status import render_status  # noqa: E402


# -- the transport warning ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@127.0.0.1:5432/db",  # loopback, any sslmode
        "postgresql://u@localhost/db?sslmode=disable",
        "postgresql://u@[::1]:5432/db",
        "postgresql://u@%2Fvar%2Frun%2Fpostgresql/db",  # a Unix socket directory
        "postgresql:///db",  # no host: the Unix socket
        "postgresql://u@pg.example.com/db?sslmode=verify-full&sslrootcert=/etc/ssl/ca.crt",
        "postgresql://u@pg-a,pg-b/db?sslmode=verify-full",
        "postgresql://u@pg.example.com/db?hostaddr=127.0.0.1",  # libpq connects to hostaddr
    ],
)
def test_no_warning_for_loopback_or_verified_connections(url: str) -> None:
    assert transport_warning(url, env={}) is None


@pytest.mark.parametrize(
    ("url", "env", "words"),
    [
        ("postgresql://u:s3cret@pg.example.com/db", {}, ("sslmode=prefer", "plaintext", "pg.example.com")),
        ("postgresql://u@10.0.0.5/db?sslmode=disable", {}, ("sslmode=disable", "plaintext", "10.0.0.5")),
        ("postgresql://u@pg.example.com/db?sslmode=allow", {}, ("sslmode=allow", "plaintext")),
        ("postgresql://u@pg.example.com/db?sslmode=require", {}, ("sslmode=require", "does not verify")),
        ("postgresql://u@pg.example.com/db?sslmode=verify-ca", {}, ("verify-ca", "host name")),
        ("postgresql://u@pg.example.com/db", {"PGSSLMODE": "require"}, ("sslmode=require",)),
        ("postgresql://u@localhost,pg-b/db", {}, ("pg-b", "plaintext")),
        ("postgresql:///db", {"PGHOST": "pg.example.com"}, ("pg.example.com", "plaintext")),
    ],
)
def test_a_warning_names_the_mode_and_the_remote_host(url: str, env: dict[str, str], words: tuple[str, ...]) -> None:
    warning = transport_warning(url, env=env)
    assert warning is not None and all(w in warning for w in words), warning
    assert "verify-full" in warning and "sslrootcert" in warning  # the advice
    assert "s3cret" not in warning and "localhost" not in warning


def test_the_url_wins_over_the_environment() -> None:
    url = "postgresql://u@pg.example.com/db?sslmode=verify-full"
    assert transport_warning(url, env={"PGSSLMODE": "disable"}) is None
    assert transport_warning("postgresql://u@pg.example.com/db", env={"PGSSLMODE": "verify-full"}) is None


def test_loopback_hosts() -> None:
    assert all(is_loopback(h) for h in ("", "localhost", "127.0.0.1", "127.8.9.10", "::1", "/tmp", "@abstract"))
    assert not any(is_loopback(h) for h in ("10.0.0.1", "pg.example.com", "::2", "localhost.example.com"))


# -- the kept instance id -------------------------------------------------------------------------------
def test_the_instance_id_is_kept_across_restarts_and_never_shared(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db.instance-id")
    first = InstanceIdFile(path)
    assert first.kept and len(first.id) == 32
    second = InstanceIdFile(path)  # another replica on this host with the same config, meanwhile
    assert not second.kept and second.id != first.id
    first.close()
    second.close()
    again = InstanceIdFile(path)  # the first one restarted
    assert again.kept and again.id == first.id
    again.close()


def test_an_unusable_place_gives_a_fresh_id_each_run(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "no such directory" / "state.db.instance-id")  # as unwritable as a read-only root
    a, b = InstanceIdFile(nowhere), InstanceIdFile(nowhere)
    assert not a.kept and not b.kept and a.id != b.id and len(a.id) == 32
    assert InstanceIdFile(None).kept is False


def test_a_damaged_id_file_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "state.db.instance-id"
    path.write_text("not an id\n")
    kept = InstanceIdFile(str(path))
    kept.close()
    assert kept.kept and path.read_text().strip() == kept.id and len(kept.id) == 32


# -- the database clock ---------------------------------------------------------------------------------
def test_the_clock_follows_the_server_by_the_best_round_trip() -> None:
    local = [1000.0]
    clock = DatabaseClock(local=lambda: local[0])
    assert clock() == 1000.0 and clock.error is None  # no sample yet: the local clock
    clock.sample(before=1000.0, server=940.2, after=1000.4)  # server 60 s behind us, 0.4 s round trip
    assert clock.offset == pytest.approx(-60.0) and clock.error == pytest.approx(0.2)
    clock.sample(before=1001.0, server=950.0, after=1005.0)  # a slow answer (4 s): not believed
    assert clock.offset == pytest.approx(-60.0)
    clock.sample(before=1010.0, server=950.05, after=1010.1)  # a better one wins
    assert clock.offset == pytest.approx(-60.0) and clock.error == pytest.approx(0.05)
    local[0] = 2000.0
    assert clock() == pytest.approx(1940.0)


def test_the_clock_is_safe_across_threads() -> None:
    clock = DatabaseClock(local=lambda: 0.0)

    def sample(i: int) -> None:
        for _ in range(200):
            clock.sample(0.0, 5.0 + i / 1000, 0.01)

    threads = [threading.Thread(target=sample, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 5.0 <= clock.offset + 0.005 <= 5.004


# -- which service.instance.id a process reports ---------------------------------------------------------
class _Store:
    def __init__(self, own: str | None) -> None:
        if own is not None:
            self.instance_id = own

    def get_meta(self, key: str) -> str | None:
        return "the-store-id" if key == "instance_id" else None


def _config(**export: Any) -> Any:
    raw = {"bkmonitor": {"base_url": "http://127.0.0.1:9", "app_code": "c", "app_secret": "s"}, "export": export}
    return config_from_dict(raw, env={})


def test_the_operator_id_wins_then_the_replica_s_then_the_store_s() -> None:
    configured = _config(resource_attributes={"service.instance.id": "pod-7"})
    assert instance_id(configured, _Store("replica-id")) == "pod-7"  # type: ignore[arg-type]
    assert instance_id(_config(), _Store("replica-id")) == "replica-id"  # type: ignore[arg-type]
    assert instance_id(_config(), _Store(None)) == "the-store-id"  # type: ignore[arg-type]  # SQLite


def test_otel_resource_attributes_set_the_instance_id() -> None:
    raw = {"bkmonitor": {"base_url": "http://127.0.0.1:9", "app_code": "c", "app_secret": "s"}}
    config = config_from_dict(raw, env={"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-9,team=ops"})
    assert instance_id(config, _Store("replica-id")) == "pod-9"  # type: ignore[arg-type]


# -- status: one line per replica, with its instance id ---------------------------------------------------
def test_status_shows_each_replica_s_instance_id() -> None:
    def replica(owner: str, instance: str | None, roles: list[str]) -> dict[str, Any]:
        return {
            "owner": owner,
            "instance_id": instance,
            "alive": True,
            "stopped_at": None,
            "last_seen": 99.0,
            "alarms_owned": 3,
            "outbox_rows_owned": 0,
            "polls": 10,
            "roles": roles,
        }

    status = {
        "store": "postgresql://u:***@db/x",
        "alarms": {"followed": 0, "closing": 0, "retired": 0, "expired": 0, "list": []},
        "outbox": {"queued": 0, "parked": 0, "by_signal": {}, "oldest_age_seconds": None},
        "last_successful_poll": None,
        "last_successful_export": None,
        "replicas": [replica("pod-a:1:x", "a" * 32, ["discovery"]), replica("pod-b:2:y", None, [])],
    }
    lines = render_status(status, now=100.0).splitlines()
    header = next(x for x in lines if x.startswith("replica "))
    assert header.endswith("service.instance.id")
    a = next(x for x in lines if x.startswith("pod-a:1:x"))
    b = next(x for x in lines if x.startswith("pod-b:2:y"))
    assert a.split()[-2:] == ["discovery", "a" * 32] and b.split()[-2:] == ["-", "-"]
    assert a.index("a" * 32) == header.index("service.instance.id")  # one column
