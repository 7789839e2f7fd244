"""Shared fixtures. The OTLP harness (in-process receiver, rotel collector) lives in tests/support."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.support.daemon import take_outputs
from tests.support.secrets import LEDGER, Leak

pytest_plugins = ["tests.support.fixtures"]


# -- no secret in any output ------------------------------------------------------------------------
# Every phase of every test: its captured log lines and stdout/stderr, and (at teardown, when the
# daemons it started have stopped) every exporter subprocess output it produced, are scanned for
# the test secrets (tests/support/secrets.py). A leak fails that test; the ledger is checked once
# more by the session's last test (tests/integration/faults/test_secrets.py).


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    found: list[Leak] = []
    for title, content in report.sections:
        if title.endswith(f" {call.when}"):
            found += LEDGER.scan(item.nodeid, title, content)
    if call.when == "teardown":
        for output in take_outputs():
            found += LEDGER.scan(item.nodeid, output.label, output.read())
    if found and report.passed:
        where = "; ".join(f"{leak.secret} in {leak.source}" for leak in found)
        report.outcome = "failed"
        report.longrepr = f"a test secret leaked into the exporter's output: {where}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``run_last = True`` (the session-wide leak check) run after every other one."""
    last = [item for item in items if getattr(getattr(item, "function", None), "run_last", False)]
    items[:] = [item for item in items if item not in last] + last
