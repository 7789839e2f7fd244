"""exporter.config: durations, ${VAR} substitution, validation messages, OTEL_* fallbacks, redaction."""

# The tables below hold whole problem lines, as an operator reads them: they may be long.
# ruff: noqa: E501

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from exporter.config import (
    Config,
    config_from_dict,
    format_duration,
    load_config,
    parse_duration,
    redacted_dict,
    render_effective,
    substitute_env,
)
from exporter.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "exporter.example.yaml"

SECRET = "S3cr3t-app-VALUE"
BK = {"base_url": "https://paas.example.com", "app_code": "bk-app", "app_secret": SECRET}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(raw: dict[str, Any], env: dict[str, str] | None = None, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, env=env or {}, **kw)
    return caught.value.problems


def load_problems(path: Path | None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return caught.value.problems


def attr(obj: object, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# ── durations ────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("given_value", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        (" 2 m ", 120.0),
        ("10S", 10.0),
        ("1.5h", 5400.0),
        (30, 30.0),
        (1.5, 1.5),
        (0, 0.0),
        ("30", 30.0),
        ("0.5", 0.5),
        ("1e3", 1000.0),
    ],
)
def test_parse_duration_accepts(given_value: object, seconds: float) -> None:
    assert parse_duration(given_value) == seconds


@pytest.mark.parametrize(
    ("given_value", "message"),
    [
        ("abc", "invalid duration 'abc' (use 30s, 5m, 1h, 1d or seconds)"),
        ("", "invalid duration ''"),
        ("1x", "invalid duration '1x'"),
        ("1h30", "invalid duration '1h30'"),
        ("5 minutes", "invalid duration '5 minutes'"),
        ("inf", "invalid duration 'inf'"),
        (float("nan"), "invalid duration nan"),
        (True, "invalid duration True"),
        (None, "invalid duration of type NoneType"),
        ([1], "invalid duration of type list"),
        ("-5s", "invalid duration '-5s': must not be negative"),
        (-1, "invalid duration -1: must not be negative"),
        ("-1", "must not be negative"),
    ],
)
def test_parse_duration_rejects(given_value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_duration(given_value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (30, "30s"), (90, "90s"), (600, "10m"), (3600, "1h"), (86400 * 30, "30d"), (0.25, "250ms")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@given(st.integers(min_value=0, max_value=10**10))
def test_format_duration_round_trips_milliseconds(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == millis / 1000


# ── ${VAR} substitution ──────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("a: ${A}", {"A": "1"}, "a: 1"),
        ("${A}${B}", {"A": "x", "B": "y"}, "xy"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        ("${A:-two words}", {}, "two words"),
        ("${A}", {"A": ""}, ""),
        ("$${A}", {}, "${A}"),
        ("cost: $$5", {}, "cost: $5"),
        ("a$b and $ alone", {}, "a$b and $ alone"),
        ("${A}", {"A": "${B}"}, "${B}"),  # substituted values are not scanned again
        ("no references", {}, "no references"),
    ],
)
def test_substitute_env(text: str, env: dict[str, str], expected: str) -> None:
    assert substitute_env(text, env) == expected


def test_substitute_env_reports_every_unset_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        substitute_env("a: ${FIRST}\nb: ${SECOND}\nc: ${FIRST}\nd: ${SET}", {"SET": "1"})
    lines = caught.value.problems
    assert len(lines) == 2
    assert "FIRST" in lines[0] and "line 1, 3" in lines[0]
    assert "SECOND" in lines[1] and "line 2" in lines[1]


@pytest.mark.parametrize("reference", ["${}", "${1A}", "${A-x}", "${A:?x}"])
def test_substitute_env_rejects_malformed_references(reference: str) -> None:
    with pytest.raises(ConfigError, match="invalid reference"):
        substitute_env(f"a: {reference}", {"A": "1"})


def test_whole_substituted_values_stay_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        bkmonitor:
          base_url: https://paas.example.com
          app_code: ${CODE}
          app_secret: ${SECRET}
          verify_tls: ${VERIFY:-false}
          timeout: ${TIMEOUT:-45}
          ca_file: ${CA:-null}
        alarms:
          ids: [${ALARM}]
        """,
    )
    config = load_config(path, env={"CODE": "0123", "SECRET": "yes", "ALARM": "42"})
    assert config.bkmonitor.app_code == "0123"  # not the octal int 83
    assert config.bkmonitor.app_secret is not None
    assert config.bkmonitor.app_secret.get_secret_value() == "yes"  # not True
    assert config.bkmonitor.verify_tls is False
    assert config.bkmonitor.timeout == 45.0
    assert config.bkmonitor.ca_file is None
    assert config.alarms.ids == ("42",)


def test_unset_variables_are_reported_by_option_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        # ${ONLY_IN_A_COMMENT} does not matter
        bkmonitor:
          base_url: ${BASE_URL}
          app_code: code
          app_secret: ${BK_APP_SECRET}
        poll:
          interval: ${INTERVAL}
        """,
    )
    assert load_problems(path) == [
        "bkmonitor.base_url: environment variable BASE_URL is not set",
        "bkmonitor.app_secret: environment variable BK_APP_SECRET is not set",
        "poll.interval: environment variable INTERVAL is not set",
    ]


# ── validation: defaults ─────────────────────────────────────────────────────────────────────

DEFAULTS: list[tuple[str, object]] = [
    ("bkmonitor.username", "admin"),
    ("bkmonitor.bk_token", None),
    ("bkmonitor.auth_in", "header"),
    ("bkmonitor.timezone", "Asia/Shanghai"),
    ("bkmonitor.language", "en"),
    ("bkmonitor.timeout", None),  # null: 35 s on the ESB, 65 s on the gateway (effective_timeout)
    ("bkmonitor.verify_tls", True),
    ("bkmonitor.ca_file", None),
    ("bkmonitor.max_concurrency", 8),
    ("bkmonitor.rate_limit", 20.0),
    ("bkmonitor.retry.max_attempts", 5),
    ("bkmonitor.retry.initial_backoff", 1.0),
    ("bkmonitor.retry.max_backoff", 30.0),
    ("alarms.ids", ()),
    ("alarms.recent.enabled", False),
    ("alarms.recent.bk_biz_ids", ()),
    ("alarms.recent.lookback", 3600.0),
    ("alarms.recent.overlap", 600.0),
    ("alarms.recent.status", ("ABNORMAL", "RECOVERED", "CLOSED")),
    ("alarms.recent.query_string", ""),
    ("alarms.recent.conditions", ()),
    ("alarms.recent.page_size", 500),
    ("alarms.recent.interval", 60.0),
    ("poll.interval", 30.0),
    ("poll.retire_after", 600.0),
    ("poll.jitter", 0.1),
    ("poll.full_reread_interval", 1800.0),
    ("poll.retired_retention", 30 * 86400.0),
    ("export.signals", ("logs",)),
    ("export.endpoint", "http://localhost:4317"),
    ("export.protocol", "grpc"),
    ("export.headers", {}),
    ("export.compression", "gzip"),
    ("export.timeout", 10.0),
    ("export.insecure", None),
    ("export.ca_file", None),
    ("export.client_cert_file", None),
    ("export.client_key_file", None),
    ("export.batch_size", 512),
    ("export.service_name", "bk-otel-exporter"),
    ("export.resource_attributes", {}),
    ("export.console", False),
    ("export.retry.initial_backoff", 1.0),
    ("export.retry.max_backoff", 60.0),
    ("state.path", "./bk-otel-exporter.db"),
    ("state.url", None),
    ("state.lease", 30.0),
    ("state.max_queued_records", 1_000_000),
    ("state.parked_retention", 30 * 86400.0),
    ("server.listen", "127.0.0.1:9464"),
    ("logging.level", "INFO"),
    ("logging.format", "text"),
    ("shutdown_timeout", 15.0),
]


@pytest.mark.parametrize(("option", "default"), DEFAULTS)
def test_defaults(option: str, default: object) -> None:
    assert attr(config_from_dict({"bkmonitor": BK}, env={}), option) == default


def test_sections_left_empty_take_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        bkmonitor:
          base_url: https://paas.example.com/
          app_code: code
          app_secret: s
          timeout:
        alarms:
          recent:
        poll:
        export:
        state:
        server:
        logging:
        """,
    )
    config = load_config(path, env={})
    assert config.bkmonitor.base_url == "https://paas.example.com"
    assert config.bkmonitor.timeout is None and config.bkmonitor.effective_timeout == 35.0
    assert config.export == config_from_dict({"bkmonitor": BK}, env={}).export
    assert config.source_path == path


def test_empty_file_reports_only_the_required_options(tmp_path: Path) -> None:
    assert load_problems(write(tmp_path, "")) == [
        "bkmonitor.base_url: field required",
        "bkmonitor.app_code: field required",
        "bkmonitor.app_secret: required (set app_secret or app_secret_file)",
    ]


def test_endpoint_default_follows_protocol() -> None:
    config = config_from_dict({"bkmonitor": BK, "export": {"protocol": "http/protobuf"}}, env={})
    assert config.export.endpoint == "http://localhost:4318"


def test_config_is_frozen() -> None:
    config = config_from_dict({"bkmonitor": BK}, env={})
    with pytest.raises(ValidationError):
        config.poll.interval = 1


# ── validation: messages ─────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ({"export": {"protocoll": "grpc"}}, "export.protocoll: unknown option (did you mean 'protocol'?)"),
        ({"alarms": {"recent": {"lookbak": "1h"}}}, "alarms.recent.lookbak: unknown option (did you mean 'lookback'?)"),
        ({"bkmonitor": {**BK, "retry": {"max_atempts": 3}}}, "bkmonitor.retry.max_atempts: unknown option (did you mean 'max_attempts'?)"),
        ({"pol": {}}, "pol: unknown option (did you mean 'poll'?)"),
        ({"server": {"xyz": 1}}, "server.xyz: unknown option (valid: listen)"),
        ({"poll": {"interval": "abc"}}, "poll.interval: invalid duration 'abc' (use 30s, 5m, 1h, 1d or seconds)"),
        ({"poll": {"interval": 0}}, "poll.interval: must be > 0"),
        ({"poll": {"jitter": 2}}, "poll.jitter: must be ≤ 1"),
        ({"bkmonitor": {**BK, "max_concurrency": 0}}, "bkmonitor.max_concurrency: must be ≥ 1"),
        ({"bkmonitor": {**BK, "max_concurrency": "many"}}, "bkmonitor.max_concurrency: must be an integer"),
        ({"bkmonitor": {**BK, "verify_tls": "perhaps"}}, "bkmonitor.verify_tls: must be true or false"),
        ({"bkmonitor": {**BK, "timezone": "Mars/Olympus"}}, "bkmonitor.timezone: unknown time zone 'Mars/Olympus' (use an IANA name such as Asia/Shanghai)"),
        ({"bkmonitor": {**BK, "base_url": "paas.example.com"}}, "bkmonitor.base_url: must be an http:// or https:// URL such as https://paas.example.com"),
        ({"bkmonitor": {**BK, "auth_in": "cookie"}}, "bkmonitor.auth_in: must be one of 'header', 'params' (got 'cookie')"),
        ({"bkmonitor": {**BK, "username": None}}, "bkmonitor.username: required (set username, bk_token or access_token)"),
        ({"bkmonitor": {**BK, "retry": {"initial_backoff": "10s", "max_backoff": "5s"}}}, "bkmonitor.retry.max_backoff: must be ≥ initial_backoff (10s)"),
        ({"export": {"protocol": "http/json"}}, "export.protocol: must be one of 'grpc', 'http/protobuf' (got 'http/json')"),
        ({"export": {"signals": []}}, "export.signals: must not be empty"),
        ({"export": {"signals": ["logs", "metrics"]}}, "export.signals.1: must be one of 'logs', 'spans' (got 'metrics')"),
        ({"export": {"compression": "zstd"}}, "export.compression: must be one of 'gzip', 'none' (got 'zstd')"),
        ({"export": {"batch_size": 20000}}, "export.batch_size: must be ≤ 10000"),
        ({"export": {"resource_attributes": {"version": 2}}}, "export.resource_attributes.version: must be a string"),
        ({"export": {"ca_file": "/nonexistent/ca.pem"}}, "export.ca_file: no such file: /nonexistent/ca.pem"),
        ({"export": {"retry": {"initial_backoff": "2m", "max_backoff": "1m"}}}, "export.retry.max_backoff: must be ≥ initial_backoff (2m)"),
        ({"alarms": {"ids": [1, 2, 3, "12a"]}}, "alarms.ids.3: not an alarm ID (digits expected, got '12a')"),
        ({"alarms": {"recent": {"enabled": True}}}, "alarms.recent.bk_biz_ids: required when alarms.recent.enabled is true"),
        ({"alarms": {"recent": {"status": ["ABNORMAL", "OPEN"]}}}, "alarms.recent.status.1: must be one of 'ABNORMAL', 'RECOVERED', 'CLOSED', 'SHIELDED_ABNORMAL', 'NOT_SHIELDED_ABNORMAL', 'MINE', 'MY_ASSIGNEE', 'MY_APPOINTEE', 'MY_FOLLOW' (got 'OPEN')"),
        ({"alarms": {"recent": {"conditions": [{"key": "severity"}]}}}, "alarms.recent.conditions.0: needs 'key' and 'value' (e.g. {key: severity, value: [1], method: eq})"),
        ({"alarms": {"recent": {"page_size": 0}}}, "alarms.recent.page_size: must be ≥ 1"),
        ({"state": {"url": "mysql://db/x"}}, "state.url: must be a postgresql:// or postgres:// URL"),
        ({"state": {"max_queued_records": 0}}, "state.max_queued_records: must be ≥ 1"),
        ({"state": {"parked_retention": "-1d"}}, "state.parked_retention: invalid duration '-1d': must not be negative"),
        ({"server": {"listen": "9464"}}, 'server.listen: must be host:port such as 127.0.0.1:9464 or [::1]:9464, or "" to disable'),
        ({"logging": {"level": "LOUD"}}, "logging.level: must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL' (got 'LOUD')"),
        ({"shutdown_timeout": "-1s"}, "shutdown_timeout: invalid duration '-1s': must not be negative"),
        ({"poll": []}, "poll: must be a mapping of options"),
    ],
)  # fmt: skip
def test_problem_lines(raw: dict[str, Any], line: str) -> None:
    assert line in problems({"bkmonitor": BK, **raw})


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = write(tmp_path, "cert", "client.pem")
    assert problems({"bkmonitor": BK, "export": {"client_cert_file": str(cert)}}) == [
        "export.client_key_file: required together with client_cert_file"
    ]


def test_every_problem_at_once() -> None:
    raw = {
        "bkmonitor": {"base_url": "https://paas.example.com", "app_code": "c"},
        "poll": {"interval": "soon"},
        "export": {"protocoll": "grpc"},
    }
    assert problems(raw) == [
        "bkmonitor.app_secret: required (set app_secret or app_secret_file)",
        "poll.interval: invalid duration 'soon' (use 30s, 5m, 1h, 1d or seconds)",
        "export.protocoll: unknown option (did you mean 'protocol'?)",
    ]


def test_every_problem_at_once_from_a_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        bkmonitor:
          base_url: https://paas.example.com
          app_code: code
          app_secret_fille: /run/secret
        poll:
          interval: 1 hour
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).splitlines() == [
        "invalid configuration:",
        "bkmonitor.app_secret: required (set app_secret or app_secret_file)",
        "bkmonitor.app_secret_fille: unknown option (did you mean 'app_secret_file'?)",
        "poll.interval: invalid duration '1 hour' (use 30s, 5m, 1h, 1d or seconds)",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"logging": {"level": "debug"}}, ("logging.level", "DEBUG")),
        ({"logging": {"level": "warn"}}, ("logging.level", "WARNING")),
        ({"logging": {"format": "JSON"}}, ("logging.format", "json")),
        ({"export": {"protocol": "HTTP/Protobuf"}}, ("export.protocol", "http/protobuf")),
        ({"export": {"signals": ["spans", "logs", "spans"]}}, ("export.signals", ("spans", "logs"))),
        ({"export": {"signals": "logs,spans"}}, ("export.signals", ("logs", "spans"))),
        ({"alarms": {"recent": {"status": ["abnormal", "ABNORMAL"]}}}, ("alarms.recent.status", ("ABNORMAL",))),
        ({"alarms": {"recent": {"bk_biz_ids": "2, 3"}}}, ("alarms.recent.bk_biz_ids", (2, 3))),
        ({"alarms": {"ids": [123, "456", " 789 ", "0123", "123", 456]}}, ("alarms.ids", ("123", "456", "789"))),
        ({"alarms": {"ids": "11,12"}}, ("alarms.ids", ("11", "12"))),
        ({"export": {"endpoint": "https://otel.example.com:4317/"}}, ("export.endpoint", "https://otel.example.com:4317")),
        ({"state": {"url": ""}}, ("state.url", None)),
    ],
)  # fmt: skip
def test_normalisation(raw: dict[str, Any], expected: tuple[str, object]) -> None:
    option, value = expected
    assert attr(config_from_dict({"bkmonitor": BK, **raw}, env={}), option) == value


def test_recent_discovery_with_businesses() -> None:
    raw = {"alarms": {"recent": {"enabled": True, "bk_biz_ids": [2, -1], "lookback": "2h", "overlap": "5m"}}}
    recent = config_from_dict({"bkmonitor": BK, **raw}, env={}).alarms.recent
    assert (recent.enabled, recent.bk_biz_ids, recent.lookback, recent.overlap) == (True, (2, -1), 7200.0, 300.0)


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:8080", ("localhost", 8080)),
        (":9464", ("", 9464)),
        ("", None),
    ],
)
def test_listen_address(listen: str, address: tuple[str, int] | None) -> None:
    assert config_from_dict({"bkmonitor": BK, "server": {"listen": listen}}, env={}).server.listen_address == address


@pytest.mark.parametrize("listen", ["9464", "::1:9464", "host:99999", "[nothex]:1", "host:port", 9464])
def test_listen_rejects(listen: object) -> None:
    assert any(line.startswith("server.listen: ") for line in problems({"bkmonitor": BK, "server": {"listen": listen}}))


# ── files ────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bkmonitor: [unclosed\n", "config line 2, column 1: YAML syntax error"),
        ("bkmonitor:\n  a: 1\n b: 2\n", "config line 3, column 2: YAML syntax error"),
        ("- just\n- a list\n", "config: must be a mapping of sections (bkmonitor:, …), not a list"),
        ("poll:\n  interval: 1s\n  interval: 2s\n", "config line 3: duplicate key 'interval'"),
    ],
)
def test_file_level_problems(tmp_path: Path, text: str, expected: str) -> None:
    assert any(line.startswith(expected) for line in load_problems(write(tmp_path, text)))


def test_missing_file(tmp_path: Path) -> None:
    assert load_problems(tmp_path / "nope.yaml") == [
        f"config: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    ]


def test_path_from_environment_then_default(tmp_path: Path) -> None:
    path = write(tmp_path, "bkmonitor: {base_url: 'https://h', app_code: c, app_secret: s}\n")
    assert load_config(env={"BK_OTEL_EXPORTER_CONFIG": str(path)}).source_path == path
    if not Path("/etc/bk-otel-exporter/config.yaml").exists():
        assert load_problems(None, env={})[0].startswith("config: cannot read /etc/bk-otel-exporter/config.yaml")


def test_relative_files_resolve_against_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    write(tmp_path, "pem", "tls/ca.pem")
    path = write(
        tmp_path,
        """\
        bkmonitor: {base_url: 'https://h', app_code: c, app_secret: s, ca_file: tls/ca.pem}
        export: {ca_file: tls/ca.pem}
        """,
    )
    config = load_config(path, env={})
    assert config.bkmonitor.ca_file == config.export.ca_file == str(tmp_path / "tls" / "ca.pem")


# ── app_secret ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("secret_file", "where", "credentials"),
    [
        ("secret.txt", "config", False),  # relative to the config file's directory
        ("secret.txt", "credentials", True),  # relative to $CREDENTIALS_DIRECTORY
        ("{abs}", "config", True),  # absolute path wins
        (None, "credentials", True),  # bk_app_secret found in $CREDENTIALS_DIRECTORY
    ],
)
def test_app_secret_file(tmp_path: Path, secret_file: str | None, where: str, credentials: bool) -> None:
    config_dir, cred_dir = tmp_path / "etc", tmp_path / "credentials"
    config_dir.mkdir()
    cred_dir.mkdir()
    name = "bk_app_secret" if secret_file is None else "secret.txt"
    target = (config_dir if where == "config" else cred_dir) / name
    target.write_text(SECRET + "\n", encoding="utf-8")
    bk = {"base_url": "https://h", "app_code": "c"}
    if secret_file is not None:
        bk["app_secret_file"] = secret_file.replace("{abs}", str(target))
    path = config_dir / "config.yaml"
    path.write_text(yaml.safe_dump({"bkmonitor": bk}), encoding="utf-8")
    env = {"CREDENTIALS_DIRECTORY": str(cred_dir)} if credentials else {}
    config = load_config(path, env=env)
    assert config.bkmonitor.app_secret is not None
    assert config.bkmonitor.app_secret.get_secret_value() == SECRET
    assert config.bkmonitor.app_secret_file == str(target)


@pytest.mark.parametrize(
    ("bk", "line"),
    [
        ({"app_secret_file": "/x/y"}, "bkmonitor.app_secret_file: cannot read /x/y: No such file or directory"),
        ({"app_secret_file": "empty"}, "bkmonitor.app_secret_file: {tmp}/empty is empty"),
        ({"app_secret": "s", "app_secret_file": "empty"}, "bkmonitor.app_secret_file: set app_secret or app_secret_file, not both"),
        ({"app_secret": ""}, "bkmonitor.app_secret: required (set app_secret or app_secret_file)"),
        ({}, "bkmonitor.app_secret: required (set app_secret or app_secret_file)"),
        ({"app_secret": 12345}, "bkmonitor.app_secret: must be a string"),
    ],
)  # fmt: skip
def test_app_secret_problems(tmp_path: Path, bk: dict[str, Any], line: str) -> None:
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    raw = {"bkmonitor": {"base_url": "https://h", "app_code": "c", **bk}}
    assert problems(raw, base_dir=tmp_path) == [line.replace("{tmp}", str(tmp_path))]


# ── OTEL_* fallbacks ─────────────────────────────────────────────────────────────────────────


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    names = ("ca.pem", "client.pem", "client.key", "file-ca.pem")
    return {name: str(write(tmp_path, "pem", name)) for name in names}


OTEL_CASES = [
    # variable, its value, option, value from the variable, value written in the file
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317", "endpoint", "https://collector:4317", "http://file:4317"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "protocol", "http/protobuf", "grpc"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%3D%3D, x-tenant = t1", "headers", {"api-key": "abc==", "x-tenant": "t1"}, {"k": "v"}),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "none", "compression", "none", "gzip"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500", "timeout", 2.5, "7s"),
    ("OTEL_EXPORTER_OTLP_INSECURE", "TRUE", "insecure", True, False),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "{ca.pem}", "ca_file", "{ca.pem}", "{file-ca.pem}"),
    ("OTEL_SERVICE_NAME", "bk-exporter-prod", "service_name", "bk-exporter-prod", "from-file"),
]  # fmt: skip


def _fill(value: Any, files: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return files[value[1:-1]]
    return value


@pytest.mark.parametrize(("variable", "text", "option", "from_env", "in_file"), OTEL_CASES)
def test_otel_environment_fallback(
    pem_files: dict[str, str], variable: str, text: str, option: str, from_env: Any, in_file: Any
) -> None:
    env = {variable: _fill(text, pem_files)}
    used = config_from_dict({"bkmonitor": BK}, env=env).export
    assert getattr(used, option) == _fill(from_env, pem_files)
    # null in the file counts as "not set"
    assert getattr(config_from_dict({"bkmonitor": BK, "export": {option: None}}, env=env).export, option) == getattr(
        used, option
    )
    written = config_from_dict({"bkmonitor": BK, "export": {option: _fill(in_file, pem_files)}}, env=env).export
    expected = parse_duration(in_file) if option == "timeout" else _fill(in_file, pem_files)
    assert getattr(written, option) == expected


def test_otel_client_certificate_pair(pem_files: dict[str, str]) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": pem_files["client.pem"],
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": pem_files["client.key"],
    }
    export = config_from_dict({"bkmonitor": BK}, env=env).export
    assert (export.client_cert_file, export.client_key_file) == (pem_files["client.pem"], pem_files["client.key"])


def test_otel_protocol_sets_the_default_endpoint() -> None:
    export = config_from_dict({"bkmonitor": BK}, env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).export
    assert export.endpoint == "http://localhost:4318"


@pytest.mark.parametrize(
    ("variable", "text", "line"),
    [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "export.timeout: OTEL_EXPORTER_OTLP_TIMEOUT must be a positive number of milliseconds (got '10s')"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "yes", "export.insecure: OTEL_EXPORTER_OTLP_INSECURE must be true or false (got 'yes')"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "export.protocol: must be one of 'grpc', 'http/protobuf' (got 'http/json') (from OTEL_EXPORTER_OTLP_PROTOCOL)"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent.pem", "export.ca_file: no such file: /nonexistent.pem (from OTEL_EXPORTER_OTLP_CERTIFICATE)"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,novalue", "export.headers: OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not key=value"),
        ("OTEL_RESOURCE_ATTRIBUTES", "=x", "export.resource_attributes: OTEL_RESOURCE_ATTRIBUTES: entry 1 is not key=value"),
    ],
)  # fmt: skip
def test_otel_environment_problems(variable: str, text: str, line: str) -> None:
    assert problems({"bkmonitor": BK}, env={variable: text}) == [line]


def test_otel_timeout_is_milliseconds() -> None:
    assert config_from_dict({"bkmonitor": BK}, env={"OTEL_EXPORTER_OTLP_TIMEOUT": "500"}).export.timeout == 0.5


def test_empty_otel_variables_are_ignored() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_SERVICE_NAME": "  "}
    export = config_from_dict({"bkmonitor": BK}, env=env).export
    assert (export.endpoint, export.service_name) == ("http://localhost:4317", "bk-otel-exporter")


@pytest.mark.parametrize(
    ("in_file", "variable", "merged"),
    [
        (None, "team=obs,deployment.environment=prod", {"team": "obs", "deployment.environment": "prod"}),
        ({"team": "file"}, "team=env,region=cn%2Dsouth", {"team": "file", "region": "cn-south"}),
        ({"team": "file"}, "", {"team": "file"}),
        ({}, "a=b%2Cc", {"a": "b,c"}),
    ],
)
def test_otel_resource_attributes_merge(in_file: dict[str, str] | None, variable: str, merged: dict[str, str]) -> None:
    raw = {"bkmonitor": BK, "export": {"resource_attributes": in_file}}
    config = config_from_dict(raw, env={"OTEL_RESOURCE_ATTRIBUTES": variable})
    assert dict(config.export.resource_attributes) == merged


# ── secrets ──────────────────────────────────────────────────────────────────────────────────

TOKEN, HEADER, DB_PASSWORD = "Tok-en-SECRET-1", "Bearer HDR-SECRET-2", "pg-SECRET-3"


def secret_config_raw() -> dict[str, Any]:
    return {
        "bkmonitor": {**BK, "bk_token": TOKEN},
        "export": {"headers": {"authorization": HEADER}},
        "state": {"url": f"postgresql://exporter:{DB_PASSWORD}@db:5432/bk?sslmode=require"},
    }


def test_secrets_lists_every_secret_value() -> None:
    assert set(config_from_dict(secret_config_raw(), env={}).secrets()) == {SECRET, TOKEN, HEADER, DB_PASSWORD}


def test_secrets_include_a_password_query_parameter() -> None:
    raw = {"bkmonitor": BK, "state": {"url": f"postgresql://db/bk?user=x&password={DB_PASSWORD}"}}
    config = config_from_dict(raw, env={})
    assert DB_PASSWORD in config.secrets()
    assert DB_PASSWORD not in render_effective(config)


def test_rendering_redacts_every_secret() -> None:
    config = config_from_dict(secret_config_raw(), env={})
    shown = render_effective(config)
    for secret in config.secrets():
        assert secret not in shown
        assert secret not in repr(config)
        assert secret not in str(redacted_dict(config))
    data = yaml.safe_load(shown)
    assert data["bkmonitor"]["app_secret"] == data["bkmonitor"]["bk_token"] == "***"
    assert data["export"]["headers"] == {"authorization": "***"}
    assert data["state"]["url"] == "postgresql://exporter:***@db:5432/bk?sslmode=require"


@pytest.mark.parametrize(
    ("raw", "env"),
    [
        ({"bkmonitor": {**BK, "base_url": f"https://user:{SECRET}@paas"}}, {}),
        ({"bkmonitor": {**BK, "timeout": "x", "app_code": 5}}, {}),
        ({"bkmonitor": {**BK, "bk_token": 7}, "state": {"url": f"mysql://u:{SECRET}@h/db"}}, {}),
        ({"bkmonitor": BK, "export": {"endpoint": f"https://u:{SECRET}@collector", "headers": {"a": [SECRET]}}}, {}),
        ({"bkmonitor": BK}, {"OTEL_EXPORTER_OTLP_HEADERS": f"a={SECRET},{SECRET}"}),
        ({"bkmonitor": BK}, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"ftp://u:{SECRET}@h"}),
        ({"bkmonitor": {**BK, "app_secret": [SECRET]}}, {}),
        (
            {
                "bkmonitor": {**BK, "bk_token": ""},
                "state": {"url": f"postgres://u:{SECRET}@h/db"},
                "poll": {"interval": "x"},
            },
            {},
        ),
    ],
)
def test_problem_lines_never_contain_a_secret(raw: dict[str, Any], env: dict[str, str]) -> None:
    text = "\n".join(problems(raw, env=env))
    assert SECRET not in text
    assert text


@pytest.mark.parametrize(
    "secret", ["a: b", "x\n  y: [", "*alias-" + SECRET, "'" + SECRET, "[" + SECRET, "x #" + SECRET, "\x07" + SECRET]
)
def test_yaml_errors_inside_substituted_values_never_show_them(tmp_path: Path, secret: str) -> None:
    path = write(
        tmp_path,
        """\
        bkmonitor:
          base_url: https://paas.example.com
          app_code: code
          app_secret: ${BK_APP_SECRET}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"BK_APP_SECRET": secret})
    assert secret not in str(caught.value)
    assert SECRET not in str(caught.value)


# ── the example file and the rendering ───────────────────────────────────────────────────────

EXAMPLE_ENV = {"BK_APP_CODE": "bk-otel-exporter", "BK_APP_SECRET": SECRET}


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    assert config.bkmonitor.app_secret is not None
    assert config.bkmonitor.app_secret.get_secret_value() == SECRET
    assert redacted_dict(config) == redacted_dict(
        config_from_dict({"bkmonitor": {**BK, "app_code": "bk-otel-exporter"}}, env={})
    )


def test_example_file_shows_every_option() -> None:
    def paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
        found = set()
        for key, value in tree.items():
            found.add(prefix + key)
            if isinstance(value, dict) and key not in ("headers", "resource_attributes"):
                found |= paths(value, f"{prefix}{key}.")
        return found

    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert paths(example) == paths(redacted_dict(load_config(EXAMPLE, env=EXAMPLE_ENV)))


def test_example_file_takes_otel_variables() -> None:
    env = {**EXAMPLE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SERVICE_NAME": "svc"}
    export = load_config(EXAMPLE, env=env).export
    assert (export.endpoint, export.service_name) == ("http://collector:4317", "svc")


def test_example_file_without_environment() -> None:
    assert load_problems(EXAMPLE) == [
        "bkmonitor.app_code: environment variable BK_APP_CODE is not set",
        "bkmonitor.app_secret: required (set app_secret or app_secret_file)",
    ]


def test_render_effective_round_trips(tmp_path: Path) -> None:
    raw = {
        "bkmonitor": {**BK, "timeout": "250ms"},
        "alarms": {"ids": [1, 2], "recent": {"enabled": True, "bk_biz_ids": [2], "conditions": [{"key": "k", "value": [1]}]}},
        "poll": {"interval": 45, "retire_after": "1h30m"},
        "export": {"signals": ["logs", "spans"], "resource_attributes": {"env": "prod", "version": "1.10"}},
        "server": {"listen": "[::1]:0"},
        "logging": {"level": "debug"},
    }  # fmt: skip
    config = config_from_dict(raw, env={})
    rendered = render_effective(config)
    data = yaml.safe_load(rendered)
    assert data == redacted_dict(config)
    assert data["poll"]["retire_after"] == "90m"
    data["bkmonitor"]["app_secret"] = SECRET
    assert config_from_dict(data, env={}) == config
    path = write(tmp_path, rendered.replace("'***'", SECRET))
    assert load_config(path, env={}).model_dump() == config.model_dump()


# ── cost ─────────────────────────────────────────────────────────────────────────────────────


def test_import_is_light() -> None:
    code = (
        "import sys, exporter.config; print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'grpc'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_surface() -> None:
    import exporter.config as module

    assert {
        "Config",
        "config_from_dict",
        "load_config",
        "parse_duration",
        "redacted_dict",
        "render_effective",
        "substitute_env",
    } <= set(module.__all__)
    assert isinstance(config_from_dict({"bkmonitor": BK}, env={}), Config)
