"""Shared fixtures. The OTLP harness (in-process receiver, rotel collector) lives in tests/support."""

pytest_plugins = ["tests.support.fixtures"]
