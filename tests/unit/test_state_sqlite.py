"""What only the SQLite store does; everything both stores promise is in test_state_contract.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import StateCorruptError
from exporter.state.sqlite import SqliteStateStore


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateCorruptError, match=str(path)):
        SqliteStateStore(path)
    assert path.read_bytes().startswith(b"this is not sqlite")  # untouched
