"""A loopback TCP proxy a test can cut, pause and slow: put it between the replicas and PostgreSQL.

``TcpProxy(port).start()`` listens on ``127.0.0.1:<free port>`` (``proxy.port``) and forwards every
connection to ``127.0.0.1:port``. Faults, at any time, on live connections too:

* ``cut()``: every open connection is reset (RST) and new ones are reset as soon as they are
  accepted, until ``restore()``: the network between the replicas and the database is gone.
* ``pause()``: nothing is forwarded (both ways; bytes wait in the proxy), connections stay open,
  until ``resume()``: a partition that drops nothing.
* ``slow(seconds)``: every chunk from the client reaches the server ``seconds`` later (order kept),
  so each query's round trip takes that much longer; ``slow(0)`` ends it.

Stdlib sockets and threads only; ``stop()`` closes everything. ``connections`` counts accepted ones.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import deque

__all__ = ["TcpProxy"]


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), the way a middlebox or a dead peer's kernel would. The
    shutdown first wakes the pipe thread blocked reading it: a plain close() would leave the
    kernel's socket alive (and acknowledging the peer's bytes) while that thread holds it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Pipe:
    """One direction of one connection: a reader stamps chunks, a writer sends them when due."""

    def __init__(self, proxy: TcpProxy, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        self.proxy, self.src, self.dst, self.upstream = proxy, src, dst, upstream
        self.queue: deque[tuple[float, bytes]] = deque()
        self.cond = threading.Condition()
        self.done = False

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True, name="tcpproxy-read").start()
        threading.Thread(target=self._write, daemon=True, name="tcpproxy-write").start()

    def _read(self) -> None:
        try:
            while True:
                data = self.src.recv(65536)
                if not data:
                    break
                delay = self.proxy.delay if self.upstream else 0.0
                with self.cond:
                    self.queue.append((time.monotonic() + delay, data))
                    self.cond.notify()
        except OSError:
            pass
        finally:
            with self.cond:
                self.done = True
                self.cond.notify()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.done:
                        self.cond.wait(0.5)
                    if not self.queue:
                        break
                    due, data = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, 0.5))
                    continue
                if not self.proxy.wait_unpaused(0.5):
                    continue
                with self.cond:
                    self.queue.popleft()
                self.dst.sendall(data)
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class TcpProxy:
    """See the module docstring. Usable as a context manager."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.delay = 0.0
        self.connections = 0
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._cut = False
        self._running = threading.Event()  # set: forwarding (not paused)
        self._running.set()
        self._stopped = False

    # -- faults
    def cut(self) -> None:
        with self._lock:
            self._cut = True
            doomed, self._open = self._open, []
        for sock in doomed:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def slow(self, seconds: float) -> None:
        self.delay = max(0.0, seconds)

    def wait_unpaused(self, timeout: float) -> bool:
        return self._running.wait(timeout)

    # -- lifecycle
    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listener, self.port = listener, int(listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name="tcpproxy-accept").start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with self._lock:
                cut = self._cut
            if cut:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._cut or self._stopped:
                    _reset(client)
                    _reset(server)
                    continue
                self._open += [client, server]
            _Pipe(self, client, server, upstream=True).start()
            _Pipe(self, server, client, upstream=False).start()

    def stop(self) -> None:
        self._stopped = True
        self._running.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
