"""Plugin discovery through Python entry points.

Groups: ``bk_otel_exporter.sources``, ``bk_otel_exporter.mappers``, ``bk_otel_exporter.sinks``.
The built-in BlueKing source, the CONTRACT.md mapper and the OTLP/console sinks are registered in
this project's own ``pyproject.toml`` exactly like third-party plugins.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

__all__ = ["GROUPS", "installed_plugins"]

GROUPS = {
    "source": "bk_otel_exporter.sources",
    "mapper": "bk_otel_exporter.mappers",
    "sink": "bk_otel_exporter.sinks",
}


def installed_plugins() -> list[dict[str, Any]]:
    """One row per installed plugin: kind, name, target, distribution and version."""
    rows: list[dict[str, Any]] = []
    for kind, group in GROUPS.items():
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            rows.append(
                {
                    "kind": kind,
                    "name": ep.name,
                    "target": ep.value,
                    "distribution": dist.metadata["Name"] if dist is not None else "?",
                    "version": dist.version if dist is not None else "?",
                }
            )
    return rows
