"""Process-wide settings the long-running commands make once, before any thread starts.

:func:`limit_malloc_arenas`: glibc gives every thread that allocates its own malloc arena, up to
eight per core, and each keeps the memory freed into it. The poll workers (up to
``bkmonitor.max_concurrency`` threads) parse answers and build records in parallel, so a
daemon's resident memory grew by the arenas it left partly free; two arenas hold it back (the
memory benchmark in docs/benchmarks.md measures the difference) at no cost the benchmarks can
see, since the interpreter lock already keeps those threads from allocating at the same time.
It is what ``MALLOC_ARENA_MAX=2`` in the environment does, without relying on the service
manager to set it; an operator's own ``MALLOC_ARENA_MAX`` is left as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["ARENAS", "limit_malloc_arenas"]

log = logging.getLogger(__name__)

#: malloc arenas a process may use (glibc's ``M_ARENA_MAX``)
ARENAS = 2
_M_ARENA_MAX = -8  # glibc malloc.h


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (before threads start); False where that is not
    possible (another C library) or the environment already says (``MALLOC_ARENA_MAX``)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    try:
        return bool(mallopt(_M_ARENA_MAX, arenas))
    except Exception:  # pragma: no cover - a libc whose mallopt is not glibc's
        log.debug("mallopt(M_ARENA_MAX) failed", exc_info=True)
        return False
