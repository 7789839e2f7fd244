"""``destinations:`` and the ``filter`` blocks (of ``export:`` and of each destination).

A destination is a sink plugin (``otlp``, ``jsonl``, ``console`` or a third-party one) with its
own options, the signals it takes and a filter. Its ``options`` are checked here only for their
shape: the loader validates them with the sink's own model (for ``otlp``,
:class:`~exporter.config.otlp.OtlpOptions`, the OTLP keys of ``export:``) and stores that
model's instance, reporting problems at ``destinations.<n>.options.<option>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator

from exporter.config.fields import Section, dedupe, lower, split_list, upper

__all__ = ["DEFAULT_DESTINATION", "DestinationConfig", "FilterConfig"]

#: the name ``export:`` has in logs, metrics, status and the outbox
DEFAULT_DESTINATION = "default"


def _upper_all(value: Any) -> Any:
    value = split_list(value)
    return [upper(item) for item in value] if isinstance(value, (list, tuple)) else value


class FilterConfig(Section):
    """Which records a destination takes: every given key must match; empty = everything.

    ``operates`` and ``exclude_operates`` look at a flow record's ``operate`` (log records; a span
    carries several records and is matched by its alarm only); ``bk_biz_ids`` and ``severities``
    at the alarm (1 fatal, 2 warning, 3 info). A record whose alarm has no business or severity
    known does not match a filter that asks for one.
    """

    operates: Annotated[tuple[str, ...], BeforeValidator(_upper_all)] = ()
    exclude_operates: Annotated[tuple[str, ...], BeforeValidator(_upper_all)] = ()
    bk_biz_ids: Annotated[tuple[int, ...], BeforeValidator(split_list)] = ()
    severities: Annotated[tuple[Annotated[int, Field(ge=1, le=3)], ...], BeforeValidator(split_list)] = ()

    @field_validator("operates", "exclude_operates", "bk_biz_ids", "severities")
    @classmethod
    def _unique(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        return dedupe(value)

    @field_validator("operates", "exclude_operates")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not item.replace("_", "").isalnum() for item in value):
            raise ValueError("must be operate names such as CREATE, RECOVER, CLOSE")
        return value

    @property
    def everything(self) -> bool:
        return not (self.operates or self.exclude_operates or self.bk_biz_ids or self.severities)


def _options(value: object) -> object:
    if value is None or isinstance(value, BaseModel):
        return {} if value is None else value
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of the sink's options")
    return dict(value)


class DestinationConfig(Section):
    """One entry of ``destinations:``. ``signals`` empty = ``export.signals``."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)
    sink: str = Field(min_length=1)
    signals: Annotated[tuple[Literal["logs", "spans"], ...], BeforeValidator(split_list)] = ()
    options: Annotated[Any, BeforeValidator(_options)] = Field(default_factory=dict)
    filter: FilterConfig = Field(default_factory=FilterConfig)

    @field_validator("signals", mode="before")
    @classmethod
    def _signals_case(cls, value: Any) -> Any:
        value = split_list(value)
        return [lower(item) for item in value] if isinstance(value, (list, tuple)) else value

    @field_validator("signals")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return dedupe(value)
