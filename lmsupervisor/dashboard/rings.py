"""What the dashboard remembers beyond the status: bounded rings in memory, fed as things
happen (no timer): the probe latency and each model's answer latency over the last hour,
the restarts of the last 24 hours (cause and rung), the last log events.

Every ring has a fixed length, so memory stays bounded whatever runs for months; what is
older than its window is left out when read (:meth:`Rings.to_json`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from lmsupervisor.clock import Clock
from lmsupervisor.core.messages import Answered, Probed
from lmsupervisor.core.timefmt import iso

CHART_WINDOW = 3600.0  # seconds of latency shown
TIMELINE_WINDOW = 86_400.0  # seconds of restarts shown
PROBES = 1440  # points: an hour of probes every 2.5 s
ANSWERS = 240  # points per model
RESTARTS = 500
LOGS = 200
LOG_FIELDS = 6  # fields of a log event kept besides its name, level and time
LOG_VALUE = 300  # characters of one field's value kept


class Rings:
    """The rings of one supervisor; ``clock`` stamps what arrives (wall seconds)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.probes: deque[tuple[float, float | None]] = deque(maxlen=PROBES)
        self.answers: dict[str, deque[tuple[float, float | None]]] = {}
        self.restarts: deque[dict[str, Any]] = deque(maxlen=RESTARTS)
        self.logs: deque[dict[str, Any]] = deque(maxlen=LOGS)

    def observe(self, message: object, snap: object = None) -> dict[str, Any] | None:
        """A reduced message (``Supervisor.observe``): a probe's or an answer's latency in
        milliseconds (None: failed) is kept; returns the point for the open pages, if any."""
        now = self.clock.wall()
        if isinstance(message, Probed):
            point = (now, round(message.result.latency_ms, 3) if message.result.ok else None)
            self.probes.append(point)
            return {"kind": "probe", "t": point[0], "ms": point[1]}
        if isinstance(message, Answered):
            ring = self.answers.setdefault(message.name, deque(maxlen=ANSWERS))
            ring.append((now, round(message.latency_ms, 3) if message.ok else None))
            return {"kind": "answer", "name": message.name, "t": now, "ms": ring[-1][1]}
        return None

    def event(self, event: Mapping[str, Any]) -> None:
        """An event of the hub: a ``restart`` is kept for the timeline."""
        if event.get("type") == "restart":
            self.restarts.append({"t": self.clock.wall(), **{k: event.get(k) for k in ("count", "reason", "step")}})

    def logged(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """A log event (``logs.TAPS``), trimmed to its name, level, time and a few fields."""
        fields = {k: _short(v) for k, v in entry.items() if k not in ("event", "level", "timestamp")}
        kept = {
            "time": str(entry.get("timestamp") or iso(self.clock.wall())),
            "level": str(entry.get("level", "info")),
            "event": str(entry.get("event", "")),
            "fields": dict(list(fields.items())[:LOG_FIELDS]),
        }
        self.logs.append(kept)
        return kept

    def to_json(self) -> dict[str, Any]:
        """``{"probes": [[t, ms|null]...], "answers": {name: [[t, ms|null]...]}, "restarts":
        [{"t", "count", "reason", "step"}...], "logs": [{"time", "level", "event", "fields"}...]}``;
        ``t`` wall seconds, ``ms`` milliseconds; within each window."""
        now = self.clock.wall()
        return {
            "probes": [list(p) for p in self.probes if now - p[0] <= CHART_WINDOW],
            "answers": {n: [list(p) for p in r if now - p[0] <= CHART_WINDOW] for n, r in self.answers.items()},
            "restarts": [r for r in self.restarts if now - r["t"] <= TIMELINE_WINDOW],
            "logs": list(self.logs),
        }


def _short(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    return text if len(text) <= LOG_VALUE else text[: LOG_VALUE - 1] + "…"
