"""The real OTLP collector for integration tests: rotel (``rotel-agent``) as a subprocess.

The chain under test is: code under test -> rotel -> ``OtlpReceiver`` (decodes protobuf), so
the bytes the product sends pass through a collector nobody here wrote::

    with OtlpReceiver() as receiver, Rotel(receiver=receiver) as rotel:
        exporter = OTLPLogExporter(endpoint=rotel.grpc_endpoint, insecure=True)
        ...
        receiver.wait_for_logs(1)

The command line (``Rotel.command()``), in the foreground, on two free loopback ports::

    rotel-agent start --otlp-grpc-endpoint 127.0.0.1:P1 --otlp-http-endpoint 127.0.0.1:P2
        --exporter otlp --otlp-exporter-endpoint http://127.0.0.1:R --otlp-exporter-protocol grpc
        --otlp-exporter-request-timeout 2s --otlp-exporter-retry-initial-backoff 100ms
        --otlp-exporter-retry-max-backoff 500ms --otlp-exporter-retry-max-elapsed-time 60s
        --batch-timeout 50ms [--debug-log logs --debug-log traces --debug-log-verbosity detailed]

``ROTEL_*`` variables are removed from its environment (each flag has one). ``--pid-file`` and
``--log-file`` only matter with ``--daemon``, which is not used. Port 0 is not supported
(rotel panics), hence the free-port probe; a port taken meanwhile is retried on new ports.

What was measured with rotel 0.0.1a15 (``rotel-agent --version``: 0.0.1-alpha10)
-------------------------------------------------------------------------------

* Start-up: the ports accept connections 25-50 ms after ``Popen``; ``restart()`` on the same
  ports after ``kill()`` works at once (no TIME_WAIT trouble).
* Batching: rotel batches per signal and flushes every ``--batch-timeout`` (default 200 ms,
  8192 items): records arrived 200-400 ms after the client's export returned with the default,
  50-100 ms with ``50ms`` (used here), ~0 with ``--disable-batching``. Several client requests
  may arrive as one request (the receiver flattens, so tests should not count requests).
* Forwarding is faithful: body (string, kvlist), attributes with array values, event_name,
  timestamps, trace/span ids, severity, resource and scope; spans with parent ids, events,
  status. rotel forwards gzip-compressed (``--otlp-exporter-compression gzip`` is the default)
  and, with ``--otlp-exporter-protocol http``, appends ``/v1/logs`` / ``/v1/traces`` to the
  endpoint itself.
* rotel answers its client (gRPC OK / HTTP 200) as soon as it has the data, before
  forwarding. **The client never sees the backend's verdict**: an exporter pointed at rotel
  only fails when rotel itself is down. So:

  - to test the product's own retry/outbox on a failing backend, kill rotel (``kill()``,
    later ``restart()`` on the same ports), or point the product straight at an
    ``OtlpReceiver`` and set its ``mode``;
  - a receiver ``mode`` behind rotel tests rotel, not the product.

* Backend ``mode="reject"`` (INVALID_ARGUMENT / 400): rotel logs ``ERROR Exporting failed,
  dropping data`` and drops the batch; no retry.
* Backend ``mode="unavailable"`` (UNAVAILABLE / 503), or backend down (connection refused):
  rotel retries with jittered exponential backoff (100 ms .. 500 ms here) until
  ``--otlp-exporter-retry-max-elapsed-time`` (60 s here, 300 s by default), then drops; when
  the backend comes back within that time the batch is delivered once.
* SIGTERM (``stop()``): rotel flushes its pending batch and exits 0 within ~10 ms; but while
  its exporter is retrying it waits ~3 s, then exits 1 and drops what it held. ``kill()``
  loses anything batched or being retried.
* rotel's gRPC receiver refuses messages over 4 MiB (``--otlp-grpc-max-recv-msg-size-mib``).
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from tests.support.otlp_receiver import OtlpReceiver

__all__ = ["Rotel", "RotelCollector", "RotelError", "rotel_agent_path"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BIND_ERROR = re.compile(r"address already in use|addrinuse|os error 98", re.IGNORECASE)


class RotelError(RuntimeError):
    """rotel-agent is missing, did not start, or died; the message carries its output."""


def rotel_agent_path() -> pathlib.Path:
    """The ``rotel-agent`` binary shipped beside the installed ``rotel`` module."""
    try:
        import rotel
    except ImportError as exc:
        raise RotelError(
            "the 'rotel' package is not installed: it is a hard test dependency "
            "(pip install rotel==0.0.1a15, or install the project's lock file)"
        ) from exc
    path = pathlib.Path(rotel.__file__).with_name("rotel-agent")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RotelError(f"no executable rotel-agent at {path}: reinstall rotel==0.0.1a15")
    return path


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together so they differ, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Rotel:
    """One ``rotel-agent start`` process on two loopback ports, forwarding logs and traces.

    ``exporter_endpoint`` (or ``receiver``, whose gRPC/HTTP endpoint is then used according
    to ``exporter_protocol``) is where rotel forwards everything it receives. The OTLP ports
    are chosen once, at the first ``start()``, and kept by ``restart()``.
    """

    def __init__(
        self,
        exporter_endpoint: str | None = None,
        *,
        receiver: OtlpReceiver | None = None,
        exporter_protocol: Literal["grpc", "http"] = "grpc",
        batch_timeout: str = "50ms",
        request_timeout: str = "2s",
        retry_initial_backoff: str = "100ms",
        retry_max_backoff: str = "500ms",
        retry_max_elapsed_time: str = "60s",
        debug_log: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        if exporter_endpoint is None:
            if receiver is None:
                raise ValueError("Rotel needs exporter_endpoint= or receiver=")
            grpc_protocol = exporter_protocol == "grpc"
            exporter_endpoint = receiver.grpc_endpoint if grpc_protocol else receiver.http_endpoint
        self.exporter_endpoint = exporter_endpoint
        self.exporter_protocol = exporter_protocol
        self.batch_timeout = batch_timeout
        self.request_timeout = request_timeout
        self.retry_initial_backoff = retry_initial_backoff
        self.retry_max_backoff = retry_max_backoff
        self.retry_max_elapsed_time = retry_max_elapsed_time
        self.debug_log = debug_log
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.binary = rotel_agent_path()
        self.grpc_port = 0
        self.http_port = 0
        self.returncode: int | None = None
        """Exit code of the last rotel-agent process once it ended (negative: killed by a signal)."""
        self.starts = 0
        """How many times rotel-agent started successfully (restarts included)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._output: list[str] = []
        self._output_lock = threading.Lock()

    # -- endpoints

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: rotel's OTLP/gRPC receiver (insecure)."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: rotel's OTLP/HTTP base URL (``/v1/logs``, ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        args = [
            str(self.binary),
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{self.http_port}",
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            self.exporter_endpoint,
            "--otlp-exporter-protocol",
            self.exporter_protocol,
            "--otlp-exporter-request-timeout",
            self.request_timeout,
            "--otlp-exporter-retry-initial-backoff",
            self.retry_initial_backoff,
            "--otlp-exporter-retry-max-backoff",
            self.retry_max_backoff,
            "--otlp-exporter-retry-max-elapsed-time",
            self.retry_max_elapsed_time,
            "--batch-timeout",
            self.batch_timeout,
        ]
        if self.debug_log:
            args += ["--debug-log", "logs", "--debug-log", "traces", "--debug-log-verbosity", "detailed"]
        return args + list(self.extra_args)

    # -- lifecycle

    def start(self) -> Rotel:
        """Start rotel and wait until both its ports accept connections.

        The first start picks free ports (and picks again if one was taken meanwhile);
        later starts (``restart()``) reuse them, retrying while the old sockets linger.
        """
        if self.running:
            raise RotelError("rotel-agent is already running")
        self._reap()  # a process that died by itself: collect its output, close its pipe
        fixed_ports = self.grpc_port != 0
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if not fixed_ports:
                self.grpc_port, self.http_port = _free_ports(2)
            try:
                error = self._start_once(deadline)
            except BaseException:  # e.g. KeyboardInterrupt while waiting: leave no orphan
                self.kill()
                raise
            if error is None:
                self.starts += 1
                return self
            if not _BIND_ERROR.search(error) or time.monotonic() >= deadline:
                raise RotelError(error)
            time.sleep(0.1)

    def _start_once(self, deadline: float) -> str | None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        env["NO_COLOR"] = "1"
        with self._output_lock:
            mark = len(self._output)
        self._log(f"--- starting: {' '.join(self.command())}")
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._proc = proc
        assert proc.stdout is not None
        self._reader = threading.Thread(target=self._drain, args=(proc.stdout,), daemon=True)
        self._reader.start()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._reap()
                return f"rotel-agent exited with code {proc.returncode} during start-up:\n{self.output(mark)}"
            if _accepts(self.grpc_port) and _accepts(self.http_port):
                return None
            time.sleep(0.02)
        self.stop()
        return (
            f"rotel-agent did not open 127.0.0.1:{self.grpc_port} and :{self.http_port} "
            f"within {self.startup_timeout:.1f}s:\n{self.output(mark)}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (rotel flushes and exits), then SIGKILL after ``timeout``; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._log(f"--- rotel-agent ignored SIGTERM for {timeout:.1f}s: SIGKILL")
                proc.kill()
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the collector vanishes without flushing (outage tests). ``restart()`` brings it back."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reap()

    def restart(self) -> Rotel:
        """Stop (if running) and start again on the same two ports."""
        self.stop()
        return self.start()

    def __enter__(self) -> Rotel:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- output

    def output(self, since: int = 0) -> str:
        """What rotel printed (stdout and stderr, every start, with our ``---`` notes), no colours."""
        with self._output_lock:
            return "".join(self._output[since:])

    def _log(self, line: str) -> None:
        with self._output_lock:
            self._output.append(line + "\n")

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._output_lock:
                self._output.append(_ANSI.sub("", raw.decode("utf-8", "replace")))

    def _reap(self) -> None:
        """After the process exited: finish reading its output and close the pipe."""
        proc, reader = self._proc, self._reader
        self._proc = self._reader = None
        if reader is not None:
            reader.join(timeout=5)
        if proc is not None:
            if proc.stdout is not None:
                proc.stdout.close()
            self.returncode = proc.returncode
            self._log(f"--- rotel-agent pid {proc.pid} exited with code {proc.returncode}")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Rotel {state} grpc={self.grpc_port} http={self.http_port} -> {self.exporter_endpoint}>"


class RotelCollector(NamedTuple):
    """What the ``rotel_collector`` fixture yields: ``rotel, receiver = rotel_collector``."""

    rotel: Rotel
    receiver: OtlpReceiver
