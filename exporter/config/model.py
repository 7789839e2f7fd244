"""The section models and :class:`Config`: frozen, unknown keys forbidden, ``null`` = the default.

Every section and every option is optional except ``bkmonitor.base_url``, ``bkmonitor.app_code``
and a secret (``app_secret``, ``app_secret_file`` or the systemd credential; the loader checks
that one). Relative file paths resolve against ``base_dir`` of the validation context (the config
file's directory). ``plugins.<kind>.options`` is checked here only for its shape: the loader
validates it with the selected plugin's own model (:func:`exporter.plugins.check_section`) and
stores that model's instance.

Validate through :func:`exporter.config.load_config` or :func:`exporter.config.config_from_dict`:
plain ``Config.model_validate`` skips the ``OTEL_*`` fallbacks, the secret and the plugins.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, PrivateAttr, SecretStr, field_validator, model_validator

from exporter.config.destinations import DEFAULT_DESTINATION, DestinationConfig, FilterConfig
from exporter.config.fields import (
    DEFAULT_STATUS,
    AlarmId,
    AlertStatus,
    Condition,
    FilePath,
    Section,
    check_backoff,
    dedupe,
    empty_to_none,
    field_error,
    http_url,
    lower,
    split_list,
    upper,
)
from exporter.config.otlp import OtlpOptions, merge_signal_overrides
from exporter.config.types import Duration, ListenAddress, Size, parse_listen, shown
from exporter.plugins import DEFAULTS, KINDS
from exporter.redact import url_passwords

__all__ = [
    "AlarmsConfig",
    "BkMonitorConfig",
    "Config",
    "ExportConfig",
    "ExportRetryConfig",
    "LoggingConfig",
    "MapperPluginConfig",
    "PluginConfig",
    "PluginsConfig",
    "PollConfig",
    "RecentConfig",
    "RetryConfig",
    "ServerConfig",
    "SinkPluginConfig",
    "SourcePluginConfig",
    "StateConfig",
]


#: Default request deadlines: above the ESB's 30 s and the gateway's 60 s backend timeouts, so the
#: client never abandons a scan the server will finish.
ESB_TIMEOUT = 35.0
APIGW_TIMEOUT = 65.0


class RetryConfig(Section):
    """``bkmonitor.retry``: retries of one BlueKing API call."""

    max_attempts: int = Field(default=5, ge=1, le=20)
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 30.0

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryConfig:
        check_backoff(self.initial_backoff, self.max_backoff)
        return self


class BkMonitorConfig(Section):
    """``bkmonitor``: where BlueKing is and who we are.

    ``app_secret`` is always set on a config built by :func:`load_config` / :func:`config_from_dict`
    (read from ``app_secret_file`` when that is how it was given); plain ``model_validate`` leaves
    it as written.
    """

    base_url: str
    api: Annotated[Literal["esb", "apigw"], BeforeValidator(lower)] = "esb"
    stage: str = Field(default="prod", min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    tenant_id: Annotated[str | None, BeforeValidator(empty_to_none)] = None
    app_code: str = Field(min_length=1)
    app_secret: Annotated[SecretStr | None, BeforeValidator(empty_to_none)] = None
    app_secret_file: Annotated[str | None, BeforeValidator(empty_to_none)] = None
    username: Annotated[str | None, BeforeValidator(empty_to_none)] = "admin"
    bk_token: Annotated[SecretStr | None, BeforeValidator(empty_to_none)] = None
    access_token: Annotated[SecretStr | None, BeforeValidator(empty_to_none)] = None
    auth_in: Annotated[Literal["header", "params"], BeforeValidator(lower)] = "header"
    timezone: str = "Asia/Shanghai"
    language: str = Field(default="en", min_length=1)
    #: a total deadline per request; None = 35 s on the ESB, 65 s on the gateway (see effective_timeout)
    timeout: Annotated[Duration | None, BeforeValidator(empty_to_none)] = Field(default=None, gt=0)
    max_response_bytes: Size = Field(default=64 << 20, ge=1024)
    verify_tls: bool = True
    ca_file: FilePath = None
    max_concurrency: int = Field(default=8, ge=1, le=256)
    rate_limit: float = Field(default=20.0, ge=0)
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return http_url(value, example="https://paas.example.com")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (ValueError, KeyError, OSError):
            hint = "use an IANA name such as Asia/Shanghai"
            raise ValueError(f"unknown time zone {shown(value)} ({hint})") from None
        return value

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value)):
            raise ValueError("must be a tenant id without spaces or control characters")
        return value

    @model_validator(mode="after")
    def _identity(self) -> BkMonitorConfig:
        if self.username is None and self.bk_token is None and self.access_token is None:
            raise field_error("username", "required (set username, bk_token or access_token)")
        if self.api == "apigw" and self.auth_in == "params":
            raise field_error(
                "auth_in",
                "params is not accepted with bkmonitor.api: apigw (the bk-monitor gateway reads credentials "
                "only from the X-Bkapi-Authorization header): use auth_in: header",
            )
        return self

    @property
    def effective_timeout(self) -> float:
        """``timeout``, or the default above the server's own limit (ESB 30 s, gateway 60 s)."""
        if self.timeout is not None:
            return self.timeout
        return APIGW_TIMEOUT if self.api == "apigw" else ESB_TIMEOUT


class RecentConfig(Section):
    """``alarms.recent``: discovery of alarms through ``search_alert``."""

    enabled: bool = False
    bk_biz_ids: Annotated[tuple[int, ...], BeforeValidator(split_list)] = ()
    lookback: Duration = Field(default=3600.0, gt=0)
    overlap: Duration = 600.0
    status: Annotated[tuple[AlertStatus, ...], BeforeValidator(split_list)] = DEFAULT_STATUS
    query_string: str = ""
    conditions: tuple[Condition, ...] = ()
    page_size: int = Field(default=500, ge=1, le=5000)
    interval: Duration = Field(default=60.0, gt=0)

    @field_validator("status", mode="before")
    @classmethod
    def _status_case(cls, value: Any) -> Any:
        return [upper(item) for item in value] if isinstance(value, (list, tuple)) else value

    @field_validator("bk_biz_ids", "status")
    @classmethod
    def _unique(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        return dedupe(value)

    @model_validator(mode="after")
    def _businesses(self) -> RecentConfig:
        if self.enabled and not self.bk_biz_ids:
            raise field_error("bk_biz_ids", "required when alarms.recent.enabled is true")
        return self


class AlarmsConfig(Section):
    """``alarms``: which alarms are followed."""

    ids: Annotated[tuple[AlarmId, ...], BeforeValidator(split_list)] = ()
    recent: RecentConfig = Field(default_factory=RecentConfig)

    @field_validator("ids")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return dedupe(value)


class PollConfig(Section):
    """``poll``: how often each followed alarm's event log is read, and when to stop."""

    interval: Duration = Field(default=30.0, gt=0)
    retire_after: Duration = 600.0
    jitter: float = Field(default=0.1, ge=0, le=1)
    full_reread_interval: Duration = 1800.0
    retired_retention: Duration = 30 * 86400.0


class ExportRetryConfig(Section):
    """``export.retry``: backoff between failed export attempts of queued records."""

    initial_backoff: Duration = 1.0
    max_backoff: Duration = 60.0

    @model_validator(mode="after")
    def _backoff_order(self) -> ExportRetryConfig:
        check_backoff(self.initial_backoff, self.max_backoff)
        return self


class ExportConfig(OtlpOptions):
    """``export``: the default destination (OTLP keys from :class:`OtlpOptions`); ``headers`` values
    are secrets. ``logs`` / ``spans`` hold the OTLP keys for one signal: ``export``'s, overridden by
    what the file (or ``OTEL_EXPORTER_OTLP_LOGS_*`` / ``_TRACES_*``) says for that signal."""

    signals: Annotated[tuple[Literal["logs", "spans"], ...], BeforeValidator(split_list)] = Field(
        default=("logs",), min_length=1
    )
    filter: FilterConfig = Field(default_factory=FilterConfig)
    logs: OtlpOptions | None = None
    spans: OtlpOptions | None = None
    service_name: str = Field(default="bk-otel-exporter", min_length=1)
    resource_attributes: Mapping[str, str] = Field(default_factory=dict)
    console: bool = False
    retry: ExportRetryConfig = Field(default_factory=ExportRetryConfig)

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super()._fill_defaults(data)
        return merge_signal_overrides(data)

    @field_validator("signals", mode="before")
    @classmethod
    def _signals_case(cls, value: Any) -> Any:
        return [lower(item) for item in value] if isinstance(value, (list, tuple)) else value

    @field_validator("signals")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return dedupe(value)

    @field_validator("resource_attributes")
    @classmethod
    def _attribute_names(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        if any(not name.strip() for name in value):
            raise ValueError("names must not be empty")
        return value

    def for_signal(self, signal: str) -> OtlpOptions:
        """The OTLP keys that apply to ``signal`` (``logs`` or ``spans``)."""
        override = self.logs if signal == "logs" else self.spans
        return override if override is not None else self


class StateConfig(Section):
    """``state``: the embedded store (``path``), or a shared PostgreSQL store (``url``)."""

    path: str = Field(default="./bk-otel-exporter.db", min_length=1)
    url: Annotated[SecretStr | None, BeforeValidator(empty_to_none)] = None
    lease: Duration = Field(default=30.0, gt=0)
    max_queued_records: int = Field(default=1_000_000, ge=1)
    #: how long a parked record (refused by the backend) is kept for ``requeue``; 0 = for ever
    parked_retention: Duration = Field(default=30 * 86400.0, ge=0)

    @field_validator("url")
    @classmethod
    def _postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme, sep, rest = value.get_secret_value().partition("://")
            if not sep or scheme not in ("postgresql", "postgres") or not rest:
                raise ValueError("must be a postgresql:// or postgres:// URL")
        return value


class ServerConfig(Section):
    """``server``: ``/healthz``, ``/readyz`` and ``/metrics``."""

    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        value = value.strip()
        parse_listen(value)
        return value

    @property
    def listen_address(self) -> ListenAddress | None:
        """``(host, port)`` to bind (IPv6 without brackets, ``""`` = every interface); ``None`` = disabled."""
        return parse_listen(self.listen)


def _plugin_options(value: object) -> object:
    if value is None or isinstance(value, BaseModel):
        return {} if value is None else value
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of the plugin's options")
    return dict(value)


class PluginConfig(Section):
    """``plugins.<kind>``: an installed plugin, by entry-point name, and its options.

    ``options`` is validated by the plugin's own model while the config is loaded; a config
    built by :func:`load_config` / :func:`config_from_dict` holds that model's instance here.
    """

    name: str = Field(min_length=1)
    options: Annotated[Any, BeforeValidator(_plugin_options)] = Field(default_factory=dict)


class SourcePluginConfig(PluginConfig):
    name: str = Field(default=DEFAULTS["source"], min_length=1)


class MapperPluginConfig(PluginConfig):
    name: str = Field(default=DEFAULTS["mapper"], min_length=1)


class SinkPluginConfig(PluginConfig):
    name: str = Field(default=DEFAULTS["sink"], min_length=1)


class PluginsConfig(Section):
    """``plugins``: where records come from, how they are mapped, where they go (``bk-otel-exporter plugins``)."""

    source: SourcePluginConfig = Field(default_factory=SourcePluginConfig)
    mapper: MapperPluginConfig = Field(default_factory=MapperPluginConfig)
    sink: SinkPluginConfig = Field(default_factory=SinkPluginConfig)


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _log_level(value: object) -> object:
    value = upper(value)
    return "WARNING" if value == "WARN" else value


class LoggingConfig(Section):
    """``logging``: the daemon's own log lines (stderr)."""

    level: Annotated[LogLevel, BeforeValidator(_log_level)] = "INFO"
    format: Annotated[Literal["text", "json"], BeforeValidator(lower)] = "text"


class Config(Section):
    """The whole configuration file. Build it with :func:`load_config` or :func:`config_from_dict`."""

    bkmonitor: BkMonitorConfig
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)
    poll: PollConfig = Field(default_factory=PollConfig)
    export: ExportConfig = Field(default_factory=lambda: ExportConfig.model_validate({}))
    destinations: tuple[DestinationConfig, ...] = ()
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    shutdown_timeout: Duration = Field(default=15.0, gt=0)

    _source_path: Path | None = PrivateAttr(default=None)
    _from_env: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        # A missing bkmonitor section is reported option by option, like an empty one.
        data.setdefault("bkmonitor", {})
        return data

    @model_validator(mode="after")
    def _destination_names(self) -> Config:
        names = {DEFAULT_DESTINATION}
        for number, destination in enumerate(self.destinations):
            if destination.name in names:
                what = "the name of export:" if destination.name == DEFAULT_DESTINATION else "used twice"
                problem = f"{destination.name!r} is {what}; names must be unique"
                raise field_error(f"destinations.{number}.name", problem)
            names.add(destination.name)
        return self

    @property
    def source_path(self) -> Path | None:
        """The file this config was loaded from (``None`` for :func:`config_from_dict`); not an option."""
        return self._source_path

    @property
    def from_env(self) -> dict[str, str]:
        """Option path -> the ``OTEL_*`` variable its value came from (what ``check-config`` shows)."""
        return dict(self._from_env)

    def secrets(self) -> list[str]:
        """Every secret value in the config: none of them may appear in any output."""
        bk = self.bkmonitor
        found = [s.get_secret_value() for s in (bk.app_secret, bk.bk_token, bk.access_token) if s]
        found.extend(value for value in self.export.headers.values() if value)
        for per_signal in (self.export.logs, self.export.spans):
            found.extend(value for value in (per_signal.headers.values() if per_signal else ()) if value)
        for destination in self.destinations:
            found.extend(_model_secrets(destination.options))
            headers = getattr(destination.options, "headers", None)
            found.extend(value for value in (headers or {}).values() if isinstance(value, str))
        if self.state.url is not None:
            found.extend(url_passwords(self.state.url.get_secret_value()))
        for kind in KINDS:
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
