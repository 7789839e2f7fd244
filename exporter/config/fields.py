"""What the section models (:mod:`exporter.config.model`) share: field types, validators, their base.

:class:`Section` is the base of every section: frozen, unknown keys forbidden, and ``null`` (or
a missing section) means "the default".

The validators quote an input back only when it cannot be a secret (an alarm ID): a URL that
fails :func:`http_url` is described, never echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from exporter.config.types import format_duration, shown

__all__ = [
    "DEFAULT_STATUS",
    "AlarmId",
    "AlertStatus",
    "Condition",
    "FilePath",
    "Section",
    "check_backoff",
    "dedupe",
    "empty_to_none",
    "field_error",
    "http_url",
    "lower",
    "split_list",
    "upper",
]


def field_error(field_name: str, message: str) -> PydanticCustomError:
    """A problem found by a section-level check, reported at ``<section>.<field_name>``."""
    return PydanticCustomError("config_field", "{message}", {"field": field_name, "message": message})


def empty_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def split_list(value: object) -> object:
    """``"a, b"`` -> ``["a", "b"]`` and a lone scalar -> a one-item list (handy with ``${VAR}``)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return value


def dedupe(items: tuple[Any, ...]) -> tuple[Any, ...]:
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


FilePath = Annotated[str | None, BeforeValidator(empty_to_none), AfterValidator(_existing_file)]


def http_url(value: str, *, example: str) -> str:
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
    raise ValueError(f"not an alarm ID (digits expected, got {shown(value)})")


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
DEFAULT_STATUS: tuple[AlertStatus, ...] = ("ABNORMAL", "RECOVERED", "CLOSED")


# ── the base of every section ────────────────────────────────────────────────────────────────


class Section(BaseModel):
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
    """Whether ``annotation`` admits ``None`` (then a ``null`` is kept, not replaced by the default)."""
    return annotation is None or type(None) in getattr(annotation, "__args__", ())


def check_backoff(initial: float, maximum: float) -> None:
    """``max_backoff`` must not be below ``initial_backoff`` (both retry sections)."""
    if maximum < initial:
        raise field_error("max_backoff", f"must be ≥ initial_backoff ({format_duration(initial)})")
