"""Run a test subprocess with its wall clock moved (libfaketime, Debian's ``faketime`` package).

``faketime_env(60)`` is the environment that makes a process see ``time.time()`` (and every other
wall-clock read: datetime, logging, libpq) 60 s ahead of the real clock, while its monotonic clock
stays true (timeouts, sleeps). It is None when libfaketime is not installed
(``scripts/ensure-postgres.sh`` installs it). The ``faketime_shim`` directory goes first on the
subprocess's PYTHONPATH: see its ``sitecustomize`` for the one libfaketime bug it works around.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

__all__ = ["find_libfaketime", "faketime_env"]

ROOT = Path(__file__).resolve().parents[2]
SHIM = Path(__file__).resolve().parent / "faketime_shim"


def find_libfaketime() -> str | None:
    for pattern in (
        "/usr/lib/*/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def faketime_env(offset_seconds: float) -> dict[str, str] | None:
    lib = find_libfaketime()
    if lib is None:
        return None
    sign = "+" if offset_seconds >= 0 else "-"
    return {
        "LD_PRELOAD": lib,
        "FAKETIME": f"{sign}{abs(offset_seconds):g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join([str(SHIM), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
