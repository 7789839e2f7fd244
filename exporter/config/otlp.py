"""The OTLP keys, defined once: ``export:`` (the default destination), ``export.logs`` and
``export.spans`` (one signal's overrides) and the ``options`` of a destination whose sink is
``otlp`` are all validated by :class:`OtlpOptions`.

A per-signal block (``export.logs: {endpoint: …}``) is merged over ``export``'s own OTLP keys
before validation (:func:`merge_signal_overrides`), so what is validated, rendered by
``check-config`` and used is the complete, effective set for that signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_core.core_schema import ValidationInfo

from exporter.config.fields import FilePath, Section, empty_to_none, field_error, http_url, lower
from exporter.config.types import Duration, Size, headers_problem

__all__ = ["DEFAULT_ENDPOINTS", "OTLP_KEYS", "OtlpOptions", "merge_signal_overrides"]

DEFAULT_ENDPOINTS = {"grpc": "http://localhost:4317", "http/protobuf": "http://localhost:4318"}


class OtlpOptions(Section):
    """Where and how OTLP requests go. ``headers`` values are secrets."""

    endpoint: str
    protocol: Annotated[Literal["grpc", "http/protobuf"], BeforeValidator(lower)] = "grpc"
    headers: Mapping[str, str] = Field(default_factory=dict, repr=False)  # values are secrets
    compression: Annotated[Literal["gzip", "none"], BeforeValidator(lower)] = "gzip"
    timeout: Duration = Field(default=10.0, gt=0)
    insecure: Annotated[bool | None, BeforeValidator(empty_to_none)] = None
    ca_file: FilePath = None
    client_cert_file: FilePath = None
    client_key_file: FilePath = None
    batch_size: int = Field(default=512, ge=1, le=10000)
    max_batch_bytes: Size = Field(default=3 * 1024 * 1024, ge=1024)

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "endpoint" not in data:
            protocol = data.get("protocol")
            protocol = protocol.strip().lower() if isinstance(protocol, str) else "grpc"
            data["endpoint"] = DEFAULT_ENDPOINTS.get(protocol, DEFAULT_ENDPOINTS["grpc"])
        return data

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return http_url(value, example="http://localhost:4317")

    @field_validator("headers")
    @classmethod
    def _sendable(cls, value: Mapping[str, str], info: ValidationInfo) -> Mapping[str, str]:
        if any(not name.strip() for name in value):
            raise ValueError("names must not be empty")
        problem = headers_problem(value, info.data.get("protocol", "http/protobuf"))  # a bad protocol: said apart
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _client_pair(self) -> OtlpOptions:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            missing = "client_key_file" if self.client_key_file is None else "client_cert_file"
            other = "client_cert_file" if missing == "client_key_file" else "client_key_file"
            raise field_error(missing, f"required together with {other}")
        return self


#: the option names of :class:`OtlpOptions`
OTLP_KEYS: tuple[str, ...] = tuple(OtlpOptions.model_fields)


def merge_signal_overrides(data: dict[str, Any]) -> dict[str, Any]:
    """``export.logs`` / ``export.spans`` given as a mapping: ``export``'s OTLP keys, then the
    block's own. An ``endpoint`` the block leaves out follows the block's ``protocol`` when only
    that changed (``http/protobuf`` alone means port 4318, as for ``export``). A block that is
    empty or absent means "as ``export``" (``None``)."""
    for signal in ("logs", "spans"):
        block = data.get(signal)
        if not isinstance(block, Mapping):
            continue
        if not block:
            data[signal] = None
            continue
        base = {key: data[key] for key in OTLP_KEYS if key in data and data[key] is not None}
        if "endpoint" not in block and "protocol" in block and base.get("endpoint") in DEFAULT_ENDPOINTS.values():
            base.pop("endpoint", None)
        data[signal] = {**base, **block}
    return data
