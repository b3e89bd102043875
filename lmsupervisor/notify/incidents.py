"""When to notify: conditions read from the status, held ``after`` seconds, one alert when
an incident opens and one when it ends. Pure (no clock reads, no I/O): the runner passes
the time in, the tests pass a fake one.

A **condition** is something wrong right now, read from the status document (design §5
dict, :func:`conditions`): ``down`` (LM Studio's server is not serving: ``backoff``,
``not_installed``, or a bring-up after it was up once), ``model_failed`` (per model),
``model_slow``, ``gpu_missing``, ``app_hung`` (their problems in the status),
``config_rejected`` (``supervisor.config_error``), ``restarts_climbing``
(:data:`CLIMBING` restarts within :data:`CLIMB_WINDOW` seconds).

An **incident** (:func:`step`, Alertmanager's ``for`` and resolve, with one ``after`` for
both) opens once its condition has lasted ``after`` seconds without a break: one alert
(``down``, ``model_failed`` ...). It ends once the condition has been absent for ``after``
seconds: one ``recovered``. A condition that comes back meanwhile (a flapping LM Studio:
five crashes in a minute) is the same incident: no second ``down``, no early
``recovered``. A condition that ends before ``after`` is never sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

DOWN_STATES = frozenset({"backoff", "not_installed"})  # down whatever happened before
COMING_UP = frozenset({"starting", "loading_models"})  # down once LM Studio was up (a recovery under way)
UP_STATES = frozenset({"ready", "degraded"})  # the server serves
PROBLEM_EVENTS = ("model_slow", "gpu_missing", "app_hung")  # conditions that are problems of the status, by code
CLIMBING = 3  # restarts within CLIMB_WINDOW seconds: restarts_climbing
CLIMB_WINDOW = 600.0  # seconds


@dataclass(frozen=True)
class Condition:
    """Something wrong now: ``event`` (a ``[[notify]] events`` name), ``subject`` (the
    model's name, for per-model conditions) and ``message`` for people."""

    event: str
    message: str
    subject: str | None = None

    @property
    def key(self) -> str:
        """What identifies its incident: the event, and the model for per-model ones."""
        return self.event if self.subject is None else f"{self.event}:{self.subject}"


@dataclass(frozen=True)
class History:
    """What the judge remembers of the supervisor between two statuses: ``was_up`` (the
    server served at least once), ``restarts`` (monotonic seconds of the restarts within
    :data:`CLIMB_WINDOW`) and ``count`` (``restarts.count`` last seen)."""

    was_up: bool = False
    restarts: tuple[float, ...] = ()
    count: int = 0

    def expires(self) -> float | None:
        """Monotonic seconds when the oldest remembered restart leaves the window (None: none)."""
        return self.restarts[0] + CLIMB_WINDOW if self.restarts else None


def remember(history: History, status: Mapping[str, Any], now: float) -> History:
    """``history`` after seeing ``status`` (design §5 dict) at monotonic ``now``."""
    restarts = status.get("restarts") or {}
    seen = restarts.get("count")
    count = seen if isinstance(seen, int) else history.count
    new = max(0, count - history.count)
    kept = tuple(t for t in history.restarts if now - t < CLIMB_WINDOW) + (now,) * new
    return History(history.was_up or status.get("state") in UP_STATES, kept, count)


def conditions(status: Mapping[str, Any], history: History) -> tuple[Condition, ...]:
    """Every condition true in ``status`` (design §5 dict; ``history`` after :func:`remember`)."""
    state = str(status.get("state"))
    found: list[Condition] = []
    if state in DOWN_STATES or (history.was_up and state in COMING_UP):
        reason = (status.get("restarts") or {}).get("last_reason")
        found.append(Condition("down", f"LM Studio is down ({state}{f': {reason}' if reason else ''})"))
    if state in UP_STATES:  # a model is judged only while the server serves (a restart makes every model pending)
        for model in status.get("models") or []:
            if model.get("state") == "failed":
                name = model.get("identifier") or model.get("key")
                found.append(
                    Condition("model_failed", f"model {name} failed: {model.get('error') or 'no reason given'}", name)
                )
    for problem in status.get("problems") or []:
        if problem.get("code") in PROBLEM_EVENTS:
            found.append(Condition(problem["code"], str(problem.get("message") or problem["code"])))
    error = (status.get("supervisor") or {}).get("config_error")
    if error:
        found.append(Condition("config_rejected", f"the config file was rejected (the previous one runs): {error}"))
    if len(history.restarts) >= CLIMBING:
        minutes = CLIMB_WINDOW / 60
        found.append(
            Condition("restarts_climbing", f"LM Studio restarted {len(history.restarts)} times in {minutes:g} minutes")
        )
    return tuple(found)


@dataclass(frozen=True)
class Track:
    """One condition followed for one receiver: true since monotonic ``since`` (wall
    ``since_wall``); ``open`` once its alert was sent; ``cleared`` monotonic seconds since
    when it is absent (None: present)."""

    condition: Condition
    since: float
    since_wall: float
    open: bool = False
    cleared: float | None = None


@dataclass(frozen=True)
class Alert:
    """One notification: ``event`` (``down``, ``model_failed`` ... ``recovered``, ``test``),
    what it is about (``condition``, ``subject``), ``message`` for people, at wall seconds
    ``time``; ``since`` the wall seconds the condition began; ``lasted`` the seconds the
    incident lasted (``recovered`` only)."""

    event: str
    condition: str
    message: str
    time: float
    since: float
    subject: str | None = None
    lasted: float | None = None


def step(
    tracks: Mapping[str, Track],
    active: Iterable[Condition],
    now: float,
    wall: float,
    after: float,
    events: Iterable[str],
) -> tuple[dict[str, Track], list[Alert], float | None]:
    """One judgement for one receiver at monotonic ``now`` (wall ``wall``): the tracks
    after it, the alerts to send (incidents opened, then ended), and the monotonic seconds
    of the next judgement a timer must make (None: nothing pending, no timer).

    Only conditions whose event is in ``events`` are followed; ``recovered`` goes out only
    when ``events`` has it, for the incident's end of any condition."""
    wanted = set(events)
    out: dict[str, Track] = {}
    alerts: list[Alert] = []
    present = {c.key: c for c in active if c.event in wanted}
    for key, condition in present.items():
        track = tracks.get(key) or Track(condition, now, wall)
        track = replace(track, condition=condition, cleared=None)
        if not track.open and now - track.since >= after:
            track = replace(track, open=True)
            alerts.append(Alert(condition.event, condition.event, condition.message, wall, track.since_wall,
                                condition.subject))  # fmt: skip
        out[key] = track
    for key, track in tracks.items():
        if key in present or not track.open:
            continue  # a condition gone before its alert was sent: forgotten
        cleared = track.cleared if track.cleared is not None else now
        if now - cleared < after:
            out[key] = replace(track, cleared=cleared)
        elif "recovered" in wanted:
            alerts.append(_recovered(track, wall))
    return out, alerts, _deadline(out, after)


def _recovered(track: Track, wall: float) -> Alert:
    condition = track.condition
    lasted = max(0.0, wall - track.since_wall)
    what = {"down": "LM Studio is back", "model_failed": f"model {condition.subject} is back"}.get(
        condition.event, f"{condition.event.replace('_', ' ')} is over"
    )
    return Alert("recovered", condition.event, f"{what} after {duration(lasted)}", wall, track.since_wall,
                 condition.subject, lasted)  # fmt: skip


def _deadline(tracks: Mapping[str, Track], after: float) -> float | None:
    times = [t.since + after for t in tracks.values() if not t.open]
    times += [t.cleared + after for t in tracks.values() if t.open and t.cleared is not None]
    return min(times) if times else None


def duration(seconds: float) -> str:
    """``2 h 5 min``, ``3 min 20 s``, ``42 s`` for people."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"
