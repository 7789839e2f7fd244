"""Issue 5, case 2: the OTLP backend down for a long stretch, then back.

Records keep arriving in BlueKing during the outage; they queue up in the outbox (every one of
them: the queue depth equals what was added), nothing is dropped, and when the backend is back
everything arrives exactly once. The outage is logged when it starts, at most once a minute while
it lasts, and when it ends: never once per record or per batch.

Two kinds of "down": the collector (rotel) killed, so the exporter finds nobody listening; and
the backend answering HTTP 503 (pointed straight at it, since a collector would hide that). The
once-a-minute reminder is shown over ten simulated minutes with the sender's injected clock
against the same real backend, since a test cannot wait that long.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from exporter.metrics import Metrics
from exporter.model import AlarmContext, LogEvent
from exporter.pipeline.sender import Sender, SenderSettings
from exporter.sinks.otlp import OtlpSettings, OtlpSink
from exporter.state.base import PollCommit, QueuedRecord
from exporter.state.sqlite import SqliteStateStore
from tests.support.daemon import write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.wait import wait_until

from ._harness import Run, Story, assert_exactly_once, exporter_config, simulator, status_of, wait_delivered
from .conftest import StoreChoice

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_SECONDS = 10


@pytest.mark.parametrize("down", ["collector killed", "backend answers 503"])
def test_backend_down_for_a_long_stretch_then_back(
    down: str, tmp_path: Path, request: pytest.FixtureRequest, store: StoreChoice
) -> None:
    if down == "collector killed":
        rotel, receiver = request.getfixturevalue("rotel_collector")
        endpoint, protocol = rotel.grpc_endpoint, "grpc"
    else:
        rotel, receiver = None, request.getfixturevalue("otlp_receiver")
        endpoint, protocol = receiver.http_endpoint, "http/protobuf"
    with simulator() as sim:
        story = Story(sim, seed=2)
        story.add_alarms(8, records=5)
        config = exporter_config(
            sim,
            endpoint,
            tmp_path / "s.db",
            story.ids,
            store=store,
            protocol=protocol,
            export={"retry": {"initial_backoff": "200ms", "max_backoff": "2s"}},
        )
        path = write_config(tmp_path / "c.yaml", config)
        run = Run(path)
        try:
            before = story.expected_uids()
            wait_delivered(receiver, before, settle=0.2)
            mark = len(run.output())
            if rotel is not None:
                rotel.kill()  # everything it had was forwarded: wait_delivered saw it
            else:
                receiver.mode = "unavailable"
            added = 0
            for _ in range(OUTAGE_SECONDS):
                story.notes(8)
                added += 8
                time.sleep(1.0)
            # every record of the outage is queued: none dropped, none delivered
            wait_until(lambda: run.metric("bk_otel_outbox_depth") == added, 10, f"{added} records queued")
            status = status_of(path)
            assert status["outbox"]["queued"] == added and status["outbox"]["parked"] == 0
            assert status["alarms"]["followed"] == 8 and status["last_successful_poll"] is not None
            assert set(uids_of_log(receiver)) == before
            if rotel is not None:
                rotel.restart()
            else:
                receiver.mode = "ok"
            want = story.expected_uids()
            assert len(want) == len(before) + added
            assert_exactly_once(wait_delivered(receiver, want), want)
            wait_until(lambda: run.metric("bk_otel_outbox_depth") == 0, 10, "an empty outbox")
            output = run.finish()
        finally:
            run.stop_quietly()
    during = output[mark:]
    assert during.count("export of logs failed") == 1, during
    assert during.count("still failing") <= 1  # at most once a minute
    assert during.count("export works again") == 1
    noisy = [line for line in during.splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(noisy) <= 3, "\n".join(noisy)  # not one per record, batch or attempt


def uids_of_log(receiver: OtlpReceiver) -> list[str]:
    return [r["attributes"]["log.record.uid"] for r in receiver.logs()]


class _Clock:
    def __init__(self) -> None:
        self.t = 1_718_000_000.0

    def __call__(self) -> float:
        return self.t


class _Lines(logging.Handler):
    def __init__(self, clock: _Clock) -> None:
        super().__init__(logging.INFO)
        self.clock = clock
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.clock.t, record.getMessage()))


def test_outage_reminder_once_a_minute_over_ten_simulated_minutes(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    clock = _Clock()
    store = SqliteStateStore(tmp_path / "s.db")
    sink = OtlpSink(OtlpSettings(endpoint=otlp_receiver.http_endpoint, protocol="http/protobuf", timeout=0.5))
    sender = Sender(
        store,
        sink,
        Metrics(clock=clock),
        SenderSettings(batch_size=10, initial_backoff=1.0, max_backoff=30.0, report_every=60.0),
        clock=clock,
        rng=lambda: 0.5,
    )
    handler = _Lines(clock)
    logger = logging.getLogger("exporter.pipeline.sender")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        store.upsert_alarm(AlarmContext("1"), source="config", now=clock.t, due=True)
        events = [
            LogEvent(
                f"u{i:03d}", "1", 10**18 + i, 10**18, "ACTION", f"r{i}", 9, "INFO", {"log.record.uid": f"u{i:03d}"}
            )
            for i in range(50)
        ]
        rows = [QueuedRecord("logs", e.uid, e.to_json()) for e in events]
        assert store.commit_poll(PollCommit("1", clock.t, seen=[e.uid for e in events], queued=rows)).inserted == 50
        otlp_receiver.mode = "unavailable"
        start = clock.t
        while clock.t < start + 600:
            sender.drain()
            clock.t += 5.0
        attempts = len(otlp_receiver.requests)
        otlp_receiver.mode = "ok"
        clock.t += 60.0
        assert sender.drain().exported == 50
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        sink.shutdown()
        store.close()
    started = [t for t, line in handler.lines if "export of logs failed" in line]
    reminders = [t for t, line in handler.lines if "still failing" in line]
    ended = [t for t, line in handler.lines if "export works again" in line]
    assert started == [start]
    # ten minutes: once a minute at most, and at least at every attempt after a quiet minute
    # (attempts are at most max_backoff + one 5 s tick apart)
    assert 600 // (60 + 30 + 5) <= len(reminders) <= 10, reminders
    assert all(later - earlier >= 60.0 for earlier, later in zip([start, *reminders], reminders, strict=False))
    assert len(ended) == 1
    assert len(handler.lines) == 2 + len(reminders)  # nothing per attempt, batch or record
    assert 15 <= attempts <= 40  # backed off: not one attempt per 5 s tick (120)
    assert len({r["attributes"]["log.record.uid"] for r in otlp_receiver.logs()}) == 50
