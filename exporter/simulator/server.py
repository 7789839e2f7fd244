"""The HTTP side: ``Simulator`` (routes, ESB/gateway auth, get_event_log, fault injection, recording)."""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.simulator.faults import (
    DEFAULT_FAULT_KINDS,
    FAULT_KINDS,
    ApiError,
    Response,
    esb_error,
    esb_response,
    fault_response,
    gateway_error,
    gateway_headers,
    not_found,
)
from exporter.simulator.gateway import gateway_auth, gateway_route, not_published, search_action, tenant_refusal
from exporter.simulator.hostile import HostileRows, add_hostile_rows
from exporter.simulator.search import MAX_RESULT_WINDOW, param_error, search_alert
from exporter.simulator.store import AlarmStore, RawLog, SimAlarm, SimClock, as_int

__all__ = [
    "GATEWAY_SEARCH_PATH",
    "GET_EVENT_LOG_PATH",
    "SEARCH_ALERT_PATH",
    "RecordedRequest",
    "Simulator",
]

GET_EVENT_LOG_PATH = "/api/c/compapi/v2/monitor_v3/get_event_log/"
SEARCH_ALERT_PATH = "/api/c/compapi/v2/monitor_v3/search_alert/"
GATEWAY_SEARCH_PATH = "/api/bk-monitor/prod/app/alert/search/"
_ROUTES = {
    ("GET", GET_EVENT_LOG_PATH): ("get_event_log", "esb"),
    ("POST", SEARCH_ALERT_PATH): ("search_alert", "esb"),
    ("POST", GATEWAY_SEARCH_PATH): ("search_alert", "gateway"),
}
_EVENT_LOG_RESOURCE = "kernel_api.views.v4.event.SearchEventLog"


@dataclass
class RecordedRequest:
    """One request the simulator answered (or reset: ``status`` None).

    ``timestamp`` is real ``time.time()`` at arrival, ``sim_time`` the simulator clock then; ``json`` the
    parsed body (None if absent or invalid); ``endpoint`` "get_event_log"/"search_alert" or None (404);
    ``flavour`` "esb"/"gateway"; ``alarm_id`` the raw ``id`` query parameter; ``fault`` the fault applied.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    json: Any
    timestamp: float
    sim_time: float
    endpoint: str | None = None
    flavour: str = "esb"
    alarm_id: str | None = None
    fault: str | None = None
    status: int | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self.to_reset: set[socket.socket] = set()
        self.reset_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def shutdown_request(self, request: Any) -> None:
        with self.reset_lock:
            reset = request in self.to_reset
            self.to_reset.discard(request)
        if reset:  # SO_LINGER 0 then close: an RST instead of a FIN
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body must not wait for a delayed ACK (40 ms per request)
    wbufsize = 1 << 16  # one send for headers + body; handle_one_request flushes
    server: _Server

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        resp = self.server.sim._serve(self.command, self.path, dict(self.headers.items()), raw)
        if resp.reset:
            self.close_connection = True
            with self.server.reset_lock:
                self.server.to_reset.add(self.connection)
            return
        self.send_response(resp.status)
        for name, value in resp.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.verbose:
            super().log_message(format, *args)


class Simulator:
    """The BlueKing Monitor simulator: a ``ThreadingHTTPServer`` on ``host:port`` (port 0 = ephemeral).

    ``with Simulator() as sim:`` or ``sim.start()`` … ``sim.stop()``. ``base_url`` is what the exporter
    config calls ``bkmonitor.base_url``. Attributes a test may change at any time: ``latency`` (seconds
    added to every request), ``fault_rate``/``fault_kinds`` (random faults drawn from
    ``random.Random(seed)``), ``slow_seconds`` (delay of the ``slow`` fault, default 3.0), ``biz_names``,
    ``legacy``, ``response_hook`` (``f(endpoint, payload) -> payload`` applied to successful answers, to serve
    odd shapes) and ``verbose`` (log requests to stderr). Observability: ``requests`` (a list of
    :class:`RecordedRequest`), :meth:`calls`, ``heavy_searches`` (searches with show_overview/show_aggs on).
    """

    def __init__(
        self,
        *,
        app_code: str = "bk-otel-demo",
        app_secret: str = "demo-secret",
        clock: SimClock | None = None,
        legacy: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        seed: int = 0,
        gateway_only: bool = False,
        tenant_id: str | None = None,
        stage: str = "prod",
    ) -> None:
        #: a gateway-only (multi-tenant) installation: no ESB paths (1640401); with ``tenant_id`` gateway
        #: calls must send ``X-Bk-Tenant-Id`` (1640302); ``stage`` is the gateway stage served
        self.gateway_only = gateway_only
        self.tenant_id = tenant_id
        self.stage = stage
        self.result_window = MAX_RESULT_WINDOW  # Elasticsearch's max_result_window (tests lower it)
        self.app_code = app_code
        self.app_secret = app_secret
        self.clock = clock if clock is not None else SimClock()
        self.legacy = legacy
        self.host = host
        self.port = port
        self.latency = latency
        self.fault_rate = 0.0
        self.fault_kinds: list[str] = list(DEFAULT_FAULT_KINDS)
        self.slow_seconds = 3.0
        self.biz_names: dict[int, str] = {2: "蓝鲸"}
        self.response_hook: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
        self.verbose = False
        self.requests: list[RecordedRequest] = []
        self.heavy_searches = 0
        self._store = AlarmStore(self.clock)
        self._lock = self._store.lock
        self._rng = random.Random(seed)
        self._faults: list[list[Any]] = []  # [kind, remaining, endpoint]
        self._hostile: dict[str, HostileRows] = {}  # alarm id -> extra rows of its answers
        self._counts: Counter[tuple[str | None, str | None]] = Counter()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Simulator:
        """Bind and serve from a background thread. Returns self. After :meth:`stop`, ``start()`` binds the
        same port again (to simulate BlueKing going away and coming back); alarms are kept."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server((self.host, self.port), self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="bk-simulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake handlers sleeping on latency/slow faults, close the listener. Idempotent."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._server = None
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (the port is known once started)."""
        return f"http://{self.host}:{self.port}"

    def auth_header(self, username: str = "admin") -> dict[str, str]:
        """``{"X-Bkapi-Authorization": …}`` carrying this simulator's credentials."""
        value = {"bk_app_code": self.app_code, "bk_app_secret": self.app_secret, "bk_username": username}
        return {"X-Bkapi-Authorization": json.dumps(value)}

    # ------------------------------------------------------------------ alarms
    def add_alarm(
        self,
        *,
        bk_biz_id: int = 2,
        name: str = "CPU usage alarm",
        severity: int = 2,
        strategy_id: int = 41868,
        strategy_name: str | None = None,
        dimensions: dict[str, str] | None = None,
        begin_time: float | None = None,
        alarm_id: str | None = None,
        create: bool = True,
        create_time: float | None = None,
        message: str | None = None,
    ) -> SimAlarm:
        """Add an ABNORMAL alert and return its handle.

        ``begin_time`` defaults to ``clock.now()``, ``create_time`` to ``begin_time``; the id defaults to
        ``str(begin_time) + sequence``. ``create=True`` appends the CREATE log at ``create_time`` with
        ``message`` (or a default description). ``dimensions`` default to
        ``{"ip": "10.0.0.1", "bk_cloud_id": "0"}``.
        """
        store = self._store
        with store.lock:
            begin = int(self.clock.now() if begin_time is None else begin_time)
            created = int(begin if create_time is None else create_time)
            if alarm_id is None:
                while True:
                    seq, store.next_seq = store.next_seq, store.next_seq + 1
                    alarm_id = f"{begin}{seq}"
                    if alarm_id not in store.alarms:
                        break
            else:
                alarm_id = str(alarm_id)
                seq = int(alarm_id[10:]) if alarm_id[10:].isdigit() else 0
            if alarm_id in store.alarms:
                raise ValueError(f"alarm {alarm_id} already exists")
            alarm = SimAlarm(
                store,
                alarm_id=alarm_id,
                bk_biz_id=bk_biz_id,
                name=name,
                severity=severity,
                strategy_id=strategy_id,
                strategy_name=strategy_name or name,
                dimensions={"ip": "10.0.0.1", "bk_cloud_id": "0"} if dimensions is None else dimensions,
                begin_time=begin,
                create_time=created,
                seq_id=seq,
            )
            store.alarms[alarm_id] = alarm
            if create:
                alarm.log(
                    "CREATE",
                    message or f"{name} 当前值异常, 达到了触发告警条件（5周期内满足1次检测算法）",
                    at=created,
                )
            return alarm

    def alarm(self, alarm_id: str) -> SimAlarm:
        """The alarm with this id (KeyError if unknown)."""
        with self._lock:
            return self._store.alarms[str(alarm_id)]

    def alarms(self) -> list[SimAlarm]:
        """Every alarm, in insertion order."""
        with self._lock:
            return list(self._store.alarms.values())

    def expire(self, alarm_id: str) -> None:
        """Past retention: from now on get_event_log answers 3324002 and search_alert omits the alarm."""
        self.alarm(alarm_id).expired = True

    def visible_records(self, alarm_id: str) -> list[dict[str, Any]]:
        """The ``data`` list get_event_log would return right now (sorted and, unless legacy, folded)."""
        with self._lock:
            alarm = self._store.alarms[str(alarm_id)]
            return alarm.event_log(as_int(alarm.id) or 0, legacy=self.legacy)

    def all_raw_logs(self, alarm_id: str) -> list[RawLog]:
        """Every raw log ever appended to the alarm, in append order (copies, unfolded)."""
        with self._lock:
            return [RawLog(**vars(raw)) for raw in self._store.alarms[str(alarm_id)]._logs]

    # ------------------------------------------------------------------ observability and faults
    def calls(self, endpoint: str | None = None, alarm_id: str | None = None) -> int:
        """Requests answered, faulted ones included. ``endpoint`` "get_event_log" or "search_alert" (ESB and
        gateway flavours; None: every request, 404s included); ``alarm_id`` narrows get_event_log to that
        raw ``id`` parameter."""
        with self._lock:
            return self._counts[(endpoint, None if alarm_id is None else str(alarm_id))]

    def clear_requests(self) -> None:
        """Forget recorded requests and call counts."""
        with self._lock:
            self.requests.clear()
            self._counts.clear()

    def inject(self, fault: str, *, times: int = 1, endpoint: str | None = None) -> None:
        """Make the next ``times`` requests to ``endpoint`` (None: either API endpoint) fail as ``fault``.

        Queued injections are consumed in order, before any random fault."""
        if fault not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULT_KINDS)}")
        if endpoint not in (None, "get_event_log", "search_alert", "search_action"):
            raise ValueError(f"unknown endpoint {endpoint!r}")
        if times > 0:
            with self._lock:
                self._faults.append([fault, times, endpoint])

    def pending_faults(self) -> int:
        """How many injected faults are still queued."""
        with self._lock:
            return sum(entry[1] for entry in self._faults)

    def _take_fault(self, endpoint: str) -> str | None:
        with self._lock:
            for entry in self._faults:
                if entry[2] in (None, endpoint):
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._faults.remove(entry)
                    return str(entry[0])
            if self.fault_rate > 0 and self.fault_kinds and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
        return None

    def serve_hostile(self, alarm_id: str, *, at: float, deep: int = 0, undecodable: bytes = b"") -> HostileRows:
        """From now on, every successful get_event_log answer for ``alarm_id`` also holds a row whose
        ``extend_info`` is nested ``deep`` levels (when > 0) and a row whose message holds the raw
        bytes ``undecodable`` (not UTF-8), both at ``at``: see :mod:`exporter.simulator.hostile`."""
        rows = HostileRows(at=at, deep=deep, undecodable=undecodable)
        with self._lock:
            self._hostile[str(alarm_id)] = rows
        return rows

    def _with_hostile_rows(self, params: dict[str, str], resp: Response) -> Response:
        event_id = as_int(params.get("id"))
        with self._lock:
            rows = self._hostile.get(str(event_id))
        return resp if rows is None or event_id is None else add_hostile_rows(resp, rows, event_id)

    # ------------------------------------------------------------------ request handling
    def _serve(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Response:
        url = urlsplit(target)
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(method, url.path, url.query, headers, body, time.time(), self.clock.now())
        if self.latency > 0:
            self._stopping.wait(self.latency)
        route = None if self.gateway_only else _ROUTES.get((method, url.path))
        gateway_endpoint = gateway_route(method, url.path, self.stage)
        if gateway_endpoint is not None:
            route = (gateway_endpoint, "gateway")
        if route is None and self.gateway_only:
            return self._record(rec, not_published(method, url.path))
        if route is None:
            if url.path.startswith("/api/bk-monitor/"):
                message = f'API not found [method="{method}" path="{url.path}"]'
                return self._record(rec, gateway_error(404, 1640401, "API_NOT_FOUND", message))
            return self._record(rec, not_found())
        rec.endpoint, rec.flavour = route
        if rec.endpoint == "get_event_log":
            rec.alarm_id = params.get("id")
        fault = rec.fault = self._take_fault(rec.endpoint)
        if fault == "slow":
            self._stopping.wait(self.slow_seconds)
            fault = None
        if fault is not None and fault != "malformed_json":
            resp = fault_response(fault, endpoint=rec.endpoint, flavour=rec.flavour, app_code=self.app_code)
        else:
            lower = {k.lower(): v for k, v in headers.items()}
            resp = self._answer(rec.endpoint, rec.flavour, params, body, raw, lower)
            if rec.endpoint == "get_event_log":
                resp = self._with_hostile_rows(params, resp)
            if fault == "malformed_json":  # a body cut in the middle, still labelled JSON
                resp.body = resp.body[: max(1, len(resp.body) // 2)]
                resp.headers = [("Content-Type", "application/json"), *gateway_headers()]
        return self._record(rec, resp)

    def _record(self, rec: RecordedRequest, resp: Response) -> Response:
        rec.status = None if resp.reset else resp.status
        with self._lock:
            self.requests.append(rec)
            self._counts[(None, None)] += 1
            if rec.endpoint is not None:
                self._counts[(rec.endpoint, None)] += 1
                if rec.alarm_id is not None:
                    self._counts[(rec.endpoint, rec.alarm_id)] += 1
        return resp

    def _answer(
        self,
        endpoint: str,
        flavour: str,
        params: dict[str, str],
        body: Any,
        raw: bytes,
        headers: dict[str, str],
    ) -> Response:
        body_dict = body if isinstance(body, dict) else {}
        if flavour == "gateway":
            denied = gateway_auth(headers, self.app_code, self.app_secret) or tenant_refusal(headers, self.tenant_id)
        elif endpoint == "search_alert" and raw.strip() and not isinstance(body, dict):
            denied = esb_error(1306406, "Request parameter error: the request body is not a valid JSON object")
        else:
            denied = self._esb_auth(headers, params if endpoint == "get_event_log" else body_dict)
        if denied is not None:
            return denied
        try:
            with self._lock:
                if endpoint == "get_event_log":
                    data: Any = self._get_event_log(params)
                elif endpoint == "search_action":
                    data = search_action(self._store.alarms.values(), body_dict)
                else:
                    data, heavy = search_alert(
                        self._store.alarms.values(),
                        body_dict,
                        now=self.clock.now(),
                        biz_names=self.biz_names,
                        result_window=self.result_window,
                    )
                    self.heavy_searches += heavy
        except ApiError as exc:
            return esb_response(exc.body(), flavour)
        payload: dict[str, Any] = {"result": True, "code": 200, "message": "OK", "data": data}
        if self.response_hook is not None:
            payload = self.response_hook(endpoint, payload)
        return esb_response(payload, flavour)

    def _esb_auth(self, headers: dict[str, str], params: dict[str, Any]) -> Response | None:
        """ESB validators: the JSON ``X-Bkapi-Authorization`` header first, else the params/body."""
        creds: Any = params
        if "x-bkapi-authorization" in headers:
            try:
                creds = json.loads(headers["x-bkapi-authorization"])
            except ValueError:
                creds = None
            if not isinstance(creds, dict):
                return esb_error(1306406, "Request parameter error: X-Bkapi-Authorization is not a valid JSON")
        app_code = creds.get("bk_app_code") or creds.get("app_code")
        secret = creds.get("bk_app_secret") or creds.get("app_secret")
        user = creds.get("bk_token") or creds.get("bk_username") or creds.get("username")
        if not app_code:
            message = "APP Code [bk_app_code] cannot be empty"
        elif not secret:
            message = "APP Secret [bk_app_secret] cannot be empty"
        elif app_code != self.app_code:
            message = f"Invalid APP Code [bk_app_code={app_code}], please confirm if the APP Code has been registered"
        elif secret != self.app_secret:
            message = (
                "APP Secret verification failed, pelase confirm if the APP Secret and APP Code "
                f"[bk_app_code={app_code}] match"
            )
        elif not user:
            message = "User authentication failed, please provide a valid user identity, such as bk_token, bk_username"
        else:
            return None
        return esb_error(1306000, message)

    def _get_event_log(self, params: dict[str, str]) -> list[dict[str, Any]]:
        if "id" not in params:
            raise param_error(_EVENT_LOG_RESOURCE, "id", "该字段是必填项。")
        event_id = as_int(params["id"])
        if event_id is None:
            raise param_error(_EVENT_LOG_RESOURCE, "id", "请填写合法的整数值。")
        alarm = self._store.alarms.get(str(event_id))
        if alarm is None or alarm.expired:
            if self.legacy:  # 3.x: DRF ValidationError through api_exception_handler
                message = f"event({event_id}) not exists."
                raise ApiError(400, f"[ErrorDetail(string='{message}', code='invalid')]", detail=[message])
            raise ApiError(3324002, f"告警ID ({event_id}) 对应的告警信息不存在")
        return alarm.event_log(event_id, legacy=self.legacy)
