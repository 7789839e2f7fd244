"""The one exception tree of the exporter.

::

    ExporterError
    ├── ConfigError                  invalid configuration; carries every problem with its option path
    ├── BkApiError                   a BlueKing call failed; carries code, BlueKing message, request id
    │   ├── BkRetryableError         worth retrying with backoff
    │   │   ├── BkRateLimitError     HTTP 429 / 1642xxx / 1306429; carries retry_after (seconds) if known
    │   │   ├── BkUnavailableError   502/503/504, 1306201, 16502xx, 1650401, backend code 500, non-JSON body
    │   │   └── BkTransportError     timeouts and connection errors (no answer at all)
    │   ├── BkAuthError              1306000, 1640001, 16401xx, 1640301, 1306403, plain-text 403: not retried
    │   ├── BkNotFoundError          3324002: unknown alarm or past BlueKing's retention
    │   └── BkResponseError          any other refusal or an answer of the wrong shape: not retried
    ├── StateError                   the state store cannot be used
    │   ├── StateCorruptError        the file is not a database, or not ours
    │   └── StateSchemaError         written by a newer exporter (refuses to downgrade)
    └── PluginError                  a plugin could not be loaded or configured

Expected failures on the data path are values, not exceptions: a sink returns an
:class:`exporter.sinks.base.ExportOutcome`, a record that cannot be parsed is counted and skipped.
Exceptions carry no secrets: messages are built from codes, BlueKing messages and request ids only.
"""

from __future__ import annotations

__all__ = [
    "BkApiError",
    "BkAuthError",
    "BkNotFoundError",
    "BkRateLimitError",
    "BkResponseError",
    "BkRetryableError",
    "BkTransportError",
    "BkUnavailableError",
    "ConfigError",
    "ExporterError",
    "PluginError",
    "StateCorruptError",
    "StateError",
    "StateSchemaError",
]


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""


class ConfigError(ExporterError):
    """The configuration is invalid. ``problems`` holds one ``"option.path: what is wrong"`` line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(self.problems))


class BkApiError(ExporterError):
    """A BlueKing API call failed.

    ``code`` is the BlueKing code from the body (or ``None``), ``bk_message`` the body's message,
    ``request_id`` the ESB body ``request_id`` or the gateway's ``X-Bkapi-Request-ID`` header,
    ``http_status`` the HTTP status and ``endpoint`` the API name (``get_event_log``…).
    """

    def __init__(
        self,
        summary: str,
        *,
        endpoint: str = "",
        code: int | None = None,
        bk_message: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        self.summary = summary
        self.endpoint = endpoint
        self.code = code
        self.bk_message = bk_message
        self.request_id = request_id
        self.http_status = http_status
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [f"{self.endpoint}: {self.summary}" if self.endpoint else self.summary]
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.bk_message:
            parts.append(f"message={self.bk_message!r}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class BkRetryableError(BkApiError):
    """A transient failure: the same request may succeed later."""


class BkRateLimitError(BkRetryableError):
    """Rate limited. ``retry_after`` is the server's hint in seconds, when it gave one."""

    def __init__(self, summary: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(summary, **kw)  # type: ignore[arg-type]


class BkUnavailableError(BkRetryableError):
    """The gateway, ESB or backend is unavailable or answered garbage."""


class BkTransportError(BkRetryableError):
    """No answer: timeout, refused or reset connection, TLS failure."""


class BkAuthError(BkApiError):
    """Credentials or permissions were refused. Retrying cannot help until the config changes."""


class BkNotFoundError(BkApiError):
    """BlueKing does not know the alarm (3324002): wrong id, or past its retention."""


class BkResponseError(BkApiError):
    """Any other refusal, or an answer whose shape we cannot use."""


class StateError(ExporterError):
    """The state store cannot be opened or used."""


class StateCorruptError(StateError):
    """The state file is unreadable or belongs to something else. Never reset silently."""


class StateSchemaError(StateError):
    """The state store was written by a newer exporter version."""


class PluginError(ExporterError):
    """A plugin is unknown, failed to load, or rejected its options."""
