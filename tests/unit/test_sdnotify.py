"""sd_notify: a real AF_UNIX datagram socket stands in for systemd's NOTIFY_SOCKET.

These are the only unit tests on sockets: a local datagram socket in tmp_path is systemd's side of
the protocol, and cheaper and truer than any fake.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import sdnotify


class Listener:
    """systemd's end: a bound datagram socket and the environment that points at it."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": address}

    def receive(self) -> str:
        return self.sock.recv(4096).decode()


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, or a shorter directory when tmp_path would overflow sun_path (108 bytes)."""
    if len(str(tmp_path / "notify.sock").encode()) < 100:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="sdn") as short:
        yield Path(short)


@pytest.fixture
def listener(short_dir: Path) -> Iterator[Listener]:
    path = short_dir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield Listener(sock, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    if not sys.platform.startswith("linux"):
        pytest.skip("abstract sockets are Linux-only")
    name = f"bk-otel-exporter-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        yield Listener(sock, "@" + name)


def test_ready(listener: Listener) -> None:
    assert sdnotify.ready(env=listener.env) is True
    assert listener.receive() == "READY=1"


def test_ready_with_status(listener: Listener) -> None:
    assert sdnotify.ready("following 3 alarms", env=listener.env)
    assert listener.receive() == "READY=1\nSTATUS=following 3 alarms"


def test_watchdog_stopping_status(listener: Listener) -> None:
    assert sdnotify.watchdog(env=listener.env)
    assert listener.receive() == "WATCHDOG=1"
    assert sdnotify.stopping(env=listener.env)
    assert listener.receive() == "STOPPING=1"
    assert sdnotify.status("polling\n12 alarms", env=listener.env)
    assert listener.receive() == "STATUS=polling 12 alarms"  # one line: a newline would start a new key


def test_reloading_carries_monotonic_usec(listener: Listener) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading(env=listener.env)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, usec = listener.receive().split("\n")
    assert reloading == "RELOADING=1"
    key, value = usec.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket(abstract_listener: Listener) -> None:
    assert sdnotify.ready(env=abstract_listener.env)
    assert abstract_listener.receive() == "READY=1"
    assert sdnotify.watchdog(env=abstract_listener.env)
    assert abstract_listener.receive() == "WATCHDOG=1"


def test_process_environment_is_the_default(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env["NOTIFY_SOCKET"])
    assert sdnotify.notify("STATUS=from os.environ")
    assert listener.receive() == "STATUS=from os.environ"


def test_unset_is_a_quiet_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.notify("READY=1", env={}) is False
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": ""}) is False


def test_send_errors_are_false_not_exceptions(short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="exporter.sdnotify")
    missing = str(short_dir / "gone.sock")
    assert sdnotify.ready(env={"NOTIFY_SOCKET": missing}) is False
    assert sdnotify.watchdog(env={"NOTIFY_SOCKET": "vsock:2:1234"}) is False  # a kind we do not speak
    assert sdnotify.stopping(env={"NOTIFY_SOCKET": "@" + "x" * 200}) is False  # name too long
    assert [r.levelname for r in caplog.records] == ["DEBUG", "DEBUG", "DEBUG"]


def test_send_to_a_socket_nobody_reads_does_not_raise(listener: Listener) -> None:
    listener.sock.close()  # the path still exists, nobody is bound to it any more
    assert sdnotify.ready(env=listener.env) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "3000000"}, 1.5),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_interval_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() == 5.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sdnotify.watchdog_interval() is None
