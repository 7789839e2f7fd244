"""The OTLP sink: a batch -> one OTLP request -> the backend's real answer.

Log records arrive as the OTLP bytes the poller stored (:meth:`~exporter.sinks.base.StoredBatch.encoded_logs`):
the request is assembled from them under this destination's resource
(:func:`exporter.mapping.otlp.logs_request`), nothing is re-encoded. Spans, few and rebuilt from
the alarm's events anyway, are encoded at send time by the SDK's encoder
(:func:`exporter.sinks.otlp_encoding.encode_request`, imported with the SDK at the first span
batch). The request is sent by a thin transport (:mod:`exporter.sinks.otlp_transport`: grpcio or
requests, no SDK exporter), whose classification of the answer is the sink's result. Before
anything is sent:

* a batch that cannot be encoded as OTLP at all is REJECTED (retrying it can never help; without
  this one such record would hold the outbox back for ever);
* a request over ``max_batch_bytes`` is TOO_LARGE: the sender splits it, so a request stays under
  what collectors accept (4 MiB by default for gRPC) whatever the records hold.

The SDK's batch processors are not used either: they drop the export result, and the outbox must
know it (a row leaves the outbox only on SUCCESS).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.mapping.otlp import default_resource_attributes, encode_log, logs_request, resource_message
from exporter.model import LogEvent
from exporter.sinks.base import Batch, ExportOutcome, ExportResult, StoredBatch
from exporter.sinks.otlp_transport import GrpcTransport, HttpTransport

__all__ = ["DEFAULT_MAX_BATCH_BYTES", "OtlpSettings", "OtlpSink", "default_resource_attributes"]

log = logging.getLogger(__name__)

#: ``export.max_batch_bytes``: under the 4 MiB a collector's gRPC receiver takes by default
DEFAULT_MAX_BATCH_BYTES = 3 * 1024 * 1024


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
    #: the largest serialized request sent (before compression); 0 = no limit
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    #: http/protobuf: ``endpoint`` is the full URL (a signal's own endpoint), no ``/v1/...`` appended
    as_is: bool = False

    def __repr__(self) -> str:  # headers may carry credentials
        return f"OtlpSettings(endpoint={self.endpoint!r}, protocol={self.protocol!r})"


class OtlpSink:
    """Exports logs and spans over OTLP (gRPC or HTTP/protobuf)."""

    def __init__(self, settings: OtlpSettings) -> None:
        self.settings = settings
        self.name = f"otlp-{'grpc' if settings.protocol == 'grpc' else 'http'}"
        self._resource = resource_message(settings.resource)
        self._sdk_resource: Any = None  # the SDK's Resource, for spans: made at the first span batch
        s = settings
        tls = dict(ca_file=s.ca_file, client_cert_file=s.client_cert_file, client_key_file=s.client_key_file)
        self._transport: GrpcTransport | HttpTransport
        if s.protocol == "grpc":
            self._transport = GrpcTransport(
                s.endpoint,
                headers=s.headers,
                compression=s.compression,
                timeout=s.timeout,
                insecure=s.insecure,
                **tls,
            )
        else:
            self._transport = HttpTransport(
                s.endpoint, headers=s.headers, compression=s.compression, timeout=s.timeout, as_is=s.as_is, **tls
            )

    # -- the Sink contract --------------------------------------------------------------------------
    def export(self, signal: str, batch: Batch) -> ExportResult:
        if not batch:
            return ExportResult(ExportOutcome.SUCCESS)
        try:
            body = self._encode(signal, batch)
        except Exception as exc:
            log.debug("OTLP %s batch cannot be encoded", signal, exc_info=True)
            return ExportResult(ExportOutcome.REJECTED, f"cannot be encoded as OTLP: {type(exc).__name__}: {exc}")
        limit = self.settings.max_batch_bytes
        if limit and len(body) > limit:
            what = "record" if signal == "logs" else "span"
            return ExportResult(
                ExportOutcome.TOO_LARGE,
                f"{len(batch)} {what}{'s' if len(batch) != 1 else ''} encode to {len(body)} bytes, "
                f"over max_batch_bytes ({limit}; set in export:, export.{signal}: or the destination's options)",
            )
        return self._transport.send(signal, body)

    def _encode(self, signal: str, batch: Batch) -> bytes:
        if signal == "logs":
            if isinstance(batch, StoredBatch):
                records = batch.encoded_logs()
            else:
                records = [encode_log(e) for e in batch if isinstance(e, LogEvent)]
            return logs_request(records, self._resource)
        from exporter.sinks.otlp_encoding import FixedResource, encode_request

        if self._sdk_resource is None:
            self._sdk_resource = FixedResource(self.settings.resource)
        return encode_request(signal, batch, self._sdk_resource).SerializeToString()

    def shutdown(self) -> None:
        try:
            self._transport.close()
        except Exception:  # pragma: no cover - best effort on the way out
            log.debug("OTLP transport close failed", exc_info=True)


class PerSignalSink:
    """One OTLP sink per signal (``export.logs`` / ``export.spans`` send elsewhere than ``export``)."""

    def __init__(self, sinks: Mapping[str, OtlpSink]) -> None:
        self.sinks = dict(sinks)
        names = sorted({sink.name for sink in self.sinks.values()})
        self.name = names[0] if len(names) == 1 else "otlp"

    def export(self, signal: str, batch: Batch) -> ExportResult:
        return self.sinks[signal].export(signal, batch)

    def shutdown(self) -> None:
        for sink in self.sinks.values():
            sink.shutdown()
