from __future__ import annotations

from exporter.config.destinations import FilterConfig
from exporter.model import AlarmContext
from exporter.pipeline.filters import Route, matches, targets


def test_every_given_key_must_match() -> None:
    rule = FilterConfig.model_validate({"operates": ["create", "close"], "bk_biz_ids": [2], "severities": [1]})
    ctx = AlarmContext("1", bk_biz_id=2, severity=1)
    assert matches(rule, ctx, "CREATE")
    assert not matches(rule, ctx, "CONVERGE")
    assert not matches(rule, AlarmContext("1", bk_biz_id=3, severity=1), "CREATE")
    assert not matches(rule, AlarmContext("1", bk_biz_id=2, severity=2), "CREATE")
    assert not matches(rule, AlarmContext("1"), "CREATE")  # unknown business: no match
    assert matches(FilterConfig(), AlarmContext("1"), "ANYTHING")  # {} = everything
    assert not matches(FilterConfig.model_validate({"exclude_operates": ["CONVERGE"]}), ctx, "converge")


def test_targets_split_by_signal_and_filter() -> None:
    routes = [
        Route("default", frozenset({"logs"}), FilterConfig()),
        Route("chat", frozenset({"logs"}), FilterConfig.model_validate({"operates": ["CREATE"]})),
        Route("tempo", frozenset({"spans"}), FilterConfig()),
    ]
    assert targets(routes, "logs", AlarmContext("1"), "CONVERGE") == (["default"], ["chat"])
    assert targets(routes, "spans", AlarmContext("1"), None) == (["tempo"], [])
