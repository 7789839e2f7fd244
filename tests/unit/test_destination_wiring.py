"""The poller queues each record once per destination that takes it; each destination's sender
drains only its own rows, with its own backoff; filtered-out records are counted per destination."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from exporter.app import App
from exporter.config import config_from_dict
from exporter.config.destinations import FilterConfig
from exporter.model import AlarmContext
from exporter.pipeline.filters import Route
from exporter.pipeline.sender import Sender, SenderSettings
from exporter.sinks.base import ExportOutcome
from exporter.sinks.memory import MemorySink
from exporter.state.base import PollCommit
from exporter.state.sqlite import SqliteStateStore
from tests.support.pipeline import Rig, row
from tests.support.records import queued_log

ROUTES = (
    Route("default", frozenset({"logs"}), FilterConfig()),
    Route("chatops", frozenset({"logs"}), FilterConfig(operates=("CREATE", "CLOSE"))),
    Route("traces", frozenset({"spans"}), FilterConfig()),
)


def _rig(tmp_path: Path, routes: tuple[Route, ...] = ROUTES) -> tuple[Rig[SqliteStateStore], Sender, MemorySink]:
    store = SqliteStateStore(tmp_path / "s.db")
    rig = Rig(store, signals=frozenset({"logs", "spans"}), follow_context={"severity": 1}, routes=routes)
    rig.sender.settings = SenderSettings(signals=("logs",), batch_size=4)
    sink = MemorySink()
    other = Sender(
        store,
        sink,
        rig.metrics,
        SenderSettings(signals=("logs",), batch_size=4),
        clock=rig.clock,
        destination="chatops",
    )
    return rig, other, sink


def _flow(rig: Rig[SqliteStateStore]) -> None:
    t = int(rig.clock()) - 100
    rig.source.data["1"] = [row("CREATE", t), row("CONVERGE", t + 1), row("CONVERGE", t + 2), row("CLOSE", t + 3)]
    rig.follow()


def test_each_destination_gets_its_own_rows_and_filtered_records_are_counted(tmp_path: Path) -> None:
    rig, other, sink = _rig(tmp_path)
    _flow(rig)
    rig.cycle()
    other.drain(force=True)
    assert [e.event_name for e in rig.sink.logs] == ["CREATE", "CONVERGE", "CONVERGE", "CLOSE"]
    assert [e.event_name for e in sink.logs] == ["CREATE", "CLOSE"]
    assert sink.spans == [] and rig.sink.spans == []  # the spans are the traces destination's
    stats = rig.store.outbox_stats()
    assert stats.by_destination["traces"][0] == 1 and "chatops" not in stats.by_kind
    assert rig.metrics.registry.get_sample_value("bk_otel_records_filtered_total", {"destination": "chatops"}) == 2
    assert rig.metrics.registry.get_sample_value("bk_otel_records_filtered_total", {"destination": "default"}) == 0
    # a second poll of the same records queues nothing anywhere
    rig.store.upsert_alarm(rig.store.get_alarm("1").context, source="config", now=rig.clock(), due=True)  # type: ignore[union-attr]
    rig.cycle()
    other.drain(force=True)
    assert (len(rig.sink.logs), len(sink.logs)) == (4, 2)


def test_a_destination_down_holds_only_its_own_backlog(tmp_path: Path) -> None:
    rig, other, sink = _rig(tmp_path, ROUTES[:1] + (Route("chatops", frozenset({"logs"}), FilterConfig()),))
    sink.fail_with = ExportOutcome.RETRY
    _flow(rig)
    rig.cycle()
    report = other.drain(force=True)
    assert report.failed and other.in_outage and not rig.sender.in_outage
    assert len(rig.sink.logs) == 4 and sink.logs == []
    assert rig.store.outbox_stats().by_destination["chatops"][0] == 4
    assert rig.metrics.registry.get_sample_value("bk_otel_destination_in_outage", {"destination": "chatops"}) == 1
    assert rig.metrics.registry.get_sample_value("bk_otel_destination_queued", {"destination": "chatops"}) == 4
    sink.fail_with = None
    other.drain(force=True)
    assert [e.event_name for e in sink.logs] == ["CREATE", "CONVERGE", "CONVERGE", "CLOSE"]
    assert len(rig.sink.logs) == 4  # nothing sent twice to the destination that was up
    assert rig.store.outbox_stats().depth == 0


def _app(tmp_path: Path, destinations: list[dict[str, object]]) -> App:
    raw = {
        "bkmonitor": {"base_url": "http://127.0.0.1:9", "app_code": "app", "app_secret": "s"},
        "state": {"path": str(tmp_path / "app.db")},
        "destinations": destinations,
    }
    store = SqliteStateStore(tmp_path / "app.db", exclusive=True)
    return App(config_from_dict(raw, env={}), sink=MemorySink(), store=store, clock=lambda: 1_718_000_000.0)


def test_the_app_builds_one_sender_per_destination_and_drains_them_all(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    app = _app(tmp_path, [{"name": "audit", "sink": "jsonl", "options": {"path": str(out)}}])
    try:
        assert sorted(app.senders) == ["audit", "default"]
        assert [r.name for r in app.poller.settings.destinations()] == ["default", "audit"]
        uids = ["u1", "u2", "u3"]
        app.store.upsert_alarm(AlarmContext("A"), source="config", now=1.0, due=True)
        rows = [replace(queued_log(u, "A"), destination=d) for u in uids for d in ("default", "audit")]
        app.store.commit_poll(PollCommit("A", 1.0, seen=uids, queued=rows))
        report = app.send(force=True)
        assert report.exported == 6 and app.store.outbox_stats().depth == 0
        assert [e.uid for e in app.sink.logs] == uids  # type: ignore[attr-defined]
        assert [json.loads(line)["uid"] for line in out.read_text().splitlines()] == uids
        # a reload that drops the destination stops its sender; its sink is shut down
        app.apply(app.config.model_copy(update={"destinations": ()}))
        assert sorted(app.senders) == ["default"]
    finally:
        app.close()


def test_an_otlp_destination_gets_its_own_otlp_keys(tmp_path: Path) -> None:
    app = _app(
        tmp_path,
        [{"name": "tempo", "sink": "otlp", "signals": ["spans"], "options": {"endpoint": "http://127.0.0.1:1"}}],
    )
    try:
        sender = app.senders["tempo"]
        assert sender.settings.signals == ("spans",)
        otlp = getattr(sender.sink, "sink", None)
        assert otlp is not None and otlp.settings.endpoint == "http://127.0.0.1:1"
        assert otlp.settings.resource["service.name"] == "bk-otel-exporter"  # export:'s resource
        assert "spans" in app.poller.settings.signals  # the span planner runs for the destination
    finally:
        app.close()


def test_a_destination_removed_by_a_reload_takes_its_series_with_it(tmp_path: Path) -> None:
    """A destination in outage that a reload removes must not stay "in outage" in /metrics (its
    alert would fire until a restart); the destinations left keep theirs."""
    import threading

    from exporter.destinations import Delivery
    from exporter.metrics import Metrics

    bk = {"base_url": "https://paas.example.com", "app_code": "a", "app_secret": "s"}
    audit = {"name": "audit", "sink": "otlp", "options": {"endpoint": "http://127.0.0.1:9"}}
    with_audit = config_from_dict({"bkmonitor": bk, "destinations": [audit]}, env={})
    without = config_from_dict({"bkmonitor": bk}, env={})
    store = SqliteStateStore(tmp_path / "s.db")
    store.upsert_alarm(AlarmContext("1"), source="config", now=1.0, due=True)
    metrics = Metrics()
    delivery = Delivery(store, metrics, clock=lambda: 100.0, stop=threading.Event())
    default, failing = MemorySink(), MemorySink()
    failing.fail_with = ExportOutcome.RETRY
    assert delivery.configure(with_audit, {"default": default, "audit": failing}) == []
    store.commit_poll(PollCommit("1", 1.0, seen=["u1"], queued=[replace(queued_log("u1"), destination="audit")]))
    delivery.drain(force=True)

    def outage(name: str) -> float | None:
        return metrics.registry.get_sample_value("bk_otel_destination_in_outage", {"destination": name})

    assert (outage("audit"), outage("default")) == (1.0, 0.0)
    assert delivery.configure(without, {"default": default}) == [failing]
    delivery.drain(force=True)
    exposed = metrics.registry.collect()
    assert outage("audit") is None and outage("default") == 0.0
    assert not [s for family in exposed for s in family.samples if s.labels.get("destination") == "audit"]
    delivery.close()
    store.close()
