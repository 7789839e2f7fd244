"""``once``'s progress report on stderr: alarms found, polled, records, rate and ETA.

On a terminal it is one live line, redrawn in place twice a second (and cleared before any log line,
so the two never mix); otherwise (a file, a pipe, the journal) it is an INFO log line every few
seconds. It reads the counters of :meth:`exporter.metrics.Metrics.progress` from a thread of its
own, so the pipeline reports nothing extra; ``App.run_once(on_phase=...)`` tells it the phases::

    discovering: 12 alarms followed
    polling: 120/500 alarms, 3400 records (1200 new), 38.2 alarms/s, ETA 10s
    exporting: 900/1200 records, 450 records/s, ETA 1s
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import IO

from exporter.metrics import Progress

__all__ = ["ProgressReporter", "format_eta", "render_progress"]

log = logging.getLogger(__name__)

#: Seconds between two redraws on a terminal, and between two log lines elsewhere.
TERMINAL_EVERY, LOG_EVERY = 0.5, 5.0
_CLEAR = "\r\x1b[K"


def format_eta(seconds: float | None) -> str:
    """``"?"`` when unknown, else ``42s``, ``3m05s`` or ``2h07m``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def render_progress(phase: str, total: int, start: Progress, now: Progress, elapsed: float) -> str:
    """One progress line for ``phase``, from the counters at its start and now."""
    if phase == "polling":
        done = now.alarms_read - start.alarms_read
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 and total >= done else None
        records, new = now.records_read - start.records_read, now.records_new - start.records_new
        return (
            f"polling: {done}/{total} alarms, {records} records ({new} new), {rate:.1f} alarms/s, ETA {format_eta(eta)}"
        )
    if phase == "exporting":
        done = now.records_exported - start.records_exported
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 and total >= done else None
        return f"exporting: {done}/{total} records, {rate:.1f} records/s, ETA {format_eta(eta)}"
    return f"{phase}: {now.alarms_followed} alarms followed"


class ProgressReporter:
    """Reports progress on ``stream`` until :meth:`close`; ``interactive`` (default: ``stream`` is a
    terminal) picks the live line over the log lines. Use as a context manager; :meth:`phase` is
    the ``on_phase`` callback of ``App.run_once``."""

    def __init__(
        self,
        read: Callable[[], Progress],
        stream: IO[str],
        *,
        interactive: bool | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._stream = stream
        self.interactive = _isatty(stream) if interactive is None else interactive
        self._every = every if every is not None else (TERMINAL_EVERY if self.interactive else LOG_EVERY)
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._phase, self._total = "starting", 0
        self._since, self._start = clock(), read()
        self._drawn = False
        self._handler_filter = _ClearLine(self)

    def __enter__(self) -> ProgressReporter:
        if self.interactive:
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._handler_filter)
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def phase(self, name: str, total: int) -> None:
        """A new phase begins: counts and rate start again from here."""
        with self._lock:
            self._phase, self._total = name, max(0, total)
            self._since, self._start = self._clock(), self._read()

    def line(self) -> str:
        """The progress line as it would be drawn now."""
        with self._lock:
            phase, total, since, start = self._phase, self._total, self._since, self._start
        return render_progress(phase, total, start, self._read(), self._clock() - since)

    def close(self) -> None:
        """Stop; on a terminal, the last line stays on screen, ended by a newline."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.interactive:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._handler_filter)
            self._draw(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            if self.interactive:
                self._draw()
            else:
                log.info("progress: %s", self.line())

    def _draw(self, *, final: bool = False) -> None:
        text = self.line()
        with self._lock:
            self._stream.write(f"{_CLEAR}{text}" + ("\n" if final else ""))
            self._stream.flush()
            self._drawn = not final

    def clear(self) -> None:
        """Rub the live line out (before a log line is written under it)."""
        with self._lock:
            if self._drawn:
                self._stream.write(_CLEAR)
                self._stream.flush()
                self._drawn = False


class _ClearLine(logging.Filter):
    """On the logging handlers while a live line is drawn: clears it before each record."""

    def __init__(self, reporter: ProgressReporter) -> None:
        super().__init__()
        self._reporter = reporter

    def filter(self, record: logging.LogRecord) -> bool:
        self._reporter.clear()
        return True


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
