"""The effective config as plain data and as YAML: what ``check-config`` prints.

Secrets are replaced by :data:`exporter.redact.MASK` (``SecretStr`` values, every
``export.headers`` value, the password of ``state.url``), durations are spelled as the file may
spell them (``30s``, ``10m``), and the YAML loads back with ``yaml.safe_load``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr

from exporter.config.model import Config, ExportConfig, StateConfig
from exporter.config.types import DURATION_TAG, SIZE_TAG, format_duration, format_size
from exporter.redact import MASK, redact_url

__all__ = ["redacted_dict", "render_effective"]


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
        elif DURATION_TAG in info.metadata:
            out[name] = format_duration(value)
        elif SIZE_TAG in info.metadata:
            out[name] = format_size(value)
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
    text = yaml.safe_dump(redacted_dict(config), sort_keys=False, allow_unicode=True, default_flow_style=False)
    sources = config.from_env
    if sources:
        text += "# from the environment (the file does not set these):\n"
        text += "".join(f"#   {path}: {variable}\n" for path, variable in sorted(sources.items()))
    return text
