"""Hostile get_event_log answers: rows a broken or hostile server can send beside good ones.

``Simulator.serve_hostile(alarm_id, ...)`` adds, to every successful get_event_log answer for that
alarm, extra rows that are valid by the API's shape but hard to read:

* ``deep=N``: a row whose ``extend_info`` is an object nested ``N`` levels deep
  (``{"d": {"d": ... {"d": 1}}}``): valid JSON that recursive decoders and walkers choke on at
  about 1,000 levels. The body is written as text, so the simulator itself never recurses;
* ``undecodable=b"..."``: a row whose message holds those raw bytes (not UTF-8: a backend writing
  Latin-1 or GBK, a cut multi-byte character), in a body that is otherwise UTF-8.

Both rows are ACTION rows at ``at`` (epoch seconds), with messages of their own
(:data:`DEEP_MESSAGE`, and :data:`UNDECODABLE_MESSAGE` around the bytes), so they never fold with
the alarm's other rows. :meth:`HostileRows.expected_message` is the undecodable row's message as a
reader must see it: each undecodable sequence as U+FFFD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from exporter.simulator.faults import Response
from exporter.simulator.store import render_time

__all__ = ["DEEP_KEY", "DEEP_MESSAGE", "UNDECODABLE_MESSAGE", "HostileRows", "add_hostile_rows"]

DEEP_KEY = "d"
DEEP_MESSAGE = "a row with a deeply nested extend_info"
UNDECODABLE_MESSAGE = "a message with bytes that are not UTF-8: {}"

_DEEP_MARK = "\x00bk-sim-deep\x00"
_BYTES_MARK = "\x00bk-sim-bytes\x00"


@dataclass(frozen=True)
class HostileRows:
    """The extra rows of one alarm's answers (see the module docstring)."""

    at: float
    deep: int = 0
    undecodable: bytes = b""

    def __post_init__(self) -> None:
        if self.deep < 0:
            raise ValueError("deep must not be negative")
        try:
            self.undecodable.decode("utf-8")
        except UnicodeDecodeError:
            return
        if self.undecodable:
            raise ValueError("undecodable must hold bytes that are not UTF-8")

    def expected_message(self) -> str:
        """The undecodable row's message as a reader sees it: what is not UTF-8 as U+FFFD."""
        return UNDECODABLE_MESSAGE.format(self.undecodable.decode("utf-8", "replace"))

    def rows(self, event_id: int) -> list[dict[str, object]]:
        """The rows as get_event_log shows them, with marks where the hostile parts go."""
        out: list[dict[str, object]] = []
        base = {"status": "SUCCESS", "event_id": event_id, "create_time": render_time(self.at), "operate": "ACTION"}
        if self.deep:
            out.append({**base, "message": DEEP_MESSAGE, "extend_info": _DEEP_MARK})
        if self.undecodable:
            out.append({**base, "message": UNDECODABLE_MESSAGE.format(_BYTES_MARK), "extend_info": {}})
        return out

    def render(self, body: bytes) -> bytes:
        """``body`` (the JSON text of rows from :meth:`rows`) with the hostile parts written in."""
        if self.deep:
            nested = (f'{{"{DEEP_KEY}":' * self.deep) + "1" + "}" * self.deep
            body = body.replace(json.dumps(_DEEP_MARK).encode(), nested.encode())
        if self.undecodable:
            body = body.replace(json.dumps(_BYTES_MARK)[1:-1].encode(), self.undecodable)
        return body


def add_hostile_rows(resp: Response, rows: HostileRows, event_id: int) -> Response:
    """A successful get_event_log answer with ``rows`` added at the front (newest first).

    Any other answer (an error, a fault) is returned unchanged."""
    if resp.reset or resp.status != 200:
        return resp
    try:
        payload = json.loads(resp.body)
    except ValueError:
        return resp
    if not isinstance(payload, dict) or payload.get("result") is not True or not isinstance(payload.get("data"), list):
        return resp
    payload["data"] = rows.rows(event_id) + payload["data"]
    resp.body = rows.render(json.dumps(payload, ensure_ascii=False).encode())
    return resp
