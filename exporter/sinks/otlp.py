"""The OTLP sink: the only module that imports the OpenTelemetry SDK's exporters.

It turns LogEvents and SpanRecords into the SDK's ``ReadableLogRecord``/``ReadableSpan``
(:mod:`exporter.sinks.otlp_encoding`) and calls
the OTLP exporter's ``export()`` directly. The SDK's batch processors are deliberately not used:
they drop the export result, and the outbox must know it (a row leaves the outbox only on SUCCESS).

Telling a permanent rejection from an outage: the SDK exporters answer only SUCCESS/FAILURE. For
HTTP the status code is read from a response hook on our own ``requests.Session``; for gRPC from
the status code the exporter reports on its logger when it gives up (captured by a filter while
our own export call runs on this thread, which also keeps that per-batch line out of the log: the
sender reports outages itself, rate-limited). Permanent means the data itself was refused (HTTP
400/413, gRPC INVALID_ARGUMENT); authentication, 404 and 5xx keep the records queued.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import requests
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from exporter.model import LogEvent, SpanRecord
from exporter.sinks.base import Batch, ExportOutcome, ExportResult
from exporter.sinks.otlp_encoding import FixedResource, default_resource_attributes, log_record, readable_span

__all__ = ["OtlpSettings", "OtlpSink", "default_resource_attributes"]

log = logging.getLogger(__name__)

_GRPC_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
_HTTP_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)
_PERMANENT_HTTP = frozenset({400, 413})
_PERMANENT_GRPC = frozenset({"INVALID_ARGUMENT"})


@dataclass(frozen=True)
class OtlpSettings:
    endpoint: str
    protocol: str = "grpc"  # "grpc" | "http/protobuf"
    headers: Mapping[str, str] = field(default_factory=dict)
    compression: str = "gzip"
    timeout: float = 10.0
    insecure: bool | None = None
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    resource: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # headers may carry credentials
        return f"OtlpSettings(endpoint={self.endpoint!r}, protocol={self.protocol!r})"


class _LastError(threading.local):
    http_status: int | None = None
    grpc_code: str | None = None
    capturing: bool = False


_last = _LastError()


class _GrpcFailureFilter(logging.Filter):
    """Captures the gRPC status the exporter reports, on the exporting thread only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _last.capturing:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            name = getattr(arg, "name", None)
            if isinstance(arg, grpc.StatusCode) and name:
                _last.grpc_code = name
        return record.levelno < logging.WARNING  # ours to report; keep debug lines


class _HttpFailureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _last.capturing or record.levelno < logging.WARNING


def _install_filters() -> None:
    grpc_logger = logging.getLogger(_GRPC_LOGGER)
    if not any(isinstance(f, _GrpcFailureFilter) for f in grpc_logger.filters):
        # First in line: the SDK's own DuplicateFilter on this logger drops a repeat of the same
        # message within 20 s, and a filter after it would never see the status code of a
        # second rejection in a row (it would be taken for an outage and retried).
        grpc_logger.filters.insert(0, _GrpcFailureFilter())
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HttpFailureFilter) for f in logger.filters):
            logger.addFilter(_HttpFailureFilter())


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def _signal_url(endpoint: str, signal: str) -> str:
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    for suffix in ("/v1/logs", "/v1/traces"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    path += "/v1/logs" if signal == "logs" else "/v1/traces"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class OtlpSink:
    """Exports logs and spans over OTLP (gRPC or HTTP/protobuf)."""

    def __init__(self, settings: OtlpSettings) -> None:
        self.settings = settings
        self.name = f"otlp-{'grpc' if settings.protocol == 'grpc' else 'http'}"
        self._resource = FixedResource(settings.resource)
        self._session: requests.Session | None = None
        _install_filters()
        self._logs, self._spans = self._build()

    def _build(self) -> tuple[Any, Any]:
        s = self.settings
        headers = dict(s.headers)
        if s.protocol == "grpc":
            insecure = s.insecure if s.insecure is not None else urlsplit(s.endpoint).scheme != "https"
            credentials = None
            if not insecure:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read(s.ca_file),
                    private_key=_read(s.client_key_file),
                    certificate_chain=_read(s.client_cert_file),
                )
            compression = grpc.Compression.Gzip if s.compression == "gzip" else grpc.Compression.NoCompression
            common: dict[str, Any] = dict(
                endpoint=s.endpoint,
                insecure=insecure,
                credentials=credentials,
                headers=headers,
                timeout=s.timeout,
                compression=compression,
            )
            return GrpcLogExporter(**common), GrpcSpanExporter(**common)
        self._session = requests.Session()
        self._session.hooks["response"].append(self._on_response)
        compression_http = HttpCompression.Gzip if s.compression == "gzip" else HttpCompression.NoCompression
        client_cert = s.client_cert_file if s.client_cert_file and s.client_key_file else None
        http_common: dict[str, Any] = dict(
            headers=headers,
            timeout=s.timeout,
            compression=compression_http,
            session=self._session,
            certificate_file=s.ca_file,
            client_certificate_file=client_cert,
            client_key_file=s.client_key_file if client_cert else None,
        )
        return (
            HttpLogExporter(endpoint=_signal_url(s.endpoint, "logs"), **http_common),
            HttpSpanExporter(endpoint=_signal_url(s.endpoint, "spans"), **http_common),
        )

    @staticmethod
    def _on_response(response: requests.Response, *args: object, **kwargs: object) -> None:
        _last.http_status = response.status_code

    # -- the Sink contract --------------------------------------------------------------------------
    def export(self, signal: str, batch: Batch) -> ExportResult:
        if not batch:
            return ExportResult(ExportOutcome.SUCCESS)
        _last.http_status = None
        _last.grpc_code = None
        _last.capturing = True
        try:
            if signal == "logs":
                logs = [log_record(e, self._resource) for e in batch if isinstance(e, LogEvent)]
                ok = self._logs.export(logs) is LogRecordExportResult.SUCCESS
            else:
                spans = [readable_span(s, self._resource) for s in batch if isinstance(s, SpanRecord)]
                ok = self._spans.export(spans) is SpanExportResult.SUCCESS
        except Exception as exc:  # the SDK should not raise; if it does, keep the records queued
            log.debug("OTLP %s export raised", signal, exc_info=True)
            return self._unencodable(signal, batch) or ExportResult(ExportOutcome.RETRY, f"{type(exc).__name__}: {exc}")
        finally:
            _last.capturing = False
        if ok:
            return ExportResult(ExportOutcome.SUCCESS)
        if _last.http_status is None and _last.grpc_code is None:
            # No answer: an outage, or a batch the SDK could not even encode (it logs that and
            # returns FAILURE). Retrying the same bytes can never help the latter: without this
            # check one such record would hold the whole outbox back for ever.
            return self._unencodable(signal, batch) or self._classify()
        return self._classify()

    def _unencodable(self, signal: str, batch: Batch) -> ExportResult | None:
        """REJECTED when the batch cannot be turned into an OTLP request at all, else None."""
        try:
            if signal == "logs":
                encode_logs(
                    [log_record(e, self._resource) for e in batch if isinstance(e, LogEvent)]
                ).SerializeToString()
            else:
                encode_spans(
                    [readable_span(s, self._resource) for s in batch if isinstance(s, SpanRecord)]
                ).SerializeToString()
        except Exception as exc:
            return ExportResult(ExportOutcome.REJECTED, f"cannot be encoded as OTLP: {type(exc).__name__}: {exc}")
        return None

    def _classify(self) -> ExportResult:
        if _last.http_status is not None:
            detail = f"HTTP {_last.http_status} from {self.settings.endpoint}"
            if _last.http_status in _PERMANENT_HTTP:
                return ExportResult(ExportOutcome.REJECTED, detail)
            return ExportResult(ExportOutcome.RETRY, detail)
        if _last.grpc_code is not None:
            detail = f"gRPC {_last.grpc_code} from {self.settings.endpoint}"
            if _last.grpc_code in _PERMANENT_GRPC:
                return ExportResult(ExportOutcome.REJECTED, detail)
            return ExportResult(ExportOutcome.RETRY, detail)
        return ExportResult(ExportOutcome.RETRY, f"no answer from {self.settings.endpoint}")

    def shutdown(self) -> None:
        for exporter in (self._logs, self._spans):
            try:
                exporter.shutdown()
            except Exception:  # pragma: no cover - best effort on the way out
                log.debug("OTLP exporter shutdown failed", exc_info=True)
        if self._session is not None:
            self._session.close()
