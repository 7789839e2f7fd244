"""The BlueKing Monitor client: auth, envelope, retry and rate limit, get_event_log, search_alert.

::

    client.py     BkClient, BkClientSettings, ApiObserver: the calls, the session, auth headers
    envelope.py   parse_envelope: an answer -> its data, or the exporter.errors class to raise
    retry.py      RetryPolicy, retry_call: which failures are retried, and the backoff
    ratelimit.py  TokenBucket: the global requests-per-second limit
    redact.py     keeping app_secret and bk_token out of messages and log lines

Importing this package is light: ``requests`` is loaded only when a client name is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter.bkmonitor.envelope import parse_envelope
from exporter.bkmonitor.ratelimit import TokenBucket
from exporter.bkmonitor.retry import RetryPolicy, retry_call

if TYPE_CHECKING:
    from exporter.bkmonitor.client import ApiObserver, BkClient, BkClientSettings

__all__ = [
    "ApiObserver",
    "BkClient",
    "BkClientSettings",
    "RetryPolicy",
    "TokenBucket",
    "parse_envelope",
    "retry_call",
]

_FROM_CLIENT = frozenset({"ApiObserver", "BkClient", "BkClientSettings"})


def __getattr__(name: str) -> Any:
    if name in _FROM_CLIENT:
        from exporter.bkmonitor import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
