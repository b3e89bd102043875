"""The reducer's machinery: :class:`Reduction`, one reduction in progress. Pure.

:mod:`lmsupervisor.core.reducer` decides what each message means; this module is how a
decision is written down: the snapshot's fields and sub-records replaced
(``set``, ``set_lmstudio`` ...), effects collected, the lifecycle state changed in one
place (:meth:`Reduction.fire`, with the entry actions of
:data:`~lmsupervisor.core.states.ON_ENTER`), the ladder's rung and the retry timer, a
model's state (logged and published), a failure, and a new config applied.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

from lmsupervisor.config import Config, ModelConfig
from lmsupervisor.core.capabilities import CliCapabilities
from lmsupervisor.core.configdiff import ConfigDiff, config_diff, model_name
from lmsupervisor.core.effects import (
    BringUp,
    CancelAction,
    Effect,
    Health,
    LoadModels,
    Log,
    Publish,
    Relog,
    Schedule,
    Survey,
    Unload,
    Watch,
)
from lmsupervisor.core.messages import Now
from lmsupervisor.core.observed import LoadedModel, base_url
from lmsupervisor.core.policy import Rung, retry_delay, rung_for
from lmsupervisor.core.preload import Decision, plan
from lmsupervisor.core.problems import Problem
from lmsupervisor.core.snapshot import Snapshot, statuses
from lmsupervisor.core.states import ON_ENTER, Entry, State, Trigger, accepts, next_state


def with_problem(problems: tuple[Problem, ...], code: str, problem: Problem | None) -> tuple[Problem, ...]:
    """``problems`` with the one called ``code`` replaced by ``problem`` (None: removed)."""
    kept = tuple(p for p in problems if p.code != code)
    return (*kept, problem) if problem is not None else kept


class Reach(TypedDict):
    """The fields :class:`LoadModels` and :class:`Unload` share (see :meth:`Reduction.reach`)."""

    models: tuple[ModelConfig, ...]
    lms: Path | None
    url: str
    rest: bool
    capabilities: CliCapabilities | None


class Reduction:
    """One reduction in progress: the snapshot so far (``snap``) and the effects collected
    (``effects``), for a message arriving at ``now``. Only :func:`reduce` makes one."""

    def __init__(self, snap: Snapshot, now: Now) -> None:
        self.snap = snap
        self.now = now
        self.effects: list[Effect] = []

    def set(self, **changes: Any) -> None:
        """Replace top-level fields of the snapshot (``state``, ``models``, ``notes`` ...)."""
        self.snap = replace(self.snap, **changes)

    def set_lmstudio(self, **changes: Any) -> None:
        """Replace fields of ``snapshot.lmstudio`` (:class:`LmStudioSeen`)."""
        self.snap = replace(self.snap, lmstudio=replace(self.snap.lmstudio, **changes))

    def set_liveness(self, **changes: Any) -> None:
        """Replace fields of ``snapshot.liveness`` (:class:`Liveness`)."""
        self.snap = replace(self.snap, liveness=replace(self.snap.liveness, **changes))

    def set_restarts(self, **changes: Any) -> None:
        """Replace fields of ``snapshot.restarts`` (:class:`Restarts`)."""
        self.snap = replace(self.snap, restarts=replace(self.snap.restarts, **changes))

    def set_work(self, **changes: Any) -> None:
        """Replace fields of ``snapshot.work`` (:class:`Work`)."""
        self.snap = replace(self.snap, work=replace(self.snap.work, **changes))

    def set_hardware(self, **changes: Any) -> None:
        """Replace fields of ``snapshot.hardware`` (:class:`HardwareSeen`)."""
        self.snap = replace(self.snap, hardware=replace(self.snap.hardware, **changes))

    def emit(self, *effects: Effect) -> None:
        """Collect ``effects``, performed by the runner in this order."""
        self.effects.extend(effects)

    def log(self, level: str, event: str, **fields: Any) -> None:
        """Collect a :class:`Log` effect: ``event`` (snake_case, past tense) at ``level`` with ``fields``."""
        self.effects.append(Log(level, event, fields))

    # -- the one place the lifecycle state changes ----------------------------------
    def fire(self, trigger: Trigger, reason: str, step: Rung = Rung.START) -> None:
        """Change the lifecycle state by ``trigger`` (the table :func:`next_state`; raises
        ``IllegalTransition`` on an edge it lacks), log and publish it, apply a held config
        at a stable point, then perform the new state's entry actions (``step``: the rung
        a bring-up starts from)."""
        previous = self.snap.state
        state = next_state(previous, trigger)  # raises IllegalTransition
        self.set(state=state, since=self.now.wall)
        if state is not State.BACKOFF:
            self.set_restarts(next_attempt_at=None)
        self.log("info", "state_changed", state=state.value, previous=previous.value, trigger=trigger.value,
                 reason=reason)  # fmt: skip
        self.emit(Publish({"type": "state", "state": state.value, "previous": previous.value, "reason": reason}))
        pending = self.snap.pending_config
        held = None
        if pending is not None and state not in (State.LOADING_MODELS, State.STOPPING, State.STOPPED):
            held = self.replace_config(pending)  # the next stable point: before the entry actions
        for entry in ON_ENTER[state]:
            self.enter(entry, step)
        if held is not None and held.reconcile_models and state in (State.READY, State.DEGRADED):
            self.fire(Trigger.RECONFIGURE_MODELS, "declared models changed while loading")

    def enter(self, entry: Entry, step: Rung) -> None:
        """Perform one entry action of the state just entered (``step`` for ``BRING_UP``)."""
        s = self.snap
        lm, work = s.lmstudio, s.work
        if entry is Entry.CANCEL_WORK:
            self.emit(CancelAction())
        elif entry is Entry.QUIET:
            self.emit(Health(probe=False, drift=False, epoch=work.epoch))
        elif entry is Entry.PROBE:
            self.emit(Health(probe=True, drift=False, epoch=work.epoch))
        elif entry is Entry.CHECK_DRIFT:
            self.emit(Health(probe=True, drift=True, epoch=work.epoch))
        elif entry is Entry.BRING_UP:
            self.set_work(action=work.action + 1, epoch=work.epoch + 1)
            self.set_liveness(running=False, consecutive_failures=0)
            self.emit(
                BringUp(
                    action=work.action + 1,
                    step=step,
                    config=s.config,
                    daemon=lm.daemon,
                    last_good_server=lm.last_good_server,
                    lms_version=lm.lms_version,
                    capabilities=lm.capabilities,
                )
            )
        elif entry is Entry.LOAD_MODELS:
            if self.survey_due():
                self.survey()
            else:
                self.load_pass()
        elif entry is Entry.MARK_HEALTHY:
            if s.liveness.healthy_since is None:
                self.set_liveness(healthy_since=self.now.mono)
        elif entry is Entry.RETRY_LATER:
            # A failure after a long healthy period starts the backoff over.
            fresh = self.healthy_long_enough()
            attempt = 1 if fresh else s.restarts.attempt + 1
            delay = retry_delay(s.config.restart, attempt, self.now.jitter)
            self.set_restarts(attempt=attempt, next_attempt_at=self.now.wall + delay)
            self.set_liveness(healthy_since=None)
            if fresh:
                self.set_restarts(spent=None)
            self.arm(delay)
            self.log("warning", "retry_scheduled", attempt=attempt, retry_in=round(delay, 3),
                     step=self.rung().name.lower())  # fmt: skip
        elif entry is Entry.RECHECK_LATER:
            attempt = s.restarts.attempt + 1
            delay = retry_delay(s.config.restart, attempt, self.now.jitter)
            self.set_restarts(attempt=attempt, next_attempt_at=self.now.wall + delay)
            self.arm(delay)
        elif entry is Entry.RETRY_MODELS_LATER:
            attempt = s.restarts.model_attempt + 1
            self.set_restarts(model_attempt=attempt)
            self.arm(retry_delay(s.config.restart, attempt, self.now.jitter))
        elif entry is Entry.UNWATCH:
            self.emit(Watch(None))

    def survey_due(self) -> bool:
        """Whether a load pass is preceded by a survey: this `lms` has `runtime survey`, or
        `runtime select` and a runtime is pinned (every load pass, so nothing is loaded onto
        a GPU that left since the last one; capabilities unknown: none)."""
        s = self.snap
        caps = s.lmstudio.capabilities
        return caps is not None and (caps.survey or (caps.runtime and s.config.lmstudio.runtime is not None))

    def survey(self, refresh: bool | None = None) -> None:
        """Start a survey action (:class:`Survey`, answered by ``Surveyed``): the first of a
        server epoch asks the daemon's own survey, a later one ``--refresh`` (``refresh``
        None: so decided)."""
        s = self.snap
        lm, work = s.lmstudio, s.work
        again = s.hardware.epoch == work.epoch
        self.set_work(action=work.action + 1)
        self.set_hardware(epoch=work.epoch)
        self.emit(
            Survey(
                action=work.action + 1,
                lms=lm.install.lms if lm.install else None,
                refresh=again if refresh is None else refresh,
                runtime=s.config.lmstudio.runtime,
                capabilities=lm.capabilities,
            )
        )

    def load_pass(self) -> None:
        """Start a load pass (:class:`LoadModels`, a new action): unload what we owe, wait
        for the loads in flight, load what the declared models lack, ask those with an answer probe."""
        s = self.snap
        work = s.work
        in_flight = tuple(f for f in work.in_flight if f.deadline > self.now.mono)
        self.set_work(action=work.action + 1, unload_next=(), in_flight=in_flight)
        ask = tuple(model_name(m) for m in self.wanted() if m.probe == "answer")
        self.emit(
            LoadModels(
                action=work.action + 1,
                in_flight=in_flight,
                unload=work.unload_next,
                ask=ask,
                answer_timeout=s.config.health.answer_timeout,
                answer_tokens=s.config.health.answer_tokens,
                **self.reach(),
            )
        )

    def rung(self) -> Rung:
        """The ladder's rung for the next bring-up: :func:`rung_for` the attempt count,
        except that a deterministic failure only tries to start (no restart can fix it)
        and a cause whose daemon rung was spent restarts the server at most."""
        rs = self.snap.restarts
        step = rung_for(rs.attempt)
        if rs.deterministic:
            return Rung.START
        if step >= Rung.RESTART_DAEMON and rs.failure is not None and rs.failure == rs.spent:
            return Rung.RESTART_SERVER
        return step

    def arm(self, delay: float) -> None:
        """Arm the one timer: ``TimerFired`` after ``delay`` seconds (an older timer is stale)."""
        self.set_work(timer=self.snap.work.timer + 1)
        self.emit(Schedule(self.snap.work.timer, delay))

    def healthy_long_enough(self) -> bool:
        """Whether the server has been healthy for ``restart.reset_after`` seconds (monotonic)."""
        since = self.snap.liveness.healthy_since
        return since is not None and self.now.mono - since >= self.snap.config.restart.reset_after

    def reach(self) -> Reach:
        """How the load pass reaches the models it wants (``models``, ``lms``, ``url``,
        ``rest``, ``capabilities``): the fields :class:`LoadModels` and :class:`Unload`
        share, from which the I/O side chooses REST or `lms`."""
        lm = self.snap.lmstudio
        return {
            "models": self.wanted(),
            "lms": lm.install.lms if lm.install else None,
            "url": base_url(lm.server.bind, lm.server.port),
            "rest": bool(lm.rest),
            "capabilities": lm.capabilities,
        }

    def wanted(self) -> tuple[ModelConfig, ...]:
        """Declared models to load now: not the TTL-unloaded ones (they wait for a restart)."""
        idle = {m.name for m in self.snap.models if m.state == "idle_unloaded"}
        return tuple(m for m in self.snap.config.models if model_name(m) not in idle)

    # -- models ------------------------------------------------------------------------
    def set_model(self, name: str, state: str, error: str | None = None) -> None:
        """Move the declared model ``name`` to ``state`` (with ``error``), logged and published; no change, no event."""
        current = self.snap.model(name)
        if current is None or (current.state, current.error) == (state, error):
            return
        new = replace(current, state=state, error=error, download=current.download if state == "downloading" else None)
        self.set(models=tuple(new if m.name == name else m for m in self.snap.models))
        fields: dict[str, Any] = {"model": name, "key": new.key, "state": state}
        if error:
            fields["error"] = error
        self.log("warning" if state == "failed" else "info", f"model_{_MODEL_EVENTS[state]}", **fields)
        self.emit(Publish({"type": "model", "key": new.key, "identifier": new.identifier, "state": state,
                           "error": error}))  # fmt: skip

    def update_model(self, name: str, **changes: Any) -> None:
        """Replace fields of the status of the declared model ``name`` (no event)."""
        self.set(models=tuple(replace(m, **changes) if m.name == name else m for m in self.snap.models))

    def note(self, prefix: str, problem: Problem | None) -> None:
        """Replace the notes whose code starts with ``prefix`` by ``problem`` (None: clear them)."""
        kept = tuple(p for p in self.snap.notes if not p.code.startswith(prefix))
        notes = (*kept, problem) if problem is not None else kept
        if notes != self.snap.notes:
            self.set(notes=notes)

    def models_pending(self, keep_failed: bool = True) -> None:
        """LM Studio lost (or may have lost) its models: nothing is reported loaded."""
        for m in self.snap.models:
            if m.state in ("loaded", "loading", "downloading") or (not keep_failed and m.state == "failed"):
                self.set_model(m.name, "pending")

    def forget_in_flight(self, loaded: tuple[LoadedModel, ...]) -> None:
        """In-flight loads that LM Studio now lists are done; expired ones are dropped."""
        declared = {model_name(m): m for m in self.snap.config.models}
        still = []
        for f in self.snap.work.in_flight:
            m = declared.get(f.name)
            shown = m is not None and plan([m], loaded, [])[0].decision is Decision.KEEP
            if not shown and f.deadline > self.now.mono:
                still.append(f)
        self.set_work(in_flight=tuple(still))

    def duplicates(self, loaded: tuple[LoadedModel, ...]) -> None:
        """Unload ``<name>:N`` instances of models we loaded while ``<name>`` itself is loaded."""
        ids = {i.identifier for i in loaded}
        for inst in loaded:
            base, sep, n = inst.identifier.rpartition(":")
            if sep and n.isdigit() and base in ids and base in self.snap.work.ours:
                self.log("warning", "duplicate_unloaded", identifier=inst.identifier, model=base)
                self.emit(Unload(inst.identifier, **self.reach()))

    # -- failure -----------------------------------------------------------------------
    def fail(
        self, reason: str, cause: str, daemon_gone: bool = False, signature: str | None = None,
        deterministic: bool = False,
    ) -> None:  # fmt: skip
        """A failure in an active state: back off, then climb the ladder (a deterministic
        one, or one whose daemon rung was spent, does not climb: see :class:`Restarts`)."""
        self.set_liveness(running=False)
        self.set_restarts(last_reason=reason, cause=cause, failure=signature or reason, deterministic=deterministic)
        if daemon_gone:
            self.set_work(in_flight=())
        self.models_pending()
        self.log("warning", "supervision_failed", reason=reason)
        self.fire(Trigger.FAILED, reason)

    def count_restart(self, reason: str, step: Rung) -> None:
        """Count one restart (``restarts.count``, ``last_at`` wall seconds) and publish it."""
        count = self.snap.restarts.count + 1
        self.set_restarts(count=count, last_at=self.now.wall, last_reason=reason)
        self.emit(Publish({"type": "restart", "count": count, "reason": reason,
                           "step": step.name.lower()}))  # fmt: skip

    # -- configuration -----------------------------------------------------------------
    def replace_config(self, new: Config) -> ConfigDiff:
        """Make ``new`` the config: model statuses, unloads we owe, log settings."""
        old = self.snap.config
        diff = config_diff(old, new)
        work = self.snap.work
        ours = work.ours
        unload = list(work.unload_next)
        if new.reconcile.unload_removed:
            unload += [n for n in diff.removed if n in ours]
        unload += [n for n in diff.rekeyed if n in ours]
        kept = tuple(m for m in self.snap.models if m.name not in diff.rekeyed)
        self.set(config=new, pending_config=None, models=statuses(new.models, kept))
        self.set_work(
            unload_next=tuple(dict.fromkeys(unload)),
            ours=ours - set(unload),
            in_flight=tuple(f for f in work.in_flight if f.name not in diff.removed),
        )
        if diff.relog:
            self.emit(Relog(new.log.level, new.log.format))
        if diff.needs_restart:
            keys = ", ".join(diff.needs_restart)
            self.set(config_error=f"{keys}: changed; applies when lmsupervisor restarts (until then, as it started)")
        self.log("info", "config_applied", restart_server=diff.restart_server, models=diff.reconcile_models)
        return diff

    def apply_config(self, new: Config) -> None:
        """Replace the config now and do what the difference requires in this state."""
        diff = self.replace_config(new)
        state = self.snap.state
        if diff.restart_server and accepts(state, Trigger.RECONFIGURE_SERVER):
            self.fire(Trigger.RECONFIGURE_SERVER, "server settings changed", Rung.RESTART_SERVER)
        elif (diff.reconcile_models or self.snap.work.unload_next) and state in (State.READY, State.DEGRADED):
            self.set_restarts(model_attempt=0)
            self.fire(Trigger.RECONFIGURE_MODELS, "declared models changed")

    def config_changed(self, new: Config) -> None:
        """A reloaded config that parsed: clears the config error, then applies ``new`` now, or
        holds it until the load pass ends when only the declared models changed."""
        self.set(config_error=None)
        self.emit(Publish({"type": "config", "error": None}))
        self.log("info", "config_reloaded")
        state = self.snap.state
        if state in (State.STOPPING, State.STOPPED):
            return
        diff = config_diff(self.snap.config, new)
        if state is State.LOADING_MODELS and diff.reconcile_models and not diff.restart_server:
            self.set(pending_config=new)  # applied when this load pass ends
            self.log("info", "config_held", until="the load pass ends")
            return
        self.apply_config(new)


_MODEL_EVENTS = {  # log event names, past tense, per model state entered
    "loaded": "loaded",
    "failed": "load_failed",
    "loading": "load_started",
    "downloading": "download_started",
    "pending": "requeued",
    "idle_unloaded": "idle_unloaded",
}
