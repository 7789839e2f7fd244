"""The command line: argparse commands -> exit codes. The one place that turns errors into messages.

Exit codes: 0 success; 1 a fatal start-up error, or (``once``) records not delivered, or
(``status --check``) degraded; 2 a bad configuration (or a bad command line). Heavy modules are
imported inside the commands so ``--version`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from exporter import __version__

if TYPE_CHECKING:
    from exporter.config import Config
    from exporter.state import StateStore

__all__ = ["main"]

log = logging.getLogger("exporter.cli")

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bk-otel-exporter",
        description="Poll BlueKing Monitor alarm flow records and ship them as OpenTelemetry logs/spans over OTLP.",
    )
    parser.add_argument("--version", action="version", version=f"bk-otel-exporter {__version__}")
    _logging_flags(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            "-c",
            metavar="FILE",
            help="config file (default: $BK_OTEL_EXPORTER_CONFIG, else /etc/bk-otel-exporter/config.yaml)",
        )
        _logging_flags(p, argparse.SUPPRESS)  # after the command too; SUPPRESS keeps a global one
        return p

    with_config(sub.add_parser("run", help="run the daemon in the foreground (SIGTERM stops, SIGHUP reloads)"))
    once = with_config(sub.add_parser("once", help="one full cycle: discover, poll, export, exit"))
    once.add_argument("--since", metavar="DURATION", help="widen discovery for a backfill, e.g. 24h")
    with_config(sub.add_parser("check-config", help="validate and print the effective config, secrets redacted"))
    status = with_config(sub.add_parser("status", help="what the state store holds"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    requeue = with_config(
        sub.add_parser("requeue", help="move parked records (refused by the backend) back into the outbox")
    )
    requeue.add_argument(
        "--parked", action="store_true", help="the rows to move: the parked ones (the default, and the only kind)"
    )
    requeue.add_argument("--signal", metavar="S", help="only the records of this signal (logs or spans)")
    requeue.add_argument("--older-than", metavar="DURATION", help="only records parked longer ago than this, e.g. 1h")
    requeue.add_argument(
        "--destination", metavar="NAME", help="only the records of this destination (default: export:'s)"
    )
    purge = with_config(sub.add_parser("purge", help="delete the queued (or parked) records of one signal"))
    purge.add_argument("--signal", metavar="S", required=True, help="the signal whose records go (logs or spans)")
    purge.add_argument("--parked", action="store_true", help="delete its parked records instead of its queued ones")
    status.add_argument(
        "--check",
        action="store_true",
        help="judge it: exit 0 healthy, 1 degraded (one line says why), 2 bad config",
    )
    status.add_argument(
        "--max-age",
        metavar="DURATION",
        default="15m",
        help="with --check: degraded when the oldest queued record or the last successful poll is older (15m)",
    )
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
    completion = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    completion.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete for")
    return parser


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _logging_flags(p: argparse.ArgumentParser, default: Any) -> None:
    """``--log-level`` and ``--log-format``: override ``logging.*`` of the config for this run."""
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default,
        help="override logging.level for this run",
    )
    p.add_argument("--log-format", choices=["text", "json"], default=default, help="override logging.format")


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
        "requeue": _cmd_requeue,
        "purge": _cmd_purge,
        "demo": _cmd_demo,
        "plugins": _cmd_plugins,
        "completion": _cmd_completion,
    }
    if command in ("run", "once", "demo"):  # the commands that start poll workers
        from exporter.runtime import limit_malloc_arenas

        limit_malloc_arenas()
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


def _setup_logging(config: Config, args: argparse.Namespace) -> None:
    """Logging as the config says, or as ``--log-level``/``--log-format`` say for this run."""
    from exporter.logsetup import setup_logging

    level = getattr(args, "log_level", None) or config.logging.level
    fmt = getattr(args, "log_format", None) or config.logging.format
    setup_logging(level, fmt, secrets=config.secrets())


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
    _setup_logging(config, args)
    from exporter.errors import ExporterError
    from exporter.logsetup import add_secrets
    from exporter.scheduler import Daemon

    def on_reload(new: Config) -> None:
        add_secrets(new.secrets())
        _setup_logging(new, args)

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
    _setup_logging(config, args)
    from exporter.app import App
    from exporter.errors import ExporterError
    from exporter.progress import ProgressReporter

    try:
        app = App(config)
    except (ExporterError, OSError) as exc:
        return _fatal(exc)
    try:
        with ProgressReporter(app.metrics.progress, sys.stderr) as progress:
            report = app.run_once(since=since, on_phase=progress.phase)
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
    from exporter.config import parse_duration
    from exporter.errors import ExporterError
    from exporter.status import collect_status, judge_status, render_status

    try:
        max_age = parse_duration(args.max_age)
    except ValueError as exc:
        print(f"--max-age: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        status = collect_status(config)
    except (ExporterError, OSError) as exc:
        print(f"bk-otel-exporter: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.check:
        verdict = judge_status(status, max_age=max_age)
        if args.json:
            status["check"] = {"healthy": verdict.healthy, "reasons": verdict.reasons}
            sys.stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n")
        else:
            print(verdict.line())
        return EXIT_OK if verdict.healthy else EXIT_FAIL
    sys.stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n" if args.json else render_status(status))
    return EXIT_OK


def _cmd_requeue(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    if args.signal is not None and _bad_signal(args.signal):
        return EXIT_CONFIG
    if args.destination is not None:
        known = ["default", *(d.name for d in config.destinations)]
        if args.destination not in known:
            print(
                f"--destination: unknown destination {args.destination!r}; known: {', '.join(known)}", file=sys.stderr
            )
            return EXIT_CONFIG
    parked_before: float | None = None
    if args.older_than:
        import time

        from exporter.config import parse_duration

        try:
            parked_before = time.time() - parse_duration(args.older_than)
        except ValueError as exc:
            print(f"--older-than: {exc}", file=sys.stderr)
            return EXIT_CONFIG

    from exporter.destinations import all_signals

    def act(store: StateStore) -> tuple[int, dict[str, int]]:
        moved = store.requeue(signal=args.signal, parked_before=parked_before, destination=args.destination)
        queued = store.outbox_stats().by_kind
        return moved, {k: n for k, n in sorted(queued.items()) if k not in all_signals(config)}

    done = _with_store(config, act)
    if done is None:
        return EXIT_FAIL
    moved, stranded = done
    print(f"requeued {moved} parked records")
    for signal, count in stranded.items():
        print(
            f"note: {count} queued {signal} records wait for {signal} to be in export.signals again "
            f"(or: bk-otel-exporter purge --signal {signal})",
            file=sys.stderr,
        )
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    if _bad_signal(args.signal):
        return EXIT_CONFIG
    if not args.parked and args.signal in config.export.signals:
        print(
            f"--signal: {args.signal} is in export.signals: its queued records are on their way and are not "
            "purged; remove it from export.signals first (or purge its parked records with --parked)",
            file=sys.stderr,
        )
        return EXIT_CONFIG

    deleted = _with_store(config, lambda store: store.purge(args.signal, parked=args.parked))
    if deleted is None:
        return EXIT_FAIL
    print(f"purged {deleted} {'parked' if args.parked else 'queued'} {args.signal} records")
    return EXIT_OK


def _bad_signal(signal: str) -> bool:
    if signal in ("logs", "spans"):
        return False
    print(f"--signal: must be logs or spans (got {signal!r})", file=sys.stderr)
    return True


def _with_store(config: Config, act: Callable[[StateStore], T]) -> T | None:
    """Run ``act(store)`` on the configured store (which must exist), beside a running daemon if
    there is one; None (after printing why) when the store cannot be used."""
    from exporter.errors import ExporterError
    from exporter.state import open_store

    try:
        store = open_store(
            config.state.path,
            url=config.state.url.get_secret_value() if config.state.url else None,
            max_queued=config.state.max_queued_records,
            lease=config.state.lease,
            create=False,
        )
        try:
            result = act(store)
        finally:
            store.close()
    except (ExporterError, OSError) as exc:
        print(f"bk-otel-exporter: {exc}", file=sys.stderr)
        return None
    return result


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


def _cmd_completion(args: argparse.Namespace) -> int:
    from exporter.completion import completion_script

    sys.stdout.write(completion_script(_parser(), args.shell))
    return EXIT_OK
