"""The command line: argparse commands -> exit codes. The one place that turns errors into messages.

Exit codes: 0 success; 1 a fatal start-up error, or (``once``) records not delivered; 2 a bad
configuration. Heavy modules are imported inside the commands so ``--version`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from exporter import __version__

if TYPE_CHECKING:
    from exporter.config import Config

__all__ = ["main"]

log = logging.getLogger("exporter.cli")

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bk-otel-exporter",
        description="Poll BlueKing Monitor alarm flow records and ship them as OpenTelemetry logs/spans over OTLP.",
    )
    parser.add_argument("--version", action="version", version=f"bk-otel-exporter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            "-c",
            metavar="FILE",
            help="config file (default: $BK_OTEL_EXPORTER_CONFIG, else /etc/bk-otel-exporter/config.yaml)",
        )
        return p

    with_config(sub.add_parser("run", help="run the daemon in the foreground (SIGTERM stops, SIGHUP reloads)"))
    once = with_config(sub.add_parser("once", help="one full cycle: discover, poll, export, exit"))
    once.add_argument("--since", metavar="DURATION", help="widen discovery for a backfill, e.g. 24h")
    with_config(sub.add_parser("check-config", help="validate and print the effective config, secrets redacted"))
    status = with_config(sub.add_parser("status", help="what the state store holds"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    demo = sub.add_parser("demo", help="run the whole pipeline against the built-in BlueKing simulator")
    demo.add_argument("--endpoint", metavar="URL", help="also ship the records to this OTLP endpoint")
    demo.add_argument("--protocol", choices=["grpc", "http/protobuf"], default="grpc", help="with --endpoint")
    demo.add_argument("--duration", type=float, default=20.0, metavar="SECONDS", help="how long the story runs")
    demo.add_argument(
        "--api",
        choices=["esb", "apigw"],
        default="esb",
        help="esb: a BlueKing with the ESB (default); apigw: a gateway-only, multi-tenant BlueKing",
    )
    plugins = sub.add_parser("plugins", help="list installed sources, mappers and sinks, with versions")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command
    if command is None:
        _parser().print_help(sys.stderr)
        return EXIT_CONFIG
    handlers = {
        "run": _cmd_run,
        "once": _cmd_once,
        "check-config": _cmd_check_config,
        "status": _cmd_status,
        "demo": _cmd_demo,
        "plugins": _cmd_plugins,
    }
    try:
        return handlers[command](args)
    except KeyboardInterrupt:
        return 130


# -- helpers ----------------------------------------------------------------------------------------
def _load(args: argparse.Namespace) -> Config | None:
    from exporter.config import load_config
    from exporter.errors import ConfigError

    try:
        return load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _setup_logging(config: Config) -> None:
    from exporter.logsetup import setup_logging

    setup_logging(config.logging.level, config.logging.format, secrets=config.secrets())


def _fatal(exc: BaseException) -> int:
    """A start-up failure, after logging is set up. Exception texts carry no secrets (errors.py)."""
    log.error("cannot start: %s", exc)
    return EXIT_FAIL


# -- commands -----------------------------------------------------------------------------------------
def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    from exporter.config import render_effective

    sys.stdout.write(render_effective(config))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    _setup_logging(config)
    from exporter.errors import ExporterError
    from exporter.logsetup import add_secrets
    from exporter.scheduler import Daemon

    def on_reload(new: Config) -> None:
        add_secrets(new.secrets())
        _setup_logging(new)

    try:
        daemon = Daemon(config, config_path=args.config, on_reload=on_reload)
    except (ExporterError, OSError) as exc:
        return _fatal(exc)
    return daemon.run()


def _cmd_once(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    since: float | None = None
    if args.since:
        from exporter.config import parse_duration

        try:
            since = parse_duration(args.since)
        except ValueError as exc:
            print(f"--since: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    _setup_logging(config)
    from exporter.app import App
    from exporter.errors import ExporterError

    try:
        app = App(config)
    except (ExporterError, OSError) as exc:
        return _fatal(exc)
    try:
        report = app.run_once(since=since)
    finally:
        app.close()
    log.info(
        "once: %d alarms read, %d new records, %d exported, %d parked, %d still queued%s",
        report.cycle.polled,
        report.cycle.new_records,
        report.drain.exported,
        report.drain.parked,
        report.queued,
        "" if report.exit_code == 0 else " (exit 1: not everything was delivered)",
    )
    return report.exit_code


def _cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    from exporter.errors import ExporterError
    from exporter.status import collect_status, render_status

    try:
        status = collect_status(config)
    except (ExporterError, OSError) as exc:
        print(f"bk-otel-exporter: {exc}", file=sys.stderr)
        return EXIT_FAIL
    sys.stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n" if args.json else render_status(status))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from exporter.demo import run_demo

    return run_demo(endpoint=args.endpoint, protocol=args.protocol, duration=args.duration, api=args.api)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from exporter.plugins import installed_plugins

    rows: list[dict[str, Any]] = installed_plugins(check=True)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_OK
    if not rows:
        print("no plugins installed (is the package installed? try: pip install -e .)")
        return EXIT_OK
    width = max(len(row["name"]) for row in rows)
    dist_width = max(len(f"{row['distribution']} {row['version']}") for row in rows)
    print(f"{'KIND':<6}  {'NAME':<{width}}  {'DISTRIBUTION':<{dist_width}}  DESCRIPTION")
    for row in rows:
        dist = f"{row['distribution']} {row['version']}"
        about = row["description"] if row["status"] == "ok" else f"BROKEN: {row['status']}"
        print(f"{row['kind']:<6}  {row['name']:<{width}}  {dist:<{dist_width}}  {about}")
    return EXIT_OK
