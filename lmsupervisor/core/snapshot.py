"""The supervisor's state as the reducer keeps it: :class:`Snapshot` (everything it knows,
``GET /v1/status`` is rendered from it by :mod:`lmsupervisor.core.status`), one
:class:`ModelStatus` per declared model, the loads still in flight. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmsupervisor.config import Config, ModelConfig
from lmsupervisor.core.capabilities import CliCapabilities
from lmsupervisor.core.configdiff import model_name
from lmsupervisor.core.observed import DaemonProcess, DownloadProgress, Install, ServerSettings
from lmsupervisor.core.problems import Problem
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
class Snapshot:
    """Everything the supervisor knows; ``GET /v1/status`` is rendered from it.

    Times: ``since``, ``started_at``, ``last_restart_at``, ``next_attempt_at`` are wall
    seconds (shown to people); ``healthy_since`` is monotonic seconds. ``attempt`` counts
    consecutive failed bring-ups (the rung is :func:`rung_for` of it); ``action`` is the id
    of the running action (bring-up or load pass), ``timer`` of the armed timer and
    ``epoch`` of the current server bring-up (probe results of an older one are ignored).
    ``ours`` are the instance identifiers this supervisor loaded; ``last_good_server`` the
    last settings read from a sound ``http-server-config.json`` (never replaced by defaults).
    ``lms_version`` is the app/llmster version; ``capabilities`` what the `lms` binary can
    do (facts §8); ``rest`` whether the server has REST v1 (None: not known yet);
    ``rest_drift`` whether drift checks read ``GET /api/v1/models`` instead of `lms ps`
    (the last load pass found every declared model under its REST key); ``notes`` the
    problems found while running (capabilities, the API token, a hung app), beside the
    install's; ``standing`` those posted with :class:`Noted` (state files, load options,
    paused downloads), kept across bring-ups until cleared.

    The last failure: ``cause`` is its :data:`RESTART_CAUSES` label (what the restart it
    leads to is counted as), ``failure`` its signature (the problem code and words), and
    ``deterministic`` whether it recurs on every retry whatever LM Studio does (an unusable
    address, a crash of our own code): then retries only try to start (rung START), never
    stop or kill anything. ``spent`` is the signature for which a daemon rung (restart or
    kill) was already climbed: the same cause never makes the supervisor stop or kill
    LM Studio's daemon a second time (reset with the attempt count).
    """

    config: Config
    state: State = State.STOPPED
    since: float = 0.0
    started_at: float = 0.0
    config_error: str | None = None
    pending_config: Config | None = None
    install: Install | None = None
    problems: tuple[Problem, ...] = ()
    server: ServerSettings = field(default_factory=ServerSettings)
    server_running: bool = False
    last_probe_ms: float | None = None
    consecutive_failures: int = 0
    daemon: DaemonProcess | None = None
    lms_version: str | None = None
    models: tuple[ModelStatus, ...] = ()
    restart_count: int = 0
    last_restart_reason: str | None = None
    last_restart_at: float | None = None
    next_attempt_at: float | None = None
    attempt: int = 0
    model_attempt: int = 0
    healthy_since: float | None = None
    action: int = 0
    timer: int = 0
    epoch: int = 0
    in_flight: tuple[InFlight, ...] = ()
    ours: frozenset[str] = frozenset()
    unload_next: tuple[str, ...] = ()
    last_good_server: ServerSettings | None = None
    capabilities: CliCapabilities | None = None
    rest: bool | None = None
    rest_drift: bool = False
    notes: tuple[Problem, ...] = ()
    standing: tuple[Problem, ...] = ()
    cause: str | None = None
    failure: str | None = None
    deterministic: bool = False
    spent: str | None = None

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


def initial(config: Config, wall: float, last_good_server: ServerSettings | None = None) -> Snapshot:
    """The snapshot before ``Start``: stopped, every declared model pending."""
    return Snapshot(
        config=config,
        since=wall,
        started_at=wall,
        models=statuses(config.models, ()),
        last_good_server=last_good_server,
    )


def statuses(models: tuple[ModelConfig, ...], old: tuple[ModelStatus, ...]) -> tuple[ModelStatus, ...]:
    """One status per declared model, in ``models`` order: the one in ``old`` of the same
    name (identifier, else key) when there is one, else a new ``pending`` one."""
    by_name = {m.name: m for m in old}
    return tuple(by_name.get(model_name(m)) or ModelStatus(m.key, m.identifier) for m in models)
