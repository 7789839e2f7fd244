"""Parse get_event_log's ``data`` into FlowRecords, tolerant of both server generations.

What real servers send (docs/blueking-api.md §2.3, §2.8): ``data`` is a list, newest first; ``event_id`` is an
int (current) or a string (3.x); ``extend_info`` is ``{}`` (current), a dict (3.x), ``""`` or
null; ``create_time`` is a naive ``YYYY-MM-DD HH:MM:SS`` in the server's zone (Asia/Shanghai),
but we also accept ISO strings with an offset and epoch seconds or milliseconds.

CONVERGE runs are re-folded on every call (§2.5), so the list is not append-only: records are
identified by ``record_uid`` (content plus occurrence), never by position. Parsing is pure; an
item that cannot be parsed is reported in ``ParseResult.malformed`` and skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any

from exporter.mapping.attributes import compact_json
from exporter.mapping.ids import record_uid
from exporter.model import FlowRecord
from exporter.sources.base import FetchResult, Malformed

__all__ = ["Malformed", "ParseResult", "parse_create_time", "parse_event_log"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f")
_OFFSET_RE = re.compile(r"([+-])(\d{2}):?(\d{2})$")
_DIGITS_RE = re.compile(r"^\d+(\.\d+)?$")
# Epoch values above this many seconds are read as milliseconds (year 5138 in seconds).
_MS_THRESHOLD = 1e11
# OTLP timestamps are unsigned 64-bit nanoseconds and many backends read them as signed: a time
# outside (1970, 2262) cannot be carried, so such a record is malformed (counted and skipped)
# rather than a batch the encoder refuses for ever.
_MAX_NS = 2**63 - 1
# A lone UTF-16 surrogate ("\ud800" in the JSON) is valid JSON but not valid UTF-8: protobuf and
# SQLite refuse it, so it is replaced in every text the record carries (U+FFFD).
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


#: The source protocol's result types (exporter.sources.base), under the names this module had.
ParseResult = FetchResult


def _item_key(item: Any) -> str:
    """A stable identity of one item (for "log a malformed item once")."""
    try:
        text = json.dumps(item, sort_keys=True, default=str)
    except RecursionError:  # nested deeper than the C encoder goes
        text = compact_json(item)
    except (TypeError, ValueError):
        text = repr(item)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _ns_from_epoch(value: float) -> int:
    seconds = value / 1000.0 if value > _MS_THRESHOLD else value
    return int(round(seconds * 1_000_000)) * 1000


def _ns_from_datetime(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def parse_create_time(value: Any, tz: tzinfo) -> int:
    """UTC nanoseconds of a ``create_time``. Raises ValueError for anything unusable."""
    ns = _parse_create_time(value, tz)
    if not 0 < ns <= _MAX_NS:
        raise ValueError(f"create_time {value!r} is outside the range OTLP timestamps can carry")
    return ns


_PLAIN_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)", re.ASCII)


def _plain_fields(text: str) -> tuple[int, int, int, int, int, int] | None:
    """The fields of ``YYYY-MM-DD HH:MM:SS`` (what BlueKing sends) without ``strptime``, which
    costs ~10x more; None for anything else, including out-of-range fields: the general path
    then decides."""
    match = _PLAIN_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = map(int, match.groups())
    if hour > 23 or minute > 59 or second > 59 or not 1 <= month <= 12 or day < 1:
        return None
    return year, month, day, hour, minute, second


#: UTC offsets (seconds) by zone and local minute: zones change offset on whole minutes, so one
#: ``utcoffset`` a minute stands for every second in it (a third of a record's parsing before)
_OFFSETS: dict[tuple[tzinfo, int, int, int, int, int], int] = {}
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _local_ns(fields: tuple[int, int, int, int, int, int], tz: tzinfo) -> int | None:
    """UTC nanoseconds of the local time ``fields`` in ``tz`` (the first of two, when a clock is
    set back: what ``datetime.replace(tzinfo=tz)`` means); None for a day the month does not have."""
    year, month, day, hour, minute, second = fields
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    key = (tz, year, month, day, hour, minute)
    offset = _OFFSETS.get(key)
    if offset is None:
        delta = datetime(year, month, day, hour, minute, tzinfo=tz).utcoffset()
        offset = 0 if delta is None else delta.days * 86_400 + delta.seconds
        if len(_OFFSETS) >= 100_000:
            _OFFSETS.clear()
        _OFFSETS[key] = offset
    return (days * 86_400 + hour * 3600 + minute * 60 + second - offset) * 1_000_000_000


def _parse_create_time(value: Any, tz: tzinfo) -> int:
    if isinstance(value, bool):
        raise ValueError("create_time is a boolean")
    if isinstance(value, (int, float)):
        if value <= 0 or value != value:  # NaN
            raise ValueError(f"create_time {value!r} is not a positive epoch")
        return _ns_from_epoch(float(value))
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"create_time {value!r} is not a string or number")
    text = value.strip()
    fields = _plain_fields(text)
    if fields is not None:
        ns = _local_ns(fields, tz)
        if ns is not None:
            return ns
    if _DIGITS_RE.match(text):
        return _parse_create_time(float(text), tz)
    offset = _OFFSET_RE.search(text)
    if offset and len(text) > 19:
        sign = -1 if offset.group(1) == "-" else 1
        zone = timezone(sign * timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3))))
        text, aware_tz = text[: offset.start()].rstrip(), zone
    elif text.endswith("Z"):
        text, aware_tz = text[:-1], timezone.utc
    else:
        aware_tz = None
    for fmt in _NAIVE_FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return _ns_from_datetime(naive.replace(tzinfo=aware_tz or tz))
    raise ValueError(f"create_time {value!r} is not a known time format")


def _text(item: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = item.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key} is missing")
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{key} is a {type(value).__name__}, not a string")


def _clean_text(text: str) -> str:
    return _SURROGATE_RE.sub("\ufffd", text)


def _clean(value: Any) -> Any:
    """``value`` (a string or decoded JSON) with every lone surrogate replaced, keys included.

    A copy built with an explicit stack, never by recursion: an ``extend_info`` nested thousands
    deep is valid JSON, and must cost no more than its size (no ``RecursionError``).
    """
    if isinstance(value, str):
        return _clean_text(value)
    if not isinstance(value, (dict, list)):
        return value
    copies: dict[int, Any] = {}

    def copy_of(item: Any) -> tuple[Any, bool]:
        """The cleaned stand-in for ``item``, and whether it still has to be filled."""
        if isinstance(item, str):
            return _clean_text(item), False
        if not isinstance(item, (dict, list)):
            return item, False
        known = copies.get(id(item))
        if known is not None:  # shared (not possible in parsed JSON): one copy, filled once
            return known, False
        fresh: Any = {} if isinstance(item, dict) else []
        copies[id(item)] = fresh
        return fresh, True

    root, _ = copy_of(value)
    todo: list[tuple[Any, Any]] = [(value, root)]
    while todo:
        source, target = todo.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, child in pairs:
            cleaned, to_fill = copy_of(child)
            if isinstance(target, dict):
                target[_clean_text(key) if isinstance(key, str) else key] = cleaned
            else:
                target.append(cleaned)
            if to_fill:
                todo.append((child, cleaned))
    return root


def parse_event_log(alarm_id: str, data: Sequence[Any], *, tz: tzinfo, observed_ns: int) -> ParseResult:
    """Parse one answer. Records keep the server's (newest-first) order."""
    result = ParseResult()
    occurrences: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(data):
        try:
            if not isinstance(item, dict):
                raise ValueError(f"item is a {type(item).__name__}, not an object")
            operate = _text(item, "operate", required=True).strip()
            if not operate:
                raise ValueError("operate is empty")
            raw_time = item.get("create_time")
            create_ns = parse_create_time(raw_time, tz)
            message = _text(item, "message")
            raw_time_text = str(raw_time).strip()
            key = (operate, raw_time_text, message)
            occurrence = occurrences.get(key, 0)
            occurrences[key] = occurrence + 1
            result.records.append(
                FlowRecord(  # the uid from the text as sent; the fields cleaned for UTF-8
                    alarm_id=alarm_id,
                    operate=_clean(operate),
                    message=_clean(message),
                    status=_clean(_text(item, "status")),
                    event_id=_clean(_text(item, "event_id")) or alarm_id,
                    create_time_ns=create_ns,
                    create_time_raw=_clean(raw_time_text),
                    extend_info=_clean(item.get("extend_info")),
                    uid=record_uid(alarm_id, operate, raw_time_text, message, occurrence),
                    observed_ns=observed_ns,
                )
            )
        except (ValueError, OverflowError) as exc:
            result.malformed.append(Malformed(index, str(exc), _item_key(item)))
    return result
