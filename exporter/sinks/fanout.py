"""Several sinks as one: the first is primary; the others (console) see a batch once it succeeded.

Delivery is tracked per outbox row, not per sink, so only the primary decides the outcome; the
followers are told about accepted batches only, which keeps them free of retried duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exporter.sinks.base import Batch, ExportResult, Sink

__all__ = ["FanoutSink"]

log = logging.getLogger(__name__)


class FanoutSink:
    def __init__(self, primary: Sink, followers: Sequence[Sink]) -> None:
        self.primary = primary
        self.followers = list(followers)
        self.name = "+".join([primary.name, *(f.name for f in self.followers)])

    def export(self, signal: str, batch: Batch) -> ExportResult:
        result = self.primary.export(signal, batch)
        if result.ok:
            for follower in self.followers:
                extra = follower.export(signal, batch)
                if not extra.ok:
                    log.warning(
                        "sink %s failed after %s accepted a batch: %s",
                        follower.name,
                        self.primary.name,
                        extra.detail,
                    )
        return result

    def shutdown(self) -> None:
        for sink in [self.primary, *self.followers]:
            sink.shutdown()
