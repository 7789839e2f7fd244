"""The OTLP wire: one serialized ``Export*ServiceRequest`` out, the backend's real answer back.

No SDK exporter: the SDK's hide the status code, take a 3xx for a delivery and drop
``partial_success``. Here:

* gRPC (grpcio): one channel; the ``Export`` methods of opentelemetry-proto's ``LogsService`` and
  ``TraceService`` (their names and response types from its descriptors), called with the
  already-serialized bytes, the headers as metadata with lower-cased names (HTTP/2 and grpc
  refuse upper-case ones), gzip when configured, TLS credentials, and the timeout;
* HTTP/protobuf (requests): ``POST <endpoint>/v1/logs`` or ``/v1/traces``, ``Content-Type:
  application/x-protobuf``, gzip when configured, redirects not followed.

How an answer is classified (the outcomes are :class:`exporter.sinks.base.ExportOutcome`):

==================================================  =========================================
answer                                              outcome
==================================================  =========================================
HTTP 2xx, gRPC OK                                   SUCCESS; ``partial_success`` read: the
                                                    refused count and the backend's message
HTTP 3xx                                            RETRY, naming the ``Location``: only a 2xx
                                                    answer is a delivery
HTTP 400, gRPC INVALID_ARGUMENT                     REJECTED (the data itself is refused)
HTTP 413, gRPC RESOURCE_EXHAUSTED for the size      TOO_LARGE (the sender splits the batch)
HTTP 429/502/503/504                                RETRY, after ``Retry-After`` when given
gRPC UNIMPLEMENTED                                  RETRY for that signal, naming the service
                                                    the backend lacks
any other status, a timeout, no connection          RETRY (gRPC ``RetryInfo`` read when given)
==================================================  =========================================

Authentication failures (401/403, UNAUTHENTICATED) and 404 keep the records queued: they are
fixed by a config change or on the backend's side, and the data is not at fault.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import requests
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from exporter import __version__
from exporter.redact import redact_url, strip_query
from exporter.sinks.base import ExportOutcome, ExportResult

__all__ = [
    "GrpcTransport",
    "HttpTransport",
    "grpc_metadata",
    "partial_result",
    "retry_after_seconds",
    "signal_url",
]

log = logging.getLogger(__name__)

USER_AGENT = f"bk-otel-exporter/{__version__}"
#: what each signal is called by the backend's services and paths
SERVICE_NAMES = {"logs": "logs", "spans": "traces"}
_HTTP_PATHS = {"logs": "/v1/logs", "spans": "/v1/traces"}
_RESPONSES: dict[str, Callable[[bytes], Any]] = {
    "logs": logs_service_pb2.ExportLogsServiceResponse.FromString,
    "spans": trace_service_pb2.ExportTraceServiceResponse.FromString,
}
_METHODS = {
    "logs": logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].methods_by_name["Export"],
    "spans": trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].methods_by_name["Export"],
}
_RETRY_HTTP = frozenset({429, 502, 503, 504})
# grpc core: "Received message larger than max (N vs. M)"; grpc-go: "grpc: received message larger
# than max"; grpc-java: "... exceeds maximum size". A RESOURCE_EXHAUSTED without such words is a
# busy backend (memory limiter, quota): retried, never split.
_SIZE_REFUSAL = re.compile(r"larger than max|exceeds? (the )?maximum|message too large|too large", re.IGNORECASE)
_DETAIL_MAX = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


def signal_url(endpoint: str, signal: str) -> str:
    """``endpoint`` with the signal's OTLP/HTTP path (a ``/v1/logs`` or ``/v1/traces`` already there is replaced)."""
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    for suffix in _HTTP_PATHS.values():
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return urlunsplit((parts.scheme, parts.netloc, path + _HTTP_PATHS[signal], parts.query, ""))


def grpc_metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``headers`` as gRPC metadata: names lower-cased (``Authorization`` -> ``authorization``)."""
    return tuple((name.strip().lower(), value) for name, value in headers.items())


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """An HTTP ``Retry-After`` (seconds, or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def partial_result(signal: str, response: Any) -> ExportResult:
    """SUCCESS, with what the answer's ``partial_success`` says was refused (and the backend's message)."""
    if not response.HasField("partial_success"):
        return ExportResult(ExportOutcome.SUCCESS)
    part = response.partial_success
    rejected = part.rejected_log_records if signal == "logs" else part.rejected_spans
    return ExportResult(ExportOutcome.SUCCESS, _short(part.error_message), rejected=max(0, int(rejected)))


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


# -- gRPC -------------------------------------------------------------------------------------------


def _retry_info(call: grpc.Call) -> float | None:
    """The ``RetryInfo`` delay of a failed call's ``grpc-status-details-bin``, if the backend sent one."""
    for key, value in call.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class GrpcTransport:
    """OTLP/gRPC on one channel. ``endpoint`` is ``http(s)://host:port`` (or ``host:port``)."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str],
        compression: str,
        timeout: float,
        insecure: bool | None,
        ca_file: str | None = None,
        client_cert_file: str | None = None,
        client_key_file: str | None = None,
    ) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        self.where = redact_url(endpoint)
        target = parts.netloc.rpartition("@")[2] or endpoint
        plain = insecure if insecure is not None else parts.scheme != "https"
        # A collector that comes back is reconnected to within seconds, not grpc's default of up to
        # two minutes of reconnect backoff (the sender keeps its own backoff between attempts).
        options = [
            ("grpc.primary_user_agent", USER_AGENT),
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        if plain:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_file),
                private_key=_read(client_key_file),
                certificate_chain=_read(client_cert_file),
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._metadata = grpc_metadata(headers)
        self._timeout = timeout
        self._compression = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        self._calls = {
            signal: self._channel.unary_unary(
                f"/{method.containing_service.full_name}/{method.name}",
                request_serializer=None,  # the bytes are already an Export*ServiceRequest
                response_deserializer=_RESPONSES[signal],
            )
            for signal, method in _METHODS.items()
        }

    def send(self, signal: str, body: bytes) -> ExportResult:
        try:
            # wait_for_ready: a channel still (re)connecting is waited for, within the timeout, instead
            # of failing at once (a collector restarted a moment ago takes the final flush at shutdown).
            response = self._calls[signal](
                body,
                metadata=self._metadata,
                timeout=self._timeout,
                compression=self._compression,
                wait_for_ready=True,
            )
        except grpc.RpcError as exc:
            return self._failed(signal, exc)
        except Exception as exc:  # grpc should raise RpcError only; keep the records queued anyway
            log.debug("OTLP/gRPC %s export raised", signal, exc_info=True)
            return ExportResult(ExportOutcome.RETRY, f"gRPC export to {self.where} raised {type(exc).__name__}")
        return partial_result(signal, response)

    def _failed(self, signal: str, exc: grpc.RpcError) -> ExportResult:
        if not isinstance(exc, grpc.Call):  # pragma: no cover - grpcio's errors are Calls
            return ExportResult(ExportOutcome.RETRY, f"gRPC error from {self.where}: {type(exc).__name__}")
        code = exc.code()
        details = _short(exc.details() or "")
        said = f"gRPC {code.name} from {self.where}" + (f": {details}" if details else "")
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return ExportResult(ExportOutcome.REJECTED, said)
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED and _SIZE_REFUSAL.search(details):
            return ExportResult(ExportOutcome.TOO_LARGE, said)
        if code is grpc.StatusCode.UNIMPLEMENTED:
            service = SERVICE_NAMES[signal]
            said = (
                f"{self.where} has no OTLP {service} service (gRPC UNIMPLEMENTED): configure a {service} "
                f"pipeline there or remove {signal} from export.signals; the {signal} stay queued"
            )
        return ExportResult(ExportOutcome.RETRY, said, retry_after=_retry_info(exc))

    def close(self) -> None:
        self._channel.close()


# -- HTTP -------------------------------------------------------------------------------------------


class HttpTransport:
    """OTLP/HTTP with protobuf bodies; ``endpoint`` is the base URL (the signal paths are appended)."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str],
        compression: str,
        timeout: float,
        ca_file: str | None = None,
        client_cert_file: str | None = None,
        client_key_file: str | None = None,
        as_is: bool = False,
    ) -> None:
        # as_is: a signal's own endpoint (export.logs.endpoint, OTEL_EXPORTER_OTLP_LOGS_ENDPOINT) is the full URL
        self._urls = {signal: endpoint if as_is else signal_url(endpoint, signal) for signal in _HTTP_PATHS}
        self._gzip = compression == "gzip"
        self._headers = {**headers, "Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._timeout = timeout
        self._verify: bool | str = ca_file or True
        self._cert = (client_cert_file, client_key_file) if client_cert_file and client_key_file else None
        self._session = requests.Session()

    def send(self, signal: str, body: bytes) -> ExportResult:
        url = self._urls[signal]
        where = redact_url(url)
        data = gzip.compress(body, compresslevel=6) if self._gzip else body
        try:
            response = self._session.post(
                url,
                data=data,
                headers=self._headers,
                timeout=self._timeout,
                verify=self._verify,
                cert=self._cert,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return ExportResult(ExportOutcome.RETRY, f"no answer from {where}: {type(exc).__name__}")
        with response:
            return self._answer(signal, where, response)

    def _answer(self, signal: str, where: str, response: requests.Response) -> ExportResult:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return partial_result(signal, _RESPONSES[signal](response.content))
            except DecodeError:  # accepted: an answer we cannot read says nothing about refusals
                log.debug("OTLP/HTTP %s answer from %s is not an Export*ServiceResponse", signal, where)
                return ExportResult(ExportOutcome.SUCCESS)
        if 300 <= status < 400:
            location = response.headers.get("Location")
            to = f"to {redact_url(strip_query(location))}" if location else "without a Location"
            return ExportResult(
                ExportOutcome.RETRY,
                f"HTTP {status} redirect {to} from {where}: not a delivery (only a 2xx answer is); "
                "set export.endpoint to the address the backend really answers on",
            )
        said = f"HTTP {status} from {where}" + _status_message(response)
        if status == 400:
            return ExportResult(ExportOutcome.REJECTED, said)
        if status == 413:
            return ExportResult(ExportOutcome.TOO_LARGE, said)
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        return ExportResult(ExportOutcome.RETRY, said, retry_after=wait if status in _RETRY_HTTP else None)

    def close(self) -> None:
        self._session.close()


def _status_message(response: requests.Response) -> str:
    """``": <message>"`` of a protobuf ``google.rpc.Status`` error body, else ``""``."""
    if "protobuf" not in response.headers.get("Content-Type", ""):
        return ""
    try:
        message = status_pb2.Status.FromString(response.content).message
    except DecodeError:
        return ""
    return f": {_short(message)}" if message else ""
