"""Test-side harness for the exporter's integration tests.

* ``otlp_receiver.OtlpReceiver``: in-process OTLP backend (gRPC + HTTP/protobuf) that decodes
  what it receives into plain dicts, with fault modes.
* ``rotel.Rotel``: the real rotel collector as a subprocess, forwarding to a receiver.
* ``fixtures``: the ``otlp_receiver`` and ``rotel_collector`` pytest fixtures
  (``pytest_plugins = ["tests.support.fixtures"]``).
"""
