"""Typed events of ``GET /v1/events`` (design §5): what :meth:`Client.events` yields.

Every event has ``type``, ``time`` (UTC ISO-8601, as sent) and ``raw`` (the dict as
received). Known types get their fields; anything else, or any field of an unexpected
type, still parses (as :class:`Event`, or with an empty value): a newer supervisor never
breaks an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Any event: ``type`` (``state``, ``model``, ``restart``, ``config``, or newer) and ``time``."""

    type: str
    time: str
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class StateEvent(Event):
    """The supervisor changed state: ``state`` and ``previous`` (design §5 states), ``reason``."""

    state: str = ""
    previous: str = ""
    reason: str | None = None


@dataclass(frozen=True)
class ModelEvent(Event):
    """A declared model changed state (``pending``, ``loading``, ``loaded``, ``failed``...)."""

    key: str = ""
    identifier: str | None = None
    state: str = ""
    error: str | None = None


@dataclass(frozen=True)
class RestartEvent(Event):
    """A recovery or requested restart: ``count`` so far, ``reason``, ladder ``step``."""

    count: int = 0
    reason: str | None = None
    step: str = ""


@dataclass(frozen=True)
class ConfigEvent(Event):
    """A config reload: ``error`` is None when the new config was applied."""

    error: str | None = None


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


def _opt(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def parse_event(raw: dict[str, Any]) -> Event:
    """The typed event for one decoded NDJSON line; never raises."""
    kind, when = _str(raw, "type"), _str(raw, "time")
    if kind == "state":
        return StateEvent(kind, when, raw, _str(raw, "state"), _str(raw, "previous"), _opt(raw, "reason"))
    if kind == "model":
        return ModelEvent(
            kind, when, raw, _str(raw, "key"), _opt(raw, "identifier"), _str(raw, "state"), _opt(raw, "error")
        )
    if kind == "restart":
        count = raw.get("count")
        n = count if isinstance(count, int) and not isinstance(count, bool) else 0
        return RestartEvent(kind, when, raw, n, _opt(raw, "reason"), _str(raw, "step"))
    if kind == "config":
        return ConfigEvent(kind, when, raw, _opt(raw, "error"))
    return Event(kind or "unknown", when, raw)
