"""A throwaway PostgreSQL cluster for tests: ``initdb`` into a temp dir, ``pg_ctl`` on a free loopback port.

``PostgresCluster(bindir).start()`` creates a cluster in a fresh ``/tmp/bk-otel-pg-*`` directory
(``fsync=off``: nothing in it has to survive a power cut), listens on ``127.0.0.1:<free port>`` with
its Unix socket inside that directory (never ``/var/run/postgresql``), requires a password over TCP
(scram-sha-256, so the exporter's password handling is exercised), creates the database ``bkotel``
and offers ``url`` for it. ``stop()`` stops the server and deletes the directory; ``restart()`` stops it
(``-m fast``: sessions are terminated, as in a planned failover) and starts it again on the same port.
``settings`` are extra ``-c name=value`` server settings (``ssl=on`` with a certificate, say: the
files they name must be readable by the server's account, see ``own()``).

PostgreSQL refuses to run as root. Under root (CI containers) the cluster runs as the ``postgres``
system user that Debian's package creates, else as ``nobody``: the temp directory is handed to that
user, and ``initdb``/``pg_ctl`` run with ``subprocess``'s ``user=``/``group=``.

Binaries are looked up in ``$BK_OTEL_PG_BIN``, next to ``pg_ctl`` on ``PATH``, then in Debian's
``/usr/lib/postgresql/<version>/bin`` (newest first). ``find_pg_bin()`` answers ``None`` when they are
genuinely absent; ``scripts/ensure-postgres.sh`` installs them.

Helpers for tests that need isolation inside the one session cluster: ``fresh_database(url)`` (a new
empty database) and ``fresh_schema(url)`` (a new schema selected through ``options=-csearch_path=…``,
cheaper: no database copy).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

__all__ = ["PostgresCluster", "PostgresError", "find_pg_bin", "fresh_database", "fresh_schema", "replica_bkmonitor"]

_TOOLS = ("initdb", "pg_ctl", "postgres")
PG_BIN_ENV = "BK_OTEL_PG_BIN"


class PostgresError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped."""


def _has_tools(directory: Path) -> bool:
    return all((directory / tool).is_file() and os.access(directory / tool, os.X_OK) for tool in _TOOLS)


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (0,)


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None`` when absent."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)  # /usr/local/bin/pg_ctl -> /usr/lib/postgresql/N/bin
    candidates.append(Path("/usr/local/bin"))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True))
    for directory in candidates:
        if _has_tools(directory):
            real = (directory / "pg_ctl").resolve().parent
            return real if _has_tools(real) else directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database)))


def fresh_database(url: str, prefix: str = "t") -> str:
    """Create an empty database next to the one ``url`` names; return its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(url, name)


def fresh_schema(url: str, prefix: str = "s") -> str:
    """Create an empty schema in ``url``'s database; return a URL whose ``search_path`` selects it."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    parts = urlsplit(url)
    option = quote(f"-csearch_path={name}", safe="")
    query = f"{parts.query}&options={option}" if parts.query else f"options={option}"
    return urlunsplit(parts._replace(query=query))


class PostgresCluster:
    """One throwaway cluster; see the module docstring. Usable as a context manager."""

    def __init__(
        self, bindir: Path, *, user: str = "bkotel", database: str = "bkotel", settings: dict[str, str] | None = None
    ) -> None:
        self.bindir = Path(bindir)
        self.settings = dict(settings or {})
        self.user = user
        self.database = database
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.base: Path | None = None
        self._account = _run_as()
        self._running = False

    # -- paths and URLs
    @property
    def data_dir(self) -> Path:
        assert self.base is not None, "cluster not created"
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None, "cluster not created"
        return self.base / "sock"

    @property
    def log_file(self) -> Path:
        assert self.base is not None, "cluster not created"
        return self.base / "postgres.log"

    def url_for(self, database: str) -> str:
        password = quote(self.password, safe="")
        return f"postgresql://{self.user}:{password}@127.0.0.1:{self.port}/{quote(database)}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    # -- lifecycle
    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        kw: dict[str, object] = {}
        if self._account is not None:
            kw = {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        try:
            return subprocess.run(  # type: ignore[call-overload,no-any-return]
                [str(self.bindir / args[0]), *args[1:]],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=str(self.base),
                check=False,
                **kw,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresError(f"{args[0]} failed: {exc}") from exc

    def _create(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="bk-otel-pg-"))
        self.socket_dir.mkdir()
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._account is not None:
            for path in (self.base, self.socket_dir, pwfile):
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        done = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise PostgresError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def _start_server(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                "-c shared_buffers=32MB",
                "-c log_min_messages=warning",
                *(f"-c {name}={value}" for name, value in self.settings.items()),
            ]
        )
        done = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "-o", options, "start"
        )
        if done.returncode != 0:
            log_text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            raise PostgresError(f"pg_ctl start failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{log_text}")

    def start(self) -> PostgresCluster:
        try:
            self._create()
            for attempt in range(3):
                self.port = _free_port()
                try:
                    self._start_server()
                    break
                except PostgresError:
                    if attempt == 2:
                        raise
                    time.sleep(0.2)  # most likely the port was taken between probe and bind
            self._running = True
            with psycopg.connect(self.url_for("postgres"), autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        except BaseException:
            self.stop()
            raise
        return self

    def own(self, path: Path, mode: int = 0o600) -> Path:
        """Hand ``path`` to the server's account (``mode``), so it may read it (a TLS key, say)."""
        path.chmod(mode)
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)
        return path

    def restart(self, mode: str = "fast", down: float = 0.0) -> None:
        """Stop the server (``-m fast``: sessions terminated, in-flight transactions rolled back),
        leave it down ``down`` seconds, and start it again on the same port and data."""
        done = self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop", timeout=40)
        if done.returncode != 0:
            raise PostgresError(f"pg_ctl stop failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        time.sleep(down)
        self._start_server()

    def stop(self) -> None:
        """Stop the server (fast, then immediate) and delete the directory; safe to call twice."""
        if self._running:
            self._running = False
            done = self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "20", "stop", timeout=30)
            if done.returncode != 0:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "20", "stop", timeout=30)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def replica_bkmonitor(sim: Any, name: str) -> dict[str, Any]:
    """The ``bkmonitor`` section of one replica in the replica tests: the simulator's credentials,
    ``name`` as the username (how the simulator tells replicas apart), small fast retries."""
    return {
        "base_url": sim.base_url,
        "app_code": sim.app_code,
        "app_secret": sim.app_secret,
        "username": name,
        "rate_limit": 0,
        "max_concurrency": 4,
        "timeout": "5s",
        "retry": {"max_attempts": 3, "initial_backoff": "0.2s", "max_backoff": "1s"},
    }
