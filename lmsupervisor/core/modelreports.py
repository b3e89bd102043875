"""The reducer's handlers for what LM Studio says about the declared models. Pure.

:func:`lmsupervisor.core.reducer.reduce` dispatches here: the end of a load pass
(:func:`verify_models`: `lms ps --json` is the truth), download progress, a probe of the
server (:func:`probed`), a listing seen by the health loop (:func:`observed`: drift, or a
TTL unload), deep readiness (:func:`ask_due` emits :class:`Ask`, :func:`answered` judges the
answer) and the speed of each answer against its baseline (the rules are
:mod:`lmsupervisor.core.speed`'s; ``model_slow``, a re-survey, a reload)."""

from __future__ import annotations

from dataclasses import replace

from lmsupervisor.core.configdiff import model_name
from lmsupervisor.core.effects import Ask, Publish, RememberSpeed
from lmsupervisor.core.messages import Answered
from lmsupervisor.core.observed import DownloadProgress, LoadedModel, ProbeResult
from lmsupervisor.core.preload import Decision, instance_of, plan
from lmsupervisor.core.problems import MODEL_SLOW, model_slow_problem
from lmsupervisor.core.reduction import Reduction, with_problem
from lmsupervisor.core.snapshot import ModelStatus
from lmsupervisor.core.speed import SLOW_ANSWERS, Baseline, baseline_of, is_slow, on_gpu, speed_key
from lmsupervisor.core.states import State, Trigger


def verify_models(r: Reduction, loaded: tuple[LoadedModel, ...]) -> None:
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


def download(r: Reduction, name: str, progress: DownloadProgress) -> None:
    """REST v1 download progress: in ``models[].download`` and a ``model`` event."""
    current = r.snap.model(name)
    if current is None:
        return
    new = replace(current, state="downloading", error=None, download=progress)
    r.set(models=tuple(new if m.name == name else m for m in r.snap.models))
    r.emit(Publish({"type": "model", "key": new.key, "identifier": new.identifier, "state": "downloading",
                    "error": None, "download": progress.to_json()}))  # fmt: skip


def probed(r: Reduction, result: ProbeResult) -> None:
    """A probe of LM Studio's server: a good one clears the failure count (and, ready long
    enough, the backoff); ``health.failures_before_restart`` bad ones in a row fail."""
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


def observed(r: Reduction, loaded: tuple[LoadedModel, ...]) -> None:
    """The health loop's listing ``loaded``: a declared model gone is drift (reloaded), or
    idle-unloaded when it has a TTL (facts §8)."""
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


def ask_due(r: Reduction) -> None:
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
        r.update_model(status.name, asked_at=r.now.mono)
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


def answered(r: Reduction, answer: Answered, reload: bool) -> None:
    """A loaded model that cannot answer is failed with LM Studio's words, and reloaded
    (unloaded first) by the next load pass, under the model backoff. A 401 is the token's
    problem (noted; the model stays loaded: no reload can fix a token); an answer clears it."""
    status = r.snap.model(answer.name)
    if status is None or status.state != "loaded":
        return
    if answer.problem is not None or answer.ok:
        r.note("api_token_", answer.problem)
    if answer.problem is not None:
        r.log("warning", "model_answer_refused", model=answer.name, error=answer.error)
        return
    if answer.ok:
        r.update_model(answer.name, last_answer_ms=round(answer.latency_ms, 3))
        if answer.tokens_per_second is not None:
            _measured(r, status, answer.tokens_per_second)
        return
    r.log("warning", "model_answer_failed", model=answer.name, error=answer.error)
    r.set_model(answer.name, "failed", answer.error or "did not answer")
    r.set_work(unload_next=tuple(dict.fromkeys((*r.snap.work.unload_next, answer.name))))
    if reload and r.snap.state is State.READY:
        r.fire(Trigger.DRIFT, f"declared model does not answer: {answer.name}")  # READY -> LOADING_MODELS


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
    r.update_model(name, tokens_per_second=round(figure, 3))
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
    r.update_model(name, slow=slow)
    if slow == 0 and status.slow >= SLOW_ANSWERS:
        r.log("info", "model_speed_recovered", model=name, tokens_per_second=round(figure, 3))
        r.update_model(name, slow_reloaded=False)  # a new slowness is a new cause
    _slow_problem(r)
    if slow < SLOW_ANSWERS:
        return
    if slow == SLOW_ANSWERS:
        r.log("warning", "model_slow", model=name, tokens_per_second=round(figure, 3),
              baseline=baseline.tokens_per_second)  # fmt: skip
    reload = declared.reload_when_slow and not status.slow_reloaded and r.snap.state in (State.READY, State.DEGRADED)
    if reload:
        r.update_model(name, slow_reloaded=True)
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
        r.set(standing=with_problem(s.standing, MODEL_SLOW, problem))
