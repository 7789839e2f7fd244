"""Throwaway TLS material for tests, made with the ``openssl`` command line: a CA, a server
certificate it signed, and an unrelated CA (to be refused by).

``make_tls(directory, hosts=("localhost",))`` writes ``ca.crt``, ``server.crt``, ``server.key`` and
``other-ca.crt`` there and returns their paths. The server certificate names only ``hosts`` in its
subjectAltName (DNS names, or IP addresses), so a client that verifies host names
(``sslmode=verify-full``) accepts it for those and refuses it for any other. ``find_openssl()`` is
None when the command is absent.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "find_openssl", "make_tls"]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def find_openssl() -> str | None:
    return shutil.which("openssl")


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def _openssl(*args: str) -> None:
    openssl = find_openssl()
    assert openssl is not None, "openssl not installed"
    done = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr}")


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-subj", f"/CN=bk-otel-exporter test {name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return key, cert


def make_tls(directory: Path, hosts: tuple[str, ...] = ("localhost",)) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca(directory, "ca")
    _, other = _ca(directory, "other-ca")
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName={','.join(_san(h) for h in hosts)}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hosts[0]}", "-keyout", str(key), "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return TlsFiles(ca=ca_cert, cert=cert, key=key, other_ca=other)
