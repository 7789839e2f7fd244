"""A faithful BlueKing Monitor simulator: a real HTTP server on 127.0.0.1 (stdlib only).

Used by the integration tests, the benchmarks and ``bk-otel-exporter demo``. It answers like the servers
described in ``docs/blueking-api.md`` (not like the published document):

* ``GET  /api/c/compapi/v2/monitor_v3/get_event_log/?id=…`` (ESB). Any other method ⇒ the ESB 404 body
  ``{"result": false, "data": null, "message": "The content does not exist"}`` (no ``code``).
* ``POST /api/c/compapi/v2/monitor_v3/search_alert/`` (ESB).
* ``POST /api/bk-monitor/prod/app/alert/search/`` (``bk-monitor`` gateway flavour: header-only auth, gateway
  error bodies with real HTTP codes, ``X-Bkapi-Request-ID`` header and no body ``request_id``).

``get_event_log`` answers newest first (``-create_time, op_type``), ``create_time`` as naive Asia/Shanghai
wall-clock time whatever the host zone, ``extend_info: {}``, ``event_id`` the alert id as a JSON number, with
CONVERGE/EVENT_DROP runs folded like ``AlertLogHandler.record_collect`` (not append-only). ``legacy=True``
answers like monitor 3.x instead: string ``event_id``, ``extend_info`` dicts or ``""``, per-log ``status``,
no folding, unknown id ⇒ DRF ``ValidationError`` (body code 400); alarms are still looked up by alert id.

Modules: :mod:`.store` (``SimClock``, ``SimAlarm``, folding), :mod:`.search` (``search_alert``),
:mod:`.faults` (envelopes and ``FAULT_KINDS``), :mod:`.hostile` (rows nested thousands deep or with
bytes that are not UTF-8: ``Simulator.serve_hostile``), :mod:`.server` (``Simulator``), :mod:`.cli`
(the demo alarms and the command line).

Typical use::

    with Simulator(clock=SimClock(1718000000)) as sim:
        alarm = sim.add_alarm(begin_time=1718000000, create_time=1718000030)
        alarm.converge(at=1718000090)
        sim.inject("gateway_429", times=2, endpoint="get_event_log")
        ...  # point the exporter at sim.base_url with sim.app_code / sim.app_secret

Deliberate simplifications: ``log()`` messages are stored as the final rendered text; messages are the
default zh_Hans strings (``Blueking-Language`` is ignored); ``esb_timeout`` answers at once (inject ``slow``
to delay); see :mod:`.search` for the supported subset of ``query_string`` and statuses.
"""

from __future__ import annotations

from exporter.simulator.cli import main, populate_demo
from exporter.simulator.faults import DEFAULT_FAULT_KINDS, FAULT_KINDS
from exporter.simulator.search import MAX_RESULT_WINDOW
from exporter.simulator.server import (
    GATEWAY_SEARCH_PATH,
    GET_EVENT_LOG_PATH,
    SEARCH_ALERT_PATH,
    RecordedRequest,
    Simulator,
)
from exporter.simulator.store import RawLog, SimAlarm, SimClock, hms_string, render_time

__all__ = [
    "DEFAULT_FAULT_KINDS",
    "FAULT_KINDS",
    "GATEWAY_SEARCH_PATH",
    "GET_EVENT_LOG_PATH",
    "MAX_RESULT_WINDOW",
    "SEARCH_ALERT_PATH",
    "RawLog",
    "RecordedRequest",
    "SimAlarm",
    "SimClock",
    "Simulator",
    "hms_string",
    "main",
    "populate_demo",
    "render_time",
]
