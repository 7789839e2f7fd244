"""The health and metrics HTTP server: ``/healthz``, ``/readyz``, ``/metrics``.

A stdlib ``ThreadingHTTPServer`` in a daemon thread; it only reads :class:`exporter.metrics.Metrics`.

=============  ===========================================================================
``/healthz``   200 ``{"status": "ok", ...}`` while the scheduler runs, else 503 (liveness)
``/readyz``    200 while polling and exporting succeed recently, else 503 with ``reasons``
``/metrics``   Prometheus text exposition (OpenMetrics when the scraper's Accept asks)
=============  ===========================================================================

Any other path is 404; methods other than GET and HEAD are 501. Access logs go to this module's
logger at DEBUG, never straight to stderr.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter.config.types import ListenAddress
from exporter.config.types import parse_listen as parse_address
from exporter.metrics import Metrics

__all__ = ["ALL_INTERFACES", "HealthServer", "parse_listen"]

log = logging.getLogger(__name__)


#: the host bound for "every interface" (``server.listen: ":9464"``, a host of ``""``)
ALL_INTERFACES = "0.0.0.0"


def parse_listen(value: str) -> ListenAddress | None:
    """``server.listen`` as the address to bind: ``"host:port"`` / ``"[v6]:port"`` / ``":port"``
    (every interface: :data:`ALL_INTERFACES`) -> ``(host, port)``; ``""`` -> None.

    The grammar and the messages are the config's (:func:`exporter.config.types.parse_listen`);
    raises ``ValueError`` with a readable message for anything else.
    """
    address = parse_address(value)
    return None if address is None else ListenAddress(address.host or ALL_INTERFACES, address.port)


class HealthServer:
    """Serves the endpoints of ``metrics`` on ``host:port`` (port 0 = an ephemeral port, see :attr:`port`;
    host ``""`` = every interface, :data:`ALL_INTERFACES`).

    ``start()`` binds and returns ``self`` (raises ``OSError`` when the address is taken);
    ``close()`` stops serving, closes the socket and joins the thread; it is idempotent and takes
    up to ``poll_interval`` seconds. Usable as a context manager.
    """

    def __init__(self, host: str, port: int, metrics: Metrics, *, poll_interval: float = 0.5) -> None:
        self.host = host or ALL_INTERFACES
        self._requested_port = port
        self.metrics = metrics
        self._poll_interval = poll_interval
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one until :meth:`start`)."""
        if self._httpd is None:
            return self._requested_port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        if self._httpd is not None:
            return self
        server_class = _Server6 if ":" in self.host else _Server
        httpd = server_class((self.host, self._requested_port), _Handler)
        httpd.metrics = self.metrics
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": self._poll_interval},
            name="bk-otel-health",
            daemon=True,
        )
        self._thread.start()
        log.debug("health server listening on %s", self.url)
        return self

    def close(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd, self._thread = None, None
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "bk-otel-exporter"
    # HTTP/1.0: one request per connection, so close() never leaves idle keep-alive threads behind.
    timeout = 10  # a stuck client cannot hold a thread forever

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
        self._respond(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        metrics = self.server.metrics
        try:
            if path == "/healthz":
                ok, details = metrics.live()
                status, body, ctype = _json_response(ok, details)
            elif path == "/readyz":
                ok, details = metrics.ready()
                status, body, ctype = _json_response(ok, details)
            elif path == "/metrics":
                body, ctype = metrics.render(self.headers.get("Accept"))
                status = 200
            else:
                status, body, ctype = 404, b'{"status": "not found"}\n', "application/json"
        except Exception:
            log.exception("health server: %s failed", path)
            status, body, ctype = 500, b'{"status": "error"}\n', "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s %s", self.address_string(), format % args)


def _json_response(ok: bool, details: dict[str, Any]) -> tuple[int, bytes, str]:
    body = (json.dumps(details, sort_keys=True) + "\n").encode()
    return (200 if ok else 503), body, "application/json"
