"""Is the connection to the shared store protected? A start-up warning when ``state.url`` lets
libpq talk to a non-loopback host in plaintext, or over TLS without verifying the server.

Pure: it reads the URL (libpq's own parser, no connection) and the ``PG*`` variables libpq would
use, never the network. ``sslmode`` other than ``verify-full`` means, for a remote host:
``disable``, ``allow``, ``prefer`` (libpq's default): plaintext is possible (a server or a man in
the middle that declines TLS gets the password exchange and every row in the clear);
``require``: encrypted, but anyone can present a certificate; ``verify-ca``: the certificate is
checked against the CA, not against the host name.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

from psycopg.conninfo import conninfo_to_dict

__all__ = ["is_loopback", "transport_warning"]

_PLAINTEXT = ("disable", "allow", "prefer")


def is_loopback(host: str) -> bool:
    """A Unix socket (a path, an abstract ``@name``, or no host at all), ``localhost`` or a loopback IP."""
    host = host.strip()
    if not host or host.startswith(("/", "@")) or host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_warning(url: str, env: Mapping[str, str] | None = None) -> str | None:
    """The warning ``url`` deserves, or None (verify-full, or only loopback hosts)."""
    env = os.environ if env is None else env
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    mode = (params.get("sslmode") or env.get("PGSSLMODE") or "").strip().lower()
    if not mode:
        mode = "require" if params.get("requiressl", env.get("PGREQUIRESSL", "")).strip() == "1" else "prefer"
    hosts = [h for h in (params.get("host") or env.get("PGHOST") or "").split(",")]
    addrs = [a for a in (params.get("hostaddr") or env.get("PGHOSTADDR") or "").split(",")]
    remote = []
    for i, host in enumerate(hosts):
        addr = addrs[i] if i < len(addrs) else (addrs[0] if len(addrs) == 1 else "")
        target = addr.strip() or host  # libpq connects to hostaddr when given
        if not is_loopback(target):
            remote.append(host.strip() or target.strip())
    if not remote or mode == "verify-full":
        return None
    where = ", ".join(remote)
    advice = "use sslmode=verify-full with sslrootcert=<the server's CA file> (docs/postgres.md)"
    if mode in _PLAINTEXT:
        return (
            f"state.url: sslmode={mode} to {where} allows a plaintext connection (the password exchange and "
            f"every row readable, and alterable, on the network); {advice}"
        )
    if mode == "verify-ca":
        return (
            f"state.url: sslmode=verify-ca to {where} checks the server's certificate but not its host name "
            f"(any server with a certificate from that CA is trusted); {advice}"
        )
    return (
        f"state.url: sslmode={mode} to {where} encrypts but does not verify the server (a man in the middle "
        f"can present any certificate); {advice}"
    )
