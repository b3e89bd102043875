"""The supervisor's state as the reducer keeps it: :class:`Snapshot` (everything it knows,
``GET /v1/status`` is rendered from it by :mod:`lmsupervisor.core.status`), grouped into
one frozen sub-record per concern (:class:`LmStudioSeen`, :class:`Liveness`,
:class:`Restarts`, :class:`Work`, :class:`HardwareSeen`), one :class:`ModelStatus` per declared model, the loads
still in flight. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmsupervisor.config import Config, ModelConfig
from lmsupervisor.core.capabilities import CliCapabilities
from lmsupervisor.core.configdiff import model_name
from lmsupervisor.core.hardware import Hardware
from lmsupervisor.core.observed import DaemonProcess, DownloadProgress, Install, ServerSettings
from lmsupervisor.core.problems import Problem
from lmsupervisor.core.speed import Baseline, baseline_of, speed_key
from lmsupervisor.core.states import State

MODEL_STATES = ("pending", "downloading", "loading", "loaded", "failed", "idle_unloaded")


@dataclass(frozen=True)
class ModelStatus:
    """One declared model in the snapshot; ``state`` is one of :data:`MODEL_STATES`."""

    key: str
    identifier: str | None
    state: str = "pending"
    error: str | None = None
    last_answer_ms: float | None = None  # deep readiness: latency of the last good answer
    instance: str | None = None  # the identifier LM Studio serves it under, once loaded
    kind: str = "llm"  # "llm" or "embedding" (from `lms ps --json` type), for the answer probe
    download: DownloadProgress | None = None  # while ``downloading`` through REST v1
    asked_at: float | None = None  # monotonic seconds of its last answer probe (probe = "answer")
    tokens_per_second: float | None = None  # the last measured answer's speed ([health] answer_tokens >= 8)
    slow: int = 0  # answers in a row below [health] slow_factor of its baseline (3: model_slow)
    slow_reloaded: bool = False  # reloaded for being slow ([[models]] reload_when_slow): never twice per cause

    @property
    def name(self) -> str:
        """The identifier, else the key (how the config and the status name it)."""
        return self.identifier or self.key


@dataclass(frozen=True)
class InFlight:
    """A load we started that LM Studio may still finish even if we stopped waiting for it
    (killing `lms load` does not stop LM Studio). ``deadline`` is monotonic seconds."""

    name: str
    deadline: float


@dataclass(frozen=True)
class LmStudioSeen:
    """LM Studio as the last bring-up found it (``snapshot.lmstudio``).

    ``install`` what detection found (facts §1); ``lms_version`` the app/llmster version;
    ``capabilities`` what the `lms` binary can do (facts §8); ``rest`` whether the server has
    REST v1 (None: not known yet); ``rest_drift`` whether the last load pass chose REST v1
    (every declared model listed under its REST key): then drift checks read
    ``GET /api/v1/models`` instead of `lms ps`, and unloads go over REST too; ``daemon`` the
    daemon process we watch; ``server`` the server settings in force (from
    ``http-server-config.json``); ``last_good_server`` the last settings read from a sound
    ``http-server-config.json`` (never replaced by defaults).
    """

    install: Install | None = None
    lms_version: str | None = None
    capabilities: CliCapabilities | None = None
    rest: bool | None = None
    rest_drift: bool = False
    daemon: DaemonProcess | None = None
    server: ServerSettings = field(default_factory=ServerSettings)
    last_good_server: ServerSettings | None = None


@dataclass(frozen=True)
class Liveness:
    """Whether LM Studio's server answers (``snapshot.liveness``, ``server`` in the status).

    ``running`` whether the server answered since the last bring-up and no failure since;
    ``last_probe_ms`` the latency of the last health probe, in milliseconds;
    ``consecutive_failures`` the probes failed in a row (``health.failures_before_restart``
    of them is a failure); ``healthy_since`` monotonic seconds since when it is ready
    (None: not healthy), for ``restart.reset_after``.
    """

    running: bool = False
    last_probe_ms: float | None = None
    consecutive_failures: int = 0
    healthy_since: float | None = None


@dataclass(frozen=True)
class Restarts:
    """Restarts and the backoff ladder (``snapshot.restarts``, ``restarts`` in the status).

    ``count`` restarts so far; ``last_reason`` why the last one happened; ``last_at`` and
    ``next_attempt_at`` wall seconds (shown to people; ``next_attempt_at`` only in
    ``backoff``); ``attempt`` counts consecutive failed bring-ups (the rung is
    :func:`~lmsupervisor.core.policy.rung_for` of it); ``model_attempt`` consecutive failed
    load passes (the model backoff).

    The last failure: ``cause`` is its ``RESTART_CAUSES`` label (what the restart it
    leads to is counted as), ``failure`` its signature (the problem code and words), and
    ``deterministic`` whether it recurs on every retry whatever LM Studio does (an unusable
    address, a crash of our own code): then retries only try to start (rung START), never
    stop or kill anything. ``spent`` is the signature for which a daemon rung (restart or
    kill) was already climbed: the same cause never makes the supervisor stop or kill
    LM Studio's daemon a second time (reset with the attempt count).
    """

    count: int = 0
    last_reason: str | None = None
    last_at: float | None = None
    next_attempt_at: float | None = None
    attempt: int = 0
    model_attempt: int = 0
    cause: str | None = None
    failure: str | None = None
    deterministic: bool = False
    spent: str | None = None


@dataclass(frozen=True)
class Work:
    """The supervisor's own work in progress (``snapshot.work``; not in the status).

    ``action`` is the id of the running action (bring-up or load pass), ``timer`` of the
    armed timer and ``epoch`` of the current server bring-up: messages carrying an older
    id are stale and ignored. ``in_flight`` the loads we started that LM Studio may still
    finish; ``ours`` the instance identifiers this supervisor loaded; ``unload_next`` the
    instances the next load pass unloads first (removed or re-keyed models we loaded, a
    model that stopped answering).
    """

    action: int = 0
    timer: int = 0
    epoch: int = 0
    in_flight: tuple[InFlight, ...] = ()
    ours: frozenset[str] = frozenset()
    unload_next: tuple[str, ...] = ()


@dataclass(frozen=True)
class HardwareSeen:
    """LM Studio's hardware survey and the GPU gate (``snapshot.hardware``; design §9).

    ``survey`` is the last `lms runtime survey` of this run (None: none yet, or this `lms`
    has none); ``last_good`` the last survey that passed the gate as ``"auto"`` would judge
    it (from the state folder at start): the GPUs ``[gpu] require = "auto"`` requires.
    ``epoch`` is the server epoch of the last survey (a survey in the same epoch is a
    re-survey: ``--refresh``). While the gate is closed: ``waiting_since`` monotonic
    seconds since when, ``attempt`` the re-surveys so far (their backoff), ``restart_spent``
    whether LM Studio's daemon was already restarted for it (never twice for one cause;
    all three reset once the gate opens).
    """

    survey: Hardware | None = None
    last_good: Hardware | None = None
    epoch: int = -1
    waiting_since: float | None = None
    attempt: int = 0
    restart_spent: bool = False


@dataclass(frozen=True)
class Snapshot:
    """Everything the supervisor knows; ``GET /v1/status`` is rendered from it.

    Top level: ``config`` in force (``pending_config`` the one held until the load pass
    ends), ``config_error`` the last reload's error; ``state`` the lifecycle state since
    ``since`` (wall seconds), ``started_at`` when this supervisor started (wall seconds);
    ``models`` one status per declared model; problems: ``problems`` the install's,
    ``notes`` those found while running (capabilities, the API token, a hung app),
    ``standing`` those posted with :class:`~lmsupervisor.core.messages.Noted` (state files,
    load options, paused downloads), kept across bring-ups until cleared.

    The rest is grouped, one sub-record per concern, each frozen with defaults (a new
    concern is one more field here): ``lmstudio`` (:class:`LmStudioSeen`, what LM Studio is),
    ``liveness`` (:class:`Liveness`, whether its server answers), ``restarts``
    (:class:`Restarts`, the backoff ladder and the last failure), ``work``
    (:class:`Work`, the supervisor's ids and loads in progress), ``hardware``
    (:class:`HardwareSeen`, the hardware survey and the GPU gate), ``baselines`` (each
    model's speed on the GPU per LM Studio version and runtime, from the state folder at
    start, :mod:`lmsupervisor.core.speed`).
    """

    config: Config
    state: State = State.STOPPED
    since: float = 0.0
    started_at: float = 0.0
    config_error: str | None = None
    pending_config: Config | None = None
    models: tuple[ModelStatus, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[Problem, ...] = ()
    standing: tuple[Problem, ...] = ()
    lmstudio: LmStudioSeen = field(default_factory=LmStudioSeen)
    liveness: Liveness = field(default_factory=Liveness)
    restarts: Restarts = field(default_factory=Restarts)
    work: Work = field(default_factory=Work)
    hardware: HardwareSeen = field(default_factory=HardwareSeen)
    baselines: tuple[Baseline, ...] = ()

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """Every problem shown in the status, once per code: the install's, the last
        bring-up's (``notes``), then the standing ones (:class:`Noted`)."""
        seen: dict[str, Problem] = {}
        for p in (*self.problems, *self.notes, *self.standing):
            seen.setdefault(p.code, p)
        return tuple(seen.values())

    @property
    def ready(self) -> bool:
        """True in ``ready`` only (design §5 ``ready``)."""
        return self.state is State.READY

    def model(self, name: str) -> ModelStatus | None:
        """The status of the declared model called ``name`` (identifier, else key)."""
        return next((m for m in self.models if m.name == name), None)

    def baseline(self, status: ModelStatus) -> Baseline | None:
        """``status``'s speed baseline under this LM Studio version and the last survey's
        runtime (None: none yet, or the survey shows no GPU; :mod:`lmsupervisor.core.speed`)."""
        return baseline_of(self.baselines, speed_key(status.key, self.lmstudio.lms_version, self.hardware.survey))


def initial(
    config: Config,
    wall: float,
    last_good_server: ServerSettings | None = None,
    last_good_hardware: Hardware | None = None,
    baselines: tuple[Baseline, ...] = (),
) -> Snapshot:
    """The snapshot before ``Start``: stopped, every declared model pending; what the state
    folder remembers (the last good server settings and hardware survey, the speed
    baselines) is known."""
    return Snapshot(
        config=config,
        since=wall,
        started_at=wall,
        models=statuses(config.models, ()),
        lmstudio=LmStudioSeen(last_good_server=last_good_server),
        hardware=HardwareSeen(last_good=last_good_hardware),
        baselines=baselines,
    )


def statuses(models: tuple[ModelConfig, ...], old: tuple[ModelStatus, ...]) -> tuple[ModelStatus, ...]:
    """One status per declared model, in ``models`` order: the one in ``old`` of the same
    name (identifier, else key) when there is one, else a new ``pending`` one."""
    by_name = {m.name: m for m in old}
    return tuple(by_name.get(model_name(m)) or ModelStatus(m.key, m.identifier) for m in models)
