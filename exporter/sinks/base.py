"""The sink contract: deliver one batch, say whether it was accepted.

A sink is given batches of one signal (``"logs"``: :class:`~exporter.model.LogEvent`,
``"spans"``: :class:`~exporter.model.SpanRecord`) by the sender, which owns the outbox. It answers
with an :class:`ExportResult`; it must not raise for an expected failure (backend down,
rejection) and must return within its configured timeout. The sender deletes the batch from the
outbox only on ``SUCCESS``; on ``RETRY`` the batch stays queued and is retried with backoff; on
``REJECTED`` the backend refused the data itself (HTTP 400, gRPC INVALID_ARGUMENT): retrying the
same bytes cannot help, so the sender splits the batch to isolate the bad records and parks them.

A sink is used from one sender thread at a time. ``shutdown`` releases connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from exporter.model import LogEvent, SpanRecord

__all__ = ["SIGNALS", "Batch", "ExportOutcome", "ExportResult", "Sink"]

SIGNALS = ("logs", "spans")
Batch = Sequence[LogEvent | SpanRecord]


class ExportOutcome(Enum):
    SUCCESS = "success"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ExportResult:
    outcome: ExportOutcome
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is ExportOutcome.SUCCESS


class Sink(Protocol):
    """Delivers batches. See the module docstring for the contract."""

    name: str

    def export(self, signal: str, batch: Batch) -> ExportResult: ...

    def shutdown(self) -> None: ...
