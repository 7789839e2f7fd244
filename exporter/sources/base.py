"""The source contract: where alarms and their flow records come from.

A source answers two questions for the pipeline, from worker threads:

``fetch(alarm)``          the alarm's flow records *as they are now* (the whole list, every time:
                          the poller diffs it against the records already taken, by uid), plus the
                          items it could not parse. Called for every due alarm, up to
                          ``bkmonitor.max_concurrency`` at once, so it must be thread-safe.
``discover(start, end)``  the alarms active at some point in ``[start, end]`` (epoch seconds), as
                          :class:`~exporter.model.AlarmContext`. Called by one thread, every
                          ``alarms.recent.interval``, only when ``alarms.recent.enabled``; windows
                          overlap (the pipeline keeps the checkpoint), so answering an alarm twice
                          is fine. A source that cannot discover returns an empty answer.
``close()``               releases connections; called once, on shutdown or after a reload.

What a source may raise (:mod:`exporter.errors`), and what the pipeline then does:

* :class:`~exporter.errors.BkNotFoundError`: the alarm is unknown (or past retention): it is
  marked ``expired`` and no longer read;
* :class:`~exporter.errors.BkAuthError`: credentials refused: the cycle stops, reported once;
* any other :class:`~exporter.errors.BkApiError`: a failed read: logged with its code and
  message, the alarm is read again at its next interval (a failed discovery asks for the same
  window again next round);
* anything else is a bug in the source: contained like an API failure (the alarm's poll fails,
  nothing of it is committed, the daemon goes on), logged with the traceback.

Records must be identified by content (:func:`exporter.mapping.ids.record_uid`): the same record
gets the same ``uid`` on every fetch, restart and host, or it is delivered again. A source must
bound its own waiting (timeouts) and must not retry forever: the pipeline retries at the next
interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from exporter.model import AlarmContext, FlowRecord

__all__ = ["Discovered", "FetchResult", "Malformed", "Source"]


@dataclass(frozen=True)
class Malformed:
    """One item that could not be parsed: its position in the answer and why.

    ``key`` identifies the bad item itself (the same item gives the same key on every fetch), so
    the pipeline logs it once, however often it is read; empty means "position and reason".
    """

    index: int
    reason: str
    key: str = ""


@dataclass
class FetchResult:
    """One alarm's records, in any order, and the items that were skipped.

    ``context``, when the source read the alarm's current state along with its records (the
    gateway source does: it searches the alert), is the alarm as it is now; the pipeline maps the
    records with it and stores it. ``None`` keeps the stored context.
    """

    records: list[FlowRecord] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    context: AlarmContext | None = None


@dataclass
class Discovered:
    """The alarms of one discovery window (by id, each once), what could not be used, and the
    number of API calls it took (reported in the discovery log line)."""

    alarms: Sequence[AlarmContext] = ()
    skipped: Sequence[str] = ()
    calls: int = 0


class Source(Protocol):
    """Reads alarms and their flow records. See the module docstring for the contract."""

    def fetch(self, alarm: AlarmContext) -> FetchResult: ...

    def discover(self, start: int, end: int) -> Discovered: ...

    def close(self) -> None: ...
