"""An in-process OTLP receiver for integration tests: gRPC and HTTP/protobuf on loopback.

``OtlpReceiver`` plays the observability backend. It listens on two ephemeral 127.0.0.1 ports:

* gRPC (grpcio): ``opentelemetry.proto.collector.logs.v1.LogsService/Export`` and
  ``opentelemetry.proto.collector.trace.v1.TraceService/Export``, plain or gzip/deflate;
* HTTP/protobuf (stdlib ``ThreadingHTTPServer``): ``POST /v1/logs`` and ``POST /v1/traces``,
  ``Content-Encoding: gzip`` (or ``deflate``) honoured, answered with the matching
  ``Export*ServiceResponse`` as ``application/x-protobuf``.

Every accepted request is decoded and flattened into plain dicts, one per log record or span,
in arrival order, so tests assert on values rather than protobuf classes (see
``decode_log_record`` and ``decode_span`` for the keys). ``mode`` injects faults at any time:

=============== ======================= ========= =============================
mode            gRPC status             HTTP      OTLP meaning
=============== ======================= ========= =============================
``"ok"``        OK                      200       accepted and stored
``"unavailable"`` UNAVAILABLE           503       retryable: "try again later"
``"reject"``    INVALID_ARGUMENT        400       permanent: "never resend this"
=============== ======================= ========= =============================

Refused requests are listed in ``requests`` (``accepted=False``) but their items are not
stored. A body that does not decode is refused with INVALID_ARGUMENT / 400 whatever the mode.

Field conditions, set at construction or (``partial_success``) at any time:

* ``services=("logs",)``: a backend without a traces pipeline. gRPC answers UNIMPLEMENTED for
  the missing service (grpcio's own answer to an unknown method), HTTP 404 for its path.
* ``max_receive_bytes`` (default 4 MiB, grpc's and the OpenTelemetry Collector's default gRPC
  receive limit; for HTTP the default is 20 MiB, the Collector's ``max_request_body_size``): a
  request larger than that, once decompressed, is refused with RESOURCE_EXHAUSTED
  "received message larger than max (N vs. M)" (the Collector's words) / HTTP 413.
* ``partial_success = (n, message)``: every accepted request is answered with
  ``partial_success`` saying its first ``n`` items (at most all of them) were refused, with
  ``message``; those are not stored (``RequestInfo.rejected`` counts them).

Typical use::

    with OtlpReceiver() as receiver:
        ...  # point an exporter, or rotel (tests/support/rotel.py), at receiver.grpc_endpoint
        [log] = receiver.wait_for_logs(1)
        assert log["body"] == "hello"
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable, Collection, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.support.otlp_decode import (
    any_value_to_python,
    attributes_to_dict,
    decode_log_record,
    decode_span,
    flatten_logs,
    flatten_spans,
)

__all__ = [
    "GRPC_MAX_RECEIVE",
    "HTTP_MAX_RECEIVE",
    "MODES",
    "OtlpReceiver",
    "RequestInfo",
    "any_value_to_python",
    "attributes_to_dict",
    "decode_log_record",
    "decode_span",
]

Mode = Literal["ok", "unavailable", "reject"]
Signal = Literal["logs", "traces"]
Transport = Literal["grpc", "http"]
MODES: tuple[str, ...] = ("ok", "unavailable", "reject")
#: grpc's default receive limit, also the OpenTelemetry Collector's OTLP/gRPC default
GRPC_MAX_RECEIVE = 4 * 1024 * 1024
#: the OpenTelemetry Collector's default OTLP/HTTP max_request_body_size
HTTP_MAX_RECEIVE = 20 * 1024 * 1024


@dataclass(frozen=True)
class RequestInfo:
    """One Export call as the receiver saw it, accepted or not."""

    transport: Transport
    signal: Signal
    compressed: bool
    """The body arrived compressed (gzip, or deflate): gRPC message flag / ``Content-Encoding``."""
    headers: dict[str, Any]
    """HTTP headers (lower-cased names) or gRPC invocation metadata (``-bin`` values are bytes)."""
    items: int
    """Log records or spans in the request (0 when the body did not decode)."""
    accepted: bool
    status: str
    """What was answered: a gRPC status name ("OK", "UNAVAILABLE", ...) or an HTTP code ("503")."""
    error: str = ""
    """Why a body was refused as malformed, else empty."""
    rejected: int = 0
    """Items an accepted request's ``partial_success`` answer refused (not stored)."""
    size: int = 0
    """Bytes of the request once decompressed (0 when it did not decompress)."""
    received_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _SignalKind:
    grpc_service: str
    http_path: str
    request_type: Callable[[], Any]
    response_type: Callable[[], Any]
    flatten: Callable[[Any], list[dict[str, Any]]]


_SIGNALS: dict[Signal, _SignalKind] = {
    "logs": _SignalKind(
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "/v1/logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        flatten_logs,
    ),
    "traces": _SignalKind(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "/v1/traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        flatten_spans,
    ),
}

# outcome -> what each transport answers
_GRPC_STATUS = {
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "ok": grpc.StatusCode.OK,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "reject": grpc.StatusCode.INVALID_ARGUMENT,
    "malformed": grpc.StatusCode.INVALID_ARGUMENT,
}
_HTTP_STATUS = {
    "too_large": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "ok": HTTPStatus.OK,
    "unavailable": HTTPStatus.SERVICE_UNAVAILABLE,
    "reject": HTTPStatus.BAD_REQUEST,
    "malformed": HTTPStatus.BAD_REQUEST,
}


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported encoding {encoding!r}")


def _sniff_grpc_encoding(raw: bytes) -> str:
    """The compression of a gRPC message received with per-message decompression off.

    A serialized Export*ServiceRequest starts with tag 0x0a (field 1) or is empty, so a gzip
    magic (1f 8b) or a zlib header (78 ..) cannot be an uncompressed message.
    """
    if raw[:2] == b"\x1f\x8b":
        return "gzip"
    if raw[:1] == b"\x78":
        return "deflate"
    return "identity"


# --------------------------------------------------------------------------------------------
# HTTP transport


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _HttpHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads parked on idle keep-alive connections so they finish."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HttpHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass  # keep test output clean

    def do_POST(self) -> None:  # noqa: N802 (stdlib method name)
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._reply(HTTPStatus.BAD_REQUEST, _status_body(code_pb2.INVALID_ARGUMENT, str(exc)))
            return
        path = self.path.split("?", 1)[0]
        receiver = self.server.receiver
        signal = next((name for name, kind in _SIGNALS.items() if kind.http_path == path), None)
        if signal is None or signal not in receiver.services:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        encoding = headers.get("content-encoding", "identity").strip().lower()
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-protobuf":
            error = f"unsupported Content-Type {content_type!r}: this receiver speaks only protobuf"
            self.server.receiver._refuse("http", signal, encoding, headers, "415", error)
            body = _status_body(code_pb2.INVALID_ARGUMENT, error)
            self._reply(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, body)
            return
        outcome, message = receiver._process("http", signal, body, encoding, headers)
        if outcome == "ok":
            reply = receiver._response(signal).SerializeToString()
        else:
            reply = _status_body(_RPC_CODES.get(outcome, code_pb2.INVALID_ARGUMENT), message)
        self._reply(_HTTP_STATUS[outcome], reply)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError(f"bad Content-Length {length}")
        return self.rfile.read(length)

    def _reply(self, status: int, body: bytes, content_type: str = "application/x-protobuf") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


_RPC_CODES = {"unavailable": code_pb2.UNAVAILABLE, "too_large": code_pb2.RESOURCE_EXHAUSTED}


def _status_body(code: int, message: str) -> bytes:
    return status_pb2.Status(code=code, message=message).SerializeToString()


# --------------------------------------------------------------------------------------------
# gRPC transport


def _grpc_handlers(receiver: OtlpReceiver) -> list[grpc.GenericRpcHandler]:
    """Export handlers that take the raw message bytes.

    The server runs with per-message decompression off, so a gzip request reaches the handler
    still compressed: grpcio hides ``grpc-encoding`` from the invocation metadata, and this is
    the only way to tell, from python, that the client compressed it.
    """

    def handler_for(signal: Signal) -> grpc.RpcMethodHandler:
        def export(raw: bytes, context: grpc.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata())
            encoding = _sniff_grpc_encoding(raw)
            outcome, message = receiver._process("grpc", signal, raw, encoding, metadata)
            if outcome != "ok":
                context.abort(_GRPC_STATUS[outcome], message)
            return receiver._response(signal)

        return grpc.unary_unary_rpc_method_handler(
            export, request_deserializer=None, response_serializer=lambda m: m.SerializeToString()
        )

    return [
        grpc.method_handlers_generic_handler(kind.grpc_service, {"Export": handler_for(signal)})
        for signal, kind in _SIGNALS.items()
        if signal in receiver.services
    ]


# --------------------------------------------------------------------------------------------
# the receiver


class OtlpReceiver:
    """OTLP logs + traces receiver on 127.0.0.1, gRPC and HTTP/protobuf; see the module docstring.

    Thread-safe: the servers call in from their own threads while the test reads and waits.
    """

    def __init__(
        self,
        mode: Mode = "ok",
        *,
        services: Collection[Signal] = ("logs", "traces"),
        max_receive_bytes: int | None = None,
    ) -> None:
        self.services = frozenset(services)
        self.grpc_max_receive = max_receive_bytes or GRPC_MAX_RECEIVE
        self.http_max_receive = max_receive_bytes or HTTP_MAX_RECEIVE
        #: ``(n, message)``: answer every accepted request with a partial_success refusing n items
        self.partial_success: tuple[int, str] | None = None
        self._answer = threading.local()  # the partial_success of this thread's request
        self._cond = threading.Condition()
        self._logs: list[dict[str, Any]] = []
        self._spans: list[dict[str, Any]] = []
        self.requests: list[RequestInfo] = []
        self.mode = mode
        self.grpc_port = 0
        self.http_port = 0
        self._grpc_server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> OtlpReceiver:
        if self._grpc_server is not None:
            raise RuntimeError("OtlpReceiver already started")
        self._executor = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-receiver-grpc")
        server = grpc.server(
            self._executor,
            handlers=_grpc_handlers(self),
            options=[
                ("grpc.per_message_decompression", 0),
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", self.grpc_max_receive),
            ],
        )
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc_server = server

        http_server = _HttpServer(self)
        self.http_port = http_server.server_address[1]
        self._http_server = http_server
        self._http_thread = threading.Thread(
            target=http_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver-http",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop both servers; safe to call twice. Stored items stay readable."""
        grpc_server, self._grpc_server = self._grpc_server, None
        http_server, self._http_server = self._http_server, None
        http_thread, self._http_thread = self._http_thread, None
        executor, self._executor = self._executor, None
        if grpc_server is not None:
            grpc_server.stop(grace=0.2).wait()
        if executor is not None:
            executor.shutdown(wait=True)
        if http_server is not None:
            http_server.shutdown()
            http_server.close_connections()
            http_server.server_close()
        if http_thread is not None:
            http_thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: an OTLP/gRPC endpoint (insecure)."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the OTLP/HTTP base URL (append ``/v1/logs``, ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.http_port}"

    # -- fault injection

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        if value not in MODES:
            raise ValueError(f"OtlpReceiver.mode must be one of {MODES}, not {value!r}")
        self._mode = value

    # -- what arrived

    def logs(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._logs)

    def spans(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._spans)

    def clear(self) -> None:
        """Forget stored logs, spans and requests (the mode is kept)."""
        with self._cond:
            self._logs.clear()
            self._spans.clear()
            self.requests.clear()

    def wait_for_logs(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` log records were accepted; return all of them."""
        return self._wait(lambda: self._logs, f"{n} log records", n, timeout)

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` spans were accepted; return all of them."""
        return self._wait(lambda: self._spans, f"{n} spans", n, timeout)

    def wait_for_requests(
        self,
        n: int,
        timeout: float = 10.0,
        where: Callable[[RequestInfo], bool] | None = None,
    ) -> list[RequestInfo]:
        """Wait until at least ``n`` requests (matching ``where``, if given) arrived, refused or not."""

        def matching() -> list[RequestInfo]:
            return [r for r in self.requests if where is None or where(r)]

        return self._wait(matching, f"{n} matching requests", n, timeout)

    def _wait(self, items: Callable[[], list[Any]], what: str, n: int, timeout: float) -> list[Any]:
        with self._cond:
            if self._cond.wait_for(lambda: len(items()) >= n, timeout=timeout):
                return list(items())
            got = len(items())
            requests = list(self.requests)
            logs, spans = len(self._logs), len(self._spans)
        lines = [
            f"  {r.transport} {r.signal}: items={r.items} accepted={r.accepted} status={r.status}"
            f" compressed={r.compressed}{' error=' + r.error if r.error else ''}"
            for r in requests[-10:]
        ]
        raise AssertionError(
            f"timed out after {timeout:.1f}s waiting for {what} at the OTLP receiver "
            f"(mode={self.mode!r}); got {got}. Stored: {logs} log records, {spans} spans. "
            f"{len(requests)} requests, the last ones:\n" + ("\n".join(lines) or "  (none)")
        )

    # -- request handling, called from server threads

    def _process(
        self, transport: Transport, signal: Signal, raw: bytes, encoding: str, headers: Mapping[str, Any]
    ) -> tuple[str, str]:
        """Decode a request, store its items if the mode allows; returns (outcome, message)."""
        kind = _SIGNALS[signal]
        decoded: list[dict[str, Any]] = []
        error = ""
        limit = self.grpc_max_receive if transport == "grpc" else self.http_max_receive
        size = 0
        try:
            plain = _decompress(raw, encoding)
            size = len(plain)
            if size <= limit:
                request = kind.request_type()
                request.ParseFromString(plain)
                decoded = kind.flatten(request)
        except (DecodeError, OSError, EOFError, zlib.error, ValueError) as exc:
            error = f"cannot decode the {signal} request ({encoding}): {exc}"
        outcome = "malformed" if error else "too_large" if size > limit else self.mode
        if outcome == "too_large":
            error = f"received message larger than max ({size} vs. {limit})"
        partial = self.partial_success if outcome == "ok" else None
        rejected = min(partial[0], len(decoded)) if partial else 0
        self._answer.partial = (rejected, partial[1]) if partial else None
        status = _GRPC_STATUS[outcome].name if transport == "grpc" else str(int(_HTTP_STATUS[outcome]))
        info = RequestInfo(
            transport=transport,
            signal=signal,
            compressed=encoding not in ("", "identity"),
            headers=dict(headers),
            items=len(decoded),
            accepted=outcome == "ok",
            status=status,
            error=error,
            rejected=rejected,
            size=size,
        )
        with self._cond:
            self.requests.append(info)
            if outcome == "ok":
                (self._logs if signal == "logs" else self._spans).extend(decoded[rejected:])
            self._cond.notify_all()
        return outcome, error or f"OtlpReceiver mode={outcome}"

    def _response(self, signal: Signal) -> Any:
        """The Export*ServiceResponse for this thread's accepted request (with its partial_success)."""
        response = _SIGNALS[signal].response_type()
        partial = getattr(self._answer, "partial", None)
        if partial is not None:
            rejected, message = partial
            field_name = "rejected_log_records" if signal == "logs" else "rejected_spans"
            setattr(response.partial_success, field_name, rejected)
            response.partial_success.error_message = message
        return response

    def _refuse(
        self,
        transport: Transport,
        signal: Signal,
        encoding: str,
        headers: Mapping[str, Any],
        status: str,
        error: str,
    ) -> None:
        info = RequestInfo(transport, signal, encoding not in ("", "identity"), dict(headers), 0, False, status, error)
        with self._cond:
            self.requests.append(info)
            self._cond.notify_all()
