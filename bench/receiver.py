"""A lean in-process OTLP/gRPC logs receiver for the benchmarks, on 127.0.0.1.

``tests/support/otlp_receiver.py`` flattens every record into Python dicts, which is right for
asserting on values but would cost the benchmarked process more CPU than the exporter itself.
This one parses each request with the C protobuf runtime, counts records and bytes, and keeps
per-record details (uid, body, timestamp, arrival time) only when ``collect=True`` (the latency
and economy benchmarks need them; the throughput benchmark does not).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

__all__ = ["Arrival", "CountingReceiver"]

_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"


@dataclass(frozen=True)
class Arrival:
    uid: str
    alarm_id: str
    body: str
    timestamp_ns: int
    arrived: float  # time.time() when the request was handled


class CountingReceiver:
    """Answers OTLP/gRPC log exports with OK; counts records and request bytes (decompressed)."""

    def __init__(self, *, collect: bool = False, workers: int = 4) -> None:
        self.collect = collect
        self.records = 0
        self.requests = 0
        self.bytes = 0
        self.arrivals: list[Arrival] = []
        self._cond = threading.Condition()
        self._workers = workers
        self._server: grpc.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingReceiver:
        handler = grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._export,
                    request_deserializer=None,  # raw bytes: counted, then parsed here
                    response_serializer=logs_service_pb2.ExportLogsServiceResponse.SerializeToString,
                )
            },
        )
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="bench-otlp"),
            handlers=[handler],
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)],
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=0.5).wait()

    def __enter__(self) -> CountingReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _export(self, raw: bytes, context: Any) -> logs_service_pb2.ExportLogsServiceResponse:
        arrived = time.time()
        request = logs_service_pb2.ExportLogsServiceRequest.FromString(raw)
        n = 0
        details: list[Arrival] = []
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                n += len(scope_logs.log_records)
                if self.collect:
                    details.extend(_details(scope_logs.log_records, arrived))
        with self._cond:
            self.records += n
            self.requests += 1
            self.bytes += len(raw)
            self.arrivals.extend(details)
            self._cond.notify_all()
        return logs_service_pb2.ExportLogsServiceResponse()

    def wait_for(self, n: int, timeout: float) -> bool:
        """Wait until at least ``n`` records arrived in all; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.records >= n, timeout=timeout)

    def reset(self) -> None:
        with self._cond:
            self.records = self.requests = self.bytes = 0
            self.arrivals.clear()

    def take_arrivals(self) -> list[Arrival]:
        with self._cond:
            out, self.arrivals = self.arrivals, []
            return out


def _details(records: Any, arrived: float) -> list[Arrival]:
    out = []
    for record in records:
        attrs = {kv.key: kv.value.string_value for kv in record.attributes if kv.value.HasField("string_value")}
        out.append(
            Arrival(
                uid=attrs.get("log.record.uid", ""),
                alarm_id=attrs.get("bk.alarm.id", ""),
                body=record.body.string_value,
                timestamp_ns=record.time_unix_nano,
                arrived=arrived,
            )
        )
    return out
