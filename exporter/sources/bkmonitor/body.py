"""Reading a response body as JSON, whatever its nesting depth or stray bytes.

Two things ``json.loads(body)`` gets wrong for a BlueKing answer, both of which would make a good
answer look like "not JSON" (a transient failure, retried for ever):

* **bytes that are not UTF-8** (a backend writing Latin-1 or GBK into one message, a cut
  multi-byte character) raise ``UnicodeDecodeError``. Here each undecodable sequence is replaced
  by one U+FFFD (as ``errors="replace"`` does) and its bytes are counted
  (:attr:`DecodedBody.replaced`): the rest of the answer is read as sent.
* **deep nesting**: the C decoder recurses and raises ``RecursionError`` at about the
  interpreter's recursion limit (an item's ``extend_info`` nested ~1,000 deep is enough). Such a
  body is parsed again by :func:`loads_iterative`, which keeps its own stack: any depth, the same
  values ``json.loads`` gives (``NaN``/``Infinity`` accepted, the last of duplicate keys kept).

The encoding is detected as ``json.loads`` does (UTF-8, or UTF-16/32 by their byte patterns).
"""

from __future__ import annotations

import codecs
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DecodedBody", "decode_json", "decode_text", "loads_iterative"]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_CONSTANTS: tuple[tuple[str, Any], ...] = (
    ("true", True),
    ("false", False),
    ("null", None),
    ("NaN", float("nan")),
    ("Infinity", float("inf")),
    ("-Infinity", float("-inf")),
)

#: The C string scanner json.loads uses (untyped in typeshed): strings decode exactly as json.loads does.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

_ERRORS = "bk_otel_exporter.replace_and_count"
_counter = threading.local()


def _replace_and_count(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):  # pragma: no cover - registered for decoding only
        raise error
    _counter.bytes = getattr(_counter, "bytes", 0) + (error.end - error.start)
    return "\ufffd", error.end


codecs.register_error(_ERRORS, _replace_and_count)


@dataclass(frozen=True)
class DecodedBody:
    """``value`` is the decoded JSON when ``is_json``; ``replaced`` counts the undecodable bytes."""

    value: Any
    is_json: bool
    replaced: int = 0


def decode_text(body: bytes) -> tuple[str, int]:
    """``body`` as text, and how many of its bytes could not be decoded (replaced by U+FFFD)."""
    encoding = json.detect_encoding(body)
    try:
        return body.decode(encoding, "surrogatepass"), 0  # what json.loads(bytes) does
    except UnicodeDecodeError:
        pass
    _counter.bytes = 0
    text = body.decode(encoding, _ERRORS)
    return text, int(_counter.bytes)


def decode_json(body: bytes) -> DecodedBody:
    """Decode ``body``; ``is_json`` is False when it is not JSON even with bad bytes replaced."""
    text, replaced = decode_text(body)
    try:
        return DecodedBody(json.loads(text), True, replaced)
    except RecursionError:
        pass
    except ValueError:
        return DecodedBody(None, False, replaced)
    try:
        return DecodedBody(loads_iterative(text), True, replaced)
    except ValueError:
        return DecodedBody(None, False, replaced)


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _key(text: str, pos: int) -> tuple[str, int]:
    """An object key at ``pos`` and the position after its ``:`` (and whitespace)."""
    if text[pos : pos + 1] != '"':
        raise ValueError(f"expecting a property name in double quotes at char {pos}")
    key, pos = _scanstring(text, pos + 1, True)
    pos = _skip(text, pos)
    if text[pos : pos + 1] != ":":
        raise ValueError(f"expecting ':' delimiter at char {pos}")
    return key, _skip(text, pos + 1)


def _scalar(text: str, pos: int) -> tuple[Any, int]:
    if text[pos : pos + 1] == '"':
        return _scanstring(text, pos + 1, True)
    for word, value in _CONSTANTS:
        if text.startswith(word, pos):
            return value, pos + len(word)
    match = _NUMBER.match(text, pos)
    if match is None:
        raise ValueError(f"expecting a value at char {pos}")
    integer, fraction, exponent = match.groups()
    if fraction or exponent:
        return float(integer + (fraction or "") + (exponent or "")), match.end()
    return int(integer), match.end()


def loads_iterative(text: str) -> Any:
    """``json.loads(text)`` without recursion: nesting depth is limited by memory only.

    Raises ValueError (``json.JSONDecodeError`` for bad strings) for anything that is not JSON.
    """
    # Each open container is [container, key]; the key is where the next value of an object goes.
    stack: list[list[Any]] = []
    pos = _skip(text, 0)
    while True:
        opener = text[pos : pos + 1]
        value: Any
        if opener == "{":
            pos = _skip(text, pos + 1)
            if text[pos : pos + 1] != "}":
                key, pos = _key(text, pos)
                stack.append([{}, key])
                continue
            value, pos = {}, pos + 1
        elif opener == "[":
            pos = _skip(text, pos + 1)
            if text[pos : pos + 1] != "]":
                stack.append([[], None])
                continue
            value, pos = [], pos + 1
        else:
            value, pos = _scalar(text, pos)
        # A value is complete: put it in its container, then close every container that ends here.
        while True:
            pos = _skip(text, pos)
            if not stack:
                if pos != len(text):
                    raise ValueError(f"extra data at char {pos}")
                return value
            frame = stack[-1]
            container = frame[0]
            if isinstance(container, dict):
                container[frame[1]] = value
            else:
                container.append(value)
            mark = text[pos : pos + 1]
            closer = "}" if isinstance(container, dict) else "]"
            if mark == ",":
                pos = _skip(text, pos + 1)
                if isinstance(container, dict):
                    frame[1], pos = _key(text, pos)
                break
            if mark != closer:
                raise ValueError(f"expecting ',' or '{closer}' at char {pos}")
            stack.pop()
            value, pos = container, pos + 1
