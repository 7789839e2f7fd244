"""The pipeline on a test bench: :class:`Rig` runs the real Poller and Sender over a real SQLite
store, a :class:`ScriptedSource` and the memory sink, on a :class:`Clock` the test moves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from exporter.mapping.contract import DefaultMapper
from exporter.metrics import Metrics
from exporter.model import AlarmContext, SpanRecord
from exporter.pipeline.poller import CycleReport, Poller, PollSettings
from exporter.pipeline.sender import Sender, SenderSettings
from exporter.pipeline.spans import SpanPlanner
from exporter.simulator.store import render_time
from exporter.sinks.memory import MemorySink
from exporter.sources.bkmonitor import BkMonitorSource
from exporter.state.sqlite import SqliteStateStore

__all__ = ["Clock", "Rig", "ScriptedSource", "row"]

Store = TypeVar("Store", bound=SqliteStateStore)


class Clock:
    """A wall clock that moves only when the test sets or advances ``t``."""

    def __init__(self, t: float = 1_718_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class ScriptedSource:
    """A BlueKing API whose get_event_log answers are scripted per alarm: a list of rows, or an
    exception to raise (the Rig wraps it in the real BlueKing source)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.calls: list[str] = []

    def get_event_log(self, alarm_id: str) -> list[Any]:
        self.calls.append(alarm_id)
        answer = self.data[alarm_id]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


def row(operate: str, when: str | int, message: str = "m", extend_info: Any = None) -> dict[str, Any]:
    """One get_event_log row; ``when`` is its create_time string or an epoch second."""
    return {
        "operate": operate,
        "message": message,
        "extend_info": {} if extend_info is None else extend_info,
        "status": "SUCCESS",
        "event_id": 1,
        "create_time": when if isinstance(when, str) else render_time(when),
    }


class Rig(Generic[Store]):
    """Poller (no jitter, interval 30 s) and Sender (batches of 4) around ``store``.

    ``signals`` are the signals both are set for (with ``"spans"`` the poller plans spans);
    ``settings`` override the other PollSettings. ``follow`` gives each alarm
    ``follow_context`` unless told otherwise; ``cycle`` moves the clock by ``advance`` after it.
    """

    def __init__(
        self,
        store: Store,
        *,
        now: float = 1_718_000_000.0,
        signals: frozenset[str] = frozenset({"logs"}),
        advance: float = 0.0,
        follow_context: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.clock = Clock(now)
        self.store = store
        self.metrics = Metrics(clock=self.clock)
        self.source = ScriptedSource()
        self.sink = MemorySink()
        self.advance = advance
        self.follow_context = dict(follow_context or {})
        poll = {"interval": 30, "retire_after": 600, "jitter": 0, **settings}
        self.poller = Poller(
            BkMonitorSource(self.source),
            self.store,
            self.metrics,
            PollSettings(signals=signals, **poll),
            mapper=DefaultMapper(),
            spans=SpanPlanner(self.store) if "spans" in signals else None,
            clock=self.clock,
            rng=lambda: 0.5,
        )
        self.sender = Sender(
            self.store,
            self.sink,
            self.metrics,
            SenderSettings(signals=tuple(sorted(signals)), batch_size=4),
            clock=self.clock,
            rng=lambda: 1.0,
        )

    def follow(self, *ids: str, **ctx: Any) -> None:
        """Follow ``ids`` (default: alarm "1") as configured alarms, due now."""
        context = {**self.follow_context, **ctx}
        for alarm_id in ids or ("1",):
            self.store.upsert_alarm(AlarmContext(alarm_id, **context), source="config", now=self.clock(), due=True)

    def cycle(self, *, force: bool = False) -> CycleReport:
        """One poll cycle (``force``: of every alarm, due or not), a forced drain of the outbox,
        then the clock moves by ``advance``."""
        report = self.poller.run_cycle(force=force)
        self.sender.drain(force=True)
        self.clock.t += self.advance
        return report

    def alarm_spans(self, alarm_id: str = "1") -> list[SpanRecord]:
        return [s for s in self.sink.spans if s.alarm_id == alarm_id and s.parent_span_id is None]

    def slices(self, alarm_id: str = "1") -> list[SpanRecord]:
        return [s for s in self.sink.spans if s.alarm_id == alarm_id and s.parent_span_id is not None]

    def phase(self, alarm_id: str = "1") -> str:
        alarm = self.store.get_alarm(alarm_id)
        assert alarm is not None
        return alarm.phase
