"""Issue 14, defect 6: the disk under the state store fills up, then space comes back.

The daemon runs in a private mount namespace (``unshare -m``, as root) with its state directory
on a small tmpfs of its own; the test reaches that tmpfs through ``/proc/<pid>/root`` and fills it
to the last byte. New records keep arriving in BlueKing: every poll that finds them fails to
commit ("database or disk is full"), so none is taken (they stay in BlueKing). Each failed commit
used to move the store's cached outbox depth all the same; past ``state.max_queued_records`` that
phantom outbox refused every later poll as "outbox full", for as long as the process lived. Here,
once the filler file is deleted, the pipeline carries on by itself: the outbox depth is right
(0 once delivered, in the store and in the metrics), the cap still takes a poll that fits, and
every record arrives.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tests.support.daemon import write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.wait import wait_until

from ._harness import Run, Story, assert_exactly_once, exporter_config, simulator, status_of, wait_delivered

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None, reason="a private tmpfs needs root and unshare"
    ),
]

CAP = 40
FULL = "database or disk is full"


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its filesystem has not one byte left."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_disk_fails_commits_then_the_pipeline_goes_on_with_a_right_depth(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    receiver = otlp_receiver
    mount = tmp_path / "state"
    mount.mkdir()
    wrap = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size=8m,mode=0700 tmpfs {mount} && exec "$@"', "sh"]
    with simulator() as sim:
        story = Story(sim, seed=14)
        a, b, c = story.add_alarms(3, records=5)
        config = exporter_config(
            sim, receiver.grpc_endpoint, mount / "s.db", story.ids, state={"max_queued_records": CAP}
        )
        path = write_config(tmp_path / "c.yaml", config)
        run = Run(path, wrap=wrap)
        try:
            assert_exactly_once(wait_delivered(receiver, story.expected_uids()), story.expected_uids())
            inside = Path(f"/proc/{run.pid}/root") / mount.relative_to("/")
            assert (inside / "s.db").exists() and not (mount / "s.db").exists()  # the daemon's own tmpfs

            filler = fill(inside)
            failed_cycles = run.metric("bk_otel_polls_total", outcome="error") or 0.0
            for alarm in (a, b, c):
                for _ in range(10):  # 2 KiB records: every commit needs new pages, none fits
                    story.note(alarm, "x" * 2048)
            # each cycle refuses the three alarms' commits: four cycles are a dozen refused commits
            wait_until(
                lambda: (run.metric("bk_otel_polls_total", outcome="error") or 0.0) - failed_cycles >= 4,
                30,
                "a dozen commits refused by the full disk",
            )
            assert FULL in run.output()  # reported (once: the poller's report is rate-limited)
            # nothing was taken while the disk was full: the records are still BlueKing's alone
            assert len(set(r["attributes"]["log.record.uid"] for r in receiver.logs())) == 15

            filler.unlink()  # space again: no restart, no operator
            want = story.expected_uids()
            assert len(want) == 15 + 30
            got = wait_delivered(receiver, want, timeout=30)
            # a batch whose ack failed on the full disk is sent again: the only possible duplicates
            assert_exactly_once(got, want, allowed_duplicates=30)
            wait_until(lambda: run.metric("bk_otel_outbox_depth") == 0, 10, "an empty outbox")

            # the cached depth is right too: a poll as big as the whole cap is still taken
            for _ in range(CAP):
                story.note(a)
            want = story.expected_uids()
            wait_delivered(receiver, want, timeout=30)
            status = status_of(
                write_config(tmp_path / "inside.yaml", {**config, "state": {"path": str(inside / "s.db")}})
            )
            assert (status["outbox"]["queued"], status["outbox"]["parked"]) == (0, 0)
            output = run.finish()
            after_free = output[output.rfind(FULL) :]
            assert "outbox full" not in after_free, after_free[-3000:]
        finally:
            run.stop_quietly()
