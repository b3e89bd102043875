"""The reconcile core: ``reduce(snapshot, message, now) -> (snapshot, effects)``. Pure.

This is the only code that changes the supervisor's state, the whole of it: lifecycle,
models, problems, server settings, install, restarts. The state is
:class:`~lmsupervisor.core.snapshot.Snapshot`; messages are in
:mod:`lmsupervisor.core.messages`, effects in :mod:`lmsupervisor.core.effects`; the status document is rendered by
:mod:`lmsupervisor.core.status`. Messages come in (typed, frozen:
:class:`ServerUp`, :class:`BringUpFailed`, :class:`ModelsDone`, :class:`Probed`,
:class:`DaemonExited`, :class:`RestartRequested`, :class:`ConfigChanged`,
:class:`TimerFired` ...); a new :class:`Snapshot` and a tuple of effects come out
(:class:`BringUp`, :class:`LoadModels`, :class:`Schedule`, :class:`Watch`,
:class:`Publish` ...). The runner (:mod:`lmsupervisor.supervisor`) performs the effects
and turns whatever happens, exceptions included, into the next messages.

It is level-triggered (design §6): a bring-up adopts what runs and a load pass plans
from what LM Studio reports, so any pass may be repeated after any crash without harm.
Stale messages (from a cancelled action, an older timer, a previous server epoch) are
recognised by their ids and ignored. ``now`` carries the clock readings and a jitter
sample, so the function stays deterministic.

This module decides what each message means (:func:`reduce` is its one entry point);
:class:`~lmsupervisor.core.reduction.Reduction` is how a decision is written down (the
snapshot so far, the effects, the one place the lifecycle state changes).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lmsupervisor.core.configdiff import model_name
from lmsupervisor.core.effects import (
    Ask,
    Effect,
    Publish,
    ReadConfig,
    Remember,
    RememberHardware,
    RememberSpeed,
    Unload,
    Watch,
)
from lmsupervisor.core.hardware import gate
from lmsupervisor.core.messages import (
    CONFIG_ACTION,
    EFFECT_ACTION,
    HEALTH_ACTION,
    ActionCrashed,
    Answered,
    BringUpFailed,
    BringUpNoted,
    ConfigChanged,
    ConfigRejected,
    DaemonExited,
    LoadPassFailed,
    LoadSettled,
    LoadStarted,
    Message,
    ModelChanged,
    ModelDownload,
    ModelsDone,
    Noted,
    NotInstalled,
    Now,
    Observed,
    Probed,
    ReloadRequested,
    RestartRequested,
    Resumed,
    ServerUp,
    Start,
    StopRequested,
    Surveyed,
    SurveyRequested,
    TimerFired,
)
from lmsupervisor.core.observed import DownloadProgress, LoadedModel, ProbeResult
from lmsupervisor.core.policy import Rung, survey_delay
from lmsupervisor.core.preload import Decision, instance_of, plan
from lmsupervisor.core.problems import (
    GPU_PROBLEMS,
    MODEL_SLOW,
    Problem,
    bring_up_problem,
    crash_problem,
    gpu_problem,
    model_slow_problem,
    runtime_changed_problem,
    survey_failed_problem,
)
from lmsupervisor.core.reduction import Reduction
from lmsupervisor.core.snapshot import MODEL_STATES, InFlight, ModelStatus, Snapshot
from lmsupervisor.core.speed import SLOW_ANSWERS, Baseline, baseline_of, is_slow, on_gpu, speed_key
from lmsupervisor.core.states import State, Trigger, accepts

# The cause of a restart, as the reducer records it (``Snapshot.restarts.cause``): the
# ``lmsupervisor_restarts_total{reason}`` label values, every one reachable.
RESTART_CAUSES = ("requested", "probe_failed", "daemon_exited", "bring_up_failed", "action_crashed", "gpu_missing")
LOAD_DEADLINE = 900.0  # seconds a load we started may take to show up in `lms ps`


def reduce(snap: Snapshot, msg: Message, now: Now) -> tuple[Snapshot, tuple[Effect, ...]]:
    """The next snapshot and the effects to perform, for ``msg`` arriving at ``now``.

    Pure and total: a message that does not apply in the current state (a stale id, a
    probe during a bring-up) returns the snapshot unchanged. Raises
    :class:`~lmsupervisor.core.states.IllegalTransition` only on a bug in this module.
    """
    r = Reduction(snap, now)
    _dispatch(r, msg)
    before, after = snap.all_problems, r.snap.all_problems
    if [p.code for p in before] != [p.code for p in after]:
        r.emit(Publish({"type": "problems", "problems": [p.to_json() for p in after]}))
    return r.snap, tuple(r.effects)


def _dispatch(r: Reduction, msg: Message) -> None:
    s = r.snap
    state, lm, work = s.state, s.lmstudio, s.work
    match msg:
        case Start():
            if state is State.STOPPED:
                r.fire(Trigger.START, "supervisor started")  # STOPPED -> STARTING
        case StopRequested(reason=reason):
            if accepts(state, Trigger.STOP):
                r.fire(Trigger.STOP, reason)  # * -> STOPPING
                # LM Studio is left running on purpose: a supervisor restart must not
                # take the models down (design §6).
                r.fire(Trigger.STOPPED, "supervisor stopped; LM Studio left running")
        case ServerUp() if msg.action == work.action and state is State.STARTING:
            new_daemon = msg.daemon is not None and (lm.daemon is None or lm.daemon.pid != msg.daemon.pid)
            r.set(problems=msg.install.problems, notes=msg.problems)
            r.set_lmstudio(
                install=msg.install,
                server=msg.server,
                daemon=msg.daemon,
                lms_version=msg.version or lm.lms_version,
                capabilities=msg.capabilities or lm.capabilities,
                rest=msg.rest,
                rest_drift=False,
            )
            r.set_liveness(running=True, consecutive_failures=0)
            r.set_work(in_flight=() if new_daemon and not msg.adopted else work.in_flight)
            r.set_restarts(failure=None, deterministic=False)
            if msg.settings_source_ok and msg.install.server.found and msg.install.server != lm.last_good_server:
                r.set_lmstudio(last_good_server=msg.install.server)
                r.emit(Remember(msg.install.server))
            r.emit(Watch(msg.daemon))
            r.log("info", "server_adopted" if msg.adopted else "server_started", reason=msg.reason,
                  daemon_pid=msg.daemon.pid if msg.daemon else None)  # fmt: skip
            r.fire(Trigger.SERVER_UP, msg.reason)  # STARTING -> LOADING_MODELS
        case NotInstalled() if msg.action == work.action and state is State.STARTING:
            r.set(problems=msg.install.problems)
            r.set_lmstudio(install=msg.install)
            r.set_liveness(running=False)
            r.fire(Trigger.NOT_INSTALLED, msg.reason)  # STARTING -> NOT_INSTALLED
        case BringUpFailed() if msg.action == work.action and state is State.STARTING:
            if msg.install is not None:
                r.set(problems=msg.install.problems)
                r.set_lmstudio(install=msg.install)
            problem = msg.problem or bring_up_problem(msg.reason)
            # This bring-up's problems (those it noted on its way are among them) replace the last
            # one's, unless the same cause persists: then what an earlier rung found (a hung app it
            # spared) is still true.
            signature = f"{problem.code}: {problem.message}"
            earlier = s.notes if signature == s.restarts.failure else ()
            r.set(notes=_by_code((*earlier, *msg.problems, problem)))
            r.set_lmstudio(capabilities=msg.capabilities or lm.capabilities)
            r.log("warning", "bring_up_failed", reason=msg.reason, problem=problem.code,
                  deterministic=msg.deterministic)  # fmt: skip
            r.fail(msg.reason, "bring_up_failed", signature=signature, deterministic=msg.deterministic)  # -> BACKOFF
        case BringUpNoted(problem=problem) if msg.action == work.action and state is State.STARTING:
            r.set(notes=_with(s.notes, problem.code, problem))
        case LoadStarted(name=name):
            if r.snap.model(name) is not None:
                others = tuple(f for f in work.in_flight if f.name != name)
                r.set_work(in_flight=(*others, InFlight(name, r.now.mono + LOAD_DEADLINE)))
        case LoadSettled(name=name):
            r.set_work(in_flight=tuple(f for f in work.in_flight if f.name != name))
        case ModelChanged() if msg.action == work.action and state is State.LOADING_MODELS:
            if msg.state in MODEL_STATES:
                r.set_model(msg.name, msg.state, msg.error)
        case ModelDownload() if msg.action == work.action and state is State.LOADING_MODELS:
            _download(r, msg.name, msg.progress)
        case Surveyed() if msg.action == work.action and state is State.LOADING_MODELS:
            _surveyed(r, msg)
        case Surveyed() if msg.action == work.action and state in (State.READY, State.DEGRADED):
            _surveyed(r, msg, running=True)
        case SurveyRequested(refresh=refresh) if state in (State.READY, State.DEGRADED) and r.survey_due():
            r.survey(refresh)
        case Resumed(seconds=seconds):
            _resumed(r, seconds)
        case LoadPassFailed() if msg.action == work.action and state is State.LOADING_MODELS:
            for m in s.models:
                if m.state in ("pending", "loading", "downloading"):
                    r.set_model(m.name, "failed", msg.reason)
            r.fire(Trigger.MODEL_FAILED, msg.reason)  # LOADING_MODELS -> DEGRADED, retried later
        case ModelsDone() if msg.action == work.action and state is State.LOADING_MODELS:
            r.set_work(ours=work.ours | set(msg.ours))
            r.set_lmstudio(rest_drift=msg.rest)
            r.forget_in_flight(msg.loaded)
            r.duplicates(msg.loaded)
            _verify_models(r, msg.loaded)
            for answer in msg.answers:
                _update_model(r, answer.name, asked_at=r.now.mono)  # the next ask is an interval away
                _answered(r, answer, reload=False)
            pending = r.snap.pending_config
            if pending is not None:
                r.apply_config(pending)
                if r.snap.state is State.LOADING_MODELS:  # still here: reconcile the new models now
                    r.fire(Trigger.RECONFIGURE_MODELS, "declared models changed while loading")
                return
            failed = [m.name for m in r.snap.models if m.state == "failed"]
            if failed:
                r.fire(Trigger.MODEL_FAILED, f"model failed: {', '.join(failed)}")  # -> DEGRADED
            else:
                r.set_restarts(model_attempt=0)
                r.fire(Trigger.MODELS_LOADED, "all declared models are loaded")  # -> READY
        case Probed() if msg.epoch == work.epoch and state in (State.LOADING_MODELS, State.READY, State.DEGRADED):
            _probed(r, msg.result)
            if msg.result.ok and state in (State.READY, State.DEGRADED):
                _ask_due(r)
        case Observed() if msg.epoch == work.epoch and state in (State.READY, State.DEGRADED):
            if msg.rest:
                _note(r, "api_token_", msg.problem)
            _observed(r, msg.loaded)
        case Answered() if msg.epoch == work.epoch and state in (State.READY, State.DEGRADED):
            _answered(r, msg, reload=True)
        case DaemonExited(pid=pid) if lm.daemon is not None and pid == lm.daemon.pid:
            r.set_lmstudio(daemon=None)
            r.set_work(in_flight=())
            r.set_liveness(running=False)
            r.models_pending()
            reason = f"LM Studio's daemon (PID {pid}) exited"
            r.log("warning", "daemon_exited", pid=pid)
            if state in (State.LOADING_MODELS, State.READY, State.DEGRADED):
                r.fail(reason, "daemon_exited", daemon_gone=True)  # -> BACKOFF
        case TimerFired(gen=gen) if gen == work.timer:
            _timer(r)
        case RestartRequested(daemon=daemon, reason=reason):
            if accepts(state, Trigger.RESTART):
                step = Rung.RESTART_DAEMON if daemon else Rung.RESTART_SERVER
                for m in s.models:
                    if m.state == "idle_unloaded":
                        r.set_model(m.name, "pending")  # an explicit restart reloads them
                r.set_restarts(cause="requested", failure=None, deterministic=False)
                r.count_restart(reason, step)
                r.models_pending()
                r.fire(Trigger.RESTART, reason, step)  # * -> STARTING
        case ReloadRequested():
            r.emit(ReadConfig())
        case ConfigChanged(config=new):
            r.config_changed(new)
            gated = state is State.LOADING_MODELS and s.hardware.waiting_since is not None
            if gated and r.snap.state is State.LOADING_MODELS and new.gpu != s.config.gpu:
                r.survey(refresh=True)  # judged again under the new [gpu] now, not at the next re-survey
        case ConfigRejected(error=error, key=key):
            r.set(config_error=error)
            r.log("error", "config_rejected", error=error, key=key)
            r.emit(Publish({"type": "config", "error": error}))
        case Noted(code=code, problem=problem):
            r.set(standing=_with(s.standing, code, problem))
        case ActionCrashed():
            _crashed(r, msg)
        case _:
            return  # stale or not applicable in this state


def _verify_models(r: Reduction, loaded: tuple[LoadedModel, ...]) -> None:
    """After a load pass, `lms ps --json` is the truth (a zero exit is not proof, facts §3)."""
    wanted = {model_name(m) for m in r.wanted()}
    for item in plan(r.snap.config.models, loaded, []):
        name = model_name(item.model)
        status = r.snap.model(name)
        if status is None:
            continue
        if item.decision is Decision.KEEP:
            r.set_model(name, "loaded")
            inst = instance_of(item.model, loaded)
            if inst is not None:
                current = r.snap.model(name) or status
                new = replace(current, instance=inst.identifier, kind=inst.type)
                r.set(models=tuple(new if m.name == name else m for m in r.snap.models))
        elif name in wanted and status.state not in ("failed", "idle_unloaded"):
            if any(f.name == name for f in r.snap.work.in_flight):
                r.set_model(name, "failed", "still loading in LM Studio (a load started earlier has not finished)")
            else:
                r.set_model(name, "failed", "not listed by `lms ps --json` after loading")


def _with(problems: tuple[Problem, ...], code: str, problem: Problem | None) -> tuple[Problem, ...]:
    """``problems`` with the one called ``code`` replaced by ``problem`` (None: removed)."""
    kept = tuple(p for p in problems if p.code != code)
    return (*kept, problem) if problem is not None else kept


def _note(r: Reduction, prefix: str, problem: Problem | None) -> None:
    """Replace the notes whose code starts with ``prefix`` by ``problem`` (None: clear them)."""
    kept = tuple(p for p in r.snap.notes if not p.code.startswith(prefix))
    notes = (*kept, problem) if problem is not None else kept
    if notes != r.snap.notes:
        r.set(notes=notes)


def _download(r: Reduction, name: str, progress: DownloadProgress) -> None:
    """REST v1 download progress: in ``models[].download`` and a ``model`` event."""
    current = r.snap.model(name)
    if current is None:
        return
    new = replace(current, state="downloading", error=None, download=progress)
    r.set(models=tuple(new if m.name == name else m for m in r.snap.models))
    r.emit(Publish({"type": "model", "key": new.key, "identifier": new.identifier, "state": "downloading",
                    "error": None, "download": progress.to_json()}))  # fmt: skip


def _probed(r: Reduction, result: ProbeResult) -> None:
    s = r.snap
    r.set_liveness(last_probe_ms=result.latency_ms)
    if result.ok:
        r.set_liveness(consecutive_failures=0, running=True)
        if s.state is State.READY and s.restarts.attempt and r.healthy_long_enough():
            r.log("info", "backoff_reset", after_attempts=s.restarts.attempt)
            r.set_restarts(attempt=0, spent=None)
        return
    failures = s.liveness.consecutive_failures + 1
    r.set_liveness(consecutive_failures=failures)
    r.log("warning", "probe_failed", error=result.error, consecutive=failures)
    if failures >= s.config.health.failures_before_restart:
        r.fail(f"server failed {failures} probes: {result.error}", "probe_failed")  # -> BACKOFF


def _observed(r: Reduction, loaded: tuple[LoadedModel, ...]) -> None:
    r.forget_in_flight(loaded)
    r.duplicates(loaded)
    gone = []
    for m in r.snap.config.models:
        status = r.snap.model(model_name(m))
        if status is None or status.state != "loaded" or m.probe == "none":
            continue
        if plan([m], loaded, [])[0].decision is Decision.KEEP:
            continue
        if m.ttl is not None:
            # TTL is not drift: LM Studio unloaded it after its idle time (facts §8).
            r.set_model(status.name, "idle_unloaded")
        else:
            r.set_model(status.name, "pending")
            gone.append(status.name)
    if gone:
        names = ", ".join(gone)
        r.log("warning", "model_drifted", models=names)
        r.fire(Trigger.DRIFT, f"declared model no longer loaded: {names}")  # -> LOADING_MODELS


def _update_model(r: Reduction, name: str, **changes: Any) -> None:
    """Replace fields of the status of the declared model ``name`` (no event)."""
    r.set(models=tuple(replace(m, **changes) if m.name == name else m for m in r.snap.models))


def _ask_due(r: Reduction) -> None:
    """Deep readiness, on a good probe: ask each loaded model with probe = "answer" whose
    last ask is ``health.answer_interval`` seconds old (the load pass asked it first; one
    first seen loaded is asked an interval later)."""
    s = r.snap
    declared = {model_name(m): m for m in s.config.models}
    for status in s.models:
        m = declared.get(status.name)
        if m is None or m.probe != "answer" or status.state != "loaded" or status.instance is None:
            continue
        if status.asked_at is not None and r.now.mono - status.asked_at < s.config.health.answer_interval:
            continue
        _update_model(r, status.name, asked_at=r.now.mono)
        if status.asked_at is not None:
            timeout = s.config.health.answer_timeout
            r.emit(
                Ask(
                    epoch=s.work.epoch,
                    name=status.name,
                    instance=status.instance,
                    kind=status.kind,
                    timeout=timeout,
                    tokens=s.config.health.answer_tokens,
                )
            )


def _answered(r: Reduction, answer: Answered, reload: bool) -> None:
    """A loaded model that cannot answer is failed with LM Studio's words, and reloaded
    (unloaded first) by the next load pass, under the model backoff. A 401 is the token's
    problem (noted; the model stays loaded: no reload can fix a token); an answer clears it."""
    status = r.snap.model(answer.name)
    if status is None or status.state != "loaded":
        return
    if answer.problem is not None or answer.ok:
        _note(r, "api_token_", answer.problem)
    if answer.problem is not None:
        r.log("warning", "model_answer_refused", model=answer.name, error=answer.error)
        return
    if answer.ok:
        _update_model(r, answer.name, last_answer_ms=round(answer.latency_ms, 3))
        if answer.tokens_per_second is not None:
            _measured(r, status, answer.tokens_per_second)
        return
    r.log("warning", "model_answer_failed", model=answer.name, error=answer.error)
    r.set_model(answer.name, "failed", answer.error or "did not answer")
    r.set_work(unload_next=tuple(dict.fromkeys((*r.snap.work.unload_next, answer.name))))
    if reload and r.snap.state is State.READY:
        r.fire(Trigger.DRIFT, f"declared model does not answer: {answer.name}")  # READY -> LOADING_MODELS


# -- speed (design §9 [health] answer_tokens, slow_factor; core.speed) ----------------------
def _measured(r: Reduction, status: ModelStatus, figure: float) -> None:
    """An answer of ``status``'s model measured ``figure`` tokens/s. With no baseline for its
    key (model, LM Studio version, runtime) under a GPU survey, it becomes the baseline
    (kept in the state folder); with one, a figure below ``slow_factor`` of it counts a slow
    answer in a row (:data:`SLOW_ANSWERS` of them: ``model_slow``, a re-survey on a GPU
    machine, and with ``reload_when_slow`` one reload per cause), and one at speed clears
    the count and the problem."""
    s, name = r.snap, status.name
    declared = next((m for m in s.config.models if model_name(m) == name), None)
    if declared is None:
        return
    survey = s.hardware.survey
    key = speed_key(status.key, s.lmstudio.lms_version, survey)
    _update_model(r, name, tokens_per_second=round(figure, 3))
    if key is None:  # no GPU survey: no baseline is set or judged (the gate speaks for the GPU)
        return
    baseline = baseline_of(s.baselines, key)
    if baseline is None:
        new = Baseline(*key, tokens_per_second=round(figure, 3))
        r.set(baselines=(*s.baselines, new))
        r.emit(RememberSpeed(r.snap.baselines))
        r.log("info", "speed_baseline_set", model=name, tokens_per_second=new.tokens_per_second,
              lmstudio=new.lmstudio, runtime=new.runtime)  # fmt: skip
        return
    slow = status.slow + 1 if is_slow(figure, baseline.tokens_per_second, s.config.health.slow_factor) else 0
    _update_model(r, name, slow=slow)
    if slow == 0 and status.slow >= SLOW_ANSWERS:
        r.log("info", "model_speed_recovered", model=name, tokens_per_second=round(figure, 3))
        _update_model(r, name, slow_reloaded=False)  # a new slowness is a new cause
    _slow_problem(r)
    if slow < SLOW_ANSWERS:
        return
    if slow == SLOW_ANSWERS:
        r.log("warning", "model_slow", model=name, tokens_per_second=round(figure, 3),
              baseline=baseline.tokens_per_second)  # fmt: skip
    reload = declared.reload_when_slow and not status.slow_reloaded and r.snap.state in (State.READY, State.DEGRADED)
    if reload:
        _update_model(r, name, slow_reloaded=True)
        r.log("warning", "model_reloaded_slow", model=name, identifier=status.instance or name)
        r.set_work(unload_next=tuple(dict.fromkeys((*r.snap.work.unload_next, status.instance or name))))
        r.set_model(name, "pending")
        r.fire(Trigger.DRIFT, f"declared model is slow: {name}")  # -> LOADING_MODELS (surveys first)
    elif slow == SLOW_ANSWERS and on_gpu(survey) and r.snap.state in (State.READY, State.DEGRADED) and r.survey_due():
        r.survey(refresh=True)  # a GPU lost while idle shows here first: the gate then says gpu_missing


def _slow_problem(r: Reduction) -> None:
    """``model_slow`` from the models' counts: one problem naming every slow model."""
    s = r.snap
    slow = []
    for m in s.models:
        baseline = s.baseline(m)
        if m.slow >= SLOW_ANSWERS and m.tokens_per_second is not None:
            slow.append((m.name, m.tokens_per_second, baseline.tokens_per_second if baseline else None))
    problem = model_slow_problem(slow, s.config.health.slow_factor, on_gpu(s.hardware.survey))
    if problem != next((p for p in s.standing if p.code == MODEL_SLOW), None):
        r.set(standing=_with(s.standing, MODEL_SLOW, problem))


# -- resume from sleep ----------------------------------------------------------------------
def _resumed(r: Reduction, seconds: float) -> None:
    """The machine slept ``seconds``: LM Studio's GPU may be gone (Ollama #10053) and its
    models with it. Logged ``resumed`` (and counted by the metrics' observer); the health
    loop that saw it probes in the same round. Ready or degraded: survey again with
    ``--refresh`` and mark every answer-probed model due, so the next good probe asks them.
    Waiting behind the GPU gate: survey again now rather than at the backoff's timer.
    Elsewhere the bring-up or load pass in progress surveys anyway."""
    s = r.snap
    r.log("warning", "resumed", asleep=round(seconds, 3), state=s.state.value)
    if s.state in (State.READY, State.DEGRADED):
        due = r.now.mono - s.config.health.answer_interval
        answering = {model_name(m) for m in s.config.models if m.probe == "answer"}
        for m in s.models:
            if m.name in answering and m.state == "loaded":
                _update_model(r, m.name, asked_at=due)
        if r.survey_due():
            r.survey(refresh=True)
    elif s.state is State.LOADING_MODELS and s.hardware.waiting_since is not None:
        r.survey(refresh=True)


def _timer(r: Reduction) -> None:
    s = r.snap
    if s.state is State.BACKOFF:
        step = r.rung()
        if step >= Rung.RESTART_DAEMON:
            r.set_restarts(spent=s.restarts.failure)  # this cause has had its daemon rung
        r.count_restart(s.restarts.last_reason or "retry", step)
        r.fire(Trigger.TIMER, f"retry {s.restarts.attempt}: {step.name.lower()}", step)  # BACKOFF -> STARTING
    elif s.state is State.NOT_INSTALLED:
        r.fire(Trigger.TIMER, "checking for LM Studio again")  # NOT_INSTALLED -> STARTING
    elif s.state is State.DEGRADED:
        r.fire(Trigger.TIMER, "retrying the failed models")  # DEGRADED -> LOADING_MODELS
    elif s.state is State.LOADING_MODELS and s.hardware.waiting_since is not None:
        _gate_timer(r)


# -- the GPU gate (design §9 [gpu]) ---------------------------------------------------------
def _surveyed(r: Reduction, msg: Surveyed, running: bool = False) -> None:
    """A survey before a load pass ended: note a runtime re-selected, keep the survey, and
    open the gate (the load pass starts) or keep it closed (re-survey later, see
    :func:`_gate_closed`). A config held meanwhile applies now: no load pass runs.

    ``running``: a survey asked for while ready or degraded (:class:`SurveyRequested`);
    open, nothing changes; closed, the models we loaded are unloaded (they may run on the
    CPU now) and the load pass that follows waits behind the gate."""
    if r.snap.pending_config is not None:
        r.replace_config(r.snap.pending_config)
    cfg = r.snap.config
    if msg.runtime is not None:
        found, declared = msg.runtime
        r.set(notes=_with(r.snap.notes, "runtime_changed", runtime_changed_problem(found, declared, msg.runtime_error)))
        r.log("warning", "runtime_reselected" if msg.runtime_error is None else "runtime_select_failed",
              found=found, declared=declared, error=msg.runtime_error)  # fmt: skip
    hw, last_good = msg.hardware, r.snap.hardware.last_good
    if hw is not None:
        r.set_hardware(survey=hw)
        verdict = gate(hw, last_good, cfg.gpu.require)
        if verdict.remember:
            r.set_hardware(last_good=hw)
            r.emit(RememberHardware(hw))
        problem, opened = gpu_problem(hw, verdict, cfg.gpu.wait), verdict.open
        r.log("info", "hardware_surveyed", gpus=len(hw.gpus), runtime=hw.runtime.key if hw.runtime else None,
              compatibility=hw.compatibility.status, gate="open" if opened else "closed")  # fmt: skip
    elif msg.error is not None:
        required = cfg.gpu.require is True or (cfg.gpu.require == "auto" and last_good is not None and last_good.gpus)
        problem, opened = survey_failed_problem(msg.error, bool(required)), not required
        r.log("warning", "hardware_survey_failed", error=msg.error, gate="open" if opened else "closed")
    else:  # this `lms` has no `runtime survey` (before 2025-12-18): nothing to gate on
        problem, opened = None, True
    kept = tuple(p for p in r.snap.standing if p.code not in GPU_PROBLEMS)
    r.set(standing=(*kept, problem) if problem is not None else kept)
    if not opened and running:
        ours = r.snap.work.ours
        for m in r.snap.models:
            instance = m.instance or m.name
            if m.state == "loaded" and instance in ours:
                r.log("warning", "model_unloaded_off_gpu", model=m.name, identifier=instance)
                r.emit(Unload(instance, **r.reach()))
        r.models_pending()
        r.fire(Trigger.DRIFT, "the GPU is gone: models wait for it")  # -> LOADING_MODELS (surveys again)
        return
    if not opened:
        _gate_closed(r)
        return
    if running:
        return
    since = r.snap.hardware.waiting_since
    if since is not None:
        r.log("info", "gpu_gate_opened", waited=round(r.now.mono - since, 3))
    r.set_hardware(waiting_since=None, attempt=0, restart_spent=False)
    r.load_pass()


def _gate_closed(r: Reduction) -> None:
    """No model loads: survey again after the backoff (:func:`survey_delay`), counted from
    the first closed survey of this wait (kept across the bring-ups in between)."""
    hw = r.snap.hardware
    since = hw.waiting_since if hw.waiting_since is not None else r.now.mono
    attempt = hw.attempt + 1
    r.set_hardware(waiting_since=since, attempt=attempt)
    delay = survey_delay(r.snap.config.restart, attempt, r.now.jitter)
    r.arm(delay)
    r.log("warning", "gpu_gate_closed", attempt=attempt, retry_in=round(delay, 3),
          waited=round(r.now.mono - since, 3))  # fmt: skip


def _gate_timer(r: Reduction) -> None:
    """The gate's timer: once ``[gpu] wait`` seconds have passed, restart LM Studio's daemon
    (a fresh daemon detects the driver again), once per wait (``restart_spent``, reset
    when the gate opens); otherwise, and ever after, survey again with ``--refresh``."""
    hw, cfg = r.snap.hardware, r.snap.config
    waited = r.now.mono - (r.now.mono if hw.waiting_since is None else hw.waiting_since)
    if waited < cfg.gpu.wait or hw.restart_spent:
        r.survey(refresh=True)
        return
    reason = f"no usable GPU after {waited:.0f} s of surveys ([gpu] wait): restarting LM Studio's daemon once"
    r.set_hardware(restart_spent=True)
    r.set_restarts(cause="gpu_missing", failure=None, deterministic=False)
    r.count_restart(reason, Rung.RESTART_DAEMON)
    r.log("warning", "gpu_wait_over", waited=round(waited, 3))
    r.fire(Trigger.GPU_WAIT_OVER, reason, Rung.RESTART_DAEMON)  # LOADING_MODELS -> STARTING


def _crashed(r: Reduction, msg: ActionCrashed) -> None:
    s = r.snap
    r.log("error", "action_crashed", effect=msg.effect, error=msg.error)
    problem = crash_problem(msg.effect, msg.error)
    if msg.action == EFFECT_ACTION:  # a synchronous effect: shown, never the running action's failure
        r.set(standing=_with(s.standing, problem.code, problem))
    elif msg.action == CONFIG_ACTION:
        r.set(config_error=f"reading the config failed: {msg.error}")
        r.emit(Publish({"type": "config", "error": r.snap.config_error}))
    elif msg.action == HEALTH_ACTION:
        if s.state in (State.LOADING_MODELS, State.READY, State.DEGRADED):
            _probed(r, ProbeResult(False, 0.0, None, f"{msg.effect} crashed: {msg.error}"))
    elif msg.action == s.work.action and s.state in (State.STARTING, State.LOADING_MODELS):
        # Our own code failed: restarting LM Studio cannot fix it. Shown at once, retried
        # under backoff at rung START only (nothing of LM Studio's is stopped or killed).
        r.set(notes=_with(s.notes, problem.code, problem))
        r.fail(f"{msg.effect} crashed: {msg.error}", "action_crashed", deterministic=True)  # -> BACKOFF


def _by_code(problems: tuple[Problem, ...]) -> tuple[Problem, ...]:
    """``problems`` with one problem per code (the last one wins)."""
    return tuple({p.code: p for p in problems}.values())
