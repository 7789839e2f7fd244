"""Logging: JSON lines with stable keys, the text format, secret redaction, rate-limited errors."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from exporter import logsetup
from exporter.logsetup import RateLimitedLogger, add_secrets, setup_logging

SECRET = "s3cr3t+App/Secret=="
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def isolated_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh secrets; the root handler list and the levels we touch are put back afterwards."""
    monkeypatch.setattr(logsetup, "_SECRETS", logsetup._Secrets())
    root = logging.getLogger()
    names = ("exporter", *logsetup.QUIET_LOGGERS)
    saved_handlers = list(root.handlers)
    saved_levels = {name: logging.getLogger(name).level for name in (*names, "")}
    yield
    for handler in root.handlers:
        if handler not in saved_handlers:
            handler.close()
    root.handlers[:] = saved_handlers
    for name, level in saved_levels.items():
        logging.getLogger(name or None).setLevel(level)


def json_lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_have_stable_keys() -> None:
    buf = io.StringIO()
    setup_logging("INFO", "json", stream=buf)
    log = logging.getLogger("exporter.pipeline")
    log.info(
        "cycle done: %d alarms, %d records",
        3,
        12,
        extra={"alarm_id": "1234", "bk_biz_id": 2, "unlisted": "dropped", "records": [1, 2]},
    )
    log.debug("not at INFO")
    (doc,) = json_lines(buf)
    assert list(doc) == ["ts", "level", "logger", "msg", "alarm_id", "bk_biz_id", "records"]
    assert TS.match(str(doc["ts"]))
    assert doc["level"] == "INFO"
    assert doc["logger"] == "exporter.pipeline"
    assert doc["msg"] == "cycle done: 3 alarms, 12 records"
    assert (doc["alarm_id"], doc["bk_biz_id"], doc["records"]) == ("1234", 2, [1, 2])


def test_json_exception_stays_on_one_line() -> None:
    buf = io.StringIO()
    setup_logging("INFO", "json", stream=buf)
    try:
        raise ValueError("bad answer\nsecond line")
    except ValueError:
        logging.getLogger("exporter.sinks.otlp").exception("export failed", extra={"code": 1306201})
    assert len(buf.getvalue().splitlines()) == 1
    (doc,) = json_lines(buf)
    assert list(doc) == ["ts", "level", "logger", "msg", "code", "exc"]
    assert doc["level"] == "ERROR"
    assert str(doc["exc"]).startswith("Traceback (most recent call last):")
    assert "ValueError: bad answer" in str(doc["exc"])


def test_json_non_json_extra_values_become_strings() -> None:
    buf = io.StringIO()
    setup_logging("INFO", "json", stream=buf)
    logging.getLogger("exporter").info("x", extra={"reason": ValueError("boom"), "bk_when": {"a": (1, None)}})
    (doc,) = json_lines(buf)
    assert doc["reason"] == "boom"
    assert doc["bk_when"] == {"a": [1, None]}


def test_text_format() -> None:
    buf = io.StringIO()
    setup_logging("DEBUG", "text", stream=buf)
    logging.getLogger("exporter.pipeline").debug("polled %s alarms", 3, extra={"alarm_id": "9"})
    line = buf.getvalue()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z DEBUG exporter\.pipeline: polled 3 alarms\n", line), (
        line
    )


def test_text_format_traceback_follows() -> None:
    buf = io.StringIO()
    setup_logging("INFO", "text", stream=buf)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("exporter.scheduler").exception("cycle crashed")
    first, *rest = buf.getvalue().splitlines()
    assert first.endswith(" ERROR exporter.scheduler: cycle crashed")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_redacted_everywhere(fmt: str) -> None:
    buf = io.StringIO()
    setup_logging("DEBUG", fmt, secrets=[SECRET, None, ""], stream=buf)
    log = logging.getLogger("exporter.sources.bkmonitor")
    log.info(f"literal {SECRET} in the message")  # noqa: G004 (the point: already formatted)
    log.info("as an argument: %s", SECRET)
    log.info("url-encoded: https://paas/api?bk_app_secret=%s", "s3cr3t%2BApp%2FSecret%3D%3D")
    log.info("in extra", extra={"bk_header": f"X-Bkapi-Authorization: {SECRET}"})
    try:
        raise RuntimeError("request failed with " + SECRET)
    except RuntimeError:
        log.exception("in the traceback")
    out = buf.getvalue()
    assert SECRET not in out
    assert "s3cr3t%2BApp%2FSecret%3D%3D" not in out
    for fragment in (
        "literal *** in the message",
        "as an argument: ***",
        "bk_app_secret=***",
        "RuntimeError: request failed with ***",
    ):
        assert fragment in out
    if fmt == "json":
        assert json_lines(buf)[3]["bk_header"] == "X-Bkapi-Authorization: ***"


def test_library_loggers_are_redacted_and_quiet() -> None:
    buf = io.StringIO()
    setup_logging("DEBUG", "json", secrets=[SECRET], stream=buf)
    logging.getLogger("urllib3.connectionpool").debug("GET /?secret=%s", SECRET)  # below WARNING: dropped
    logging.getLogger("apscheduler.executors").info("job ran")  # dropped
    logging.getLogger("urllib3.connectionpool").warning("retrying with %s", SECRET)
    logging.getLogger("some.other.lib").info("dropped: root stays at WARNING")
    (doc,) = json_lines(buf)
    assert (doc["logger"], doc["level"], doc["msg"]) == (
        "urllib3.connectionpool",
        "WARNING",
        "retrying with ***",
    )


def test_secrets_added_later_are_redacted_and_old_ones_kept() -> None:
    buf = io.StringIO()
    setup_logging("INFO", "text", secrets=["old-secret-1"], stream=buf)
    add_secrets(["new-secret-2"])
    logging.getLogger("exporter").info("old-secret-1 new-secret-2")
    assert buf.getvalue().endswith(": *** ***\n")


def test_short_values_are_not_treated_as_secrets() -> None:
    buf = io.StringIO()
    setup_logging("INFO", "text", secrets=["abc"], stream=buf)
    logging.getLogger("exporter").info("abcdef")
    assert buf.getvalue().endswith(": abcdef\n")


def test_setup_twice_does_not_duplicate_handlers() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", "text", stream=first)
    setup_logging("INFO", "json", stream=second)  # a reload switching format
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_bk_otel_exporter_handler", False)]
    assert len(ours) == 1
    logging.getLogger("exporter.x").info("once")
    assert first.getvalue() == ""
    assert [d["msg"] for d in json_lines(second)] == ["once"]


def test_levels_and_bad_values() -> None:
    buf = io.StringIO()
    setup_logging("warn", "text", stream=buf)
    logging.getLogger("exporter").info("hidden")
    logging.getLogger("exporter").warning("shown")
    assert "hidden" not in buf.getvalue()
    assert "WARNING exporter: shown" in buf.getvalue()
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("LOUD", "text", stream=buf)
    with pytest.raises(ValueError, match="unknown log format"):
        setup_logging("INFO", "xml", stream=buf)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_logger_suppresses_and_counts() -> None:
    buf = io.StringIO()
    setup_logging("INFO", "json", stream=buf)
    clock = Clock()
    rl = RateLimitedLogger(logging.getLogger("exporter.sender"), interval=60, clock=clock)

    assert rl.error("backend", "backend down: %s", "connection refused") is True
    for _ in range(3):
        clock.now += 10
        assert rl.error("backend", "backend down: %s", "connection refused") is False
    assert rl.warning("bk", "BlueKing unavailable") is True  # another key is independent
    clock.now += 31  # 61 s after the first line
    assert rl.error("backend", "backend down: %s", "timeout") is True
    clock.now += 1
    assert rl.error("backend", "backend down: %s", "timeout") is False

    docs = json_lines(buf)
    assert [(d["level"], d["msg"]) for d in docs] == [
        ("ERROR", "backend down: connection refused"),
        ("WARNING", "BlueKing unavailable"),
        ("ERROR", "backend down: timeout (3 similar suppressed)"),
    ]
    assert docs[2]["suppressed"] == 3
    assert "suppressed" not in docs[0]


def test_rate_limited_logger_reset_and_messages_without_args() -> None:
    buf = io.StringIO()
    setup_logging("INFO", "text", stream=buf)
    clock = Clock()
    rl = RateLimitedLogger(logging.getLogger("exporter.sender"), interval=60, clock=clock)
    assert rl.error("k", "100% down")
    assert not rl.error("k", "100% down")
    assert not rl.error("k", "100% down")
    assert rl.reset("k") == 2  # the backend is back: the caller may report how much it missed
    assert rl.reset("k") == 0
    assert rl.error("k", "100% down")  # a new outage is reported at once
    assert not rl.error("k", "100% down")
    clock.now += 60
    assert rl.error("k", "100% down")  # no args: the literal % survives, the suffix is appended
    lines = [line.split(": ", 1)[1] for line in buf.getvalue().splitlines()]
    assert lines == ["100% down", "100% down", "100% down (1 similar suppressed)"]


def test_rate_limited_logger_points_at_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLogger(logging.getLogger("exporter.t"), interval=60, clock=Clock())
    with caplog.at_level(logging.INFO, logger="exporter.t"):
        rl.error("a", "first")
        rl.log(logging.ERROR, "b", "second")
    assert [r.funcName for r in caplog.records] == ["test_rate_limited_logger_points_at_the_caller"] * 2
    assert caplog.records[0].filename == "test_logsetup.py"


def test_rate_limited_logger_bounds_its_memory() -> None:
    rl = RateLimitedLogger(logging.getLogger("exporter.t"), interval=60, clock=Clock(), max_keys=2)
    logging.getLogger("exporter.t").setLevel(logging.CRITICAL)
    for key in ("a", "b", "c"):
        rl.error(key, "x")
    assert rl.error("a", "x") is True  # "a" was evicted, so it counts as new
