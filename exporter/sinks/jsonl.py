"""The ``jsonl`` sink: one JSON line per record in a local file, rotated by size.

For sites without a collector: point Filebeat, Vector, Fluent Bit or ``jq`` at the file. Each
line is the console form of one record (:func:`~exporter.sinks.console.render_record`: OTLP field
names, ISO times, hex ids) with the record's outbox ``uid`` first::

    {"uid":"9f0c…","signal":"log","timestamp":"2024-06-10T06:13:50.000Z","event_name":"CREATE",…}

Options (``plugins.sink.options``)::

    path: ./bk-otel-exporter.jsonl   # the current file; relative to the working directory
    max_bytes: 104857600             # rotate before a line would make the file larger than this
    backups: 5                       # rotated files kept: path.1 (newest) … path.N; 0 = none

Delivery (the sink contract, :mod:`exporter.sinks.base`):

* a batch is written and ``fsync``-ed (and, after a rotation, the directory too) before SUCCESS
  is returned, so an acknowledged record is on disk;
* **exactly one line per record, across restarts.** The outbox deletes a batch only after
  SUCCESS, so a crash between the ``fsync`` and the outbox's commit re-delivers the batch to
  the next process. The sink therefore keeps the uids of every line in the current and rotated
  files (read back from the files when it first writes, one set per file, dropped with the file
  it belongs to) and skips a record whose uid is already there. A record whose line has been
  rotated away (older than ``backups`` rotations) is no longer known; by then it has long been
  acknowledged;
* a failed write (disk full, permissions) answers RETRY (the records stay queued) and makes the
  sink read its files again before the next write: a line cut short is truncated away, complete
  lines stay and their records are not written twice. A line cut short by a crash (never
  acknowledged, so it is re-delivered) is truncated away the same way when the file is opened.

One process writes a given ``path`` (two exporters must not share one). Files ``path.N`` beyond
``backups`` (left by a larger earlier setting) are neither indexed nor touched. The index costs
about 100 bytes of memory per line on disk (``max_bytes × (backups + 1)`` bytes of lines at most),
and reading it back (at the first write after a start) a few seconds per million lines.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator

from exporter.plugins import Plugin, PluginContext, PluginOptions
from exporter.sinks.base import Batch, ExportOutcome, ExportResult
from exporter.sinks.console import render_record

__all__ = ["JsonlOptions", "JsonlSink", "plugin"]

log = logging.getLogger(__name__)

_UID_PREFIX = b'{"uid":"'
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT  # (os.open makes it close-on-exec)


class JsonlOptions(PluginOptions):
    """``plugins.sink.options`` of the ``jsonl`` sink."""

    path: str = Field(default="./bk-otel-exporter.jsonl", min_length=1)
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    backups: int = Field(default=5, ge=0, le=1000)

    @field_validator("path")
    @classmethod
    def _not_a_directory(cls, value: str) -> str:
        if value.endswith(("/", os.sep)) or Path(value).expanduser().is_dir():
            raise ValueError("must be a file path, not a directory")
        return value


@dataclass
class _Stats:
    written: int = 0
    skipped: int = 0
    rotations: int = 0


def _uid_of(line: bytes) -> str | None:
    """The ``uid`` of one line: fast for the lines we write, JSON otherwise; None if it has none."""
    if line.startswith(_UID_PREFIX):
        end = line.find(b'"', len(_UID_PREFIX))
        if end > 0 and b"\\" not in line[len(_UID_PREFIX) : end]:
            return line[len(_UID_PREFIX) : end].decode("utf-8", "replace")
    try:
        value = json.loads(line)
    except ValueError:
        return None
    uid = value.get("uid") if isinstance(value, dict) else None
    return uid if isinstance(uid, str) else None


class JsonlSink:
    """Appends records to ``path`` as JSON lines; see the module docstring."""

    name = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        write: Callable[[int, memoryview], int] = os.write,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        """``write`` and ``fsync`` are :func:`os.write` and :func:`os.fsync` (tests inject failures)."""
        if max_bytes < 1 or backups < 0:
            raise ValueError("max_bytes must be ≥ 1 and backups ≥ 0")
        self.path = Path(path).expanduser().absolute()
        self.max_bytes = max_bytes
        self.backups = backups
        self._write = write
        self._fsync = fsync
        self.stats = _Stats()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        #: uids per file: [current, path.1, …, path.backups]
        self._uids: deque[set[str]] = deque()

    # -- files --------------------------------------------------------------------------------------
    def _backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _read_uids(self, path: Path, *, repair: bool) -> set[str]:
        uids: set[str] = set()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return uids
        end = data.rfind(b"\n") + 1
        if end < len(data):
            if repair:
                log.warning(
                    "jsonl sink: %s ends with a line cut short (%d bytes, a write interrupted by a crash); "
                    "truncating it: its records were not acknowledged and are written again",
                    path,
                    len(data) - end,
                )
                with open(path, "r+b") as fh:
                    fh.truncate(end)
                    self._fsync(fh.fileno())
            data = data[:end]
        for line in data.splitlines():
            uid = _uid_of(line)
            if uid is not None:
                uids.add(uid)
        return uids

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        self.path.parent.mkdir(parents=True, exist_ok=True)
        current = self._read_uids(self.path, repair=True)
        rotated = [self._read_uids(self._backup(n), repair=False) for n in range(1, self.backups + 1)]
        self._uids = deque([current, *rotated])
        self._fd = os.open(self.path, _APPEND, 0o600)
        # Lines of a batch that failed before its fsync are known now: make them durable before a
        # retry is answered SUCCESS without writing them again.
        self._fsync(self._fd)
        self._size = os.fstat(self._fd).st_size
        log.debug("jsonl sink: %s opened, %d records known", self.path, sum(len(s) for s in self._uids))
        return self._fd

    def _sync_dir(self) -> None:
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:  # pragma: no cover - not every platform opens directories
            return
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        """path -> path.1 -> … -> path.backups (the oldest is dropped); a fresh current file."""
        fd = self._fd
        if fd is not None:
            self._fsync(fd)
            os.close(fd)
            self._fd = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            self._backup(self.backups).unlink(missing_ok=True)
            for n in range(self.backups - 1, 0, -1):
                if self._backup(n).exists():
                    os.replace(self._backup(n), self._backup(n + 1))
            os.replace(self.path, self._backup(1))
        self._uids.appendleft(set())
        while len(self._uids) > self.backups + 1:
            self._uids.pop()
        self._sync_dir()
        self._fd = os.open(self.path, _APPEND, 0o600)
        self._size = 0
        self.stats.rotations += 1
        log.info("jsonl sink: rotated %s (%d backups kept)", self.path, self.backups)

    def _known(self, uid: str) -> bool:
        return any(uid in uids for uids in self._uids)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._write(fd, view)
            view = view[n:]

    # -- the Sink contract --------------------------------------------------------------------------
    def export(self, signal: str, batch: Batch) -> ExportResult:
        with self._lock:
            try:
                self._open()
            except OSError as exc:
                return ExportResult(ExportOutcome.RETRY, f"jsonl: cannot open {self.path}: {exc.strerror or exc}")
            lines: list[tuple[str, bytes]] = []
            batch_uids: set[str] = set()
            skipped = 0
            for item in batch:
                if item.uid in batch_uids or self._known(item.uid):
                    skipped += 1
                    continue
                batch_uids.add(item.uid)
                row = {"uid": item.uid, **render_record(item)}
                text = json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str)
                # a lone surrogate becomes its JSON escape (\udc80): the file stays valid UTF-8
                lines.append((item.uid, (text + "\n").encode("utf-8", "backslashreplace")))
            if skipped:
                self.stats.skipped += skipped
                log.info(
                    "jsonl sink: %d of %d records are already in %s (delivered again after a restart): skipped",
                    skipped,
                    len(batch),
                    self.path.name,
                )
            if not lines:
                return ExportResult(ExportOutcome.SUCCESS)
            return self._append(lines)

    def _append(self, lines: list[tuple[str, bytes]]) -> ExportResult:
        try:
            chunk: list[bytes] = []
            pending: list[str] = []  # uids of ``chunk``
            for uid, line in lines:
                if self._size > 0 and self._size + len(line) > self.max_bytes:
                    self._flush(chunk, pending)
                    chunk, pending = [], []
                    self._rotate()
                chunk.append(line)
                pending.append(uid)
                self._size += len(line)
            self._flush(chunk, pending)
        except OSError as exc:
            # Start again from the files: _open cuts a half-written line off, and the complete
            # lines of this batch are known there, so the retry does not write them twice.
            self._close()
            return ExportResult(ExportOutcome.RETRY, f"jsonl: cannot write {self.path}: {exc.strerror or exc}")
        self.stats.written += len(lines)
        return ExportResult(ExportOutcome.SUCCESS)

    def _flush(self, chunk: list[bytes], uids: list[str]) -> None:
        fd = self._fd
        assert fd is not None
        if chunk:
            self._write_all(fd, b"".join(chunk))
        self._fsync(fd)
        self._uids[0].update(uids)

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
                self._uids = deque()

    def shutdown(self) -> None:
        with self._lock:
            self._close()


def _create(options: JsonlOptions, context: PluginContext) -> JsonlSink:
    return JsonlSink(options.path, max_bytes=options.max_bytes, backups=options.backups)


plugin: Plugin[JsonlSink] = Plugin(
    kind="sink",
    name="jsonl",
    options=JsonlOptions,
    create=_create,
    description="JSON lines in a local file, rotated by size; one line per record across restarts",
)
