"""A loopback HTTP reverse proxy in front of an OTLP/HTTP receiver, which can be told to redirect.

What an ingress or an SSO gateway does to a client that is pointed at the wrong address: with
``redirect = 301`` (302, 307, 308) every request is answered with that status and ``Location:
<location><path>`` and an HTML body, the way nginx answers an http -> https redirect or an SSO
proxy sends to its login page; nothing reaches the upstream. With ``redirect = None`` requests
are forwarded to ``upstream`` (method, path, headers and body as received) and its answer is
relayed. Each request is recorded in ``seen`` as ``(method, path, status answered)``.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["RedirectingProxy"]

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"})


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass

    def do_POST(self) -> None:  # noqa: N802 (stdlib method name)
        proxy = self.server.proxy
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        redirect = proxy.redirect
        if redirect is not None:
            page = f"<html><body><h1>{redirect} Moved</h1></body></html>\n".encode()
            self.send_response(redirect)
            self.send_header("Location", proxy.location + self.path)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            proxy._saw(self.path, redirect)
            return
        upstream = urlsplit(proxy.upstream)
        conn = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn.request("POST", self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in _HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        proxy._saw(self.path, answer.status)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: RedirectingProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)


class RedirectingProxy:
    """See the module docstring. ``url`` is the address to point the exporter at."""

    def __init__(self, upstream: str, *, location: str = "https://otlp.example.com") -> None:
        self.upstream = upstream
        self.location = location
        self.redirect: int | None = None
        self.seen: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answered(self, status: int) -> int:
        """How many requests were answered with ``status``."""
        with self._lock:
            return sum(1 for _, _, s in self.seen if s == status)

    def _saw(self, path: str, status: int) -> None:
        with self._lock:
            self.seen.append(("POST", path, status))

    def __enter__(self) -> RedirectingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
