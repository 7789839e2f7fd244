"""Logs in the journal by priority: the daemon and ``once`` write sd-daemon(3) ``<N>`` prefixes
when ``$JOURNAL_STREAM`` names their stderr, as systemd sets it for a unit logging to the journal.

No systemd runs here (no ``systemd-run``): the test owns the stream instead, a log file for the
daemon and a Unix stream socket (what journald hands a service) for ``once``, sets
``JOURNAL_STREAM`` to its device and inode, and decodes the priorities as journald does: ``<N>`` at
the start of a line is its priority, the rest is the message. ``journalctl -p warning`` is then the
lines of priority 4 or less.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exporter.simulator import Simulator
from tests.support.daemon import OUTPUTS, ROOT, CapturedOutput, Daemon, exporter_config, write_config
from tests.support.secrets import APP_SECRET
from tests.support.sim import story

pytestmark = pytest.mark.integration

PREFIX = re.compile(r"^<([0-7])>(.*)$")
LEVELS = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


def journal(text: str) -> list[tuple[int, str]]:
    """(priority, message) of every line, as journald reads a stream; a line without a prefix
    would be stored at the unit's default priority (info) and fails here."""
    entries = []
    for line in text.splitlines():
        match = PREFIX.match(line)
        assert match, f"a line without a priority prefix: {line!r}"
        entries.append((int(match[1]), match[2]))
    return entries


def check(entries: list[tuple[int, str]]) -> None:
    """Each message starts with its level name (no timestamp of its own) matching the priority;
    ``journalctl -p warning`` would show warnings and errors, and only those."""
    for priority, message in entries:
        level = message.split(" ", 1)[0]
        assert level in LEVELS, f"the message does not start with its level: {message!r}"
        assert LEVELS[level] == priority, (priority, message)
    warnings_and_errors = [m for p, m in entries if p <= 4]
    assert any(m.startswith("WARNING ") for m in warnings_and_errors)
    assert all(m.startswith(("WARNING ", "ERROR ", "CRITICAL ")) for m in warnings_and_errors)
    assert any(p == 6 for p, _ in entries)  # and the INFO lines are there, below -p warning


def test_the_daemon_logs_to_the_journal_by_priority(sim: Simulator, tmp_path: Path) -> None:
    alarms = story(sim)
    config = exporter_config(
        sim,
        tmp_path / "state.db",
        [a.id for a in alarms],
        export={"endpoint": "http://127.0.0.1:9", "timeout": "1s", "retry": {"initial_backoff": "100ms"}},
    )
    path = write_config(tmp_path / "c.yaml", config)
    log_path = tmp_path / "journal.log"
    log_path.touch()  # the daemon's stderr: Daemon opens this very file (same inode)
    st = os.stat(log_path)
    env = {"TEST_BK_SECRET": APP_SECRET, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    with Daemon(path, env=env, log_path=log_path) as daemon:
        daemon.wait_for_output("WARNING ", timeout=30)  # the OTLP endpoint refuses: a warning
        sim.inject("auth_1306000", times=1000, endpoint="get_event_log")
        daemon.wait_for_output("ERROR ", timeout=30)  # BlueKing refuses the credentials: an error
    assert daemon.returncode == 0
    entries = journal(daemon.output())
    check(entries)
    assert any(p == 3 and "credentials" in m for p, m in entries)


def test_once_logs_to_a_journal_socket_by_priority(sim: Simulator, tmp_path: Path) -> None:
    alarms = story(sim)
    config = exporter_config(
        sim,
        tmp_path / "state.db",
        [a.id for a in alarms],
        export={"endpoint": "http://127.0.0.1:9", "timeout": "1s"},
    )
    path = write_config(tmp_path / "c.yaml", config)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    st = os.fstat(theirs.fileno())
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(iter(lambda: ours.recv(65536), b"")), daemon=True)
    reader.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BK_OTEL_", "NOTIFY_SOCKET"))}
    env.update(PYTHONPATH=str(ROOT), TEST_BK_SECRET=APP_SECRET, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    with theirs:
        done = subprocess.run(
            [sys.executable, "-m", "exporter", "once", "--config", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=theirs,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
    reader.join(10)
    ours.close()
    text = b"".join(received).decode("utf-8", "replace")
    OUTPUTS.append(CapturedOutput("once on a journal socket", text=text + done.stdout.decode()))
    assert done.returncode == 1, text  # the OTLP endpoint refuses: records stay queued
    entries = journal(text)
    check(entries)
    assert any(p == 6 and m.startswith("INFO exporter.cli: once:") for p, m in entries)
