"""Keeping credentials out of messages and log lines.

The client knows its secrets (``app_secret``, ``bk_token``); anything it builds from text it
did not write (a server's message, a ``requests`` exception that quotes the URL) passes through
:func:`redact` first. With ``auth_in: params`` the secret travels in GET query strings, so urllib3's
DEBUG lines would show it: :class:`RedactingFilter` is attached to those loggers while such a
client is open.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "RedactingFilter", "redact", "strip_query"]

MASK = "***"

_QUERY = re.compile(r"\?[^\s'\"()<>]*")


def _forms(secrets: Iterable[str]) -> list[str]:
    """Every spelling of each secret that may appear in text: raw, and URL-encoded two ways."""
    out: set[str] = set()
    for secret in secrets:
        if secret:
            out.update((secret, quote(secret, safe=""), quote_plus(secret)))
    # Longest first, so a raw secret that contains an encoded one is masked whole.
    return sorted(out, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret (raw or URL-encoded) replaced by ``***``."""
    for form in _forms(secrets):
        text = text.replace(form, MASK)
    return text


def strip_query(text: str) -> str:
    """``text`` with URL query strings cut out (``/path/?id=1&bk_app_secret=s`` -> ``/path/?…``)."""
    return _QUERY.sub("?…", text)


class RedactingFilter(logging.Filter):
    """A logger filter that rewrites records whose message contains one of ``secrets``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._forms = _forms(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's problem, not ours
            return True
        if any(form in message for form in self._forms):
            for form in self._forms:
                message = message.replace(form, MASK)
            record.msg, record.args = message, None
        return True
