"""What the reconcile core asks for: effects out of
:func:`lmsupervisor.core.reducer.reduce` (what to do: :class:`BringUp`, :class:`LoadModels`,
:class:`Schedule`, :class:`Watch`, :class:`Publish` ...). Frozen data, keyword fields where
there are many; the runner (:mod:`lmsupervisor.supervisor`) performs each and answers with
the messages of :mod:`lmsupervisor.core.messages`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmsupervisor.config import Config, ModelConfig
from lmsupervisor.core.capabilities import CliCapabilities
from lmsupervisor.core.hardware import Hardware
from lmsupervisor.core.observed import (
    DaemonProcess,
    ServerSettings,
)
from lmsupervisor.core.policy import Rung
from lmsupervisor.core.snapshot import InFlight
from lmsupervisor.core.speed import Baseline


@dataclass(frozen=True, kw_only=True)
class BringUp:
    """Detect LM Studio, then adopt it or climb to ``step``; answers with ServerUp,
    NotInstalled or BringUpFailed carrying ``action``."""

    action: int
    step: Rung
    config: Config
    daemon: DaemonProcess | None
    last_good_server: ServerSettings | None
    lms_version: str | None
    capabilities: CliCapabilities | None = None


@dataclass(frozen=True, kw_only=True)
class LoadModels:
    """Unload ``unload`` (identifiers we loaded), wait for ``in_flight`` loads to show up,
    then load what ``models`` still lack; answers with ModelChanged.. and ModelsDone.
    With ``rest`` (REST v1 at ``url``) it lists, loads and downloads over HTTP; `lms`
    (its ``capabilities``) otherwise, and for what REST cannot express."""

    action: int
    models: tuple[ModelConfig, ...]
    in_flight: tuple[InFlight, ...]
    unload: tuple[str, ...] = ()
    lms: Path | None = None
    url: str | None = None
    rest: bool = False
    capabilities: CliCapabilities | None = None
    ask: tuple[str, ...] = ()  # names of models with probe = "answer": ask each once loaded
    answer_timeout: float = 30.0
    answer_tokens: int = 1  # max_tokens of each ask ([health] answer_tokens)


@dataclass(frozen=True, kw_only=True)
class Survey:
    """Before a load pass: re-select the pinned ``runtime`` (``[lmstudio] runtime``, None:
    no pin) where this `lms` has `runtime select`, then survey the hardware (`lms runtime
    survey --json`, ``--refresh`` with ``refresh``) where it has the survey (``capabilities``);
    answers with :class:`Surveyed` carrying ``action``."""

    action: int
    lms: Path | None
    refresh: bool
    runtime: str | None
    capabilities: CliCapabilities | None


@dataclass(frozen=True)
class RememberHardware:
    """Persist ``hardware``: the last good survey (what ``[gpu] require = "auto"`` requires)."""

    hardware: Hardware


@dataclass(frozen=True)
class RememberSpeed:
    """Persist ``baselines``: every model's speed baseline (:mod:`lmsupervisor.core.speed`)."""

    baselines: tuple[Baseline, ...]


@dataclass(frozen=True)
class CancelAction:
    """Cancel the running action (its late messages carry an old id and are ignored)."""


@dataclass(frozen=True)
class Schedule:
    """Arm timer ``gen`` to fire after ``delay`` seconds (replacing any armed one)."""

    gen: int
    delay: float


@dataclass(frozen=True)
class Health:
    """What the health loop does from now on: greeting probes, drift checks, for ``epoch``."""

    probe: bool
    drift: bool
    epoch: int


@dataclass(frozen=True, kw_only=True)
class Ask:
    """Deep readiness: ask model ``name`` (served as ``instance``, ``kind`` ``"llm"`` or
    ``"embedding"``) for ``tokens`` tokens (max_tokens) within ``timeout`` seconds, for
    server ``epoch``; answers with :class:`Answered`."""

    epoch: int
    name: str
    instance: str
    kind: str
    timeout: float
    tokens: int = 1


@dataclass(frozen=True)
class Watch:
    """Watch ``daemon``'s PID for its exit (None: stop watching)."""

    daemon: DaemonProcess | None


@dataclass(frozen=True)
class Unload:
    """Unload instance ``identifier`` (a duplicate we created) through the backend a load
    pass for ``models`` would choose: the other fields are :class:`LoadModels`'s, so REST or
    `lms` is decided in one place (:func:`lmsupervisor.lmstudio.loadpass.choose_backend`)."""

    identifier: str
    models: tuple[ModelConfig, ...] = ()
    lms: Path | None = None
    url: str | None = None
    rest: bool = False
    capabilities: CliCapabilities | None = None


@dataclass(frozen=True)
class ReadConfig:
    """Read the config file again; answers with ConfigChanged or ConfigRejected."""


@dataclass(frozen=True)
class Relog:
    """Apply ``[log]`` settings live."""

    level: str
    format: str


@dataclass(frozen=True)
class Remember:
    """Persist ``server``: the last good settings of LM Studio's server config."""

    server: ServerSettings


@dataclass(frozen=True)
class Publish:
    """Send ``event`` (design §5 event shape, without ``time``) to every subscriber."""

    event: dict[str, Any]


@dataclass(frozen=True)
class Log:
    """Log ``event`` (snake_case, past tense) at ``level`` with ``fields``."""

    level: str
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


Effect = (
    BringUp
    | LoadModels
    | Survey
    | RememberHardware
    | RememberSpeed
    | CancelAction
    | Schedule
    | Health
    | Ask
    | Watch
    | Unload
    | ReadConfig
    | Relog
    | Remember
    | Publish
    | Log
)
