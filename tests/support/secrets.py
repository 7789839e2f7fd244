"""The secrets the tests give the exporter, defined once, and the session-wide leak ledger.

Integration tests configure the exporter with these values (through ``${VAR}`` substitution,
``app_secret_file`` or the config file itself) so that one check can look for them everywhere:
``tests/conftest.py`` scans every daemon and CLI output (registered by ``tests.support.daemon``),
every captured log line and every captured stdout/stderr of every test phase, and fails the
test in whose output a secret shows up. ``tests/integration/faults/test_secrets.py`` runs last
and fails when anything leaked anywhere in the session.

A value is looked for in the forms it takes in URLs and JSON too (percent-encoded, ``+`` for
spaces, JSON-escaped), as the exporter's own redaction does. The report never repeats a secret:
it names which one leaked and where.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field

__all__ = [
    "APP_SECRET",
    "BK_TOKEN",
    "LEDGER",
    "OTLP_AUTH_HEADER",
    "OTLP_TOKEN",
    "SECRETS",
    "Leak",
    "Ledger",
    "find_leaks",
]

#: ``bkmonitor.app_secret`` (the simulator is started with it).
APP_SECRET = "bk-test-app-secret-7Hq2Lw9x"
#: ``bkmonitor.bk_token``.
BK_TOKEN = "bk-test-user-token-Zx91Pq4m"
#: The credential inside the OTLP ``authorization`` header.
OTLP_TOKEN = "otlp-test-bearer-Kd83Vn2c"
#: ``export.headers.authorization``.
OTLP_AUTH_HEADER = f"Bearer {OTLP_TOKEN}"

#: name -> value of every secret the tests hand to the exporter.
SECRETS: dict[str, str] = {
    "bkmonitor.app_secret": APP_SECRET,
    "bkmonitor.bk_token": BK_TOKEN,
    "export.headers.authorization": OTLP_TOKEN,
}


def _forms(value: str) -> set[str]:
    return {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        json.dumps(value)[1:-1],
    }


_FORMS = {name: _forms(value) for name, value in SECRETS.items()}


def find_leaks(text: str) -> list[str]:
    """The names of the secrets that appear in ``text`` (in any of their forms)."""
    if not text:
        return []
    return [name for name, forms in _FORMS.items() if any(form in text for form in forms)]


@dataclass(frozen=True)
class Leak:
    test: str  # the test's node id
    source: str  # which output: "daemon log …", "cli once …", "Captured log call", …
    secret: str  # the secret's name (never its value)


@dataclass
class Ledger:
    """What the session scanned and found. Thread-safe; filled by ``tests/conftest.py``."""

    outputs_scanned: int = 0
    characters_scanned: int = 0
    leaks: list[Leak] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def scan(self, test: str, source: str, text: str) -> list[Leak]:
        found = [Leak(test, source, name) for name in find_leaks(text)]
        with self._lock:
            self.outputs_scanned += 1
            self.characters_scanned += len(text)
            self.leaks.extend(found)
        return found


LEDGER = Ledger()
