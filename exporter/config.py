"""The configuration: one YAML file in, one frozen and validated :class:`Config` out.

::

    file ──read──> text ──${VAR} substitution──> YAML ──safe_load──> mapping
         ──OTEL_* fallbacks──> pydantic validation ──app_secret resolution──> Config

Every step collects its problems instead of stopping at the first; all of them end up in one
:class:`~exporter.errors.ConfigError`, one ``"option.path: what is wrong"`` line each. No line
ever repeats a secret: messages are built here from the option path and the error kind, and an
input is quoted back only for durations, enumerations and similar non-secret values.

Rules an operator can rely on (the example file ``config/exporter.example.yaml`` shows them):

* every section and every option is optional except ``bkmonitor.base_url``, ``bkmonitor.app_code``
  and a secret; an option left empty (``null``) takes its default;
* unknown keys are errors, with the closest valid name suggested;
* durations are floats in seconds once validated; the file may say ``250ms``, ``30s``, ``5m``,
  ``1h``, ``1d`` (or combinations such as ``1h30m``) or plain seconds;
* ``${VAR}`` / ``${VAR:-default}`` are substituted in the text before parsing (``$$`` is a
  literal ``$``); a reference that makes up a whole plain scalar stays a string, so a secret of
  digits (or ``yes``, ``0x1f`` …) arrives verbatim. A reference to an unset variable inside a
  YAML comment is ignored;
* relative file paths resolve against the config file's directory (``app_secret_file``: against
  ``$CREDENTIALS_DIRECTORY`` first, where systemd's ``LoadCredential=`` puts credentials);
* the standard ``OTEL_*`` environment variables fill the ``export`` options the file leaves out;
  ``OTEL_RESOURCE_ATTRIBUTES`` is merged under ``export.resource_attributes`` (the file wins);
* ``plugins.<source|mapper|sink>`` selects an installed plugin by ``name`` (an unknown name is
  reported with the installed ones); its ``options`` are validated by the plugin's own model
  (:mod:`exporter.plugins`) and reported under ``plugins.<kind>.options.<option>``. A validated
  config holds the plugin's options model instance in ``options``.

Only pydantic and PyYAML are imported: ``import exporter.config`` stays cheap (validating the
``plugins`` section imports the selected plugins' modules, which are light by contract).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.redact import MASK, redact_url, url_passwords

from .errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "CREDENTIAL_NAME",
    "DEFAULT_CONFIG_PATH",
    "AlarmsConfig",
    "BkMonitorConfig",
    "Config",
    "Duration",
    "ExportConfig",
    "ExportRetryConfig",
    "LoggingConfig",
    "PluginConfig",
    "PluginsConfig",
    "PollConfig",
    "RecentConfig",
    "RetryConfig",
    "ServerConfig",
    "StateConfig",
    "config_from_dict",
    "format_duration",
    "load_config",
    "parse_duration",
    "redacted_dict",
    "render_effective",
    "substitute_env",
]

CONFIG_ENV = "BK_OTEL_EXPORTER_CONFIG"
DEFAULT_CONFIG_PATH = "/etc/bk-otel-exporter/config.yaml"
#: the file systemd's ``LoadCredential=bk_app_secret:…`` creates in ``$CREDENTIALS_DIRECTORY``
CREDENTIAL_NAME = "bk_app_secret"

Loc = tuple[str | int, ...]


# ── durations ────────────────────────────────────────────────────────────────────────────────

_DURATION_HINT = "use 30s, 5m, 1h, 1d or seconds"
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_SECONDS = re.compile(rf"{_NUMBER}(?:[eE][+-]?\d+)?")
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|s|m|h|d)", re.IGNORECASE)


def _shown(value: object, limit: int = 40) -> str:
    """``repr`` of a non-secret input, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def parse_duration(value: object) -> float:
    """Seconds from ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"``, ``"1h30m"``, ``30`` or ``"30"``.

    Raises :class:`ValueError` (with the input quoted back: durations are never secrets) for
    anything else, including negative, infinite and boolean values.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        what = _shown(value) if isinstance(value, bool) else f"of type {type(value).__name__}"
        raise ValueError(f"invalid duration {what} ({_DURATION_HINT})")
    seconds = float(value) if not isinstance(value, str) else _duration_text(value)
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"invalid duration {_shown(value)} ({_DURATION_HINT})")
    if seconds < 0:
        raise ValueError(f"invalid duration {_shown(value)}: must not be negative")
    return seconds


def _duration_text(text: str) -> float | None:
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body[1:].lstrip() if body[:1] in ("-", "+") else body
    if _PLAIN_SECONDS.fullmatch(body):
        return sign * float(body)
    total, pos = 0.0, 0
    while pos < len(body):
        part = _DURATION_PART.match(body, pos)
        if part is None:
            return None
        unit = part[2].lower()
        # n/1000, not n*0.001: "250ms" must read back exactly what format_duration(0.25) wrote
        total += float(part[1]) / 1000 if unit == "ms" else float(part[1]) * _UNIT_SECONDS[unit]
        pos = part.end()
    return sign * total if pos else None


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` that :func:`parse_duration` reads back: ``"10m"``."""
    if seconds == int(seconds):
        whole = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole and whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    millis = seconds * 1000
    if abs(millis - round(millis)) < 1e-6:
        return f"{round(millis)}ms"
    return f"{seconds:.6f}".rstrip("0") + "s"


class _DurationTag:
    """Marks duration fields in ``Annotated`` metadata, so the rendering prints ``30s``, not ``30.0``."""


_DURATION_TAG = _DurationTag()
Duration = Annotated[float, BeforeValidator(parse_duration), _DURATION_TAG]


# ── ${VAR} substitution ──────────────────────────────────────────────────────────────────────

_REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\})")
_REFERENCE_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_UNSET_MARKER = "__bk_otel_exporter_unset_{}__"


@dataclass
class _Substituted:
    text: str
    #: ``(start, end)`` in ``text`` of every non-empty substituted value
    spans: set[tuple[int, int]] = field(default_factory=set)
    #: marker left in ``text`` -> (variable, line), for every reference to an unset variable
    unset: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: malformed references
    problems: list[str] = field(default_factory=list)


def _substitute(text: str, env: Mapping[str, str]) -> _Substituted:
    """Substitutes references; each one to an unset variable becomes a unique marker."""
    out: list[str] = []
    result = _Substituted("")
    length = pos = 0
    for ref in _REFERENCE.finditer(text):
        out.append(text[pos : ref.start()])
        length += ref.start() - pos
        pos = ref.end()
        line = text.count("\n", 0, ref.start()) + 1
        if ref[1]:
            value = "$"
        elif (body := _REFERENCE_BODY.fullmatch(ref[2])) is None:
            result.problems.append(
                f"config line {line}: invalid reference {ref[0]!r} (use ${{VAR}} or ${{VAR:-default}})"
            )
            value = ref[0]
        else:
            name, default = body[1], body[2]
            found = env.get(name)
            chosen = default if default is not None and not found else found
            if chosen is None:
                value = _UNSET_MARKER.format(len(result.unset))
                result.unset[value] = (name, line)
            else:
                value = chosen
                if value:
                    result.spans.add((length, length + len(value)))
        out.append(value)
        length += len(value)
    out.append(text[pos:])
    result.text = "".join(out)
    return result


def substitute_env(text: str, env: Mapping[str, str]) -> str:
    """Replaces ``${VAR}`` and ``${VAR:-default}`` (default when VAR is unset or empty); ``$$`` is ``$``.

    Raises :class:`ConfigError` naming every unset variable (and every malformed reference) at
    once. Substituted values are not scanned again; defaults cannot contain ``}``.
    """
    result = _substitute(text, env)
    lines: dict[str, list[int]] = {}
    for name, line in result.unset.values():
        lines.setdefault(name, []).append(line)
    problems = result.problems + [
        f"config line {', '.join(map(str, numbers))}: environment variable {name} is not set "
        f"(set it, or give a default: ${{{name}:-default}})"
        for name, numbers in lines.items()
    ]
    if problems:
        raise ConfigError(problems)
    return result.text


# ── YAML ─────────────────────────────────────────────────────────────────────────────────────

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_YAML_NULL = re.compile(r"~|null|Null|NULL")


_CUT_BY_COMMENT = re.compile(r"[ \t]+#")
_QUOTE_HINT = "quote the ${…} reference"


class _YamlLoader(yaml.SafeLoader):
    """``SafeLoader`` aware of substituted values: keeps whole ones as strings, reports duplicate keys.

    ``substituted`` maps the start of every substituted value in the text to its end.
    """

    def __init__(self, text: str, substituted: Mapping[int, int]) -> None:
        self.text = text
        self.substituted = substituted
        self.problems: list[str] = []
        super().__init__(text)

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        event = self.peek_event()
        start, end = event.start_mark.index, event.end_mark.index
        value_end = self.substituted.get(start)
        if event.tag is None and event.style is None and value_end is not None:
            if end == value_end and not _YAML_NULL.fullmatch(event.value):
                self.get_event()
                node = yaml.ScalarNode(_STR_TAG, event.value, event.start_mark, event.end_mark)
                if anchor is not None:
                    self.anchors[anchor] = node
                return node
            if end < value_end and _CUT_BY_COMMENT.match(self.text, end, value_end):
                self.problems.append(
                    f"config line {event.start_mark.line + 1}: a value taken from the environment contains "
                    f"' #', which YAML reads as the start of a comment ({_QUOTE_HINT})"
                )
        return super().compose_scalar_node(anchor)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in seen:
                    self.problems.append(
                        f"config line {key_node.start_mark.line + 1}: duplicate key {key_node.value!r}"
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(sub: _Substituted) -> tuple[Any, list[str]]:
    """The document and its non-fatal problems; raises :class:`ConfigError` on a syntax error.

    PyYAML's own messages quote the offending text, which may come from a secret: the lines
    built here keep only the position, and the problem only outside substituted values.
    """
    substituted = dict(sub.spans)
    loader: _YamlLoader | None = None
    try:
        loader = _YamlLoader(sub.text, substituted)
        return loader.get_single_data(), loader.problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"config line {mark.line + 1}, column {mark.column + 1}" if mark else "config"
        if mark is not None and any(start <= mark.index <= end for start, end in sub.spans):
            detail = f"YAML syntax error inside a value taken from the environment ({_QUOTE_HINT})"
        else:
            detail = f"YAML syntax error: {exc.problem or exc.context}"
        problem = f"{where}: {detail}"
    except yaml.reader.ReaderError as exc:
        line = sub.text.count("\n", 0, exc.position) + 1
        problem = f"config line {line}: a control character that YAML does not allow"
    except yaml.YAMLError as exc:
        problem = f"config: not valid YAML ({type(exc).__name__})"
    finally:
        if loader is not None:
            loader.dispose()
    lines = [f"config line {line}: environment variable {name} is not set" for name, line in sub.unset.values()]
    raise ConfigError([problem, *sub.problems, *lines])


# ── shared validators ────────────────────────────────────────────────────────────────────────


def _field_error(field_name: str, message: str) -> PydanticCustomError:
    """A problem found by a section-level check, reported at ``<section>.<field_name>``."""
    return PydanticCustomError("config_field", "{message}", {"field": field_name, "message": message})


def _empty_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _split_list(value: object) -> object:
    """``"a, b"`` -> ``["a", "b"]`` and a lone scalar -> a one-item list (handy with ``${VAR}``)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return value


def _dedupe(items: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _existing_file(value: str | None, info: ValidationInfo) -> str | None:
    """An absolute path to an existing file; relative paths resolve against the config's directory."""
    if value is None:
        return None
    path = Path(value).expanduser()
    base_dir = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    path = path.absolute()
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return str(path)


FilePath = Annotated[str | None, BeforeValidator(_empty_to_none), AfterValidator(_existing_file)]


def _http_url(value: str, *, example: str) -> str:
    """An http(s) URL without credentials, trailing ``/`` removed. Never quotes the input back."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"must be an http:// or https:// URL such as {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL such as {example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials")
    return value.strip().rstrip("/")


def _alarm_id(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return str(int(value.strip()))
    raise ValueError(f"not an alarm ID (digits expected, got {_shown(value)})")


def _condition(value: dict[str, Any]) -> dict[str, Any]:
    if "key" not in value or "value" not in value:
        raise ValueError("needs 'key' and 'value' (e.g. {key: severity, value: [1], method: eq})")
    return value


AlarmId = Annotated[str, BeforeValidator(_alarm_id)]
AlertStatus = Literal[
    "ABNORMAL",
    "RECOVERED",
    "CLOSED",
    "SHIELDED_ABNORMAL",
    "NOT_SHIELDED_ABNORMAL",
    "MINE",
    "MY_ASSIGNEE",
    "MY_APPOINTEE",
    "MY_FOLLOW",
]
Condition = Annotated[dict[str, Any], AfterValidator(_condition)]
_DEFAULT_STATUS: tuple[AlertStatus, ...] = ("ABNORMAL", "RECOVERED", "CLOSED")


# ── the model ────────────────────────────────────────────────────────────────────────────────


class _Section(BaseModel):
    """Frozen, unknown keys forbidden, and ``null`` (or a missing section) means "the default"."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            return data
        fields = cls.model_fields
        kept = {
            key: value
            for key, value in data.items()
            if value is not None or key not in fields or _accepts_none(fields[key].annotation)
        }
        return cls._fill_defaults(kept)

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Hook for defaults that depend on other options."""
        return data


def _accepts_none(annotation: Any) -> bool:
    return annotation is None or type(None) in getattr(annotation, "__args__", ())


def _check_backoff(initial: float, maximum: float) -> None:
    if maximum < initial:
        raise _field_error("max_backoff", f"must be ≥ initial_backoff ({format_duration(initial)})")


class RetryConfig(_Section):
    """``bkmonitor.retry``: retries of one BlueKing API call."""

    max_attempts: int = Field(default=5, ge=1, le=20)
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 30.0

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryConfig:
        _check_backoff(self.initial_backoff, self.max_backoff)
        return self


class BkMonitorConfig(_Section):
    """``bkmonitor``: where BlueKing is and who we are.

    ``app_secret`` is always set on a config built by :func:`load_config` / :func:`config_from_dict`
    (read from ``app_secret_file`` when that is how it was given); plain ``model_validate`` leaves
    it as written.
    """

    base_url: str
    app_code: str = Field(min_length=1)
    app_secret: Annotated[SecretStr | None, BeforeValidator(_empty_to_none)] = None
    app_secret_file: Annotated[str | None, BeforeValidator(_empty_to_none)] = None
    username: Annotated[str | None, BeforeValidator(_empty_to_none)] = "admin"
    bk_token: Annotated[SecretStr | None, BeforeValidator(_empty_to_none)] = None
    auth_in: Annotated[Literal["header", "params"], BeforeValidator(_lower)] = "header"
    timezone: str = "Asia/Shanghai"
    language: str = Field(default="en", min_length=1)
    timeout: Duration = Field(default=30.0, gt=0)
    verify_tls: bool = True
    ca_file: FilePath = None
    max_concurrency: int = Field(default=8, ge=1, le=256)
    rate_limit: float = Field(default=20.0, ge=0)
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value, example="https://paas.example.com")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (ValueError, KeyError, OSError):
            hint = "use an IANA name such as Asia/Shanghai"
            raise ValueError(f"unknown time zone {_shown(value)} ({hint})") from None
        return value

    @model_validator(mode="after")
    def _identity(self) -> BkMonitorConfig:
        if self.username is None and self.bk_token is None:
            raise _field_error("username", "required (set username or bk_token)")
        return self


class RecentConfig(_Section):
    """``alarms.recent``: discovery of alarms through ``search_alert``."""

    enabled: bool = False
    bk_biz_ids: Annotated[tuple[int, ...], BeforeValidator(_split_list)] = ()
    lookback: Duration = Field(default=3600.0, gt=0)
    overlap: Duration = 600.0
    status: Annotated[tuple[AlertStatus, ...], BeforeValidator(_split_list)] = _DEFAULT_STATUS
    query_string: str = ""
    conditions: tuple[Condition, ...] = ()
    page_size: int = Field(default=500, ge=1, le=5000)
    interval: Duration = Field(default=60.0, gt=0)

    @field_validator("status", mode="before")
    @classmethod
    def _status_case(cls, value: Any) -> Any:
        return [_upper(item) for item in value] if isinstance(value, (list, tuple)) else value

    @field_validator("bk_biz_ids", "status")
    @classmethod
    def _unique(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        return _dedupe(value)

    @model_validator(mode="after")
    def _businesses(self) -> RecentConfig:
        if self.enabled and not self.bk_biz_ids:
            raise _field_error("bk_biz_ids", "required when alarms.recent.enabled is true")
        return self


class AlarmsConfig(_Section):
    """``alarms``: which alarms are followed."""

    ids: Annotated[tuple[AlarmId, ...], BeforeValidator(_split_list)] = ()
    recent: RecentConfig = Field(default_factory=RecentConfig)

    @field_validator("ids")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _dedupe(value)


class PollConfig(_Section):
    """``poll``: how often each followed alarm's event log is read, and when to stop."""

    interval: Duration = Field(default=30.0, gt=0)
    retire_after: Duration = 600.0
    jitter: float = Field(default=0.1, ge=0, le=1)
    full_reread_interval: Duration = 1800.0
    retired_retention: Duration = 30 * 86400.0


class ExportRetryConfig(_Section):
    """``export.retry``: backoff between failed export attempts of queued records."""

    initial_backoff: Duration = 1.0
    max_backoff: Duration = 60.0

    @model_validator(mode="after")
    def _backoff_order(self) -> ExportRetryConfig:
        _check_backoff(self.initial_backoff, self.max_backoff)
        return self


_DEFAULT_ENDPOINTS = {"grpc": "http://localhost:4317", "http/protobuf": "http://localhost:4318"}


class ExportConfig(_Section):
    """``export``: the OTLP destination. ``headers`` values are secrets."""

    signals: Annotated[tuple[Literal["logs", "spans"], ...], BeforeValidator(_split_list)] = Field(
        default=("logs",), min_length=1
    )
    endpoint: str
    protocol: Annotated[Literal["grpc", "http/protobuf"], BeforeValidator(_lower)] = "grpc"
    headers: Mapping[str, str] = Field(default_factory=dict, repr=False)  # values are secrets
    compression: Annotated[Literal["gzip", "none"], BeforeValidator(_lower)] = "gzip"
    timeout: Duration = Field(default=10.0, gt=0)
    insecure: Annotated[bool | None, BeforeValidator(_empty_to_none)] = None
    ca_file: FilePath = None
    client_cert_file: FilePath = None
    client_key_file: FilePath = None
    batch_size: int = Field(default=512, ge=1, le=10000)
    service_name: str = Field(default="bk-otel-exporter", min_length=1)
    resource_attributes: Mapping[str, str] = Field(default_factory=dict)
    console: bool = False
    retry: ExportRetryConfig = Field(default_factory=ExportRetryConfig)

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "endpoint" not in data:
            protocol = data.get("protocol")
            protocol = protocol.strip().lower() if isinstance(protocol, str) else "grpc"
            data["endpoint"] = _DEFAULT_ENDPOINTS.get(protocol, _DEFAULT_ENDPOINTS["grpc"])
        return data

    @field_validator("signals", mode="before")
    @classmethod
    def _signals_case(cls, value: Any) -> Any:
        return [_lower(item) for item in value] if isinstance(value, (list, tuple)) else value

    @field_validator("signals")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _dedupe(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _http_url(value, example="http://localhost:4317")

    @field_validator("headers", "resource_attributes")
    @classmethod
    def _names(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        if any(not name.strip() for name in value):
            raise ValueError("names must not be empty")
        return value

    @model_validator(mode="after")
    def _client_pair(self) -> ExportConfig:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            missing = "client_key_file" if self.client_key_file is None else "client_cert_file"
            other = "client_cert_file" if missing == "client_key_file" else "client_key_file"
            raise _field_error(missing, f"required together with {other}")
        return self


class StateConfig(_Section):
    """``state``: the embedded store (``path``), or a shared PostgreSQL store (``url``)."""

    path: str = Field(default="./bk-otel-exporter.db", min_length=1)
    url: Annotated[SecretStr | None, BeforeValidator(_empty_to_none)] = None
    lease: Duration = Field(default=30.0, gt=0)
    max_queued_records: int = Field(default=1_000_000, ge=1)

    @field_validator("url")
    @classmethod
    def _postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme, sep, rest = value.get_secret_value().partition("://")
            if not sep or scheme not in ("postgresql", "postgres") or not rest:
                raise ValueError("must be a postgresql:// or postgres:// URL")
        return value


_LISTEN = re.compile(r"(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>\d{1,5})")


def _parse_listen(text: str) -> tuple[str, int]:
    match = _LISTEN.fullmatch(text)
    hint = 'must be host:port such as 127.0.0.1:9464 or [::1]:9464, or "" to disable'
    if match is None:
        raise ValueError(hint)
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"].split("%")[0])
        except ValueError:
            raise ValueError(hint) from None
    port = int(match["port"])
    if port > 65535:
        raise ValueError("port must be 0..65535")
    return (match["ipv6"] or match["host"] or "", port)


class ServerConfig(_Section):
    """``server``: ``/healthz``, ``/readyz`` and ``/metrics``."""

    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        value = value.strip()
        if value:
            _parse_listen(value)
        return value

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """``(host, port)`` to bind (IPv6 without brackets, ``""`` = every interface); ``None`` = disabled."""
        return _parse_listen(self.listen) if self.listen else None


#: the plugin each kind uses when the config does not name one (today's behaviour)
DEFAULT_PLUGINS = {"source": "bkmonitor", "mapper": "default", "sink": "otlp"}


def _plugin_options(value: object) -> object:
    if value is None or isinstance(value, BaseModel):
        return {} if value is None else value
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of the plugin's options")
    return dict(value)


class PluginConfig(_Section):
    """``plugins.<kind>``: an installed plugin, by entry-point name, and its options.

    ``options`` is validated by the plugin's own model while the config is loaded; a config
    built by :func:`load_config` / :func:`config_from_dict` holds that model's instance here.
    """

    name: str = Field(min_length=1)
    options: Annotated[Any, BeforeValidator(_plugin_options)] = Field(default_factory=dict)


class SourcePluginConfig(PluginConfig):
    name: str = Field(default=DEFAULT_PLUGINS["source"], min_length=1)


class MapperPluginConfig(PluginConfig):
    name: str = Field(default=DEFAULT_PLUGINS["mapper"], min_length=1)


class SinkPluginConfig(PluginConfig):
    name: str = Field(default=DEFAULT_PLUGINS["sink"], min_length=1)


class PluginsConfig(_Section):
    """``plugins``: where records come from, how they are mapped, where they go (``bk-otel-exporter plugins``)."""

    source: SourcePluginConfig = Field(default_factory=SourcePluginConfig)
    mapper: MapperPluginConfig = Field(default_factory=MapperPluginConfig)
    sink: SinkPluginConfig = Field(default_factory=SinkPluginConfig)


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _log_level(value: object) -> object:
    value = _upper(value)
    return "WARNING" if value == "WARN" else value


class LoggingConfig(_Section):
    """``logging``: the daemon's own log lines (stderr)."""

    level: Annotated[LogLevel, BeforeValidator(_log_level)] = "INFO"
    format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"


class Config(_Section):
    """The whole configuration file. Build it with :func:`load_config` or :func:`config_from_dict`."""

    bkmonitor: BkMonitorConfig
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)
    poll: PollConfig = Field(default_factory=PollConfig)
    export: ExportConfig = Field(default_factory=lambda: ExportConfig.model_validate({}))
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    shutdown_timeout: Duration = Field(default=15.0, gt=0)

    _source_path: Path | None = PrivateAttr(default=None)

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        # A missing bkmonitor section is reported option by option, like an empty one.
        data.setdefault("bkmonitor", {})
        return data

    @property
    def source_path(self) -> Path | None:
        """The file this config was loaded from (``None`` for :func:`config_from_dict`); not an option."""
        return self._source_path

    def secrets(self) -> list[str]:
        """Every secret value in the config: none of them may appear in any output."""
        found = [s.get_secret_value() for s in (self.bkmonitor.app_secret, self.bkmonitor.bk_token) if s]
        found.extend(value for value in self.export.headers.values() if value)
        if self.state.url is not None:
            found.extend(url_passwords(self.state.url.get_secret_value()))
        for kind in DEFAULT_PLUGINS:
            found.extend(_model_secrets(getattr(self.plugins, kind).options))
        return [value for value in dict.fromkeys(found) if value]


def _model_secrets(value: Any) -> list[str]:
    """Every SecretStr value inside a (plugin options) model, mapping or list."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [secret for item in value for secret in _model_secrets(item)]
    return []


# ── OTEL_* environment fallbacks ─────────────────────────────────────────────────────────────


def _pairs(text: str, variable: str) -> dict[str, str]:
    """``k=v,k2=v2`` with URL-encoded keys and values (the OTel format). Never quotes a value back."""
    pairs: dict[str, str] = {}
    for number, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{variable}: entry {number} is not key=value")
        pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def _millis(text: str, variable: str) -> float:
    try:
        millis = float(text)
    except ValueError:
        millis = math.nan
    if not math.isfinite(millis) or millis <= 0:
        raise ValueError(f"{variable} must be a positive number of milliseconds (got {_shown(text)})")
    return millis / 1000


def _boolean(text: str, variable: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"{variable} must be true or false (got {_shown(text)})")
    return text.lower() == "true"


def _as_is(text: str, variable: str) -> str:
    return text


def _absolute(text: str, variable: str) -> str:
    return os.path.abspath(os.path.expanduser(text))  # relative to the working directory, not the file


#: export option, its environment variable, and how to read the variable
_OTEL_FALLBACKS: tuple[tuple[str, str, Callable[[str, str], Any]], ...] = (
    ("endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", _as_is),
    ("protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", _as_is),
    ("headers", "OTEL_EXPORTER_OTLP_HEADERS", _pairs),
    ("compression", "OTEL_EXPORTER_OTLP_COMPRESSION", _as_is),
    ("timeout", "OTEL_EXPORTER_OTLP_TIMEOUT", _millis),
    ("insecure", "OTEL_EXPORTER_OTLP_INSECURE", _boolean),
    ("ca_file", "OTEL_EXPORTER_OTLP_CERTIFICATE", _absolute),
    ("client_cert_file", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", _absolute),
    ("client_key_file", "OTEL_EXPORTER_OTLP_CLIENT_KEY", _absolute),
    ("service_name", "OTEL_SERVICE_NAME", _as_is),
)


@dataclass(frozen=True)
class _Problem:
    loc: Loc
    text: str

    def line(self) -> str:
        return f"{'.'.join(str(part) for part in self.loc)}: {self.text}" if self.loc else self.text


def _apply_otel_env(tree: dict[Any, Any], env: Mapping[str, str], problems: list[_Problem]) -> dict[Loc, str]:
    """Fills ``export`` options the file leaves out (or null); returns option path -> variable used."""
    export = tree.get("export")
    if export is None:
        export = {}
    if not isinstance(export, dict):
        return {}  # validation reports the section itself
    used: dict[Loc, str] = {}
    for option, variable, read in _OTEL_FALLBACKS:
        text = env.get(variable, "").strip()
        if not text or export.get(option) is not None:
            continue
        try:
            export[option] = read(text, variable)
        except ValueError as exc:
            problems.append(_Problem(("export", option), str(exc)))
            continue
        used[("export", option)] = variable
    text = env.get("OTEL_RESOURCE_ATTRIBUTES", "").strip()
    configured = export.get("resource_attributes")
    if text and (configured is None or isinstance(configured, dict)):
        try:
            export["resource_attributes"] = {**_pairs(text, "OTEL_RESOURCE_ATTRIBUTES"), **(configured or {})}
        except ValueError as exc:
            problems.append(_Problem(("export", "resource_attributes"), str(exc)))
    if export:
        tree["export"] = export
    return used


# ── app_secret ───────────────────────────────────────────────────────────────────────────────


def _resolve_app_secret(
    section: object, env: Mapping[str, str], base_dir: Path | None, problems: list[_Problem]
) -> tuple[str, str | None] | None:
    """``(secret, file it came from)``, or ``None`` with the problem recorded.

    Runs on the raw section so that a missing secret is reported together with every other
    problem; type errors of the two options are left to validation.
    """
    section = {} if section is None else section
    if not isinstance(section, Mapping):
        return None
    secret = _empty_to_none(section.get("app_secret"))
    secret_file = _empty_to_none(section.get("app_secret_file"))
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value() or None
    if not isinstance(secret, (str, type(None))) or not isinstance(secret_file, (str, type(None))):
        return None
    if secret is not None and secret_file is not None:
        problems.append(_Problem(("bkmonitor", "app_secret_file"), "set app_secret or app_secret_file, not both"))
        return None
    if secret is not None:
        return secret, None
    credentials = env.get("CREDENTIALS_DIRECTORY") or None
    if secret_file is not None:
        path = Path(secret_file).expanduser()
        base = Path(credentials) if credentials else base_dir
        if not path.is_absolute() and base is not None:
            path = base / path
    elif credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        path = Path(credentials) / CREDENTIAL_NAME
    else:
        problems.append(_Problem(("bkmonitor", "app_secret"), "required (set app_secret or app_secret_file)"))
        return None
    path = path.absolute()
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        problems.append(_Problem(("bkmonitor", "app_secret_file"), f"cannot read {path}: {exc.strerror or exc}"))
        return None
    except UnicodeDecodeError:
        problems.append(_Problem(("bkmonitor", "app_secret_file"), f"cannot read {path}: not UTF-8 text"))
        return None
    if not value:
        problems.append(_Problem(("bkmonitor", "app_secret_file"), f"{path} is empty"))
        return None
    return value, str(path)


# ── pydantic errors -> problem lines ─────────────────────────────────────────────────────────

_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", "≥"), "less_than": ("lt", "<")}
_BOUNDS["less_than_equal"] = ("le", "≤")
_KINDS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "mapping_type": "must be a mapping",
    "model_type": "must be a mapping of options",
    "model_attributes_type": "must be a mapping of options",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "iterable_type": "must be a list",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _number(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _section_model(loc: Loc, root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The model class found at option path ``loc`` (from ``root``, default the whole config), or
    ``None`` when ``loc`` is not a section."""
    model: type[BaseModel] = root or Config
    for part in loc:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = info.annotation if info is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _unknown_option(loc: Loc, root: type[BaseModel] | None = None) -> str:
    model = _section_model(loc[:-1], root)
    names = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(str(loc[-1]).lower(), names, n=1, cutoff=0.6)
    if close:
        return f"unknown option (did you mean {close[0]!r}?)"
    return f"unknown option (valid: {', '.join(names)})" if names else "unknown option"


def _describe(err: Mapping[str, Any], loc: Loc, root: type[BaseModel] | None = None) -> str:
    """An operator's line for one pydantic error; quotes the input back only for enumerations."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return _unknown_option(loc, root)
    if kind == "literal_error":
        choices = ", ".join(repr(c) for c in re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        given = err.get("input")
        got = f" (got {_shown(given)})" if isinstance(given, str) else ""
        return f"must be one of {choices}{got}"
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"must be {sign} {_number(ctx.get(key))}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if kind in _KINDS:
        return _KINDS[kind]
    message = str(err["msg"])
    return message[:1].lower() + message[1:]


def _validation_problems(exc: ValidationError, from_env: Mapping[Loc, str]) -> list[_Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        if err["type"] == "config_field":
            problems.append(_Problem((*loc, err["ctx"]["field"]), str(err["ctx"]["message"])))
            continue
        text = _describe(err, loc)
        if loc and loc[-1] == "[key]":
            loc, text = loc[:-1], f"name {text}"
        variable = next((var for path, var in from_env.items() if loc[: len(path)] == path), None)
        problems.append(_Problem(loc, f"{text} (from {variable})" if variable else text))
    return problems


def _plugin_problems(section: object, problems: list[_Problem]) -> dict[str, BaseModel]:
    """Loads the plugins the raw ``plugins`` section selects and validates their options.

    Returns the validated options by kind; what cannot be checked here (a section or name of the
    wrong type) is left to the model validation, which reports it.
    """
    from exporter.errors import PluginError
    from exporter.plugins import load_plugin, validate_options

    section = {} if section is None else section
    if not isinstance(section, Mapping):
        return {}
    validated: dict[str, BaseModel] = {}
    for kind, default in DEFAULT_PLUGINS.items():
        ref = section.get(kind)
        ref = {} if ref is None else ref
        if not isinstance(ref, Mapping):
            continue
        name = default if ref.get("name") is None else ref.get("name")
        options = ref.get("options")
        if not isinstance(name, str) or not name or not (options is None or isinstance(options, Mapping)):
            continue
        try:
            plugin = load_plugin(kind, name)
        except PluginError as exc:
            problems.append(_Problem(("plugins", kind, "name"), str(exc)))
            continue
        try:
            validated[kind] = validate_options(plugin, options)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc: Loc = tuple(err["loc"])
                text = _describe(err, loc, plugin.options)
                if loc and loc[-1] == "[key]":
                    loc, text = loc[:-1], f"name {text}"
                problems.append(_Problem(("plugins", kind, "options", *loc), text))
    return validated


def _rank(loc: Loc) -> list[int]:
    """Sort key: the options' positions in the model (file-level lines, without a path, first)."""
    rank: list[int] = []
    model: type[BaseModel] | None = Config
    for part in loc:
        names = list(model.model_fields) if model is not None else []
        if part in names:
            rank.append(names.index(str(part)))
        else:
            rank.append(part if isinstance(part, int) else len(names))
        model = _section_model(loc[: len(rank)])
    return rank


def _sorted_lines(problems: list[_Problem]) -> list[str]:
    ranked = sorted(problems, key=lambda problem: _rank(problem.loc))
    return list(dict.fromkeys(problem.line() for problem in ranked))


# ── loading ──────────────────────────────────────────────────────────────────────────────────


def _plain(value: Any) -> Any:
    """A private, mutable copy of mappings and lists (the fallbacks edit the tree in place)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _take_unset(tree: Any, unset: Mapping[str, tuple[str, int]], loc: Loc = ()) -> list[tuple[Loc, str]]:
    """Finds values holding an unset-variable marker, nulls them, and returns (option path, variable)."""
    found: list[tuple[Loc, str]] = []
    items: list[tuple[Any, Any]] = (
        list(tree.items()) if isinstance(tree, dict) else list(enumerate(tree)) if isinstance(tree, list) else []
    )
    for key, value in items:
        names = [name for marker, (name, _) in unset.items() if isinstance(value, str) and marker in value]
        key_names = [name for marker, (name, _) in unset.items() if isinstance(key, str) and marker in key]
        if key_names:
            del tree[key]
            found.extend(((*loc, f"${{{name}}}"), name) for name in key_names)
        elif names:
            tree[key] = None
            found.extend(((*loc, key), name) for name in names)
        else:
            found.extend(_take_unset(value, unset, (*loc, key)))
    return found


def _build(
    tree: Any,
    *,
    env: Mapping[str, str],
    base_dir: Path | None,
    source: Path | None,
    problems: list[_Problem],
    unset: Mapping[str, tuple[str, int]] | None = None,
) -> Config:
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        kind = "a list" if isinstance(tree, list) else f"a {type(tree).__name__}"
        raise ConfigError(
            [
                *(p.line() for p in problems),
                f"config: must be a mapping of sections (bkmonitor:, …), not {kind}",
            ]
        )
    not_set = _take_unset(tree, unset) if unset else []
    from_env = _apply_otel_env(tree, env, problems)
    secret = _resolve_app_secret(tree.get("bkmonitor"), env, base_dir, problems)
    plugin_options = _plugin_problems(tree.get("plugins"), problems)
    config: Config | None = None
    try:
        config = Config.model_validate(tree, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, from_env))
    # A null left by an unset variable says nothing new: report the variable instead.
    problems = [p for p in problems if not any(p.loc[: len(loc)] == loc for loc, _ in not_set)]
    problems.extend(_Problem(loc, f"environment variable {name} is not set") for loc, name in not_set)
    if problems or config is None:
        raise ConfigError(_sorted_lines(problems))
    if secret is not None:
        value, secret_file = secret
        bkmonitor = config.bkmonitor.model_copy(update={"app_secret": SecretStr(value), "app_secret_file": secret_file})
        config = config.model_copy(update={"bkmonitor": bkmonitor})
    if plugin_options:
        refs = {
            kind: getattr(config.plugins, kind).model_copy(update={"options": options})
            for kind, options in plugin_options.items()
        }
        config = config.model_copy(update={"plugins": config.plugins.model_copy(update=refs)})
    config._source_path = source
    return config


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Reads, substitutes, parses and validates the config file.

    ``path`` defaults to ``$BK_OTEL_EXPORTER_CONFIG``, else ``/etc/bk-otel-exporter/config.yaml``;
    ``env`` (default :data:`os.environ`) provides ``${VAR}`` values, the ``OTEL_*`` fallbacks and
    ``$CREDENTIALS_DIRECTORY``. Raises :class:`ConfigError` listing every problem.
    """
    env = os.environ if env is None else env
    source = Path(path if path is not None else env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH).absolute()
    try:
        text = source.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([f"config: cannot read {source}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config: cannot read {source}: not UTF-8 text (byte {exc.start})"]) from None
    substituted = _substitute(text, env)
    tree, yaml_problems = _parse_yaml(substituted)
    problems = [_Problem((), line) for line in (*substituted.problems, *yaml_problems)]
    return _build(tree, env=env, base_dir=source.parent, source=source, problems=problems, unset=substituted.unset)


def config_from_dict(
    raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> Config:
    """The same validation as :func:`load_config` for an already parsed mapping (no ``${VAR}``).

    Relative paths resolve against ``base_dir`` (default: the working directory).
    """
    env = os.environ if env is None else env
    return _build(_plain(raw), env=env, base_dir=base_dir, source=None, problems=[])


# ── rendering ────────────────────────────────────────────────────────────────────────────────


def _plain_value(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Mapping):
        return {str(key): _plain_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _redacted_model(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[name] = _redacted_model(value)
        elif _DURATION_TAG in info.metadata:
            out[name] = format_duration(value)
        elif isinstance(model, ExportConfig) and name == "headers":
            out[name] = {str(key): MASK for key in value}
        elif isinstance(model, StateConfig) and name == "url" and value is not None:
            out[name] = redact_url(value.get_secret_value())
        else:
            out[name] = _plain_value(value)
    return out


def redacted_dict(config: Config) -> dict[str, Any]:
    """The effective config as plain data, secrets replaced by ``"***"``, durations as ``"30s"``."""
    return _redacted_model(config)


def render_effective(config: Config) -> str:
    """YAML of :func:`redacted_dict` (what ``check-config`` prints); loads back with ``yaml.safe_load``."""
    return yaml.safe_dump(redacted_dict(config), sort_keys=False, allow_unicode=True, default_flow_style=False)
