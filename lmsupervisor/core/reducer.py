"""The reconcile core: ``reduce(snapshot, message, now) -> (snapshot, effects)``. Pure.

This is the only code that changes the supervisor's state, the whole of it: lifecycle,
models, problems, server settings, install, restarts. The state is
:class:`~lmsupervisor.core.snapshot.Snapshot`; messages are in
:mod:`lmsupervisor.core.messages`, effects in :mod:`lmsupervisor.core.effects`; the
status document is rendered by :mod:`lmsupervisor.core.status`. Messages come in (typed, frozen:
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

This module decides what each message means (:func:`reduce` is its one entry point, its
``match`` the one dispatch): the lifecycle, restarts, config and crashes here; what LM
Studio says about the models (load-pass results, probes, listings, answers, speed) in
:mod:`lmsupervisor.core.modelreports`; the GPU gate and resume from sleep in
:mod:`lmsupervisor.core.gpugate`. :class:`~lmsupervisor.core.reduction.Reduction` is how
a decision is written down (the snapshot so far, the effects, the one place the
lifecycle state changes).
"""

from __future__ import annotations

from lmsupervisor.core.effects import (
    Effect,
    Publish,
    ReadConfig,
    Remember,
    Watch,
)
from lmsupervisor.core.gpugate import gate_timer, resumed, surveyed
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
from lmsupervisor.core.modelreports import answered, ask_due, download, observed, probed, verify_models
from lmsupervisor.core.observed import ProbeResult
from lmsupervisor.core.policy import Rung
from lmsupervisor.core.problems import (
    Problem,
    bring_up_problem,
    crash_problem,
)
from lmsupervisor.core.reduction import Reduction, with_problem
from lmsupervisor.core.snapshot import MODEL_STATES, InFlight, Snapshot
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
            r.set(notes=with_problem(s.notes, problem.code, problem))
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
            download(r, msg.name, msg.progress)
        case Surveyed() if msg.action == work.action and state is State.LOADING_MODELS:
            surveyed(r, msg)
        case Surveyed() if msg.action == work.action and state in (State.READY, State.DEGRADED):
            surveyed(r, msg, running=True)
        case SurveyRequested(refresh=refresh) if state in (State.READY, State.DEGRADED) and r.survey_due():
            r.survey(refresh)
        case Resumed(seconds=seconds):
            resumed(r, seconds)
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
            verify_models(r, msg.loaded)
            for answer in msg.answers:
                r.update_model(answer.name, asked_at=r.now.mono)  # the next ask is an interval away
                answered(r, answer, reload=False)
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
            probed(r, msg.result)
            if msg.result.ok and state in (State.READY, State.DEGRADED):
                ask_due(r)
        case Observed() if msg.epoch == work.epoch and state in (State.READY, State.DEGRADED):
            if msg.rest:
                r.note("api_token_", msg.problem)
            observed(r, msg.loaded)
        case Answered() if msg.epoch == work.epoch and state in (State.READY, State.DEGRADED):
            answered(r, msg, reload=True)
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
            r.set(standing=with_problem(s.standing, code, problem))
        case ActionCrashed():
            _crashed(r, msg)
        case _:
            return  # stale or not applicable in this state


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
        gate_timer(r)


def _crashed(r: Reduction, msg: ActionCrashed) -> None:
    s = r.snap
    r.log("error", "action_crashed", effect=msg.effect, error=msg.error)
    problem = crash_problem(msg.effect, msg.error)
    if msg.action == EFFECT_ACTION:  # a synchronous effect: shown, never the running action's failure
        r.set(standing=with_problem(s.standing, problem.code, problem))
    elif msg.action == CONFIG_ACTION:
        r.set(config_error=f"reading the config failed: {msg.error}")
        r.emit(Publish({"type": "config", "error": r.snap.config_error}))
    elif msg.action == HEALTH_ACTION:
        if s.state in (State.LOADING_MODELS, State.READY, State.DEGRADED):
            probed(r, ProbeResult(False, 0.0, None, f"{msg.effect} crashed: {msg.error}"))
    elif msg.action == s.work.action and s.state in (State.STARTING, State.LOADING_MODELS):
        # Our own code failed: restarting LM Studio cannot fix it. Shown at once, retried
        # under backoff at rung START only (nothing of LM Studio's is stopped or killed).
        r.set(notes=with_problem(s.notes, problem.code, problem))
        r.fail(f"{msg.effect} crashed: {msg.error}", "action_crashed", deterministic=True)  # -> BACKOFF


def _by_code(problems: tuple[Problem, ...]) -> tuple[Problem, ...]:
    """``problems`` with one problem per code (the last one wins)."""
    return tuple({p.code: p for p in problems}.values())
