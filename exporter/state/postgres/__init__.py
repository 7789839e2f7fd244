"""The shared state store on PostgreSQL: see :mod:`exporter.state.postgres.store`."""

from __future__ import annotations

from exporter.state.postgres.store import SCHEMA_VERSION, PostgresStateStore

__all__ = ["SCHEMA_VERSION", "PostgresStateStore"]
