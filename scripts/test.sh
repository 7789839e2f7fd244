#!/usr/bin/env bash
# The whole test suite from a fresh clone: a venv with the pinned tools, lint, types, then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
if [ -f scripts/ensure-postgres.sh ]; then bash scripts/ensure-postgres.sh; fi
if [ -f scripts/ensure-prometheus.sh ]; then bash scripts/ensure-prometheus.sh; fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
