"""Test-side harness for the exporter's integration tests.

* ``otlp_receiver.OtlpReceiver``: in-process OTLP backend (gRPC + HTTP/protobuf) that decodes
  what it receives into plain dicts, with fault modes.
* ``rotel.Rotel``: the real rotel collector as a subprocess, forwarding to a receiver.
* ``fixtures``: the ``sim``, ``store``, ``otlp_receiver``, ``rotel_collector`` and ``postgres_url`` pytest
  fixtures (``pytest_plugins = ["tests.support.fixtures"]``).
* ``daemon``: the exporter as a subprocess (``Daemon`` for ``run``, ``run_cli`` for a command).
* ``wait``: ``wait_until``, the one polling wait.
* ``sim``: the simulator with the test defaults, the shared ``story`` and what must arrive of it.
* ``pipeline``: ``Rig``, the poller and sender over a real SQLite store, a scripted source and
  the memory sink, on a settable clock.
* ``records``: small builders of model values (``alarm_context``, ``queued_log``).
"""
