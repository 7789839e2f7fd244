"""``bk-otel-exporter status``: what the state store holds, for people and for scripts.

``status --check`` judges that reading (:func:`judge_status`): healthy, or degraded with the reasons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from exporter.config import Config
from exporter.destinations import all_signals
from exporter.state import open_store

__all__ = ["Verdict", "collect_status", "judge_status", "render_status"]


def _when(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def collect_status(config: Config, *, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    store = open_store(
        config.state.path,
        url=config.state.url.get_secret_value() if config.state.url else None,
        max_queued=config.state.max_queued_records,
        create=False,  # a missing state.path is an error, not a new empty store
    )
    try:
        followed = store.list_alarms()
        ended = store.list_alarms(("retired", "expired"))
        stats = store.outbox_stats()
        result: dict[str, Any] = {
            "store": store.path_or_url,  # a shared store's URL comes with its password masked
            "alarms": {
                "followed": len(followed),
                "closing": sum(1 for a in followed if a.phase == "closing"),
                "retired": sum(1 for a in ended if a.phase == "retired"),
                "expired": sum(1 for a in ended if a.phase == "expired"),
                "list": [
                    {
                        "id": a.alarm_id,
                        "phase": a.phase,
                        "source": a.source,
                        "name": a.context.name,
                        "records": a.records,
                        "last_poll": a.last_poll,
                        "next_poll_in": round(a.next_poll - now, 1),
                        "last_error": a.last_error,
                    }
                    for a in followed
                ],
            },
            "outbox": {
                "queued": stats.depth,
                "parked": stats.parked,
                "by_signal": stats.by_kind,
                "parked_by_signal": stats.parked_by_kind,
                # queued rows of a signal export.signals no longer lists: never sent (purge them)
                "stranded": {k: n for k, n in stats.by_kind.items() if k not in all_signals(config)},
                "oldest_age_seconds": None
                if stats.oldest_enqueued_at is None
                else round(now - stats.oldest_enqueued_at, 1),
            },
            "destinations": {
                name: {
                    "queued": queued,
                    "parked": parked,
                    "oldest_age_seconds": None if oldest is None else round(now - oldest, 1),
                }
                for name, (queued, parked, oldest) in sorted(_with_configured(stats.by_destination, config).items())
            },
            "last_successful_poll": _when(store.get_meta("last_poll_ok")),
            "last_successful_export": _when(store.get_meta("last_export_ok")),
        }
        replicas = getattr(store, "replicas", None)
        if callable(replicas):  # a shared store (state.url): the replicas seen recently, what each holds
            result["replicas"] = replicas()
        return result
    finally:
        store.close()


def _with_configured(
    found: dict[str, tuple[int, int, float | None]], config: Config
) -> dict[str, tuple[int, int, float | None]]:
    """Every configured destination (an empty backlog too) and any other the outbox holds rows of."""
    names = ["default", *(d.name for d in config.destinations)]
    return {name: (0, 0, None) for name in names} | dict(found)


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return f"{stamp} ({now - ts:.0f}s ago)"


def render_status(status: dict[str, Any], *, now: float | None = None) -> str:
    now = time.time() if now is None else now
    alarms, outbox = status["alarms"], status["outbox"]
    lines = [
        f"state store:            {status['store']}",
        f"alarms followed:        {alarms['followed']} ({alarms['closing']} closing), "
        f"{alarms['retired']} retired, {alarms['expired']} expired",
        f"records queued:         {outbox['queued']}"
        + (f" (oldest {outbox['oldest_age_seconds']:.0f}s)" if outbox["oldest_age_seconds"] is not None else ""),
        f"records parked:         {outbox['parked']}" + _per_signal(outbox.get("parked_by_signal") or {}),
        f"last successful poll:   {_ago(status['last_successful_poll'], now)}",
        f"last successful export: {_ago(status['last_successful_export'], now)}",
    ]
    if outbox["parked"]:
        lines.append("                        (send them again: bk-otel-exporter requeue; delete: purge --parked)")
    for signal, count in sorted((outbox.get("stranded") or {}).items()):
        lines.append(
            f"records stranded:       {count} {signal} ({signal} is not in export.signals: never sent; "
            f"add it back, or: bk-otel-exporter purge --signal {signal})"
        )
    destinations = status.get("destinations") or {}
    if len(destinations) > 1:
        lines.append("")
        lines.append(f"{'destination':<20} {'queued':>8} {'parked':>8}  oldest queued")
        for name, d in destinations.items():
            oldest = "-" if d["oldest_age_seconds"] is None else f"{d['oldest_age_seconds']:.0f}s"
            lines.append(f"{name:<20} {d['queued']:>8} {d['parked']:>8}  {oldest}")
    if status.get("replicas") is not None:
        lines.extend(_render_replicas(status["replicas"], now))
    if alarms["list"]:
        lines.append("")
        lines.append(f"{'alarm':<20} {'phase':<8} {'source':<10} {'records':>7}  last error / name")
        for a in alarms["list"]:
            tail = a["last_error"] or a["name"] or ""
            lines.append(f"{a['id']:<20} {a['phase']:<8} {a['source']:<10} {a['records']:>7}  {tail[:80]}")
    return "\n".join(lines) + "\n"


def _per_signal(counts: dict[str, int]) -> str:
    return f" ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))})" if counts else ""


def _render_replicas(replicas: list[dict[str, Any]], now: float) -> list[str]:
    """One line per replica: liveness, the alarms and outbox rows it holds a lease on right now,
    the polls it completed, its roles, and the ``service.instance.id`` its records carry."""
    width = max([len("replica"), *(len(r["owner"]) for r in replicas)])
    roles = [",".join(r["roles"]) or "-" for r in replicas]
    roles_width = max([len("roles"), *(len(x) for x in roles)])
    lines = [
        "",
        f"replicas seen in the last hour: {len(replicas)}, {sum(1 for r in replicas if r['alive'])} alive",
        f"{'replica':<{width}} {'state':<7} {'seen':>6} {'alarms':>6} {'outbox':>6} {'polls':>8}  "
        f"{'roles':<{roles_width}}  service.instance.id",
    ]
    for r, held in zip(replicas, roles, strict=True):
        state = "alive" if r["alive"] else ("stopped" if r["stopped_at"] else "lost")
        lines.append(
            f"{r['owner']:<{width}} {state:<7} {now - r['last_seen']:>5.0f}s {r['alarms_owned']:>6} "
            f"{r['outbox_rows_owned']:>6} {r['polls']:>8}  {held:<{roles_width}}  {r.get('instance_id') or '-'}"
        )
    return lines


@dataclass(frozen=True)
class Verdict:
    """What ``status --check`` says: healthy, or the reasons it is not."""

    healthy: bool
    reasons: list[str] = field(default_factory=list)
    summary: str = ""

    def line(self) -> str:
        """The one line printed: ``healthy: …`` or ``degraded: reason; reason``."""
        return f"healthy: {self.summary}" if self.healthy else "degraded: " + "; ".join(self.reasons)


def judge_status(status: dict[str, Any], *, max_age: float, now: float | None = None) -> Verdict:
    """Degraded when the last poll of an alarm failed, when no poll succeeded within ``max_age``
    seconds while alarms are followed, when the oldest queued record is older than ``max_age``,
    or when records are parked."""
    now = time.time() if now is None else now
    alarms, outbox = status["alarms"], status["outbox"]
    reasons: list[str] = []
    failing = [a for a in alarms["list"] if a.get("last_error")]
    if failing:
        first = failing[0]
        reasons.append(
            f"the last poll of {len(failing)} of {alarms['followed']} alarms failed"
            f" (alarm {first['id']}: {str(first['last_error'])[:160]})"
        )
    last_poll = status.get("last_successful_poll")
    if alarms["followed"]:
        if last_poll is None:
            reasons.append("no successful poll yet")
        elif now - last_poll > max_age:
            reasons.append(f"last successful poll {now - last_poll:.0f}s ago (limit {max_age:.0f}s)")
    oldest = outbox.get("oldest_age_seconds")
    if oldest is not None and oldest > max_age:
        reasons.append(f"oldest queued record {oldest:.0f}s old (limit {max_age:.0f}s), {outbox['queued']} queued")
    if outbox["parked"]:
        reasons.append(
            f"{outbox['parked']} records parked (refused by the backend: `requeue --parked` sends them again)"
        )
    summary = f"{alarms['followed']} alarms followed, {outbox['queued']} records queued, none parked"
    return Verdict(healthy=not reasons, reasons=reasons, summary=summary)
