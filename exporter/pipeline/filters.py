"""Which destinations take a record: ``export.filter`` and each destination's ``filter``.

Applied at commit time (the poller builds one outbox row per matching destination): a record a
destination's filter leaves out is never queued for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exporter.config.destinations import FilterConfig
from exporter.model import AlarmContext

__all__ = ["Route", "matches", "targets"]


@dataclass(frozen=True)
class Route:
    """One destination as the poller sees it: its name, signals and filter."""

    name: str
    signals: frozenset[str]
    filter: FilterConfig


def matches(rule: FilterConfig, ctx: AlarmContext, operate: str | None) -> bool:
    """Whether a record (of alarm ``ctx``; ``operate`` None for a span) passes ``rule``: every key
    given must match. ``operates``/``exclude_operates`` do not apply to spans."""
    if rule.bk_biz_ids and ctx.bk_biz_id not in rule.bk_biz_ids:
        return False
    if rule.severities and ctx.severity not in rule.severities:
        return False
    if operate is not None:
        name = operate.upper()
        if rule.operates and name not in rule.operates:
            return False
        if name in rule.exclude_operates:
            return False
    return True


def targets(
    routes: Sequence[Route], signal: str, ctx: AlarmContext, operate: str | None
) -> tuple[list[str], list[str]]:
    """``(taking, filtered_out)``: the destinations of ``signal`` that take the record, and those
    whose filter leaves it out (counted per destination)."""
    taking: list[str] = []
    left: list[str] = []
    for route in routes:
        if signal not in route.signals:
            continue
        (taking if matches(route.filter, ctx, operate) else left).append(route.name)
    return taking, left
