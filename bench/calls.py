"""Benchmark 7: the CPU of one ``get_event_log`` call, by HTTP client path, in one run.

The simulator runs in its own process (:mod:`bench.simserver`); every path below reads the same
alarms' answers from it, alternating, ``rounds`` times; the figure is this process's CPU time
(every thread) divided by the calls made, median of the rounds. Two settings: one thread with no
API latency (the pure cost of a call), and 16 threads against 50 ms of latency (a storm's shape:
the GIL hand-offs are in the figure).

``client``          :class:`~exporter.sources.bkmonitor.BkClient` as the exporter builds it: the
                    urllib3 pool transport, envelope rules, retry loop, limits, body cap
``client+requests`` the same client on ``requests``' own call path (an injected ``Session``,
                    environment read once: the client's transport until this one)
``lean requests``   a ``PreparedRequest`` sent with ``HTTPAdapter.send`` (no session merge), then
                    the same body read and envelope
``urllib3``         the pool's ``urlopen`` and ``json.loads``, nothing else (the ceiling)
``floor``           ``requests.Session().get`` plus ``json.loads``: the bare poll in Python that
                    the storm's CPU is compared with
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.common import APP_CODE, APP_SECRET, Result, median

__all__ = ["EVENT_LOG", "floor_call", "run", "time_calls"]

EVENT_LOG = "/api/c/compapi/v2/monitor_v3/get_event_log/"
_AUTH = {"bk_app_code": APP_CODE, "bk_app_secret": APP_SECRET, "bk_username": "admin"}


def _headers() -> dict[str, str]:
    return {
        "Accept": "application/json",
        "Blueking-Language": "en",
        "X-Bkapi-Authorization": json.dumps(_AUTH, separators=(",", ":")),
    }


def floor_call(base_url: str) -> Callable[[str], Any]:
    """``requests.get`` on a session of the calling thread's own, plus ``json.loads``."""
    import requests

    local = threading.local()
    url, headers = base_url + EVENT_LOG, _headers()

    def call(alarm_id: str) -> Any:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.get(url, params={"id": alarm_id}, headers=headers, timeout=60)
        return json.loads(response.content)["data"]

    return call


def _paths(base_url: str, concurrency: int) -> tuple[dict[str, Callable[[str], Any]], Callable[[], None]]:
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter

    from exporter.sources.bkmonitor import BkClient, BkClientSettings
    from exporter.sources.bkmonitor.envelope import parse_envelope
    from exporter.sources.bkmonitor.reading import read_body

    values = BkClientSettings(
        base_url=base_url, app_code=APP_CODE, app_secret=APP_SECRET, max_concurrency=concurrency, rate_limit=0
    )
    client = BkClient(values)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=max(10, concurrency), max_retries=0))
    session.trust_env = False
    on_requests = BkClient(values, session=session)

    adapter = HTTPAdapter(pool_maxsize=max(10, concurrency), max_retries=0)
    headers = _headers()

    def lean(alarm_id: str) -> Any:
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method="GET",
            url=base_url + EVENT_LOG,
            headers={**headers, "X-Request-ID": uuid.uuid4().hex},
            params={"id": alarm_id},
        )
        response = adapter.send(prepared, stream=True, timeout=60, verify=True, proxies={})
        try:
            body = read_body(
                response,
                endpoint="get_event_log",
                deadline=time.monotonic() + 60,
                clock=time.monotonic,
                cap=64 << 20,
                timeout=60,
            )
        finally:
            response.close()
        return parse_envelope(response.status_code, response.headers, body, "get_event_log", expect=list)

    parts = urlsplit(base_url)
    pool = urllib3.HTTPConnectionPool(parts.hostname or "127.0.0.1", parts.port, maxsize=max(10, concurrency))

    def raw(alarm_id: str) -> Any:
        response = pool.urlopen(
            "GET",
            EVENT_LOG + "?" + urlencode({"id": alarm_id}),
            headers={**headers, "X-Request-ID": uuid.uuid4().hex},
            retries=False,
            redirect=False,
        )
        return json.loads(response.data)["data"]

    def close() -> None:
        client.close()
        on_requests.close()
        adapter.close()
        pool.close()

    paths = {
        "client": client.get_event_log,
        "client+requests": on_requests.get_event_log,
        "lean requests": lean,
        "urllib3": raw,
        "floor": floor_call(base_url),
    }
    return paths, close


def time_calls(call: Callable[[str], Any], ids: list[str], threads: int) -> tuple[float, float]:
    """(CPU seconds of this process per call, wall seconds) for one pass over ``ids``."""
    cpu0, started = time.process_time(), time.perf_counter()
    if threads == 1:
        for alarm_id in ids:
            call(alarm_id)
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="bench-call") as pool:
            for _ in pool.map(call, ids):
                pass
    return (time.process_time() - cpu0) / len(ids), time.perf_counter() - started


def run(*, quick: bool, command: str) -> Result:
    from bench.simserver import SimProcess

    calls, rounds = (100, 1) if quick else (1500, 3)
    settings = ((1, 0.0), (16, 0.05))
    result = Result(
        "calls",
        "7. BlueKing call cost",
        command,
        {
            "calls": f"{calls} get_event_log per path and round (5 flow records an answer)",
            "settings": "1 thread, no API latency; 16 threads, 50 ms API latency (simulator, separate process)",
            "rounds": f"{rounds}, the paths alternating; medians of this process's CPU time per call",
        },
        target="the client's transport costs less CPU a call than requests' (the pick)",
    )
    cpu: dict[tuple[int, str], float] = {}
    for threads, latency in settings:
        with SimProcess(latency=latency) as sim:
            ids = sim.call("populate", alarms=calls, records=5)["ids"]
            paths, close = _paths(sim.base_url, threads)
            try:
                for call in paths.values():  # warm-up: connections, imports
                    time_calls(call, ids[: min(50, len(ids))], threads)
                runs: dict[str, list[float]] = {name: [] for name in paths}
                for _ in range(rounds):
                    for name, call in paths.items():
                        runs[name].append(time_calls(call, ids, threads)[0])
            finally:
                close()
        for name, values in runs.items():
            cpu[(threads, name)] = median(values)
    for name in ("client", "client+requests", "lean requests", "urllib3", "floor"):
        result.add(
            f"`{name}`: CPU a call",
            f"{cpu[(1, name)] * 1e6:,.0f} µs (1 thread) / {cpu[(16, name)] * 1e6:,.0f} µs (16 threads, 50 ms)",
        )
    for threads, _ in settings:
        result.add(
            f"ratio client+requests / client ({threads} thread{'s' if threads > 1 else ''})",
            f"{cpu[(threads, 'client+requests')] / cpu[(threads, 'client')]:.2f}",
        )
    gain = cpu[(16, "client+requests")] / cpu[(16, "client")]
    result.measured = (
        f"{cpu[(16, 'client')] * 1e6:,.0f} µs vs {cpu[(16, 'client+requests')] * 1e6:,.0f} µs a call "
        f"on requests ({gain:.2f}×, 16 threads)"
    )
    result.passed = cpu[(16, "client")] < cpu[(16, "client+requests")]
    return result
