"""Property-based tests (hypothesis) of the record parser and the mappers over arbitrary JSON.

Whatever BlueKing sends, as long as it is JSON (the client has already turned anything else
into an error), the pipeline must:

* never raise from parsing or mapping: a bad item is reported in ``malformed`` and skipped;
* give every good record a stable, unique uid;
* produce log records and spans that the OpenTelemetry SDK's OTLP encoder can encode
  completely: no exception (which would keep a batch in the outbox forever) and no attribute
  dropped on the way (the SDK drops what it cannot encode, with an ERROR line per record);
* survive the outbox round trip (JSON into SQLite and back) unchanged;
* and, through the poller, count the malformed items and enqueue every good record once.

The strategies mix plausible values (real operates, the time formats servers send) with
arbitrary JSON (huge integers, NaN and infinities, lone surrogates, nesting), and send
everything through ``json.dumps``/``json.loads`` as the wire would.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from exporter.mapping.attributes import alarm_attributes
from exporter.mapping.contract import DefaultMapper, to_log_event
from exporter.mapping.spans import alarm_span, slice_span, span_event
from exporter.metrics import Metrics
from exporter.model import AlarmContext, LogEvent, SpanRecord, change_token
from exporter.pipeline.poller import Poller, PollSettings
from exporter.sinks.base import ExportOutcome
from exporter.sinks.otlp import OtlpSettings, OtlpSink
from exporter.sinks.otlp_encoding import FixedResource, log_record, readable_span
from exporter.sources.bkmonitor import BkMonitorSource
from exporter.sources.bkmonitor.alerts import parse_alert
from exporter.sources.bkmonitor.records import parse_event_log
from exporter.state.sqlite import SqliteStateStore

TZ = ZoneInfo("Asia/Shanghai")
PROPS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -----------------------------------------------------------------------------------

#: Every character, lone surrogates included (json.loads turns "\ud800" into one).
ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64) - 5, max_value=2**64 + 5),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    ANY_TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(ANY_TEXT, inner, max_size=4)),
    max_leaves=12,
)
OPERATES = st.sampled_from(
    ["CREATE", "CONVERGE", "RECOVER", "CLOSE", "ACK", "ACTION", "SEVERITY_UP", "EVENT_DROP", "ANOMALY_NOTICE", ""]
)
TIMES = st.one_of(
    st.sampled_from(
        [
            "2024-06-10 14:13:50",
            "2024-06-10 14:13:50.5",
            "2024-06-10T14:13:50",
            "2024-06-10 14:13:50+0800",
            "2024-06-10T06:13:50Z",
            "2024-06-10 14:13:50-03:30",
            "9999-12-31 23:59:59",
            "0001-01-01 00:00:00",
            "1718000030",
            "1718000030123",
            " 2024-06-10 14:13:50 ",
            "2024-02-30 00:00:00",
            "",
        ]
    ),
    st.integers(min_value=-10, max_value=10**22),
    st.floats(allow_nan=True, allow_infinity=True),
    JSON,
)
ITEM = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "operate": st.one_of(OPERATES, JSON),
            "create_time": TIMES,
            "message": st.one_of(ANY_TEXT, JSON),
            "status": st.one_of(st.just("SUCCESS"), JSON),
            "event_id": st.one_of(st.integers(), ANY_TEXT, JSON),
            "extend_info": st.one_of(st.just({}), st.just(""), JSON),
            "unexpected": JSON,
        },
    ),
    JSON,
)
DATA = st.lists(ITEM, max_size=8)


def wire(value: Any) -> Any:
    """What the client sees: the value serialised by a server and parsed by ``json.loads``."""
    return json.loads(json.dumps(value))


ALARM_FIELDS = st.fixed_dictionaries(
    {"id": st.one_of(st.just("17180000301"), st.integers(min_value=0), JSON)},
    optional={
        key: JSON
        for key in (
            "bk_biz_id",
            "alert_name",
            "severity",
            "status",
            "strategy_id",
            "strategy_name",
            "dimensions",
            "begin_time",
            "create_time",
            "update_time",
            "end_time",
        )
    },
)


# -- helpers --------------------------------------------------------------------------------------

RESOURCE = FixedResource({"service.name": "props"})


class _Dropped(logging.Handler):
    """Collects what the SDK's encoder logs when it drops an attribute it cannot encode."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def dropped() -> Iterator[_Dropped]:
    handler = _Dropped()
    logger = logging.getLogger("opentelemetry")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def assert_encodes_logs(events: list[LogEvent], dropped: _Dropped) -> None:
    before = len(dropped.messages)
    request = encode_logs([log_record(e, RESOURCE) for e in events])
    request.SerializeToString()
    encoded = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert len(encoded) == len(events)
    for event, proto in zip(events, encoded, strict=True):
        assert len(proto.attributes) == len(event.attributes), "an attribute was dropped by the encoder"
    assert dropped.messages[before:] == []


def assert_encodes_spans(spans: list[SpanRecord], dropped: _Dropped) -> None:
    before = len(dropped.messages)
    request = encode_spans([readable_span(s, RESOURCE) for s in spans])
    request.SerializeToString()
    encoded = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(encoded) == len(spans)
    for span, proto in zip(spans, encoded, strict=True):
        assert len(proto.attributes) == len(span.attributes)
        assert [len(e.attributes) for e in proto.events] == [len(e.attributes) for e in span.events]
    assert dropped.messages[before:] == []


# -- the parser -----------------------------------------------------------------------------------


@PROPS
@given(DATA)
def test_parser_never_raises_and_accounts_for_every_item(raw: list[Any]) -> None:
    data = wire(raw)
    result = parse_event_log("17180000301", data, tz=TZ, observed_ns=1)
    assert len(result.records) + len(result.malformed) == len(data)
    assert sorted(m.index for m in result.malformed) == sorted(set(m.index for m in result.malformed))
    assert all(0 <= m.index < len(data) and m.reason for m in result.malformed)
    uids = [r.uid for r in result.records]
    assert len(uids) == len(set(uids)), "two records of one answer share a uid"
    for record in result.records:
        assert len(record.uid) == 32 and int(record.uid, 16) >= 0
        assert 0 <= record.create_time_ns < 2**63, "a timestamp OTLP cannot carry"
        assert record.operate.strip() == record.operate != ""
    # the same answer parses to the same uids (the identity does not depend on the fetch)
    again = parse_event_log("17180000301", wire(raw), tz=TZ, observed_ns=2)
    assert [r.uid for r in again.records] == uids


# -- the mappers ----------------------------------------------------------------------------------


@PROPS
@given(raw=DATA, severity=st.sampled_from([None, 1, 2, 3, 7]), with_trace=st.booleans())
def test_log_mapping_encodes_completely_and_round_trips(
    raw: list[Any], severity: int | None, with_trace: bool, dropped: _Dropped
) -> None:
    result = parse_event_log("17180000301", wire(raw), tz=TZ, observed_ns=1)
    ctx = AlarmContext("17180000301", severity=severity, name="n", dimensions=(("ip", "10.0.0.1"),))
    events = [to_log_event(r, ctx, with_trace=with_trace) for r in result.records]
    for record, event in zip(result.records, events, strict=True):
        assert event.attributes["log.record.uid"] == event.uid == record.uid
        assert event.attributes["bk.alarm.id"] == "17180000301"
        assert LogEvent.from_json(event.to_json()) == event
        event.to_json().encode("utf-8")  # storable: SQLite refuses lone surrogates
    assert_encodes_logs(events, dropped)


@PROPS
@given(raw=DATA, alert=ALARM_FIELDS)
def test_span_mapping_encodes_completely(raw: list[Any], alert: dict[str, Any], dropped: _Dropped) -> None:
    result = parse_event_log("17180000301", wire(raw), tz=TZ, observed_ns=1)
    try:
        ctx: AlarmContext | None = parse_alert(wire(alert))
    except ValueError:
        ctx = None
    events = [span_event(r) for r in result.records]
    spans = [alarm_span("17180000301", ctx, events, end_ns=1_718_000_000 * 10**9)]
    if events:
        spans.append(slice_span("17180000301", ctx, events))
    for span in spans:
        assert SpanRecord.from_json(span.to_json()) == span
        span.to_json().encode("utf-8")
    assert_encodes_spans(spans, dropped)


@PROPS
@given(raw=st.one_of(ALARM_FIELDS, JSON))
def test_alert_parser_raises_only_value_error(raw: Any, dropped: _Dropped) -> None:
    try:
        ctx = parse_alert(wire(raw))
    except ValueError:
        return
    assert ctx.alarm_id.isdigit()
    assert AlarmContext.from_json(ctx.to_json()) == ctx
    change_token(ctx)
    attrs = alarm_attributes(ctx)
    event = LogEvent("u", ctx.alarm_id, 1, 1, "CREATE", "b", 9, "INFO", attributes=attrs)
    assert_encodes_logs([event], dropped)


# -- through the poller and the store -------------------------------------------------------------


class _Source:
    def __init__(self) -> None:
        self.data: list[Any] = []

    def get_event_log(self, alarm_id: str) -> list[Any]:
        return self.data


_ids = itertools.count(17180000300)


@pytest.fixture(scope="module")
def poller_rig() -> Iterator[tuple[Poller, _Source, SqliteStateStore, Metrics]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStateStore(Path(tmp) / "props.db", max_queued=10**9)
        source = _Source()
        metrics = Metrics()
        settings = PollSettings(interval=30, jitter=0)
        poller = Poller(BkMonitorSource(source, timezone=TZ), store, metrics, settings, mapper=DefaultMapper())
        try:
            yield poller, source, store, metrics
        finally:
            store.close()


def _skipped(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("bk_otel_records_skipped_total", {"reason": "malformed"})
    return value or 0.0


@settings(deadline=None, max_examples=200, suppress_health_check=list(HealthCheck))
@given(raw=DATA)
def test_poller_counts_bad_items_and_enqueues_every_good_one_once(
    raw: list[Any], poller_rig: tuple[Poller, _Source, SqliteStateStore, Metrics]
) -> None:
    poller, source, store, metrics = poller_rig
    alarm_id = str(next(_ids))
    store.upsert_alarm(AlarmContext(alarm_id), source="config", now=1.0, due=True)
    source.data = wire(raw)
    expected = parse_event_log(alarm_id, source.data, tz=TZ, observed_ns=0)
    depth, skipped = store.outbox_stats().depth, _skipped(metrics)

    alarm = store.get_alarm(alarm_id)
    assert alarm is not None
    outcome = poller.poll_alarm(alarm)  # must not raise, whatever the answer holds

    assert outcome.error is None and outcome.overflow == 0
    assert outcome.new_records == len(expected.records)
    assert store.outbox_stats().depth == depth + len(expected.records)
    assert store.seen_uids(alarm_id) == {r.uid for r in expected.records}
    assert _skipped(metrics) - skipped == outcome.malformed <= len(expected.malformed)
    # a second read of the same answer adds nothing and counts nothing twice
    again = poller.poll_alarm(store.get_alarm(alarm_id))  # type: ignore[arg-type]
    assert again.new_records == 0 and again.malformed == 0
    assert store.outbox_stats().depth == depth + len(expected.records)


# -- the sink's safety net ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_batch_the_encoder_refuses_is_rejected_not_retried_for_ever(protocol: str) -> None:
    """Should a record that OTLP cannot carry ever reach the outbox (the parser cleans lone
    surrogates; this one is built by hand), the sink says REJECTED, so the sender isolates and
    parks it, instead of RETRY, which would hold the whole outbox back for ever."""
    sink = OtlpSink(OtlpSettings(endpoint="http://127.0.0.1:9", protocol=protocol, timeout=1.0))
    try:
        bad = LogEvent("u1", "1", 1, 1, "ACTION", json.loads('"cut \\ud83d"'), 9, "INFO")
        result = sink.export("logs", [bad])
    finally:
        sink.shutdown()
    assert result.outcome is ExportOutcome.REJECTED and "cannot be encoded as OTLP" in result.detail
