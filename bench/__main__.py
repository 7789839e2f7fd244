"""``python -m bench [--quick] [--only NAME ...] [--output FILE]``: run the benchmarks.

Run from the repository root with the project's venv (``.venv/bin/python -m bench``). A full run
of every benchmark writes ``docs/benchmarks.md``; ``--quick`` (toy sizes, seconds) or ``--only``
write only to an explicit ``--output`` (so a partial run never replaces the published figures).
The report is also printed on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Result
from bench.report import ROOT, machine, render

__all__ = ["BENCHMARKS", "main"]


def _load(name: str) -> Callable[..., Result]:
    module = __import__(f"bench.{name}", fromlist=["run"])
    runner: Callable[..., Result] = module.run
    return runner


#: In the order they run: start-up first, while the process is fresh.
BENCHMARKS = ("startup", "throughput", "storm", "calls", "economy", "memory", "growth", "latency", "hotspots")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks that everything runs")
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, metavar="NAME", help="one of " + ", ".join(BENCHMARKS)
    )
    parser.add_argument(
        "--output", type=Path, help="where to write the report (default: docs/benchmarks.md for a full run)"
    )
    args = parser.parse_args(argv)
    from exporter.runtime import limit_malloc_arenas

    limit_malloc_arenas()  # the in-process benchmarks run the App as the run command does
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    output = args.output
    if output is None and not args.quick and not args.only:
        output = ROOT / "docs" / "benchmarks.md"
    info = machine()
    results = []
    for name in names:
        command = ".venv/bin/python -m bench" + (" --quick" if args.quick else "") + f" --only {name}"
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        result = _load(name)(quick=args.quick, command=command)
        result.seconds = time.perf_counter() - started
        result.notes.append(f"1-minute load average when it started: {load:.2f} (on {info['CPUs (nproc)']} CPUs).")
        print(
            f"[bench] {name}: {result.measured} -> {result.verdict} ({result.seconds:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    command = ".venv/bin/python -m bench" + (" --quick" if args.quick else "")
    if args.only:
        command += "".join(f" --only {n}" for n in names)
    text = render(results, info, command=command, quick=args.quick, names=BENCHMARKS)
    if output is not None:
        from bench.destinations import MARK, write

        old = output.read_text(encoding="utf-8") if output.exists() else ""
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        if old.count(MARK) == 2:  # python -m bench.destinations wrote its own section: keep it
            write(MARK + old.split(MARK)[1] + MARK, output)
        print(f"[bench] report written to {output}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
