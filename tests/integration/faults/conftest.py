"""The store a fault scenario runs on: the ``store`` fixture runs a store-independent scenario once
on the SQLite file and once on a fresh schema of the session's throwaway PostgreSQL (one replica:
it must behave exactly like SQLite)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.postgres import fresh_schema


@dataclass(frozen=True)
class StoreChoice:
    """``kind`` is ``sqlite`` or ``postgres``; ``state()`` the ``state:`` options that select it
    (merged over the scenario's ``state.path``)."""

    kind: str
    url: str | None = None

    def state(self) -> dict[str, Any]:
        return {} if self.url is None else {"url": self.url, "lease": "5s"}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> StoreChoice:
    if request.param == "sqlite":
        return StoreChoice("sqlite")
    return StoreChoice("postgres", fresh_schema(request.getfixturevalue("postgres_url")))
