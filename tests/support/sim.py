"""The BlueKing simulator as the tests use it: one way to start it, one story, one "what must arrive".

* :func:`simulator`: a started :class:`~exporter.simulator.Simulator` with the test app code and
  the test secret (``tests/support/secrets.py``, so the session-wide leak check looks for it), on
  the real clock unless told otherwise. The ``sim`` fixture (``tests/support/fixtures.py``) is one.
* :func:`story`: three alarms with fixed times in the past, whose records never change while a
  test runs.
* :func:`expected_records` / :func:`expected_uids`: every record BlueKing shows now, with the
  uid the exporter gives it (computed with the product's own parser).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from zoneinfo import ZoneInfo

from exporter.simulator import SimAlarm, SimClock, Simulator
from exporter.sources.bkmonitor.records import parse_event_log
from tests.support.secrets import APP_SECRET

__all__ = ["APP_CODE", "T0", "TZ", "expected_records", "expected_uids", "simulator", "story"]

APP_CODE = "bk-otel-test"
T0 = 1_718_000_030  # 2024-06-10 14:13:50 Asia/Shanghai: every record of the story lies in the past
TZ = ZoneInfo("Asia/Shanghai")


@contextmanager
def simulator(**kw: Any) -> Iterator[Simulator]:
    """A running simulator; ``kw`` overrides the test defaults (app code, secret, real clock)."""
    kw = {"app_code": APP_CODE, "app_secret": APP_SECRET, **kw}
    kw.setdefault("clock", SimClock.real())
    with Simulator(**kw) as sim:
        yield sim


def story(sim: Simulator) -> list[SimAlarm]:
    """Three alarms with fixed times in the past: their records never change while the test runs."""
    a = sim.add_alarm(name="CPU", severity=1, begin_time=T0, create_time=T0)
    a.log("ACTION", "notified admin", at=T0 + 1)
    a.converge("cpu 93%", at=T0 + 60)
    a.converge("cpu 95%", at=T0 + 120)
    a.converge("cpu 97%", at=T0 + 180)  # folded: 3 converges show as 2 rows
    a.ack("admin", "on it", at=T0 + 200)
    b = sim.add_alarm(name="Disk", severity=2, begin_time=T0 + 10, create_time=T0 + 10)
    b.set_severity(1, at=T0 + 30)
    b.recover(at=T0 + 400)
    c = sim.add_alarm(name="Ping", severity=3, begin_time=T0 + 20, create_time=T0 + 20)
    c.log("ACTION", "notified admin", at=T0 + 21)
    c.log("ACTION", "notified admin", at=T0 + 21)  # identical twin: still two records
    return [a, b, c]


def _ids(alarms: Iterable[SimAlarm | str]) -> list[str]:
    return [a if isinstance(a, str) else a.id for a in alarms]


def expected_records(sim: Simulator, alarms: Iterable[SimAlarm | str]) -> dict[str, dict[str, Any]]:
    """uid -> the record as BlueKing shows it now (its raw row, plus ``"alarm"``: the alarm id).

    Every row must parse (the simulator writes none that does not): what must arrive is then
    exactly these."""
    out: dict[str, dict[str, Any]] = {}
    for alarm_id in _ids(alarms):
        data = sim.visible_records(alarm_id)
        parsed = parse_event_log(alarm_id, data, tz=TZ, observed_ns=0)
        assert not parsed.malformed, parsed.malformed
        for rec, raw in zip(parsed.records, data, strict=True):
            out[rec.uid] = {"alarm": alarm_id, **raw}
    return out


def expected_uids(
    sim: Simulator, alarms: Iterable[SimAlarm | str], where: Callable[[dict[str, Any]], bool] | None = None
) -> set[str]:
    """The uids of every record BlueKing shows now (of those ``where`` accepts, given a raw row)."""
    return {uid for uid, raw in expected_records(sim, alarms).items() if where is None or where(raw)}
