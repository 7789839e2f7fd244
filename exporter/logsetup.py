"""Logging for the daemon: one stderr handler, text or JSON lines, secrets redacted, errors rate-limited.

:func:`setup_logging` installs one handler on the root logger (so library warnings share the format
and JSON output stays one object per line), sets the ``exporter`` hierarchy to the configured level,
and pins the chatty libraries (OpenTelemetry SDK, gRPC, urllib3, requests, APScheduler) at WARNING.
Calling it again (a reload) replaces that handler instead of adding one.

Text (default)::

    2026-11-26T21:40:00.123Z INFO exporter.pipeline: cycle done: 12 alarms, 40 records

JSON (``logging.format: json``), one object per line, keys in this order::

    {"ts": "2026-11-26T21:40:00.123Z", "level": "INFO", "logger": "exporter.pipeline",
     "msg": "cycle done: 12 alarms, 40 records", "alarm_id": "123", "exc": "Traceback ..."}

``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger`` and ``msg`` are always present; ``exc``
(traceback text) and ``stack`` only when there is one. Fields passed with ``extra={...}`` are added
when their key is in :data:`EXTRA_KEYS` or starts with ``bk_``; values that are not JSON types are
rendered with ``str()``.

journald: when ``$JOURNAL_STREAM`` names the device and inode of the stream we write to (systemd
sets it for a service whose stderr goes to the journal), every line starts with the sd-daemon(3)
priority prefix (``<3>`` ERROR, ``<4>`` WARNING, ``<6>`` INFO, ``<7>`` DEBUG, ``<2>`` CRITICAL)
and text lines carry no timestamp of their own (the journal has one)::

    <4>WARNING exporter.pipeline: get_event_log failed for 2 of 12 alarms this cycle

Every line of a traceback gets the prefix too, so ``journalctl -p warning`` shows it whole. JSON
lines keep their ``ts`` (a stable key of the format) and get the prefix.

Secrets: every value registered through ``setup_logging(secrets=...)`` or :func:`add_secrets` is
replaced with ``***`` in the message, its arguments, ``extra`` values and the traceback text, in
every handler's output (defence in depth: the code should not log secrets in the first place).
Values shorter than :data:`MIN_SECRET_LENGTH` are ignored, since redacting them would shred every line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from exporter.redact import SecretPattern, secret_forms

__all__ = [
    "EXTRA_KEYS",
    "MIN_SECRET_LENGTH",
    "JsonFormatter",
    "RateLimitedLogger",
    "RedactingFilter",
    "TextFormatter",
    "add_secrets",
    "journal_priority",
    "journal_stream",
    "redact",
    "setup_logging",
]

#: ``extra={...}`` keys copied into JSON lines (besides any key starting with ``bk_``).
EXTRA_KEYS = frozenset(
    {
        "alarm_id",
        "alarms",
        "attempt",
        "code",
        "count",
        "cycle",
        "duration",
        "endpoint",
        "event_id",
        "http_status",
        "operate",
        "outcome",
        "reason",
        "records",
        "request_id",
        "signal",
        "suppressed",
    }
)
MIN_SECRET_LENGTH = 4

#: Libraries held at WARNING whatever ``logging.level`` says.
QUIET_LOGGERS = ("opentelemetry", "grpc", "urllib3", "requests", "apscheduler")


_HANDLER_MARK = "_bk_otel_exporter_handler"


class _Secrets:
    """The set of values to redact, shared by every filter and formatter; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern = SecretPattern(())

    def add(self, values: Iterable[str | None]) -> None:
        with self._lock:
            self._forms.update(secret_forms(values, min_length=MIN_SECRET_LENGTH))
            self._pattern = SecretPattern(self._forms)

    def redact(self, text: str) -> str:
        return self._pattern(text)


_SECRETS = _Secrets()


def add_secrets(values: Iterable[str | None]) -> None:
    """Register more values to redact (e.g. a new ``app_secret`` after a reload). Old ones stay."""
    _SECRETS.add(values)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return _SECRETS.redact(text)


class RedactingFilter(logging.Filter):
    """Rewrites a record in place: message (with its args), traceback and stack text redacted.

    Installed on the handler, so it also covers records that propagate from library loggers.
    """

    _exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we have rather than lose the line
            message = f"{record.msg!s} {record.args!r}"
        record.msg = _SECRETS.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _SECRETS.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = _SECRETS.redact(record.stack_info)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    millis = int((record.created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-11-26T21:40:00.123Z INFO exporter.pipeline: message``, traceback on the following lines.

    ``timestamps=False`` leaves the time out (for the journal, which stamps every line itself).
    """

    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        if self.timestamps:
            line = f"{_timestamp(record)} {line}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return _SECRETS.redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with stable keys; see the module docstring."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": _SECRETS.redact(record.getMessage()),
        }
        for key in sorted(k for k in record.__dict__ if k not in _RESERVED and _allowed_extra(k)):
            doc[key] = _json_value(record.__dict__[key])
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = _SECRETS.redact(record.exc_text)
        if record.stack_info:
            doc["stack"] = _SECRETS.redact(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _allowed_extra(key: str) -> bool:
    return key in EXTRA_KEYS or key.startswith("bk_")


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _SECRETS.redact(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return _SECRETS.redact(str(value))


def journal_priority(levelno: int) -> int:
    """The syslog priority of a Python level: CRITICAL 2, ERROR 3, WARNING 4, INFO 6, DEBUG 7."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def journal_stream(stream: IO[str], env: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal: ``$JOURNAL_STREAM`` (``device:inode``, decimal) names it."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (a StringIO), or closed
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class JournalFormatter(logging.Formatter):
    """Wraps a formatter: every line of its output starts with the ``<N>`` priority prefix."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def _parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    name = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name)
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r} (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return value


def setup_logging(
    level: str | int,
    fmt: str,
    *,
    secrets: Iterable[str | None] = (),
    stream: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Configure logging to ``stream`` (default: stderr) in ``fmt`` ``"text"`` or ``"json"``.

    ``level`` applies to the ``exporter`` loggers; :data:`QUIET_LOGGERS` stay at WARNING. ``secrets``
    are added to the redaction set (see :func:`add_secrets`). When ``env``'s (default: the process
    environment) ``JOURNAL_STREAM`` names ``stream``, lines get the journal's priority prefix. Idempotent:
    a second call replaces the handler installed by the first. Raises ``ValueError`` for an unknown
    level or format.
    """
    numeric = _parse_level(level)
    out = sys.stderr if stream is None else stream
    journal = journal_stream(out, env)
    if fmt == "text":
        formatter: logging.Formatter = TextFormatter(timestamps=not journal)
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r} (text, json)")
    if journal:
        formatter = JournalFormatter(formatter)
    add_secrets(secrets)

    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("exporter").setLevel(numeric)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric))


class RateLimitedLogger:
    """Logs the first occurrence of a ``key`` at once, then at most once per ``interval`` seconds.

    Repeats inside the interval are counted, and the next line that gets through ends with
    ``(N similar suppressed)`` (and carries ``suppressed=N`` for JSON). :meth:`reset` forgets a key,
    e.g. when the backend is back, so that the next outage is reported at once; it returns how many
    lines were suppressed since the last one logged. ``clock`` is monotonic seconds (injectable).
    At most ``max_keys`` keys are remembered (the least recently used are dropped).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        self.logger = logger
        self.interval = float(interval)
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._state: OrderedDict[str, list[float | int]] = OrderedDict()  # key -> [last_logged, suppressed]

    def log(self, level: int, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` ago. True when logged."""
        now = self._clock()
        with self._lock:
            state = self._state.get(key)
            if state is not None and now - state[0] < self.interval:
                state[1] += 1
                return False
            suppressed = int(state[1]) if state is not None else 0
            self._state[key] = [now, 0]
            self._state.move_to_end(key)
            while len(self._state) > self._max_keys:
                self._state.popitem(last=False)
        if suppressed:
            if args:
                msg, args = msg + " (%d similar suppressed)", (*args, suppressed)
            else:  # no args: logging will not %-format msg, so a literal suffix is safe
                msg = f"{msg} ({suppressed} similar suppressed)"
            kwargs["extra"] = {**kwargs.get("extra", {}), "suppressed": suppressed}
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, msg, *args, **kwargs)
        return True

    def error(self, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        kwargs.setdefault("stacklevel", 3)
        return self.log(logging.ERROR, key, msg, *args, **kwargs)

    def warning(self, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        kwargs.setdefault("stacklevel", 3)
        return self.log(logging.WARNING, key, msg, *args, **kwargs)

    def reset(self, key: str) -> int:
        """Forget ``key``; returns the repeats suppressed since it was last logged."""
        with self._lock:
            state = self._state.pop(key, None)
        return int(state[1]) if state is not None else 0
