"""Hostile items and bodies: nesting of any depth, very wide and very long values, bytes that are not UTF-8.

One hostile item must never block the records beside it: parsing, cleaning, flattening and
mapping keep their own stacks (no ``RecursionError`` at any depth), ``extend_info`` paths stop at
``MAX_DEPTH`` segments (the deeper part is one compact-JSON attribute), and a body with a byte
that is not UTF-8 is read with that byte as U+FFFD instead of being taken for "not JSON".
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.errors import BkUnavailableError
from exporter.mapping.attributes import MAX_DEPTH, compact_json, extend_info_attributes
from exporter.mapping.contract import DefaultMapper
from exporter.mapping.ecs import EcsMapper
from exporter.mapping.spans import span_event
from exporter.model import FlowRecord
from exporter.sources.bkmonitor.body import decode_json, decode_text, loads_iterative
from exporter.sources.bkmonitor.envelope import parse_envelope
from exporter.sources.bkmonitor.records import parse_event_log

TZ = ZoneInfo("Asia/Shanghai")
DEPTHS = [MAX_DEPTH + 1, 1000, 5000, 100_000]


def nested(depth: int, leaf: Any = 1, key: str = "d") -> dict[str, Any]:
    """``{"d": {"d": ... leaf}}`` with ``depth`` objects, built without recursion."""
    value: Any = leaf
    for _ in range(depth):
        value = {key: value}
    return value  # type: ignore[no-any-return]


def nested_text(depth: int, key: str = "d") -> str:
    return f'{{"{key}":' * depth + "1" + "}" * depth


def depth_of(value: Any) -> int:
    """How many objects are nested in ``value`` (iteratively)."""
    depth = 0
    while isinstance(value, dict) and value:
        depth += 1
        value = next(iter(value.values()))
    return depth


def row(message: str, extend_info: Any = None, at: str = "2024-06-10 14:13:50") -> dict[str, Any]:
    return {"operate": "ACTION", "message": message, "extend_info": extend_info, "status": "SUCCESS", "create_time": at}


def record(extend_info: Any) -> FlowRecord:
    return FlowRecord("1", "ACTION", "m", "SUCCESS", "1", 1_718_000_030_000_000_000, "x", extend_info, "u", 0)


# -- flattening ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_extend_info_flattens_to_the_depth_limit_then_one_json_attribute(depth: int) -> None:
    attrs = extend_info_attributes({"ok": 1, "deep": nested(depth - 1)})
    path = ".".join(["deep"] + ["d"] * (MAX_DEPTH - 1))
    assert set(attrs) == {"ok", path}
    assert attrs["ok"] == 1
    rest = attrs[path]
    assert isinstance(rest, str)
    assert depth_of(loads_iterative(rest)) == depth - MAX_DEPTH


def test_depth_limit_is_exact() -> None:
    at_limit = extend_info_attributes(nested(MAX_DEPTH, "leaf"))
    assert at_limit == {".".join(["d"] * MAX_DEPTH): "leaf"}  # a leaf at the limit stays itself
    over = extend_info_attributes(nested(MAX_DEPTH + 1, "leaf"))
    assert over == {".".join(["d"] * MAX_DEPTH): '{"d":"leaf"}'}


def test_wide_extend_info_keeps_every_leaf_in_order() -> None:
    wide = {f"k{i}": {"v": i} for i in range(20_000)}
    attrs = extend_info_attributes(wide)
    assert list(attrs) == [f"k{i}.v" for i in range(20_000)]
    assert attrs["k12345.v"] == 12345


def test_very_long_lists_are_leaves() -> None:
    numbers = list(range(1_000_000))
    attrs = extend_info_attributes({"n": numbers, "objs": [{"i": i} for i in range(50_000)]})
    assert attrs["n"] == numbers
    assert json.loads(str(attrs["objs"])) == [{"i": i} for i in range(50_000)]


def test_deeply_nested_list_becomes_json_text() -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    text = extend_info_attributes({"l": value})["l"]
    assert text == "[" * 5000 + "1" + "]" * 5000


def test_flattening_order_is_that_of_extend_info() -> None:
    info = {"b": {"y": 1, "x": {"q": 2}}, "a": 3, "c": {"": {"z": 4}}}
    assert list(extend_info_attributes(info).items()) == [("b.y", 1), ("b.x.q", 2), ("a", 3), ("c..z", 4)]


def test_compact_json_is_json_dumps_at_any_depth() -> None:
    rng = random.Random(7)

    def gen(d: int = 0) -> Any:
        r = rng.random()
        if d > 5 or r < 0.3:
            return rng.choice([None, True, False, 0, -5, 2**70, 1.5, float("nan"), 'a"b\\\n\u00e9', "", "\ud800"])
        if r < 0.65:
            return {rng.choice(["k", "z", "a", "中"]) + str(rng.randint(0, 3)): gen(d + 1) for _ in range(4)}
        return [gen(d + 1) for _ in range(rng.randint(0, 4))]

    for _ in range(300):
        value = gen()
        wrapped = nested(sys.getrecursionlimit() + 10, value)  # forces the iterative encoder
        inner = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)
        depth = sys.getrecursionlimit() + 10
        assert compact_json(wrapped) == '{"d":' * depth + inner + "}" * depth


def test_mappers_and_span_events_flatten_deep_extend_info() -> None:
    deep = record({"deep": nested(3000)})
    path = ".".join(["deep"] + ["d"] * (MAX_DEPTH - 1))
    log = DefaultMapper().map_log(deep, None, with_trace=False)
    assert isinstance(log.attributes[path], str)
    ecs = EcsMapper().map_log(deep, None, with_trace=False)
    assert isinstance(ecs.attributes["labels." + path.replace(".", "_")], str)
    event = span_event(deep)
    assert isinstance(event.attributes[path], str)
    assert EcsMapper().map_span_event(deep).attributes["labels." + path.replace(".", "_")] == event.attributes[path]


# -- parsing one answer --------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_a_deep_item_is_parsed_and_its_neighbours_too(depth: int) -> None:
    data = [row("before"), row("deep", nested(depth, "\ud800")), row("after")]
    result = parse_event_log("1", data, tz=TZ, observed_ns=0)
    assert not result.malformed
    assert [r.message for r in result.records] == ["before", "deep", "after"]
    cleaned = result.records[1].extend_info
    assert depth_of(cleaned) == depth
    leaf = cleaned
    while isinstance(leaf, dict):
        leaf = leaf["d"]
    assert leaf == "\ufffd"  # the lone surrogate was cleaned at the bottom too


def test_a_deep_malformed_item_is_skipped_not_raised() -> None:
    bad = {"message": "no operate", "extend_info": nested(5000), "create_time": "2024-06-10 14:13:50"}
    result = parse_event_log("1", [bad, row("good")], tz=TZ, observed_ns=0)
    assert [r.message for r in result.records] == ["good"]
    assert len(result.malformed) == 1 and "operate" in result.malformed[0].reason


def test_cleaning_keeps_shared_values_and_keys() -> None:
    shared = {"\ud800k": ["x\udfff", {"y": "\ud801"}]}
    result = parse_event_log("1", [row("m", {"a": shared, "b": shared})], tz=TZ, observed_ns=0)
    info = result.records[0].extend_info
    assert info == {"a": {"\ufffdk": ["x\ufffd", {"y": "\ufffd"}]}, "b": {"\ufffdk": ["x\ufffd", {"y": "\ufffd"}]}}


# -- bodies --------------------------------------------------------------------------------------------


def envelope(data_text: str) -> bytes:
    return ('{"result":true,"code":200,"message":"OK","request_id":"rid-1","data":' + data_text + "}").encode()


def test_a_deep_body_is_data_not_an_unavailable_error() -> None:
    items = (
        "["
        + json.dumps(row("first"))
        + ","
        + json.dumps(row("deep"))[:-1].replace('"extend_info": null', '"extend_info": ' + nested_text(1000))
        + "}]"
    )
    data = parse_envelope(200, {}, envelope(items), "get_event_log", expect=list)
    assert [item["message"] for item in data] == ["first", "deep"]
    assert depth_of(data[1]["extend_info"]) == 1000


def test_undecodable_bytes_are_replaced_counted_and_reported() -> None:
    told: list[tuple[int, str | None]] = []
    body = envelope('[{"operate":"ACTION","message":"caf\xe9 \xff\xfe ok","create_time":"2024-06-10 14:13:50"}]')
    body = body.replace("caf\xe9 \xff\xfe".encode(), b"caf\xe9 \xff\xfe")
    data = parse_envelope(200, {}, body, "get_event_log", expect=list, on_undecodable=lambda n, r: told.append((n, r)))
    assert data[0]["message"] == "caf\ufffd \ufffd\ufffd ok"
    assert told == [(3, "rid-1")]


def test_clean_body_reports_nothing_and_garbage_stays_not_json() -> None:
    told: list[Any] = []
    parse_envelope(200, {}, envelope("[]"), "get_event_log", on_undecodable=lambda n, r: told.append(n))
    assert told == []
    with pytest.raises(BkUnavailableError, match="not JSON"):
        parse_envelope(200, {}, b"\xff\xfe<html>", "get_event_log", on_undecodable=lambda n, r: told.append(n))
    assert told == []  # a body that is no JSON anyway is not news about bytes


@pytest.mark.parametrize(
    ("body", "text", "replaced"),
    [
        (b"plain", "plain", 0),
        ("中文".encode(), "中文", 0),
        (b"a\xffb", "a\ufffdb", 1),
        (b"\xe4\xb8", "\ufffd", 2),  # a cut multi-byte character: one U+FFFD, both bytes counted
        ("你好".encode("gbk"), "\ufffd" * 3, 4),  # GBK: three invalid sequences of 4 bytes
        ('"\u00e9"'.encode("utf-16"), '"\u00e9"', 0),  # detected as json.loads does
    ],
)
def test_decode_text(body: bytes, text: str, replaced: int) -> None:
    assert decode_text(body) == (text, replaced)


def test_iterative_loads_matches_json_loads() -> None:
    rng = random.Random(3)

    def gen(d: int = 0) -> Any:
        r = rng.random()
        if d > 6 or r < 0.3:
            return rng.choice([None, True, False, 0, -7, 10**30, 2.5, -1e-300, 'x"\\\t\u4e2d', "", "\ud800"])
        if r < 0.65:
            return {rng.choice(["a", "b", "中"]) + str(rng.randint(0, 2)): gen(d + 1) for _ in range(rng.randint(0, 4))}
        return [gen(d + 1) for _ in range(rng.randint(0, 4))]

    for i in range(500):
        text = json.dumps(gen(), ensure_ascii=bool(i % 2), indent=2 if i % 3 == 0 else None)
        assert loads_iterative(text) == json.loads(text)
    for text in ["NaN", "[-Infinity, Infinity]", ' { "a" : [ 1 , 2 ] } ', '{"a":1,"a":2}', "-0", "0.5E-2", "1e5"]:
        assert repr(loads_iterative(text)) == repr(json.loads(text))


@pytest.mark.parametrize(
    "text", ["", "[1,]", '{"a":1,}', "[1 2]", "{a:1}", "01", "[", '{"a"', '"abc', "tru", "1 2", "[1]]", '"\x01"', "- 1"]
)
def test_iterative_loads_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads_iterative(text)


def test_decode_json_of_a_body_deeper_than_the_c_decoder_goes() -> None:
    decoded = decode_json(nested_text(200_000).encode())
    assert decoded.is_json and decoded.replaced == 0
    assert depth_of(decoded.value) == 200_000
