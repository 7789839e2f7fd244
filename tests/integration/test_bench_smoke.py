"""The benchmarks (``bench/``, issue 7) at toy sizes, so the one documented command cannot rot.

Runs ``python -m bench --quick --output <tmp>`` exactly as documented in docs/benchmarks.md and
checks the report has every section. No timing is asserted: the figures of a quick run mean
nothing, and the full run is not part of the test suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "## Machine",
    "## Summary",
    "## 1. Pipeline throughput",
    "## 2. Alarm storm",
    "## 3. API economy (with discovery)",
    "## 4. Memory",
    "## 5. Latency",
    "## 6. Start-up",
    "## Profile findings",
)


def test_quick_bench_writes_every_section(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BK_OTEL_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(report)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = report.read_text(encoding="utf-8")
    missing = [s for s in SECTIONS if s not in text]
    assert not missing, f"sections missing from the report: {missing}\n{text[:2000]}"
    assert text.count("**PASS**") + text.count("**MISS**") >= 12, "a verdict in the summary and in each section"
    for field in ("| date |", "| commit |", "| CPUs (nproc) |", "| CPU model |", "| RAM |", "| Python |"):
        assert field in text
    assert "Command: `.venv/bin/python -m bench --quick --only throughput`" in text
    assert done.stdout == text, "the report is also printed on stdout"
