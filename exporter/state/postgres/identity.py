"""This replica's ``service.instance.id`` when the operator sets none: kept in a small file, so a
replica restarted in the same place keeps its identity. See the package docstring (**Identity**).

The file (``<state.path>.instance-id``: where the SQLite store would keep its state, unused with a
shared store) holds 32 hex digits and is locked (``flock``) for as long as the replica runs. A
second replica on the same host and config finds it locked and takes a fresh id of its own (not
kept: the place is taken); a replica that cannot write there (a read-only root file system) does
the same. Two running replicas never share an id.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import uuid

__all__ = ["InstanceIdFile"]

log = logging.getLogger("exporter.state.postgres")

_ID = re.compile(r"^[0-9a-f]{32}$")


class InstanceIdFile:
    """The id kept at ``path`` (None: nowhere to keep one). ``id`` is this replica's;
    ``kept`` says whether it survives a restart. ``close()`` releases the file."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        self.kept = False
        self.id = self._acquire() or uuid.uuid4().hex

    def _acquire(self) -> str | None:
        if not self.path:
            return None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            log.info(
                "service.instance.id: cannot keep one in %s (%s); this run has a fresh one. Set "
                "export.resource_attributes.service.instance.id (or OTEL_RESOURCE_ATTRIBUTES) for a stable one",
                self.path,
                exc.strerror or exc,
            )
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.info("service.instance.id: %s is held by another replica on this host; this run has its own", self.path)
            return None
        try:
            text = os.read(fd, 64).decode("ascii", "replace").strip()
            if not _ID.match(text):
                text = uuid.uuid4().hex
                os.ftruncate(fd, 0)
                os.pwrite(fd, (text + "\n").encode("ascii"), 0)
                os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            log.info("service.instance.id: cannot keep one in %s (%s); this run has a fresh one", self.path, exc)
            return None
        self._fd, self.kept = fd, True
        return text

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # the lock goes with it
