"""The benchmarks of issue 7: ``.venv/bin/python -m bench`` from the repository root writes
``docs/benchmarks.md`` (see :mod:`bench.__main__`). One module per benchmark (``startup``,
``throughput``, ``storm``, ``economy``, ``memory``, ``latency``), each with ``run(quick=, command=)``
returning a :class:`bench.common.Result`; helpers: :mod:`bench.simserver` (the simulator in its own
process), :mod:`bench.receiver` (a lean OTLP/gRPC receiver), :mod:`bench.memworker`, :mod:`bench.report`.
"""
