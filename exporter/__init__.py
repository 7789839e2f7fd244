"""bk-otel-exporter: BlueKing Monitor alarm flow records to OpenTelemetry over OTLP.

Kept import-light on purpose: ``bk-otel-exporter --version`` must not pull in the SDK.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
