"""The speed baseline and the resume from sleep (issue 17 parts 3 and 4, design §9) at the
reducer level: answers carrying tokens per second go in, ``model_slow``, reloads and
re-surveys come out; a ``Resumed`` re-verifies at once."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from lmsupervisor.config import Config, GpuConfig, HealthConfig, ModelConfig
from lmsupervisor.core.capabilities import CliCapabilities
from lmsupervisor.core.effects import Ask, Effect, LoadModels, Log, RememberSpeed, Survey
from lmsupervisor.core.hardware import Compatibility, Gpu, Hardware, RuntimeEngine
from lmsupervisor.core.messages import Answered, Message, ModelsDone, Probed, Resumed, Surveyed
from lmsupervisor.core.observed import ProbeResult
from lmsupervisor.core.reducer import reduce
from lmsupervisor.core.reduction import Reduction
from lmsupervisor.core.snapshot import HardwareSeen, LmStudioSeen, Snapshot
from lmsupervisor.core.speed import Baseline
from lmsupervisor.core.states import State as S
from lmsupervisor.core.status import render
from tests.scenarios.coredata import CFG, DAEMON, INSTALL, NOW, ONE, TWO, at
from tests.scenarios.fakes import FakeClock, FakeLmStudio, make_supervisor

CAPS = CliCapabilities("/x/lms", "1:1", "0.0.47", "new", frozenset(), True, False, runtime=True, survey=True)
CUDA = RuntimeEngine("llama.cpp-cuda", "1.52.1", "llama.cpp")
RTX = Hardware(
    (Gpu("NVIDIA GeForce RTX 4090", "CUDA", "discrete", 2**34),), CUDA, Compatibility("compatible"), surveyed_at=1.0
)
NO_GPU = replace(RTX, gpus=(), compatibility=Compatibility("gpuRequiredButNoneFound"))
SPEED = replace(
    CFG,
    health=replace(CFG.health, answer_tokens=16, answer_interval=60),
    models=(ModelConfig("a/one"), ModelConfig("b/two", identifier="two", probe="answer")),
    gpu=GpuConfig(),
)
RELOADING = replace(SPEED, models=(ModelConfig("a/one"), replace(SPEED.models[1], reload_when_slow=True)))
BASELINE = Baseline("b/two", "0.4.1", CUDA.key, 50.0)


def ready(config: Config = SPEED, baselines: tuple[Baseline, ...] = (), survey: Hardware = RTX) -> Snapshot:
    """Ready on the GPU: both models loaded (``two`` served as ``two``), LM Studio 0.4.1 with
    `lms runtime survey`, the last survey ``survey``."""
    snap = at(S.READY, loaded=True)
    models = tuple(replace(m, instance=m.name, asked_at=0.0) for m in snap.models)
    return replace(
        snap,
        config=config,
        models=models,
        lmstudio=LmStudioSeen(install=INSTALL, daemon=DAEMON, lms_version="0.4.1", capabilities=CAPS),
        hardware=HardwareSeen(survey=survey, last_good=RTX, epoch=2),
        baselines=baselines,
    )


def answer(figure: float | None, ok: bool = True) -> Answered:
    return Answered(2, "two", ok, 320.0, None if ok else "boom", tokens_per_second=figure)


def feed(snap: Snapshot, *msgs: Message) -> tuple[Snapshot, list[Effect]]:
    """Reduce ``msgs`` in turn; every effect, in order."""
    effects: list[Effect] = []
    for msg in msgs:
        snap, out = reduce(snap, msg, NOW)
        effects.extend(out)
    return snap, effects


def codes(snap: Snapshot) -> list[str]:
    return [p.code for p in snap.all_problems]


def logged(effects: list[Effect], event: str) -> list[dict[str, object]]:
    return [e.fields for e in effects if isinstance(e, Log) and e.event == event]


def test_the_first_measured_answer_on_a_gpu_becomes_the_baseline_once() -> None:
    """No baseline for (b/two, 0.4.1, CUDA runtime): the first figure becomes it and is
    remembered; later figures, faster or slower, leave it as it is."""
    snap, effects = feed(ready(), answer(48.0))
    assert snap.baselines == (Baseline("b/two", "0.4.1", CUDA.key, 48.0),)
    assert [e.baselines for e in effects if isinstance(e, RememberSpeed)] == [snap.baselines]
    snap, effects = feed(snap, answer(80.0), answer(30.0))
    assert (snap.baselines[0].tokens_per_second, [e for e in effects if isinstance(e, RememberSpeed)]) == (48.0, [])
    model = render(snap, version="t", pid=1, config_path=None)["models"][1]
    assert (model["tokens_per_second"], model["baseline_tokens_per_second"]) == (30.0, 48.0)


def test_no_baseline_off_the_gpu_nor_for_an_unmeasured_answer() -> None:
    """A survey without a GPU (or none at all) sets no baseline and judges nothing; an
    answer without a figure (fewer than 8 tokens) changes no speed."""
    snap, _ = feed(ready(survey=NO_GPU), answer(5.0), answer(5.0), answer(5.0), answer(5.0))
    assert (snap.baselines, codes(snap), snap.model("two").tokens_per_second) == ((), [], 5.0)  # type: ignore[union-attr]
    snap, _ = feed(ready(), answer(None))
    assert (snap.baselines, snap.model("two").tokens_per_second) == ((), None)  # type: ignore[union-attr]


def test_three_slow_answers_in_a_row_are_model_slow_and_a_resurvey_then_a_fast_one_clears_it() -> None:
    """Below 0.5 of the 50 tok/s baseline twice, then at speed: nothing (not in a row).
    Three in a row: model_slow with the figure and the baseline, and one `--refresh`
    survey (how a GPU lost while idle gets noticed); a fourth slow answer surveys no more.
    One answer at speed clears the problem."""
    snap, effects = feed(ready(baselines=(BASELINE,)), answer(20.0), answer(20.0), answer(45.0))
    assert (codes(snap), snap.model("two").slow, effects and [e for e in effects if isinstance(e, Survey)]) == (  # type: ignore[union-attr]
        [],
        0,
        [],
    )
    snap, effects = feed(snap, answer(24.9), answer(20.0), answer(12.5))
    (problem,) = snap.all_problems
    assert (problem.code, problem.severity, snap.state) == ("model_slow", "warning", S.READY)
    assert "two at 12.5 tokens/s, baseline 50.0" in problem.message
    assert [(e.refresh, e.runtime) for e in effects if isinstance(e, Survey)] == [(True, None)]
    assert logged(effects, "model_slow") == [{"model": "two", "tokens_per_second": 12.5, "baseline": 50.0}]
    snap, effects = feed(snap, answer(10.0))
    assert (codes(snap), [e for e in effects if isinstance(e, Survey)]) == (["model_slow"], [])
    snap, effects = feed(snap, answer(49.0))
    assert (codes(snap), snap.model("two").slow, logged(effects, "model_speed_recovered")) == (  # type: ignore[union-attr]
        [],
        0,
        [{"model": "two", "tokens_per_second": 49.0}],
    )


def test_reload_when_slow_reloads_once_per_cause() -> None:
    """``reload_when_slow``: the third slow answer unloads and reloads the model (READY ->
    LOADING_MODELS, the load pass unloads ``two`` first); still slow after the reload, it
    is never reloaded again for that cause, and model_slow stays. Fast again, then slow
    again: a new cause, reloaded once more."""
    snap, effects = feed(ready(RELOADING, (BASELINE,)), answer(10.0), answer(10.0), answer(10.0))
    (survey,) = [e for e in effects if isinstance(e, Survey)]  # the load pass surveys first, --refresh
    assert (snap.state, survey.refresh, codes(snap)) == (S.LOADING_MODELS, True, ["model_slow"])
    snap, effects = feed(snap, Surveyed(survey.action, RTX))
    (load,) = [e for e in effects if isinstance(e, LoadModels)]
    assert (load.unload, load.answer_tokens) == (("two",), 16)
    snap, _ = feed(snap, ModelsDone(load.action, (ONE, TWO), answers=(replace(answer(11.0), epoch=0),)))
    assert (snap.state, codes(snap), snap.model("two").slow) == (S.READY, ["model_slow"], 4)  # type: ignore[union-attr]
    snap, effects = feed(snap, answer(10.0), answer(10.0), answer(10.0))
    assert (snap.state, [e for e in effects if isinstance(e, LoadModels)]) == (S.READY, [])
    snap, _ = feed(snap, answer(50.0))
    assert codes(snap) == []
    snap, effects = feed(snap, answer(10.0), answer(10.0), answer(10.0))
    assert (snap.state, len([e for e in effects if isinstance(e, Survey)])) == (S.LOADING_MODELS, 1)


def test_resume_probes_surveys_and_asks_at_once() -> None:
    """Ready, the machine slept 3600 s: ``resumed`` is logged with the seconds, a survey with
    ``--refresh`` starts now, and the next good probe asks every answer-probed model
    (last asked 10 s ago, an answer interval of 60 s notwithstanding), for 16 tokens."""
    snap = replace(ready(), models=tuple(replace(m, asked_at=NOW.mono - 10) for m in ready().models))
    _, effects = feed(snap, Probed(2, ProbeResult(True, 1.0)))
    assert [e for e in effects if isinstance(e, Ask)] == []  # without a resume: not due for 50 s
    snap, effects = feed(snap, Resumed(3600.0))
    assert logged(effects, "resumed") == [{"asleep": 3600.0, "state": "ready"}]
    assert [e.refresh for e in effects if isinstance(e, Survey)] == [True]
    snap, effects = feed(snap, Probed(2, ProbeResult(True, 1.0)))
    assert [(e.name, e.tokens) for e in effects if isinstance(e, Ask)] == [("two", 16)]


def test_resume_while_the_gate_waits_surveys_now_and_elsewhere_only_logs() -> None:
    """Waiting behind the GPU gate: a resume surveys now (not at the backoff's timer). In
    backoff the next bring-up surveys anyway: logged, nothing else."""
    waiting = replace(
        ready(), state=S.LOADING_MODELS, hardware=HardwareSeen(survey=NO_GPU, last_good=RTX, waiting_since=900.0)
    )
    _, effects = feed(waiting, Resumed(60.0))
    assert [e.refresh for e in effects if isinstance(e, Survey)] == [True]
    backoff = replace(ready(), state=S.BACKOFF)
    after, effects = feed(backoff, Resumed(60.0))
    assert (after, [type(e).__name__ for e in effects]) == (backoff, ["Log"])


def test_the_load_pass_asks_for_the_configured_tokens() -> None:
    """The load pass's own answers ask for ``answer_tokens`` too, so the first figure after a
    load can become the baseline."""
    r = Reduction(replace(ready(), config=replace(SPEED, health=HealthConfig(answer_tokens=32))), NOW)
    r.load_pass()
    (load,) = [e for e in r.effects if isinstance(e, LoadModels)]
    assert (load.answer_tokens, load.ask) == (32, ("two",))


# -- on a real Supervisor against the fake LM Studio, on the fake clock --------------------
async def test_a_suspend_is_noticed_when_the_health_loop_wakes_and_reverified_at_once() -> None:
    """Ready (interval 5 s, answer interval 600 s); the machine sleeps an hour between two
    probes: at the loop's next wake (5 s of monotonic time, the suspend took none) it posts
    ``Resumed(3600)``: `lms runtime survey --json --refresh` runs and the answer-probed model
    is asked (16 tokens) in that same round, not 10 minutes later. A wake without a suspend
    does neither."""
    clock, lm = FakeClock(), FakeLmStudio()
    lm.runtime_commands = ("ls", "select", "survey")
    config = replace(SPEED, health=HealthConfig(interval=5, timeout=1, answer_interval=600, answer_tokens=16))
    sup = make_supervisor(config, lm, clock)
    seen: list[Message] = []
    sup.observe(lambda msg, _: seen.append(msg))
    task = asyncio.create_task(sup.run())
    try:
        await clock.advance(30)
        assert sup.state is S.READY

        def surveys() -> list[tuple[str, ...]]:
            return [c for c in lm.calls if c[:2] == ("runtime", "survey")]

        def asks() -> int:
            return lm.http_paths.count("/v1/chat/completions")

        before = (surveys(), asks())
        await clock.advance(5)
        assert (surveys(), asks()) == before  # an idle round (its drift check aside)
        clock.suspend(3600)
        await clock.advance(5)
        assert [m for m in seen if isinstance(m, Resumed)] == [Resumed(3600.0)]
        assert surveys()[len(before[0]) :] == [("runtime", "survey", "--json", "--refresh")]
        assert asks() == before[1] + 1
        assert sup.state is S.READY
    finally:
        sup.post("stop")
        await asyncio.wait_for(task, 5)
        await sup.lmstudio.aclose()
