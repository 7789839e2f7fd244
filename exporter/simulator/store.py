"""The simulator's data: the test clock, alarms, their raw AlertLog documents and the get_event_log view."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "FOLDED_OPERATES",
    "SEVERITY_NAMES",
    "AlarmStore",
    "RawLog",
    "SimAlarm",
    "SimClock",
    "as_int",
    "hms_string",
    "render_time",
]

#: Operates whose consecutive runs get_event_log folds (``AlertLogHandler.record_collect``).
FOLDED_OPERATES = frozenset({"CONVERGE", "EVENT_DROP"})
SEVERITY_NAMES = {1: "致命", 2: "预警", 3: "提醒"}
_CST = timezone(timedelta(hours=8), "Asia/Shanghai")  # no DST since 1991: a fixed offset is exact
_RE_DECIMAL = re.compile(r"\.0*\s*$")


def render_time(ts: float) -> str:
    """Epoch seconds ⇒ ``"YYYY-MM-DD HH:MM:SS"`` in Asia/Shanghai without offset, whatever the host zone."""
    return datetime.fromtimestamp(int(ts), _CST).strftime("%Y-%m-%d %H:%M:%S")


def hms_string(seconds: float) -> str:
    """A duration like bkmonitor's ``hms_string``: the two largest non-zero units, e.g. ``"6m 40s"``."""
    rest = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n}{unit}")
    return " ".join(parts[:2]) or "0s"


def as_int(value: Any) -> int | None:
    """Parse like DRF's ``IntegerField``: ints, whole floats, strings as ``" 12"``/``"12.0"``; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(_RE_DECIMAL.sub("", value))
        except ValueError:
            return None
    return None


class SimClock:
    """The clock the simulator reads (epoch seconds, float), controlled by the test. Thread-safe.

    ``SimClock()`` is frozen at the real time of its creation, ``SimClock(t)`` at ``t``; both move only by
    :meth:`set`/:meth:`advance`. :meth:`real` follows ``time.time()``, shifted by ``set``/``advance``.
    """

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._following = False
        self._t = time.time() if start is None else float(start)

    @classmethod
    def real(cls) -> SimClock:
        """A clock that follows ``time.time()`` (plus any offset ``set``/``advance`` introduce)."""
        clock = cls(0.0)
        clock._following = True
        return clock

    def now(self) -> float:
        with self._lock:
            return time.time() + self._t if self._following else self._t

    def set(self, t: float) -> None:
        with self._lock:
            self._t = float(t) - time.time() if self._following else float(t)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += float(seconds)


@dataclass
class RawLog:
    """One raw ``AlertLog`` document as appended (before sorting and folding). ``seq`` is the append order."""

    operate: str
    message: str
    create_time: int
    seq: int
    extend_info: Any = field(default_factory=dict)
    status: str = "SUCCESS"


class AlarmStore:
    """Alarms indexed by id, guarded by one re-entrant lock shared with the server."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.alarms: dict[str, SimAlarm] = {}
        self.log_seq = 0
        self.next_action_id = 3_000_001
        self.next_seq = 5819837


class SimAlarm:
    """A simulated alert, returned by ``Simulator.add_alarm``. Change it through its methods (they lock).

    Attributes: ``id`` (digits: 10-digit begin epoch + sequence), ``bk_biz_id``, ``name`` (alert_name),
    ``severity`` (1 fatal, 2 warning, 3 remind), ``status`` (ABNORMAL/RECOVERED/CLOSED), ``strategy_id``,
    ``strategy_name``, ``dimensions`` (dict), ``begin_time``/``create_time``/``update_time``/``latest_time``
    (int epoch), ``end_time`` (None while ABNORMAL), ``seq_id``, ``description``, ``is_ack``,
    ``ack_operator``, ``expired`` and ``legacy_event_id`` (the 3.x string event id shown in legacy mode).
    """

    def __init__(
        self,
        store: AlarmStore,
        *,
        alarm_id: str,
        bk_biz_id: int,
        name: str,
        severity: int,
        strategy_id: int,
        strategy_name: str,
        dimensions: dict[str, str],
        begin_time: int,
        create_time: int,
        seq_id: int,
    ) -> None:
        self._store = store
        self._logs: list[RawLog] = []
        self._converges = 0
        self.id = alarm_id
        self.bk_biz_id = bk_biz_id
        self.name = name
        self.severity = severity
        self.strategy_id = strategy_id
        self.strategy_name = strategy_name
        self.dimensions = dict(dimensions)
        self.begin_time = begin_time
        self.create_time = create_time
        self.update_time = create_time
        self.latest_time = begin_time
        self.end_time: int | None = None
        self.status = "ABNORMAL"
        self.seq_id = seq_id
        self.description = ""
        self.is_ack: bool | None = None
        self.ack_operator = ""
        self.ack_time: int | None = None
        #: the alert's action documents (``/app/action/search/`` shapes, docs/blueking-api.md §8.2)
        self.actions: list[dict[str, Any]] = []
        self.expired = False
        md5 = hashlib.md5(alarm_id.encode(), usedforsecurity=False).hexdigest()
        self.legacy_event_id = f"{md5}.{begin_time}.{strategy_id}.0.{severity}"

    def __repr__(self) -> str:
        return f"SimAlarm(id={self.id!r}, status={self.status!r}, logs={len(self._logs)})"

    def _at(self, at: float | None) -> int:
        return int(self._store.clock.now() if at is None else at)

    def log(
        self,
        operate: str,
        message: str,
        *,
        at: float | None = None,
        extend_info: object = None,
        status: str = "SUCCESS",
    ) -> None:
        """Append one raw AlertLog at ``at`` (default ``clock.now()``, truncated to the second).

        ``message`` is the final text (contents already joined with ","). ``extend_info`` and ``status`` are
        shown only in legacy mode (current servers answer ``{}`` and ``"SUCCESS"``); ``extend_info=None``
        picks the 3.x default: a doc-like dict for CONVERGE, ``{"action": {}}`` for ANOMALY_NOTICE, ``""``
        for CREATE, ``{}`` otherwise. Bumps ``update_time``; CREATE/CONVERGE/SEVERITY_UP move
        ``latest_time``, CREATE/CONVERGE set ``description``.
        """
        with self._store.lock:
            t = self._at(at)
            if extend_info is None:
                extend_info = self._default_extend_info(operate, t)
            self._store.log_seq += 1
            self._logs.append(RawLog(operate, message, t, self._store.log_seq, extend_info, status))
            self.update_time = max(self.update_time, t)
            if operate == "ACTION":
                self._add_action(message, t)
            if operate in ("CREATE", "CONVERGE", "SEVERITY_UP"):
                self.latest_time = max(self.latest_time, t)
                if operate != "SEVERITY_UP":
                    self.description = message

    def _add_action(self, message: str, t: int, *, plugin_type: str = "notice", status: str = "success") -> None:
        """The action document an ACTION log stands for (a notice unless told otherwise)."""
        action_id = str(self._store.next_action_id)
        self._store.next_action_id += 1
        signal = {"ABNORMAL": "abnormal", "RECOVERED": "recovered", "CLOSED": "closed"}.get(self.status, "abnormal")
        display = {"notice": "通知", "webhook": "HTTP回调", "job": "作业平台"}.get(plugin_type, plugin_type)
        self.actions.append(
            {
                "id": action_id,
                "alert_id": [self.id],
                "action_plugin_type": plugin_type,
                "action_plugin_type_display": display,
                "action_name": f"[{display}] {self.strategy_name}",
                "signal": signal,
                "status": status,
                "status_tips": message,
                "create_time": t,
                "update_time": t,
                "end_time": t,
                "converge_count": 0,
                "bk_biz_id": str(self.bk_biz_id),
                "operator": ["admin"],
                "content": {"text": message, "url": "", "action_plugin_type": plugin_type},
                "dimensions": [],
                "strategy_id": self.strategy_id,
                "strategy_name": self.strategy_name,
            }
        )

    def act(
        self, message: str, *, at: float | None = None, plugin_type: str = "notice", status: str = "success"
    ) -> None:
        """An action of ``plugin_type`` (notice, webhook, job…) ending in ``status``: an action document and
        the ACTION log it shows as on the ESB."""
        with self._store.lock:
            t = self._at(at)
            self.log("ACTION", message, at=t)
            self.actions.pop()  # the notice log() added: this one instead
            self._add_action(message, t, plugin_type=plugin_type, status=status)

    def _default_extend_info(self, operate: str, t: int) -> object:
        if operate == "CONVERGE":
            self._converges += 1
            return {
                "process_time": {"max": t, "min": self.begin_time},
                "anomaly_record": {},
                "data_time": {"max": t - 60, "min": self.begin_time - 60},
                "anomaly_count": self._converges + 1,
            }
        if operate == "ANOMALY_NOTICE":
            return {"action": {}}
        return "" if operate == "CREATE" else {}

    def converge(self, message: str | None = None, *, at: float | None = None) -> None:
        """Append a CONVERGE log (one more anomaly event folded into this alert)."""
        self.log("CONVERGE", message or self.description or f"{self.name} 当前值异常", at=at)

    def _finish(self, operate: str, status: str, message: str, at: float | None) -> None:
        with self._store.lock:
            t = self._at(at)
            self.log(operate, message, at=t)
            self.status = status
            self.end_time = t

    def recover(self, *, at: float | None = None, message: str = "连续 5 个周期不满足触发条件，告警已恢复") -> None:
        """Append RECOVER; status RECOVERED, ``end_time`` = ``at``."""
        self._finish("RECOVER", "RECOVERED", message, at)

    def close(self, *, at: float | None = None, message: str = "策略已被停用或删除，告警关闭") -> None:
        """Append CLOSE; status CLOSED, ``end_time`` = ``at``."""
        self._finish("CLOSE", "CLOSED", message, at)

    def set_severity(self, severity: int, *, at: float | None = None) -> None:
        """Change the severity and append SEVERITY_UP with the server's text."""
        with self._store.lock:
            self.severity = severity
            name = SEVERITY_NAMES.get(severity, str(severity))
            self.log("SEVERITY_UP", f"收到了更高级别的事件，告警级别上升为：{name}", at=at)

    def ack(self, user: str = "admin", note: str = "", *, at: float | None = None) -> None:
        """Append ACK (``"{user}确认了该告警事件并备注：,{note}"``); set ``is_ack``, ``ack_operator``."""
        with self._store.lock:
            text = f"{user}确认了该告警事件并备注：,{note}" if note else f"{user}确认了该告警事件"
            self.log("ACK", text, at=at)
            self.is_ack = True
            self.ack_operator = user
            self.ack_time = self._at(at)

    def event_log(self, event_id: int, *, legacy: bool = False) -> list[dict[str, Any]]:
        """get_event_log's ``data``: sorted ``-create_time, op_type, -_doc``; folded unless ``legacy``.

        Call with the store lock held (or accept a racy read).
        """
        logs = sorted(self._logs, key=lambda r: (-r.create_time, r.operate, -r.seq))
        if legacy:
            return [
                {
                    "operate": r.operate,
                    "message": r.message,
                    "extend_info": r.extend_info,
                    "status": r.status,
                    "event_id": self.legacy_event_id,
                    "create_time": render_time(r.create_time),
                }
                for r in logs
            ]
        # AlertLogHandler.record_collect: a folded operate starts a new row unless the last TWO rows already
        # have that operate; then it merges into the last one (time = max, message of the row's first log).
        rows: list[list[Any]] = []  # [operate, message, create_time]
        for r in logs:
            if r.operate in FOLDED_OPERATES and len(rows) > 1 and rows[-1][0] == rows[-2][0] == r.operate:
                rows[-1][2] = max(rows[-1][2], r.create_time)
            else:
                rows.append([r.operate, r.message, r.create_time])
        return [
            {
                "operate": op,
                "message": msg,
                "extend_info": {},
                "status": "SUCCESS",
                "event_id": event_id,
                "create_time": render_time(t),
            }
            for op, msg, t in rows
        ]
