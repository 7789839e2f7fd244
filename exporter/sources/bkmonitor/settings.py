"""The client's runtime settings (:class:`BkClientSettings`), built from the ``bkmonitor:`` section."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.redact import MASK
from exporter.sources.bkmonitor.apigw import APIGW, ESB

__all__ = ["BkClientSettings"]


@dataclass(frozen=True, repr=False)
class BkClientSettings:
    """What the client needs from the ``bkmonitor:`` config block (durations in seconds)."""

    base_url: str
    app_code: str
    app_secret: str
    username: str | None = "admin"
    bk_token: str | None = None
    access_token: str | None = None
    auth_in: str = "header"  # "header" (X-Bkapi-Authorization) | "params" (legacy: query / JSON body)
    api: str = ESB  # "esb" | "apigw" (the bk-monitor gateway)
    stage: str = "prod"
    tenant_id: str | None = None  # sent as X-Bk-Tenant-Id on every request
    language: str = "en"
    timeout: float = 35.0  # a total deadline per request
    max_response_bytes: int = 64 << 20
    verify_tls: bool = True
    ca_file: str | None = None
    max_concurrency: int = 8
    rate_limit: float = 20.0  # requests per second across all calls; 0 = unlimited
    max_attempts: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    user_agent: str = "bk-otel-exporter"

    def __post_init__(self) -> None:
        if self.auth_in not in ("header", "params"):
            raise ValueError(f"auth_in must be 'header' or 'params', not {self.auth_in!r}")
        if self.api not in (ESB, APIGW):
            raise ValueError(f"api must be 'esb' or 'apigw', not {self.api!r}")
        if self.api == APIGW and self.auth_in == "params":
            raise ValueError("auth_in 'params' is not accepted with api 'apigw' (header-only credentials)")
        if self.max_response_bytes < 1:
            raise ValueError("max_response_bytes must be positive")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in output."""
        return tuple(s for s in (self.app_secret, self.bk_token, self.access_token) if s)

    def __repr__(self) -> str:
        shown = {
            "base_url": self.base_url,
            "app_code": self.app_code,
            "app_secret": MASK if self.app_secret else "",
            "username": self.username,
            "bk_token": MASK if self.bk_token else None,
            "access_token": MASK if self.access_token else None,
            "auth_in": self.auth_in,
            "api": self.api,
            "stage": self.stage,
            "tenant_id": self.tenant_id,
            "language": self.language,
            "timeout": self.timeout,
            "max_response_bytes": self.max_response_bytes,
            "verify_tls": self.verify_tls,
            "ca_file": self.ca_file,
            "max_concurrency": self.max_concurrency,
            "rate_limit": self.rate_limit,
            "max_attempts": self.max_attempts,
            "initial_backoff": self.initial_backoff,
            "max_backoff": self.max_backoff,
            "user_agent": self.user_agent,
        }
        return "BkClientSettings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"
