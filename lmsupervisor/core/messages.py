"""What flows into the reconcile core: messages (what happened: :class:`ServerUp`,
:class:`BringUpFailed`, :class:`ModelsDone`, :class:`Probed`, :class:`DaemonExited`,
:class:`RestartRequested`, :class:`ConfigChanged`, :class:`TimerFired` ...), plus
:class:`Now`, the clock readings of one reduction. Frozen data;
:func:`lmsupervisor.core.reducer.reduce` is the only code that reads messages and writes
effects (:mod:`lmsupervisor.core.effects`), the runner (:mod:`lmsupervisor.supervisor`) the
only code that performs effects and sends messages."""

from __future__ import annotations

from dataclasses import dataclass

from lmsupervisor.config import Config
from lmsupervisor.core.capabilities import CliCapabilities
from lmsupervisor.core.hardware import Hardware
from lmsupervisor.core.observed import (
    DaemonProcess,
    DownloadProgress,
    Install,
    LoadedModel,
    ProbeResult,
    ServerSettings,
)
from lmsupervisor.core.problems import Problem


@dataclass(frozen=True)
class Now:
    """Clock readings for one message: ``mono`` and ``wall`` seconds, and ``jitter`` in
    ``[-1, 1]`` (drawn by the runner) for the backoff spread."""

    mono: float
    wall: float
    jitter: float = 0.0


# -- messages -------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """The supervisor begins."""


@dataclass(frozen=True)
class StopRequested:
    """SIGTERM/SIGINT: stop supervising, leave LM Studio running."""

    reason: str = "stop requested"


@dataclass(frozen=True)
class ServerUp:
    """Bring-up ``action`` ended with the server answering its greeting at ``server``."""

    action: int
    install: Install
    server: ServerSettings
    daemon: DaemonProcess | None
    reason: str
    version: str | None = None
    adopted: bool = False
    settings_source_ok: bool = True  # http-server-config.json was sound (remember it)
    capabilities: CliCapabilities | None = None
    rest: bool | None = None  # the server has REST v1
    problems: tuple[Problem, ...] = ()  # found on the way (bind unsupported, API token, CORS)


@dataclass(frozen=True)
class NotInstalled:
    """Bring-up ``action`` found no usable LM Studio."""

    action: int
    install: Install
    reason: str


@dataclass(frozen=True)
class BringUpFailed:
    """Bring-up ``action`` failed; ``reason`` is for people (LM Studio's words)."""

    action: int
    reason: str
    install: Install | None = None
    problems: tuple[Problem, ...] = ()  # e.g. app_hung: the GUI app holds a hung service
    capabilities: CliCapabilities | None = None
    problem: Problem | None = None  # the failure itself, named (None: the generic bring_up_failed)
    deterministic: bool = False  # recurs on every retry: no rung above START can fix it


@dataclass(frozen=True)
class BringUpNoted:
    """Bring-up ``action`` found ``problem`` on its way (a hung app it spares, a capability
    this `lms` lacks, a refused token): shown at once, not when the bring-up ends."""

    action: int
    problem: Problem


@dataclass(frozen=True)
class LoadStarted:
    """An `lms load` for declared model ``name`` was launched (accepted from any action:
    LM Studio may finish it whatever happens to us)."""

    name: str


@dataclass(frozen=True)
class LoadSettled:
    """The `lms load` for ``name`` ended with LM Studio's own failure: not in flight."""

    name: str


@dataclass(frozen=True)
class ModelChanged:
    """Load pass ``action`` moved model ``name`` to ``state``."""

    action: int
    name: str
    state: str
    error: str | None = None


@dataclass(frozen=True)
class ModelDownload:
    """Load pass ``action``: REST v1 download progress of declared model ``name``."""

    action: int
    name: str
    progress: DownloadProgress


@dataclass(frozen=True)
class ModelsDone:
    """Load pass ``action`` ended; ``loaded`` is what LM Studio listed at its end,
    ``ours`` the instance identifiers this pass loaded; ``rest`` that REST v1 listed every
    declared model by its key (drift checks may then use it instead of `lms ps`)."""

    action: int
    loaded: tuple[LoadedModel, ...]
    ours: tuple[str, ...] = ()
    answers: tuple[Answered, ...] = ()
    rest: bool = False


@dataclass(frozen=True)
class Answered:
    """Deep readiness: model ``name`` was asked (server ``epoch``); ``ok``
    with ``latency_ms``, else LM Studio's ``error``. ``problem`` is set when the answer was
    a 401 (``api_token_missing``/``api_token_invalid``): our token's failure, not the model's."""

    epoch: int
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None
    problem: Problem | None = None
    tokens_per_second: float | None = None  # measured (>= 8 tokens asked and generated), see core.speed


@dataclass(frozen=True)
class Surveyed:
    """Survey ``action`` ended: ``hardware`` is LM Studio's survey (None: not surveyed, see
    ``error``; or this `lms` has no `runtime survey`, ``error`` None). ``runtime`` is
    ``(found, declared)`` when the selected runtime was not the pinned ``[lmstudio]
    runtime``; ``runtime_error`` LM Studio's words when selecting it failed."""

    action: int
    hardware: Hardware | None = None
    error: str | None = None
    runtime: tuple[str, str] | None = None
    runtime_error: str | None = None


@dataclass(frozen=True)
class LoadPassFailed:
    """Load pass ``action`` could not list models (`lms ps`/`ls` failed): ``reason``."""

    action: int
    reason: str


@dataclass(frozen=True)
class Probed:
    """A liveness probe of server ``epoch`` finished: the greeting, or on REST v1 the
    ``GET /api/v1/models`` listing (a 401 there counts as alive)."""

    epoch: int
    result: ProbeResult


@dataclass(frozen=True)
class Observed:
    """A drift check of server ``epoch``: the instances LM Studio lists as loaded.
    ``rest``: the REST API was asked; then ``problem`` is its refusal of our token (the
    list came from `lms ps`), and None clears an earlier one."""

    epoch: int
    loaded: tuple[LoadedModel, ...]
    problem: Problem | None = None
    rest: bool = False


@dataclass(frozen=True)
class DaemonExited:
    """The watched daemon process ``pid`` exited."""

    pid: int


@dataclass(frozen=True)
class TimerFired:
    """Timer ``gen`` ran out."""

    gen: int


@dataclass(frozen=True)
class RestartRequested:
    """``POST /v1/restart`` (``daemon``: the daemon rung) or `lmsupervisor restart`."""

    daemon: bool = False
    reason: str = "restart requested"


@dataclass(frozen=True)
class SurveyRequested:
    """Survey the hardware now (a resume from sleep, an update): ``refresh`` asks LM Studio
    to survey anew. Acted on in ``ready`` and ``degraded`` (elsewhere a survey comes anyway)."""

    refresh: bool = True


@dataclass(frozen=True)
class Resumed:
    """The machine slept ``seconds`` (seen by the health loop when it woke: the clock's
    :meth:`~lmsupervisor.clock.Clock.asleep` grew): probe, survey and ask again now."""

    seconds: float


@dataclass(frozen=True)
class ReloadRequested:
    """SIGHUP, a config file change or ``POST /v1/reload``: read the config again."""


@dataclass(frozen=True)
class ConfigChanged:
    """The config was read again and is valid."""

    config: Config


@dataclass(frozen=True)
class ConfigRejected:
    """The config was read again and is invalid; the old one keeps running."""

    error: str
    key: str = ""


@dataclass(frozen=True)
class Noted:
    """A problem found outside a bring-up's result (a state file that cannot be written, a
    load option this `lms` lacks, a paused download): ``problem`` replaces the standing
    problem with the same ``code``; None clears it. Accepted in every state."""

    code: str
    problem: Problem | None = None


@dataclass(frozen=True)
class ActionCrashed:
    """An effect raised something unexpected. ``action`` is its action id (-1 for the
    health loop, -2 for reading the config, -3 for a synchronous effect such as writing a
    state file); ``error`` the exception, ``effect`` its name."""

    action: int
    effect: str
    error: str


Message = (
    Start
    | StopRequested
    | ServerUp
    | NotInstalled
    | BringUpFailed
    | BringUpNoted
    | LoadStarted
    | LoadSettled
    | ModelChanged
    | ModelDownload
    | ModelsDone
    | Surveyed
    | LoadPassFailed
    | Answered
    | Probed
    | Observed
    | DaemonExited
    | TimerFired
    | RestartRequested
    | SurveyRequested
    | Resumed
    | ReloadRequested
    | ConfigChanged
    | ConfigRejected
    | Noted
    | ActionCrashed
)

HEALTH_ACTION = -1  # ActionCrashed.action of the health loop
CONFIG_ACTION = -2  # ActionCrashed.action of reading the config
EFFECT_ACTION = -3  # ActionCrashed.action of a synchronous effect (never the running action's failure)
