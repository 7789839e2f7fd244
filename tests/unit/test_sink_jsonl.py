"""The ``jsonl`` sink: one line per record, rotation by size, fsync before SUCCESS, exactly once across restarts."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from exporter.metrics import Metrics
from exporter.model import AlarmContext, LogEvent, SpanEventData, SpanRecord
from exporter.pipeline.sender import Sender, SenderSettings
from exporter.sinks.base import ExportOutcome
from exporter.sinks.jsonl import JsonlOptions, JsonlSink
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.sqlite import SqliteStateStore


def event(i: int, body: str = "CPU high") -> LogEvent:
    return LogEvent(
        uid=f"{i:032x}",
        alarm_id="1",
        timestamp_ns=1718000030 * 10**9 + i,
        observed_ns=1718000100 * 10**9,
        event_name="CONVERGE",
        body=f"{body} #{i}",
        severity_number=21,
        severity_text="FATAL",
        attributes={"bk.alarm.id": "1", "log.record.uid": f"{i:032x}", "n": i},
    )


def files(path: Path) -> list[Path]:
    """The current file and its backups that exist, newest first."""
    found = [path] if path.exists() else []
    n = 1
    while path.with_name(f"{path.name}.{n}").exists():
        found.append(path.with_name(f"{path.name}.{n}"))
        n += 1
    return found


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of every file, oldest file first; each must be one complete JSON object."""
    out = []
    for f in reversed(files(path)):
        raw = f.read_bytes()
        assert raw == b"" or raw.endswith(b"\n"), f"{f} ends with a partial line"
        out.extend(json.loads(line) for line in raw.splitlines())
    return out


def uids(path: Path) -> list[str]:
    return [row["uid"] for row in lines(path)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "out" / "records.jsonl"


def test_one_line_per_record_with_the_console_fields(path: Path) -> None:
    sink = JsonlSink(path)
    assert sink.export("logs", [event(1), event(2)]).outcome is ExportOutcome.SUCCESS
    rows = lines(path)
    assert [r["uid"] for r in rows] == [f"{1:032x}", f"{2:032x}"]
    assert path.read_bytes().startswith(b'{"uid":"')
    first = rows[0]
    assert first["signal"] == "log" and first["event_name"] == "CONVERGE" and first["body"] == "CPU high #1"
    assert first["timestamp"] == "2024-06-10T06:13:50.000Z" and first["severity_text"] == "FATAL"
    assert first["attributes"] == {"bk.alarm.id": "1", "log.record.uid": f"{1:032x}", "n": 1}
    sink.shutdown()


def test_spans_are_one_line_each(path: Path) -> None:
    span = SpanRecord(
        uid="alarm:1",
        alarm_id="1",
        trace_id=1,
        span_id=2,
        name="CPU",
        start_ns=10**18,
        end_ns=10**18 + 10**9,
        events=(SpanEventData("CREATE", 10**18, {"log.record.uid": "u"}),),
    )
    sink = JsonlSink(path)
    assert sink.export("spans", [span]).ok
    (row,) = lines(path)
    assert row["uid"] == "alarm:1" and row["signal"] == "span" and row["events"][0]["name"] == "CREATE"


class _Journal:
    """Records the write and fsync calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def write(self, fd: int, data: memoryview) -> int:
        self.calls.append(("write", fd))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        self.calls.append(("fsync", fd))
        os.fsync(fd)


def test_fsync_before_success(path: Path) -> None:
    journal = _Journal()
    sink = JsonlSink(path, write=journal.write, fsync=journal.fsync)
    assert sink.export("logs", [event(1)]).ok
    last_write = max(i for i, (op, _) in enumerate(journal.calls) if op == "write")
    assert journal.calls[-1] == ("fsync", journal.calls[last_write][1]), journal.calls


def test_the_same_record_is_never_written_twice(path: Path) -> None:
    sink = JsonlSink(path)
    assert sink.export("logs", [event(1), event(2)]).ok
    assert sink.export("logs", [event(2), event(3), event(3)]).ok  # a re-delivery, and a twin in the batch
    assert uids(path) == [f"{i:032x}" for i in (1, 2, 3)]
    assert (sink.stats.written, sink.stats.skipped) == (3, 2)


def test_exactly_one_line_per_record_across_a_restart(path: Path) -> None:
    """The crash window: the batch reached the file (fsync-ed) but the outbox never heard SUCCESS,
    so the next process delivers it again, with newer records."""
    before = JsonlSink(path, max_bytes=1000, backups=5)  # two lines (~360 bytes) per file
    assert before.export("logs", [event(i) for i in range(6)]).ok  # spread over rotated files
    assert len(files(path)) == 3
    del before  # crash: no shutdown
    after = JsonlSink(path, max_bytes=1000, backups=5)
    assert after.export("logs", [event(i) for i in range(3, 9)]).ok
    assert sorted(uids(path)) == [f"{i:032x}" for i in range(9)]
    assert after.stats.skipped == 3
    after.shutdown()


def test_rotation_by_size_keeps_backups(path: Path) -> None:
    sink = JsonlSink(path, max_bytes=800, backups=2)  # two lines (~360 bytes) per file
    for i in range(20):
        assert sink.export("logs", [event(i)]).ok
    found = files(path)
    assert [f.name for f in found] == ["records.jsonl", "records.jsonl.1", "records.jsonl.2"]
    for f in found:
        assert 0 < f.stat().st_size <= 800
    kept = uids(path)
    assert kept == [f"{i:032x}" for i in range(20 - len(kept), 20)]  # the newest, in order; the oldest gone
    assert sink.stats.rotations >= 3


def test_files_are_created_private_whatever_the_umask(path: Path) -> None:
    """The records hold alarm texts and hosts: owner only, the rotated backups too."""
    old = os.umask(0o022)
    try:
        sink = JsonlSink(path, max_bytes=800, backups=2)
        for i in range(8):
            assert sink.export("logs", [event(i)]).ok
    finally:
        os.umask(old)
    found = files(path)
    assert len(found) == 3
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in found} == {f.name: 0o600 for f in found}


def test_without_backups_the_full_file_is_dropped(path: Path) -> None:
    sink = JsonlSink(path, max_bytes=400, backups=0)
    for i in range(5):
        assert sink.export("logs", [event(i)]).ok
    assert files(path) == [path]
    assert uids(path)[-1] == f"{4:032x}"


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(path: Path) -> None:
    sink = JsonlSink(path, max_bytes=50, backups=5)
    assert sink.export("logs", [event(1), event(2)]).ok
    assert [len(f.read_bytes().splitlines()) for f in files(path)] == [1, 1]


def test_a_line_cut_short_by_a_crash_is_repaired_and_written_again(path: Path) -> None:
    sink = JsonlSink(path)
    assert sink.export("logs", [event(1)]).ok
    sink.shutdown()
    whole = (json.dumps({"uid": event(2).uid, "signal": "log"}) + "\n").encode()
    with open(path, "ab") as fh:
        fh.write(whole[:20])  # the process died in the middle of writing record 2
    again = JsonlSink(path)
    assert again.export("logs", [event(2), event(3)]).ok
    assert uids(path) == [f"{i:032x}" for i in (1, 2, 3)]


class _DiskFull:
    """``os.write`` that writes half of what it is given, then fails, ``times`` times."""

    def __init__(self, times: int = 1) -> None:
        self.times = times

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.times > 0:
            self.times -= 1
            written = os.write(fd, data[: max(1, len(data) // 2)])
            if written:
                raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


def test_write_failure_then_retry(path: Path) -> None:
    disk = _DiskFull(times=0)
    sink = JsonlSink(path, write=disk)
    assert sink.export("logs", [event(1)]).ok
    disk.times = 1
    failed = sink.export("logs", [event(2), event(3), event(4)])
    assert failed.outcome is ExportOutcome.RETRY and "No space left" in failed.detail
    assert sink.export("logs", [event(2), event(3), event(4)]).ok  # the sender's retry of the same batch
    assert uids(path) == [f"{i:032x}" for i in (1, 2, 3, 4)]


def test_fsync_failure_is_retry(path: Path) -> None:
    state = {"fail": True}

    def fsync(fd: int) -> None:
        if state.pop("fail", False):
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    sink = JsonlSink(path, fsync=fsync)
    sink.export("logs", [])  # opening fsyncs once: let that one pass
    state["fail"] = True
    assert sink.export("logs", [event(1)]).outcome is ExportOutcome.RETRY
    assert sink.export("logs", [event(1)]).ok
    assert uids(path) == [f"{1:032x}"]


def test_through_the_sender_a_redelivered_outbox_is_written_once(path: Path, store: SqliteStateStore) -> None:
    """The real outbox and sender: rows written to the file but never acknowledged (a SIGKILL between
    the fsync and the outbox commit) are sent again by the next process and must not be written twice."""
    store.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    rows = [QueuedRecord("logs", e.uid, e.to_json()) for e in (event(i) for i in range(10))]
    store.commit_poll(PollCommit("1", 1.0, seen=[r.uid for r in rows], queued=rows))
    # the first process: the sink writes a batch, then the process dies before the ack
    crashed = JsonlSink(path, max_bytes=1500)
    items = store.claim_outbox("logs", 4)
    assert crashed.export("logs", [i.payload for i in items]).ok
    # the next process drains the whole outbox, the first four included
    sink = JsonlSink(path, max_bytes=1500)
    sender = Sender(store, sink, Metrics(), SenderSettings(batch_size=3), rng=lambda: 0.5)
    report = sender.drain(force=True)
    assert report.exported == 10 and store.outbox_stats().depth == 0
    assert sorted(uids(path)) == sorted(r.uid for r in rows)
    assert sink.stats.skipped == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_bytes": 0}, "greater than or equal to 1"),
        ({"backups": -1}, "greater than or equal to 0"),
        ({"max_byte": 10}, "Extra inputs are not permitted"),
        ({"path": ""}, "at least 1 character"),
    ],
)
def test_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JsonlOptions.model_validate(options)


def test_path_must_not_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a directory"):
        JsonlOptions.model_validate({"path": str(tmp_path)})
    assert JsonlOptions.model_validate({}).path == "./bk-otel-exporter.jsonl"
