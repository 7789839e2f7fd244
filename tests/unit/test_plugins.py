"""Plugins: the registry, config selection and option checking, and containment of plugins that raise.

Third-party plugins here are real distributions as far as ``importlib.metadata`` can tell: a module
and its ``*.dist-info`` (entry_points.txt) written into a directory put on ``sys.path``.
"""

from __future__ import annotations

import itertools
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import __version__
from exporter.app import App
from exporter.config import config_from_dict, redacted_dict, render_effective
from exporter.errors import ConfigError, PluginError
from exporter.mapping.base import GuardedMapper
from exporter.mapping.contract import DefaultMapper
from exporter.metrics import Metrics
from exporter.model import AlarmContext, FlowRecord, LogEvent, SpanEventData
from exporter.pipeline.discovery import CHECKPOINT, Discoverer, DiscoverySettings
from exporter.pipeline.poller import Poller, PollSettings
from exporter.pipeline.sender import Sender, SenderSettings
from exporter.plugins import BUILTINS, GROUPS, installed_plugins, load_plugin
from exporter.sinks.base import ExportOutcome, ExportResult
from exporter.sinks.guard import GuardedSink
from exporter.sinks.jsonl import JsonlOptions
from exporter.sinks.memory import MemorySink
from exporter.sources.base import Discovered, FetchResult
from exporter.sources.bkmonitor import BkMonitorSource
from exporter.state.sqlite import SqliteStateStore
from tests.support.plugins import write_distribution

REPO = Path(__file__).resolve().parents[2]
SECRET = "S3cr3t-app-VALUE"
BK = {"base_url": "https://paas.example.com", "app_code": "bk-app", "app_secret": SECRET}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"bkmonitor": BK, **raw}, env={})
    return caught.value.problems


# -- the registry ---------------------------------------------------------------------------------------


def test_builtins_are_registered_in_pyproject_exactly_as_the_fallback_table() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert {kind: dict(project[group]) for kind, group in GROUPS.items()} == BUILTINS


def test_installed_lists_the_builtins_with_versions() -> None:
    rows = {(r["kind"], r["name"]): r for r in installed_plugins(check=True)}
    for kind, table in BUILTINS.items():
        for name, target in table.items():
            row = rows[(kind, name)]
            assert (row["target"], row["distribution"], row["version"]) == (target, "bk-otel-exporter", __version__)
            assert row["status"] == "ok" and row["description"]


def test_unknown_name_lists_the_installed_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown sink 'nope' \(installed: console, jsonl, memory, otlp\)"):
        load_plugin("sink", "nope")


def test_loading_a_builtin_does_not_import_the_sdk() -> None:
    import subprocess

    code = (
        "import sys; from exporter.plugins import load_plugin; "
        "[load_plugin(k, n) for k, n in (('sink', 'otlp'), ('source', 'bkmonitor'), ('mapper', 'ecs'))]; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'grpc', 'requests'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- config ---------------------------------------------------------------------------------------------


def test_defaults_are_todays_pipeline() -> None:
    plugins = config_from_dict({"bkmonitor": BK}, env={}).plugins
    assert (plugins.source.name, plugins.mapper.name, plugins.sink.name) == ("bkmonitor", "default", "otlp")


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        (
            {"sink": {"name": "nope"}},
            ["plugins.sink.name: unknown sink 'nope' (installed: console, jsonl, memory, otlp)"],
        ),
        ({"mapper": {"name": "elastic"}}, ["plugins.mapper.name: unknown mapper 'elastic' (installed: default, ecs)"]),
        ({"source": {"name": "kafka"}}, ["plugins.source.name: unknown source 'kafka' (installed: bkmonitor)"]),
        ({"mapper": {"name": ""}}, ["plugins.mapper.name: must not be empty"]),
        ({"sink": {"name": "jsonl", "options": {"max_bytes": 0}}}, ["plugins.sink.options.max_bytes: must be ≥ 1"]),
        (
            {"sink": {"name": "jsonl", "options": {"max_byte": 5}}},
            ["plugins.sink.options.max_byte: unknown option (did you mean 'max_bytes'?)"],
        ),
        (
            {"sink": {"name": "jsonl", "options": {"backups": "many", "path": "x.jsonl"}}},
            ["plugins.sink.options.backups: must be an integer"],
        ),
        ({"sink": {"name": "otlp", "options": {"endpoint": "x"}}}, ["plugins.sink.options.endpoint: unknown option"]),
        (
            {"sink": {"name": "jsonl", "options": 5}},
            ["plugins.sink.options: must be a mapping of the plugin's options"],
        ),
        ({"sink": {"name": "jsonl", "option": {}}}, ["plugins.sink.option: unknown option (did you mean 'options'?)"]),
        ({"sinks": {"name": "jsonl"}}, ["plugins.sinks: unknown option (did you mean 'sink'?)"]),
        ({"sink": "jsonl"}, ["plugins.sink: must be a mapping of options"]),
    ],
)
def test_config_problems(plugins: dict[str, Any], expected: list[str]) -> None:
    assert problems({"plugins": plugins}) == expected


def test_plugin_problems_come_with_the_others_in_file_order() -> None:
    got = problems({"poll": {"interval": "soon"}, "plugins": {"sink": {"name": "nope"}}, "shutdown_timeout": -1})
    assert [line.split(":")[0] for line in got] == ["poll.interval", "plugins.sink.name", "shutdown_timeout"]


def test_validated_options_are_the_plugins_model(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    config = config_from_dict({"bkmonitor": BK, "plugins": {"sink": {"name": "jsonl", "options": {"path": str(out)}}}})
    options = config.plugins.sink.options
    assert isinstance(options, JsonlOptions)
    assert (options.path, options.max_bytes, options.backups) == (str(out), 100 * 1024 * 1024, 5)
    shown = yaml.safe_load(render_effective(config))["plugins"]["sink"]
    assert shown == {"name": "jsonl", "options": {"path": str(out), "max_bytes": 104857600, "backups": 5}}
    shown["options"]["max_bytes"] = 2048
    again = config_from_dict({"bkmonitor": BK, "plugins": {"sink": shown}})
    assert again.plugins.sink.options == JsonlOptions(path=str(out), max_bytes=2048)


# -- third-party plugins --------------------------------------------------------------------------------

_counter = itertools.count()

FAKE = '''
from __future__ import annotations

from pydantic import BaseModel, SecretStr

from exporter.model import FlowRecord, LogEvent
from exporter.mapping.ids import record_uid
from exporter.plugins import NoOptions, Plugin, PluginOptions
from exporter.sinks.base import ExportOutcome, ExportResult
from exporter.sources.base import Discovered, FetchResult


class RaiserOptions(PluginOptions):
    message: str = "boom"
    token: SecretStr | None = None


class Raiser:
    name = "raiser"

    def __init__(self, message):
        self.message = message

    def export(self, signal, batch):
        raise RuntimeError(self.message)

    def shutdown(self):
        pass


raiser = Plugin(kind="sink", name="raiser", options=RaiserOptions, create=lambda o, c: Raiser(o.message))


class StaticOptions(PluginOptions):
    operates: list[str] = ["CREATE", "ACK"]


class Static:
    """A source with two records per alarm, no sockets."""

    def __init__(self, operates):
        self.operates = operates

    def fetch(self, alarm):
        records = [
            FlowRecord(alarm.alarm_id, op, f"{op} of {alarm.alarm_id}", "SUCCESS", alarm.alarm_id,
                       1718000030_000000000 + i, "2024-06-10 14:13:50", {}, record_uid(alarm.alarm_id, op, "t", "m"),
                       1718000100_000000000)
            for i, op in enumerate(self.operates)
        ]
        return FetchResult(records=records)

    def discover(self, start, end):
        return Discovered()

    def close(self):
        pass


static = Plugin(kind="source", name="static", options=StaticOptions, create=lambda o, c: Static(o.operates))


class Loose(BaseModel):
    x: int = 1


loose = Plugin(kind="sink", name="loose", options=Loose, create=lambda o, c: None)


def _doomed(options, context):
    raise OSError("cannot reach the vault")


doomed = Plugin(kind="sink", name="doomed", options=NoOptions, create=_doomed)
not_a_plugin = object()
'''


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Installs a throwaway distribution ``bkoe-fake`` 0.4.2 (its module name is returned)."""
    module = f"bkoe_fake_{next(_counter)}"
    write_distribution(
        tmp_path / "site",
        "bkoe-fake",
        "0.4.2",
        {f"{module}.py": textwrap.dedent(FAKE), "bkoe_broken.py": "raise ImportError('needs libfoo')\n"},
        {
            "bk_otel_exporter.sinks": {
                "raiser": f"{module}:raiser",
                "loose": f"{module}:loose",
                "thing": f"{module}:not_a_plugin",
                "broken": "bkoe_broken:plugin",
                "static": f"{module}:static",
                "doomed": f"{module}:doomed",
            },
            "bk_otel_exporter.sources": {"static": f"{module}:static"},
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield module
    sys.modules.pop(module, None)
    sys.modules.pop("bkoe_broken", None)


def test_third_party_plugins_are_listed_with_their_distribution(fake: str) -> None:
    rows = {(r["kind"], r["name"]): r for r in installed_plugins(check=True)}
    assert (rows[("sink", "raiser")]["distribution"], rows[("sink", "raiser")]["version"]) == ("bkoe-fake", "0.4.2")
    assert rows[("sink", "raiser")]["status"] == "ok"
    assert rows[("source", "static")]["status"] == "ok"
    assert "cannot be loaded: ImportError: needs libfoo" in rows[("sink", "broken")]["status"]
    assert "not an exporter.plugins.Plugin" in rows[("sink", "thing")]["status"]
    assert "must forbid unknown keys" in rows[("sink", "loose")]["status"]
    assert "is a source plugin, not a sink" in rows[("sink", "static")]["status"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("broken", "cannot be loaded: ImportError: needs libfoo"),
        ("thing", "is a object, not an exporter.plugins.Plugin"),
        ("loose", "its options model must forbid unknown keys"),
        ("static", "is a source plugin, not a sink"),
    ],
)
def test_a_plugin_that_cannot_be_used_is_a_config_error(fake: str, name: str, fragment: str) -> None:
    (line,) = problems({"plugins": {"sink": {"name": name}}})
    assert line.startswith(f"plugins.sink.name: sink {name!r}") and fragment in line


def test_unknown_name_lists_third_party_plugins_too(fake: str) -> None:
    (line,) = problems({"plugins": {"sink": {"name": "nope"}}})
    assert "(installed: broken, console, doomed, jsonl, loose, memory, otlp, raiser, static, thing)" in line


def test_secret_options_are_redacted_everywhere(fake: str) -> None:
    token = "plugin-token-0xDEADBEEF"
    config = config_from_dict({"bkmonitor": BK, "plugins": {"sink": {"name": "raiser", "options": {"token": token}}}})
    assert token in config.secrets()
    assert token not in render_effective(config) and token not in repr(config)
    assert redacted_dict(config)["plugins"]["sink"]["options"] == {"message": "boom", "token": "***"}


# -- containment: a plugin that raises --------------------------------------------------------------------

ALARM = "17180000005819837"


def rows(*operates: str) -> list[dict[str, Any]]:
    return [
        {"operate": op, "message": f"m{i}", "extend_info": {}, "status": "SUCCESS", "event_id": 1,
         "create_time": f"2024-06-10 14:13:{50 + i}"}
        for i, op in enumerate(operates)
    ]  # fmt: skip


class Api:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def get_event_log(self, alarm_id: str) -> list[Any]:
        answer = self.data[alarm_id]
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)

    def search_alert(self, body: Any) -> dict[str, Any]:
        raise KeyError("no search here")


class Picky(DefaultMapper):
    """A mapper with a bug: it cannot map ACK records (or, told so, breaks the uid contract)."""

    def __init__(self) -> None:
        self.broken = True
        self.bad_uid = False

    def map_log(self, record: FlowRecord, ctx: AlarmContext | None, *, with_trace: bool) -> LogEvent:
        if self.broken and record.operate == "ACK":
            raise ValueError("cannot map ACK")
        event = super().map_log(record, ctx, with_trace=with_trace)
        return LogEvent(**{**vars(event), "uid": "0" * 32}) if self.bad_uid else event

    def map_span_event(self, record: FlowRecord) -> SpanEventData:
        raise AssertionError("not used")


def poller(store: SqliteStateStore, source: Any, mapper: Any) -> Poller:
    settings = PollSettings(interval=30, jitter=0)
    return Poller(source, store, Metrics(), settings, mapper=mapper, clock=lambda: 1e9)


def test_a_mapper_that_raises_commits_nothing_of_the_alarm_and_is_retried(
    store: SqliteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    mapper = Picky()
    api = Api({ALARM: rows("CREATE", "ACK"), "2": rows("CREATE")})
    p = poller(store, BkMonitorSource(api), GuardedMapper(mapper, "picky"))
    for alarm_id in (ALARM, "2"):
        store.upsert_alarm(AlarmContext(alarm_id), source="config", now=1.0, due=True)
    with caplog.at_level(logging.ERROR, logger="exporter.pipeline.poller"):
        report = p.run_cycle(force=True)
    assert (report.polled, report.failed, report.new_records) == (2, 1, 1)
    assert (
        "mapper picky: map_log failed on record" in report.errors[0]
        and "ValueError: cannot map ACK" in report.errors[0]
    )
    assert store.seen_uids(ALARM) == set() and store.seen_uids("2") != set()
    assert store.outbox_stats().depth == 1  # only alarm 2's record
    (logged,) = [r for r in caplog.records if "nothing of this poll was committed" in r.getMessage()]
    assert logged.exc_info is not None  # with the traceback
    alarm = store.get_alarm(ALARM)
    assert alarm is not None and "cannot map ACK" in (alarm.last_error or "")
    mapper.broken = False  # the fixed plugin: every record arrives, none is lost
    assert p.run_cycle(force=True).new_records == 2
    assert store.outbox_stats().depth == 3


def test_a_mapper_that_breaks_the_uid_contract_is_contained(store: SqliteStateStore) -> None:
    mapper = Picky()
    mapper.broken, mapper.bad_uid = False, True
    p = poller(store, BkMonitorSource(Api({ALARM: rows("CREATE")})), mapper)  # the poller guards any mapper it is given
    store.upsert_alarm(AlarmContext(ALARM), source="config", now=1.0, due=True)
    report = p.run_cycle(force=True)
    assert report.failed == 1 and "without the record's uid" in report.errors[0]
    assert store.outbox_stats().depth == 0 and store.seen_uids(ALARM) == set()


class BuggySource:
    def __init__(self) -> None:
        self.inner = BkMonitorSource(Api({ALARM: rows("CREATE"), "2": rows("CREATE")}))

    def fetch(self, alarm: AlarmContext) -> FetchResult:
        if alarm.alarm_id == ALARM:
            raise ZeroDivisionError("bug in the source")
        return self.inner.fetch(alarm)

    def discover(self, start: int, end: int) -> Discovered:
        raise ZeroDivisionError("bug in discovery")

    def close(self) -> None:
        pass


def test_a_source_that_raises_is_contained_like_an_api_failure(store: SqliteStateStore) -> None:
    p = poller(store, BuggySource(), DefaultMapper())
    for alarm_id in (ALARM, "2"):
        store.upsert_alarm(AlarmContext(alarm_id), source="config", now=1.0, due=True)
    report = p.run_cycle(force=True)
    assert (report.failed, report.new_records) == (1, 1)
    assert "source failed: ZeroDivisionError: bug in the source" in report.errors[0]
    alarm = store.get_alarm(ALARM)
    assert alarm is not None and alarm.phase == "active" and alarm.next_poll == 1e9 + 30


def test_a_discovery_source_that_raises_keeps_the_window(store: SqliteStateStore) -> None:
    d = Discoverer(BuggySource(), store, Metrics(), DiscoverySettings(), clock=lambda: 1e9)
    report = d.run()
    assert report.error == "source failed: ZeroDivisionError: bug in discovery"
    assert store.get_meta(CHECKPOINT) is None


def test_a_sink_that_raises_keeps_the_records_queued(store: SqliteStateStore, caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(MemorySink):
        name = "flaky"
        fail = True

        def export(self, signal: str, batch: Any) -> ExportResult:
            if self.fail:
                raise ConnectionError("socket closed")
            return super().export(signal, batch)

    flaky = Flaky()
    p = poller(store, BkMonitorSource(Api({ALARM: rows("CREATE", "ACK")})), DefaultMapper())
    store.upsert_alarm(AlarmContext(ALARM), source="config", now=1.0, due=True)
    p.run_cycle(force=True)
    sender = Sender(store, GuardedSink(flaky), Metrics(), SenderSettings(), rng=lambda: 0.5)
    with caplog.at_level(logging.ERROR, logger="exporter.sinks.guard"):
        first = sender.drain(force=True)
        second = sender.drain(force=True)
    assert first.failed and second.failed and store.outbox_stats().depth == 2
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "sink flaky raised ConnectionError: socket closed" in tracebacks[0].getMessage()
    flaky.fail = False
    assert sender.drain(force=True).exported == 2 and store.outbox_stats().depth == 0
    assert [e.event_name for e in flaky.logs] == ["CREATE", "ACK"]


def test_a_sink_that_answers_nonsense_is_retry() -> None:
    class Wrong(MemorySink):
        def export(self, signal: str, batch: Any) -> ExportResult:
            return True  # type: ignore[return-value]

    result = GuardedSink(Wrong()).export("logs", [])
    assert result.outcome is ExportOutcome.RETRY and "not an ExportResult" in result.detail


# -- the app, with a third-party source and sink ------------------------------------------------------------


def test_app_with_third_party_source_and_a_raising_sink(fake: str, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"

    def config(sink: dict[str, Any]) -> Any:
        source = {"name": "static", "options": {"operates": ["CREATE", "ACK", "RECOVER"]}}
        raw = {
            "bkmonitor": BK,
            "alarms": {"ids": [ALARM]},
            "state": {"path": str(tmp_path / "s.db")},
            "plugins": {"source": source, "sink": sink},
        }
        return config_from_dict(raw, env={})

    app = App(config({"name": "raiser", "options": {"message": "collector on fire"}}))
    try:
        report = app.run_once()
        assert report.exit_code == 1 and report.cycle.new_records == 3 and report.queued == 3
        assert report.drain.failed
    finally:
        app.close()
    app = App(config({"name": "jsonl", "options": {"path": str(out)}}))
    try:
        report = app.run_once()
        assert report.exit_code == 0 and report.queued == 0
    finally:
        app.close()
    lines = [yaml.safe_load(line) for line in out.read_text().splitlines()]
    assert [line["event_name"] for line in lines] == ["CREATE", "ACK", "RECOVER"]
    assert lines[0]["body"] == f"CREATE of {ALARM}"


def test_wrong_options_of_a_third_party_plugin_are_config_errors(fake: str) -> None:
    assert problems({"plugins": {"source": {"name": "static", "options": {"operates": "CREATE"}}}}) == [
        "plugins.source.options.operates: must be a list"
    ]


def test_a_plugin_whose_create_fails_is_a_start_up_error(fake: str, tmp_path: Path) -> None:
    raw = {"bkmonitor": BK, "state": {"path": str(tmp_path / "s.db")}, "plugins": {"sink": {"name": "doomed"}}}
    with pytest.raises(PluginError, match=r"sink 'doomed' cannot be created: OSError: cannot reach the vault"):
        App(config_from_dict(raw, env={}))
    SqliteStateStore(tmp_path / "s.db", exclusive=True).close()  # the store (and its lock) was released


def test_reload_with_a_plugin_that_cannot_be_created_changes_nothing(fake: str, tmp_path: Path) -> None:
    base = {
        "bkmonitor": BK,
        "state": {"path": str(tmp_path / "s.db")},
        "plugins": {"sink": {"name": "jsonl", "options": {"path": str(tmp_path / "r.jsonl")}}},
    }
    app = App(config_from_dict(base, env={}))
    try:
        before = (app.config, app.source, app.mapper, app.sink, app.poller, app.sender.sink)
        bad = config_from_dict({**base, "plugins": {"mapper": {"name": "ecs"}, "sink": {"name": "doomed"}}}, env={})
        with pytest.raises(PluginError, match="doomed"):
            app.apply(bad)
        assert (app.config, app.source, app.mapper, app.sink, app.poller, app.sender.sink) == before
        good = config_from_dict({**base, "plugins": {**base["plugins"], "mapper": {"name": "ecs"}}}, env={})
        app.apply(good)
        assert app.config is good and app.mapper.name == "ecs" and app.source is not before[1]
    finally:
        app.close()


def test_a_checkout_that_was_never_installed_still_has_its_builtins(tmp_path: Path) -> None:
    """Run from a source tree without `pip install`: no entry point of ours is visible, so the
    built-in table stands in (and only then)."""
    import site
    import subprocess

    checkout = tmp_path / "checkout"  # the package alone (a checkout's root may hold an .egg-info)
    checkout.mkdir()
    (checkout / "exporter").symlink_to(REPO / "exporter")
    farm = tmp_path / "site-packages"
    farm.mkdir()
    for directory in site.getsitepackages():
        for entry in Path(directory).iterdir():
            if "bk_otel_exporter" not in entry.name and not (farm / entry.name).exists():
                (farm / entry.name).symlink_to(entry)
    code = (
        f"import sys; sys.path[:0] = [{str(checkout)!r}, {str(farm)!r}]; "
        "from importlib.metadata import entry_points; "
        "assert not list(entry_points(group='bk_otel_exporter.sinks')); "
        "from exporter.plugins import installed_plugins, load_plugin; "
        "assert load_plugin('sink', 'jsonl').name == 'jsonl'; "
        "print(sorted((r['kind'], r['name'], r['distribution']) for r in installed_plugins(check=True) "
        "if r['status'] == 'ok'))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    rows = [(kind, name, "bk-otel-exporter") for kind, table in BUILTINS.items() for name in table]
    assert out.stdout.strip() == str(sorted(rows))
