"""The built-in ``bkmonitor`` source: BlueKing Monitor's ``get_event_log`` and ``search_alert``.

::

    source.py     BkMonitorSource (fetch, discover) and the ``bkmonitor`` plugin
    client.py     BkClient, ApiObserver: the calls, the session, auth headers (ESB or gateway)
    settings.py   BkClientSettings: what the client needs from the bkmonitor: section
    apigw.py      the routes of each API (esb, apigw) and the hints that name the fix
    transport.py  PoolTransport: requests sent through the urllib3 pool, set up as requests does it
    reading.py    read_raw, read_body: an answer under a total deadline and a byte cap
    alertsearch.py AlertCollector: bounded discovery splitting (time, then create_time)
    gateway.py    GatewaySource: the source on the bk-monitor gateway
    synth.py      synthesize: flow records from alerts and actions, with stable uids
    envelope.py   parse_envelope: an answer -> its data, or the exporter.errors class to raise
    body.py       decode_json: a body -> JSON at any depth, bytes that are not UTF-8 as U+FFFD
    retry.py      RetryPolicy, retry_call: which failures are retried, and the backoff
    report.py     CallReporter: retried failures and stray bytes, logged (rate-limited) and counted
    ratelimit.py  TokenBucket: the global requests-per-second limit
    records.py    parse_event_log: get_event_log items -> FlowRecord (tolerant of every server shape)
    alerts.py     parse_alert: search_alert objects -> AlarmContext

The entry point ``exporter.sources.bkmonitor:plugin`` names this package. Importing it is light:
``requests`` is loaded only when a client name is first used (or the source is created).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter.sources.bkmonitor.envelope import parse_envelope
from exporter.sources.bkmonitor.ratelimit import TokenBucket
from exporter.sources.bkmonitor.retry import RetryPolicy, retry_call
from exporter.sources.bkmonitor.source import (
    MIN_WINDOW,
    RESULT_WINDOW,
    BkApi,
    BkMonitorSource,
    SearchSettings,
    client_settings,
    plugin,
    search_settings,
)

if TYPE_CHECKING:
    from exporter.sources.bkmonitor.client import ApiObserver, BkClient, BkClientSettings

__all__ = [
    "MIN_WINDOW",
    "RESULT_WINDOW",
    "ApiObserver",
    "BkApi",
    "BkClient",
    "BkClientSettings",
    "BkMonitorSource",
    "RetryPolicy",
    "SearchSettings",
    "TokenBucket",
    "client_settings",
    "parse_envelope",
    "plugin",
    "retry_call",
    "search_settings",
]

_FROM_CLIENT = frozenset({"ApiObserver", "BkClient", "BkClientSettings"})


def __getattr__(name: str) -> Any:
    if name in _FROM_CLIENT:
        from exporter.sources.bkmonitor import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
