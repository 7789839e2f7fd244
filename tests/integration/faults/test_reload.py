"""Issue 5, case 7: SIGHUP with a valid new config applies it without losing queued records; with
an invalid one, the running config stays in force and the log says why.

The daemon starts pointed at an OTLP endpoint where nothing listens, so its records queue up.
The new config points at the live backend, over the other protocol, follows two more alarms and
changes the batch size: after SIGHUP the queued records and the new alarms' records all arrive,
exactly once, over the new protocol. Then a config with a typo: refused with the option path
named, and the daemon goes on delivering with the config it had.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.support.daemon import write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.wait import wait_until

from ._harness import Run, Story, assert_exactly_once, exporter_config, merge, simulator, wait_delivered
from .conftest import StoreChoice

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _nobody_listening() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_sighup_applies_a_valid_config_keeps_the_queue_and_refuses_an_invalid_one(
    tmp_path: Path, otlp_receiver: OtlpReceiver, store: StoreChoice
) -> None:
    receiver = otlp_receiver
    with simulator() as sim:
        story = Story(sim, seed=9)
        followed = story.add_alarms(4, records=5)
        story.add_alarms(2, records=5)  # in BlueKing, not in the first config
        state = tmp_path / "s.db"
        path = write_config(
            tmp_path / "c.yaml", exporter_config(sim, _nobody_listening(), state, [a.id for a in followed], store=store)
        )
        run = Run(path)
        try:
            wait_until(lambda: run.metric("bk_otel_outbox_depth") == 20, 15, "20 records queued")
            assert receiver.logs() == []

            new = exporter_config(
                sim,
                receiver.http_endpoint,
                state,
                story.ids,
                store=store,
                protocol="http/protobuf",
                export={"batch_size": 5},
            )
            write_config(path, new)
            run.daemon.signal(signal.SIGHUP)
            run.wait_for("configuration reloaded", 20)
            want = story.expected_uids()
            assert len(want) == 30
            assert_exactly_once(wait_delivered(receiver, want), want)
            assert {r.transport for r in receiver.requests} == {"http"}
            assert max(r.items for r in receiver.requests) <= 5

            write_config(path, merge(new, {"poll": {"intervall": "5s"}}))
            mark = len(run.output())
            run.daemon.signal(signal.SIGHUP)
            refused = run.wait_for("reload refused", 20)[mark:]
            assert "poll.intervall" in refused, refused
            story.notes(5)  # the running config still works
            want = story.expected_uids()
            assert_exactly_once(wait_delivered(receiver, want), want)
            assert {r.transport for r in receiver.requests} == {"http"}
            output = run.finish()
        finally:
            run.stop_quietly()
    assert output.count("configuration reloaded") == 1
