"""The sink contract: deliver one batch, say what became of it.

A sink is given batches of one signal (``"logs"``: :class:`~exporter.model.LogEvent`,
``"spans"``: :class:`~exporter.model.SpanRecord`) by the sender, which owns the outbox. It answers
with an :class:`ExportResult`; it must not raise for an expected failure (backend down,
rejection) and must return within its configured timeout. What the sender does with each
outcome:

``SUCCESS``    the backend took the batch: its rows leave the outbox. ``rejected`` says how many
               of its records the backend refused inside that accepted answer (OTLP
               ``partial_success``): they are counted and the backend's message (``detail``) is
               logged, but nothing is resent (the rest was stored, and which ones were refused is
               not said).
``RETRY``      an outage or a refusal that may go away (down, 5xx, 429, a redirect, auth): the
               batch stays queued and is retried with backoff, at the earliest ``retry_after``
               seconds later when the backend said so.
``REJECTED``   the backend refused the data itself (HTTP 400, gRPC INVALID_ARGUMENT), or it cannot
               be encoded at all: retrying the same bytes cannot help, so the sender splits the
               batch to isolate the bad records and parks them.
``TOO_LARGE``  the request was too big (HTTP 413, gRPC RESOURCE_EXHAUSTED for the message size, or
               over the sink's own byte limit): the sender splits the batch in halves until the
               parts are accepted; a single record too large even alone is parked.

A sink is used from one sender thread at a time. ``shutdown`` releases connections.

The sender hands over a :class:`StoredBatch`: a sequence of the records as values (decoded from
the outbox on first use), which also gives the log records' stored OTLP bytes
(:meth:`StoredBatch.encoded_logs`). A sink that sends OTLP sends those bytes as they are; any
other sink just iterates the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, overload

from exporter.model import LogEvent, OutboxItem, SpanRecord

__all__ = ["SIGNALS", "Batch", "ExportOutcome", "ExportResult", "Sink", "StoredBatch"]

SIGNALS = ("logs", "spans")
Batch = Sequence[LogEvent | SpanRecord]


class StoredBatch(Sequence[LogEvent | SpanRecord]):
    """Outbox rows as a batch: their records as values, each decoded on first use, and the log
    records as the OTLP bytes they were stored as (:meth:`encoded_logs`, nothing decoded)."""

    def __init__(self, items: Sequence[OutboxItem]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> LogEvent | SpanRecord: ...
    @overload
    def __getitem__(self, index: slice) -> StoredBatch: ...
    def __getitem__(self, index: int | slice) -> LogEvent | SpanRecord | StoredBatch:
        if isinstance(index, slice):
            return StoredBatch(self.items[index])
        return self.items[index].payload

    def __iter__(self) -> Iterator[LogEvent | SpanRecord]:
        return (item.payload for item in self.items)

    def encoded_logs(self) -> list[bytes]:
        """Each log record's OTLP bytes (:func:`exporter.mapping.otlp.encode_log`): as stored, or
        encoded now for a row queued as JSON by an older version."""
        return [item.encoded_log() for item in self.items]


class ExportOutcome(Enum):
    SUCCESS = "success"
    RETRY = "retry"
    REJECTED = "rejected"
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class ExportResult:
    outcome: ExportOutcome
    detail: str = ""
    #: on SUCCESS: records of the batch the backend refused in its answer (``partial_success``)
    rejected: int = 0
    #: on RETRY: the backend's own "retry after" (seconds: HTTP ``Retry-After``, gRPC ``RetryInfo``)
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is ExportOutcome.SUCCESS


class Sink(Protocol):
    """Delivers batches. See the module docstring for the contract."""

    name: str

    def export(self, signal: str, batch: Batch) -> ExportResult: ...

    def shutdown(self) -> None: ...
