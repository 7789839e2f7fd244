"""Logging into the journal: the sd-daemon(3) ``<N>`` priority prefix, no timestamp of our own,
only when ``$JOURNAL_STREAM`` names the stream we write to."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import logsetup
from exporter.logsetup import journal_priority, journal_stream, setup_logging


@pytest.fixture(autouse=True)
def isolated_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(logsetup, "_SECRETS", logsetup._Secrets())
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    saved = {name: logging.getLogger(name).level for name in ("exporter", *logsetup.QUIET_LOGGERS)}
    yield
    for handler in root.handlers:
        if handler not in saved_handlers:
            handler.close()
    root.handlers[:] = saved_handlers
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def identity(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6), (logging.DEBUG, 7), (5, 7)],
)
def test_python_levels_become_syslog_priorities(level: int, priority: int) -> None:
    assert journal_priority(level) == priority


def test_the_journal_is_recognised_by_device_and_inode_only(tmp_path: Path) -> None:
    path, other = tmp_path / "stderr", tmp_path / "other"
    path.touch()
    other.touch()
    with open(path, "w", encoding="utf-8") as stream:
        assert journal_stream(stream, {"JOURNAL_STREAM": identity(path)})
        assert not journal_stream(stream, {"JOURNAL_STREAM": identity(other)})
        assert not journal_stream(stream, {})
        for garbage in ("", "12", "a:b", "12:", ":34", "1:2:3"):
            assert not journal_stream(stream, {"JOURNAL_STREAM": garbage}), garbage
    assert not journal_stream(io.StringIO(), {"JOURNAL_STREAM": identity(path)})  # no file descriptor


def test_lines_to_the_journal_carry_the_priority_and_no_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    path.touch()
    with open(path, "w", encoding="utf-8") as stream:
        setup_logging("DEBUG", "text", stream=stream, env={"JOURNAL_STREAM": identity(path)})
        log = logging.getLogger("exporter.pipeline")
        log.debug("details")
        log.info("cycle done")
        log.warning("get_event_log failed")
        log.error("credentials refused")
        log.critical("cannot go on")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("mapper failed")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:5] == [
        "<7>DEBUG exporter.pipeline: details",
        "<6>INFO exporter.pipeline: cycle done",
        "<4>WARNING exporter.pipeline: get_event_log failed",
        "<3>ERROR exporter.pipeline: credentials refused",
        "<2>CRITICAL exporter.pipeline: cannot go on",
    ]
    # the traceback's every line keeps the record's priority, so journalctl -p err shows it whole
    traceback = lines[5:]
    assert traceback[0] == "<3>ERROR exporter.pipeline: mapper failed"
    assert len(traceback) > 3 and all(line.startswith("<3>") for line in traceback)
    assert traceback[-1] == "<3>ValueError: boom"


def test_json_lines_to_the_journal_get_the_prefix_and_stay_json(tmp_path: Path) -> None:
    import json

    path = tmp_path / "stderr"
    path.touch()
    with open(path, "w", encoding="utf-8") as stream:
        setup_logging("INFO", "json", stream=stream, env={"JOURNAL_STREAM": identity(path)})
        logging.getLogger("exporter.sender").warning("backend down", extra={"signal": "logs"})
    (line,) = path.read_text(encoding="utf-8").splitlines()
    assert line.startswith("<4>{")
    doc = json.loads(line[3:])
    assert (doc["level"], doc["msg"], doc["signal"]) == ("WARNING", "backend down", "logs")


def test_elsewhere_lines_keep_their_timestamp_and_have_no_prefix(tmp_path: Path) -> None:
    path, journal = tmp_path / "stderr", tmp_path / "journal"
    path.touch()
    journal.touch()
    with open(path, "w", encoding="utf-8") as stream:
        setup_logging("INFO", "text", stream=stream, env={"JOURNAL_STREAM": identity(journal)})
        logging.getLogger("exporter.pipeline").warning("get_event_log failed")
    (line,) = path.read_text(encoding="utf-8").splitlines()
    assert line.endswith("Z WARNING exporter.pipeline: get_event_log failed")
    assert not line.startswith("<")
