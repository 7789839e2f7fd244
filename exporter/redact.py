"""The one place secrets are masked: :data:`MASK`, :func:`redact`, URL passwords, a log filter.

Everything that turns a secret-bearing value into text (the effective config, log lines, errors
quoting a server's message or a driver's exception, the PostgreSQL URL) goes through here, so a
secret has one spelling of "hidden" and one list of the forms it can take in text:

* raw, URL-encoded both ways (``quote`` and ``quote_plus``: query strings) and JSON-escaped;
* in a URL, the userinfo password (raw and percent-decoded) and a ``password=`` parameter.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

__all__ = [
    "MASK",
    "RedactingFilter",
    "SecretPattern",
    "redact",
    "redact_url",
    "secret_forms",
    "strip_query",
    "url_passwords",
]

#: what a secret is replaced with, everywhere
MASK = "***"

_QUERY = re.compile(r"\?[^\s'\"()<>]*")


def secret_forms(secrets: Iterable[str | None], *, min_length: int = 1) -> list[str]:
    """Every spelling of each secret that may appear in text, longest first.

    Longest first, so a raw secret that contains an encoded one is masked whole. Values shorter
    than ``min_length`` are left out (masking ``a`` everywhere would mangle every line).
    """
    out: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= min_length:
            out.update((secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]))
    out.discard("")
    return sorted(out, key=len, reverse=True)


class SecretPattern:
    """A compiled alternation of secret forms: one ``sub`` masks them all."""

    __slots__ = ("_pattern",)

    def __init__(self, forms: Iterable[str]) -> None:
        alternatives = sorted(set(forms), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def __contains__(self, text: object) -> bool:
        return bool(self._pattern is not None and isinstance(text, str) and self._pattern.search(text))


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of every secret (raw, URL-encoded, JSON-escaped) masked."""
    for form in secret_forms(secrets):
        text = text.replace(form, MASK)
    return text


def strip_query(text: str) -> str:
    """``text`` with URL query strings cut out (``/path/?id=1&bk_app_secret=s`` -> ``/path/?…``)."""
    return _QUERY.sub("?…", text)


def url_passwords(url: str) -> list[str]:
    """The password of a URL: the userinfo's (raw and percent-decoded) and any ``password=``."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        raw = userinfo.partition(":")[2]
        if raw:
            found.extend([raw, unquote(raw)])
        found.extend(value for key, value in parse_qsl(parts.query) if key == "password")
    except ValueError:
        pass
    return [value for value in dict.fromkeys(found) if value]


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or ``password=`` parameter) replaced by :data:`MASK`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url, url_passwords(url))
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", rf"\g<1>\g<2>{MASK}", parts.query)
    return parts._replace(netloc=netloc, query=query).geturl()


class RedactingFilter(logging.Filter):
    """A logger filter that rewrites records whose message contains one of ``secrets``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._pattern = SecretPattern(secret_forms(secrets))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's problem, not ours
            return True
        if message in self._pattern:
            record.msg, record.args = self._pattern(message), None
        return True
