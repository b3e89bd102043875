"""The reducer's handlers for the GPU gate and resume from sleep (design §9 ``[gpu]``). Pure.

:func:`lmsupervisor.core.reducer.reduce` dispatches here: a survey before a load pass or
while running (:func:`surveyed`: the runtime re-selected, the gate open or closed; the
verdict itself is :func:`lmsupervisor.core.hardware.gate`'s), the gate's timer
(:func:`gate_timer`: survey again, or restart the daemon once per wait) and the machine
waking up (:func:`resumed`)."""

from __future__ import annotations

from lmsupervisor.core.configdiff import model_name
from lmsupervisor.core.effects import RememberHardware, Unload
from lmsupervisor.core.hardware import gate
from lmsupervisor.core.messages import Surveyed
from lmsupervisor.core.policy import Rung, survey_delay
from lmsupervisor.core.problems import GPU_PROBLEMS, gpu_problem, runtime_changed_problem, survey_failed_problem
from lmsupervisor.core.reduction import Reduction, with_problem
from lmsupervisor.core.states import State, Trigger


def resumed(r: Reduction, seconds: float) -> None:
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
                r.update_model(m.name, asked_at=due)
        if r.survey_due():
            r.survey(refresh=True)
    elif s.state is State.LOADING_MODELS and s.hardware.waiting_since is not None:
        r.survey(refresh=True)


def surveyed(r: Reduction, msg: Surveyed, running: bool = False) -> None:
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
        r.set(
            notes=with_problem(
                r.snap.notes, "runtime_changed", runtime_changed_problem(found, declared, msg.runtime_error)
            )
        )
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


def gate_timer(r: Reduction) -> None:
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
