"""No secret in any output: the app secret, the bk_token and the OTLP authorization header value.

Every test of the session feeds its outputs to the leak ledger (``tests/conftest.py``): every
daemon log and CLI output (``tests/support/daemon.py`` registers them), every captured log
line and stdout/stderr. A leak fails the test that caused it; this test runs after all the
others (``run_last``) and fails if anything leaked anywhere in the session.

Before it looks, it produces the outputs most likely to leak, with every secret configured:
``check-config`` (valid, and invalid with a secret of the wrong type), ``once`` and ``run`` at
DEBUG with the legacy ``auth_in: params`` (the secret travels in the query string, which
``requests``/``urllib3`` quote in their messages and debug lines) against a BlueKing that
resets connections, times out, answers garbage and finally refuses the credentials.
"""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.daemon import run_cli, take_outputs, write_config
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.secrets import APP_SECRET, BK_TOKEN, LEDGER, OTLP_AUTH_HEADER, SECRETS, find_leaks

from ._harness import Run, Story, exporter_config, merge, simulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENV = {"TEST_BK_SECRET": APP_SECRET, "TEST_BK_TOKEN": BK_TOKEN, "TEST_OTLP_AUTH": OTLP_AUTH_HEADER}


def test_no_secret_in_any_output_of_the_session(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    with simulator(seed=3) as sim:
        story = Story(sim, seed=3)
        story.add_alarms(3, records=3)
        config = exporter_config(
            sim,
            otlp_receiver.grpc_endpoint,
            tmp_path / "s.db",
            story.ids,
            bkmonitor={"bk_token": "${TEST_BK_TOKEN}", "auth_in": "params", "timeout": "1s"},
            logging={"level": "DEBUG"},
        )
        path = write_config(tmp_path / "c.yaml", config)

        shown = run_cli(["check-config", "--config", str(path)], env=ENV)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.count("***") >= 3  # app_secret, bk_token, the header value
        bad = merge(config, {"bkmonitor": {"bk_token": [BK_TOKEN]}, "export": {"headers": {"x": [OTLP_AUTH_HEADER]}}})
        refused = run_cli(["check-config", "--config", str(write_config(tmp_path / "bad.yaml", bad))], env=ENV)
        assert refused.returncode == 2 and "bkmonitor.bk_token" in refused.stderr

        sim.fault_kinds = ["reset", "esb_timeout", "malformed_json", "slow", "gateway_502"]
        sim.slow_seconds = 1.5
        sim.fault_rate = 0.5
        once = run_cli(["once", "--config", str(path)], env=ENV)
        assert once.returncode in (0, 1), once.stderr
        assert "DEBUG" in once.stderr  # the debug lines were there to be looked at

        story.notes(3)
        run = Run(path, env=ENV)
        try:
            run.wait_for("retrying in", 20)  # the client's DEBUG line about a retry
            sim.fault_rate = 0.0
            sim.inject("auth_1306000", times=3)
            run.wait_for("BlueKing refused our credentials", 20)
            run.daemon.signal(signal.SIGTERM)
            assert run.daemon.wait(30) == 0
        finally:
            run.stop_quietly()
        assert all(APP_SECRET in (r.query or "") for r in sim.requests if r.endpoint == "get_event_log")

    # the detector itself finds each secret in each of its forms
    for value in SECRETS.values():
        for form in (value, quote(value, safe=""), f'"{value}"'):
            assert find_leaks(f"x{form}y"), form
    # the outputs of this test, then everything the session saw
    for output in take_outputs():
        leaked = find_leaks(output.read())
        assert not leaked, f"{', '.join(leaked)} in {output.label}"
        LEDGER.scan("test_no_secret_in_any_output_of_the_session", output.label, output.read())
    assert LEDGER.outputs_scanned > 0
    leaks = sorted({f"{leak.secret} in {leak.source} ({leak.test})" for leak in LEDGER.leaks})
    assert not leaks, "secrets leaked during the session:\n" + "\n".join(leaks)
    print(
        f"scanned {LEDGER.outputs_scanned} outputs, {LEDGER.characters_scanned} characters, "
        f"for {len(SECRETS)} secrets: none found"
    )


test_no_secret_in_any_output_of_the_session.run_last = True  # type: ignore[attr-defined]
