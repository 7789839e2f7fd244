"""Value types of the config that need no model: durations, sizes and the listen address.

A leaf: nothing here imports the rest of :mod:`exporter.config` (``exporter.server`` reads the
listen address with the same parser the config validates it with).

* a duration is a float of seconds once validated; the text may say ``250ms``, ``30s``, ``5m``,
  ``1h``, ``1d``, combinations such as ``1h30m``, or plain seconds;
* a size is an int of bytes once validated; the text may say ``512KiB``, ``4MiB``, ``1GiB``
  (powers of 1024), ``500KB``, ``3MB``, ``1GB`` (powers of 1000), ``100B`` or plain bytes;
* an OTLP header is checked by :func:`header_problem` (what HTTP and gRPC can send);
* a listen address is ``host:port``, ``[v6]:port`` or ``:port``; ``""`` disables the server.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Annotated, NamedTuple

from pydantic import BeforeValidator

__all__ = [
    "DURATION_TAG",
    "Duration",
    "SIZE_TAG",
    "ListenAddress",
    "Size",
    "format_duration",
    "format_size",
    "header_problem",
    "headers_problem",
    "parse_duration",
    "parse_listen",
    "parse_size",
    "shown",
]


def shown(value: object, limit: int = 40) -> str:
    """``repr`` of a non-secret input, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# ── durations ────────────────────────────────────────────────────────────────────────────────

_DURATION_HINT = "use 30s, 5m, 1h, 1d or seconds"
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_SECONDS = re.compile(rf"{_NUMBER}(?:[eE][+-]?\d+)?")
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|s|m|h|d)", re.IGNORECASE)


def parse_duration(value: object) -> float:
    """Seconds from ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"``, ``"1h30m"``, ``30`` or ``"30"``.

    Raises :class:`ValueError` (with the input quoted back: durations are never secrets) for
    anything else, including negative, infinite and boolean values.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        what = shown(value) if isinstance(value, bool) else f"of type {type(value).__name__}"
        raise ValueError(f"invalid duration {what} ({_DURATION_HINT})")
    seconds = float(value) if not isinstance(value, str) else _duration_text(value)
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"invalid duration {shown(value)} ({_DURATION_HINT})")
    if seconds < 0:
        raise ValueError(f"invalid duration {shown(value)}: must not be negative")
    return seconds


def _duration_text(text: str) -> float | None:
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body[1:].lstrip() if body[:1] in ("-", "+") else body
    if _PLAIN_SECONDS.fullmatch(body):
        return sign * float(body)
    total, pos = 0.0, 0
    while pos < len(body):
        part = _DURATION_PART.match(body, pos)
        if part is None:
            return None
        unit = part[2].lower()
        # n/1000, not n*0.001: "250ms" must read back exactly what format_duration(0.25) wrote
        total += float(part[1]) / 1000 if unit == "ms" else float(part[1]) * _UNIT_SECONDS[unit]
        pos = part.end()
    return sign * total if pos else None


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` that :func:`parse_duration` reads back: ``"10m"``."""
    if seconds == int(seconds):
        whole = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole and whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    millis = seconds * 1000
    if abs(millis - round(millis)) < 1e-6:
        return f"{round(millis)}ms"
    return f"{seconds:.6f}".rstrip("0") + "s"


class _DurationTag:
    """Marks duration fields in ``Annotated`` metadata, so the rendering prints ``30s``, not ``30.0``."""


#: the marker :data:`Duration` carries in its field's metadata
DURATION_TAG = _DurationTag()
Duration = Annotated[float, BeforeValidator(parse_duration), DURATION_TAG]


# ── sizes ────────────────────────────────────────────────────────────────────────────────────

_SIZE_HINT = "use 512KiB, 4MiB, 1GiB or a number of bytes"
_SIZE_UNITS = {
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}
_SIZE = re.compile(rf"\s*({_NUMBER})\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Bytes from ``"512KiB"``, ``"4MiB"``, ``"1GiB"``, ``"3MB"``, ``"100B"``, ``4096`` or ``"4096"``.

    Raises :class:`ValueError` (quoting the input back: sizes are never secrets) for anything
    else, including negative, fractional-byte and boolean values.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        what = shown(value) if isinstance(value, bool) else f"of type {type(value).__name__}"
        raise ValueError(f"invalid size {what} ({_SIZE_HINT})")
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        unit = _SIZE_UNITS.get(match[2].lower() if match and match[2] else "b") if match else None
        if match is None or unit is None:
            raise ValueError(f"invalid size {shown(value)} ({_SIZE_HINT})")
        number = float(match[1]) * unit
    else:
        number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"invalid size {shown(value)}: must be a positive number of bytes")
    if number != int(number):
        raise ValueError(f"invalid size {shown(value)}: not a whole number of bytes")
    return int(number)


def format_size(size: int) -> str:
    """The shortest exact spelling of ``size`` bytes that :func:`parse_size` reads back: ``"3MiB"``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


class _SizeTag:
    """Marks size fields in ``Annotated`` metadata, so the rendering prints ``3MiB``, not ``3145728``."""


#: the marker :data:`Size` carries in its field's metadata
SIZE_TAG = _SizeTag()
Size = Annotated[int, BeforeValidator(parse_size), SIZE_TAG]


# ── OTLP header names and values ─────────────────────────────────────────────────────────────

# RFC 9110 token characters: what an HTTP header name may hold
_HTTP_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# gRPC metadata keys (after the transport lower-cases them); "-bin" keys carry bytes, not text
_GRPC_NAME = re.compile(r"[0-9a-z_.\-]+")


def header_problem(name: str, value: str, protocol: str) -> str | None:
    """Why header ``name`` (with ``value``, never quoted: it is a secret) cannot be sent over
    ``protocol`` (``grpc`` or ``http/protobuf``), or None. gRPC sends names lower-cased."""
    label = f"header {shown(name)}"
    if not _HTTP_NAME.fullmatch(name):
        return f"{label}: not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only; no spaces or colons)"
    if protocol == "grpc":
        key = name.lower()
        if not _GRPC_NAME.fullmatch(key):
            return f"{label}: gRPC metadata names hold only letters, digits, '-', '_' and '.'"
        if key.startswith("grpc-") or key.endswith("-bin"):
            return f"{label}: gRPC reserves names starting with 'grpc-' and ending in '-bin'"
    if value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return f"{label}: the value has leading or trailing spaces or control characters (value not shown)"
    if protocol == "grpc" and not value.isascii():
        return f"{label}: gRPC metadata values must be ASCII (value not shown)"
    if not all(ord(c) < 256 for c in value):
        return f"{label}: HTTP header values must be Latin-1 (value not shown)"
    return None


def headers_problem(headers: Mapping[str, str], protocol: str) -> str | None:
    """Why ``headers`` cannot all be sent over ``protocol`` (every header's problem), or None."""
    problems = [p for name, value in headers.items() if (p := header_problem(name, value, protocol))]
    if not problems and protocol == "grpc" and len({name.lower() for name in headers}) < len(headers):
        problems.append("names must differ in more than case: gRPC sends them lower-cased")
    return "; ".join(problems) or None


# ── the listen address ───────────────────────────────────────────────────────────────────────

_LISTEN = re.compile(r"(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>\d{1,5})")
_LISTEN_HINT = 'must be host:port such as 127.0.0.1:9464 or [::1]:9464, or "" to disable'


class ListenAddress(NamedTuple):
    """Where to bind: ``host`` is an IPv6 address without brackets, or ``""`` for every interface."""

    host: str
    port: int


def parse_listen(text: str) -> ListenAddress | None:
    """``"host:port"`` / ``"[v6]:port"`` / ``":port"`` (every interface: host ``""``); blank -> ``None``.

    Raises :class:`ValueError` with a readable message (the input is not quoted back) for
    anything else: a bare port, an IPv6 address without brackets, a port beyond 65535.
    """
    text = text.strip()
    if not text:
        return None
    match = _LISTEN.fullmatch(text)
    if match is None:
        raise ValueError(_LISTEN_HINT)
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"].split("%")[0])
        except ValueError:
            raise ValueError(_LISTEN_HINT) from None
    port = int(match["port"])
    if port > 65535:
        raise ValueError("port out of range: must be 0..65535")
    return ListenAddress(match["ipv6"] or match["host"] or "", port)
