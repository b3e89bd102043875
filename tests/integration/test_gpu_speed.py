"""The speed baseline and the resume from sleep (issue 17 parts 3 and 4) on a real
`lmsupervisor run` against the simulator: a GPU lost while running with answer probes of
16 tokens (model_slow, then gpu_missing by the re-survey it triggers; ready on the GPU when
it is back), a silent CPU fall-back with ``reload_when_slow`` (one reload, never two), and a
suspend seen through the clock's test seam (``LMSUPERVISOR_ASLEEP_FILE``) and re-verified
at once.

Bounds, from the config below (answer_interval 0.5 s, 16 tokens at 2 simulated tokens/s on
the GPU: 0.16 wall s per answer at FAST, 20 times that on the CPU): a GPU lost while
answering is ``model_slow`` within three CPU answers plus three answer intervals (about
5 s; asserted within 30 s on a busy machine), and ``gpu_missing`` one survey after; a
resume is noticed within one ``health.interval`` (0.2 s). Figures: ``bench/gpu_gate.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.client.sync import Client
from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_run import Running

pytestmark = pytest.mark.integration

CONFIG = """
[server]
start_timeout = 15
[health]
interval = 0.2
timeout = 1
answer_interval = {answer_interval}
answer_timeout = 15
answer_tokens = 16
[restart]
initial_delay = 0.1
max_delay = 1
[gpu]
wait = 60
[log]
level = "debug"
format = "json"
{extra}
[[models]]
key = "qwen/qwen3-4b"
identifier = "qwen"
probe = "answer"
{model}
"""


def config(answer_interval: float = 0.5, extra: str = "", model: str = "") -> str:
    return CONFIG.format(answer_interval=answer_interval, extra=extra, model=model)


def codes(snap: dict[str, Any]) -> set[str]:
    return {p["code"] for p in snap["problems"]}


def qwen(snap: dict[str, Any]) -> dict[str, Any]:
    model: dict[str, Any] = snap["models"][0]
    return model


def events(run: Running, name: str) -> list[dict[str, Any]]:
    """The run's JSON log lines whose event is ``name``."""
    found = []
    for line in run.log.read_text(encoding="utf-8").splitlines():
        if f'"{name}"' in line:
            entry = json.loads(line)
            if entry.get("event") == name:
                found.append(entry)
    return found


@pytest.fixture
def speedy(sim: SimInstall) -> SimInstall:
    """The simulated GPU generates 2 simulated tokens/s (0.01 wall s per token at FAST), the
    CPU 20 times slower."""
    sim.set_hardware(tokens_per_second=2.0, cpu_slowdown=20.0)
    return sim


def test_gpu_lost_while_answering_is_model_slow_then_gpu_missing_then_ready_when_back(
    speedy: SimInstall, start: Callable[..., Running]
) -> None:
    """Ready on the GPU, the first measured answer is the baseline. The GPU goes while the
    daemon lives (nothing in LM Studio says so): the answers slow to CPU speed, three in a
    row are model_slow, whose re-survey finds no GPU: gpu_missing, the model is unloaded
    (never left on the CPU). The GPU comes back: ready, on the GPU, both problems gone."""
    run = start(speedy, "", config())
    ready = run.wait_for(lambda s: s["state"] == "ready" and qwen(s)["baseline_tokens_per_second"] is not None)
    baseline = qwen(ready)["baseline_tokens_per_second"]
    speedy.lose_gpu()
    lost = time.monotonic()
    slow = run.wait_for(lambda s: "model_slow" in codes(s), timeout=30)
    to_slow = time.monotonic() - lost
    missing = run.wait_for(lambda s: "gpu_missing" in codes(s), timeout=30)
    to_missing = time.monotonic() - lost
    assert qwen(slow)["tokens_per_second"] < baseline / 2
    assert missing["state"] == "loading_models"
    run.wait_for(lambda s: qwen(s)["state"] != "loaded" and not speedy.loaded(), timeout=10)  # unloaded, not on the CPU
    speedy.restore_gpu()
    back = time.monotonic()
    again = run.wait_for(lambda s: s["state"] == "ready" and not codes(s) & {"gpu_missing", "model_slow"}, timeout=60)
    to_ready = time.monotonic() - back
    assert {g["identifier"]: g["on_gpu"] for g in [{"identifier": k, **v} for k, v in speedy.generation().items()]} == {
        "qwen": True
    }
    assert qwen(again)["baseline_tokens_per_second"] == baseline  # the same GPU, runtime and LM Studio: kept
    print(f"\nGPU lost: model_slow {to_slow:.2f} s, gpu_missing {to_missing:.2f} s; GPU back: ready {to_ready:.2f} s")


def test_a_silent_cpu_fallback_is_model_slow_and_reloaded_once(
    speedy: SimInstall, start: Callable[..., Running]
) -> None:
    """The survey still shows the GPU but every answer is 20 times slower (BT#2312):
    model_slow; with reload_when_slow the model is reloaded once, still slow after it, and
    never reloaded again for that cause while more slow answers come; at speed again, the
    problem clears."""
    run = start(speedy, "", config(model="reload_when_slow = true"))
    run.wait_for(lambda s: s["state"] == "ready" and qwen(s)["baseline_tokens_per_second"] is not None)
    speedy.cpu_fallback(20)
    fell = time.monotonic()
    run.wait_for(lambda s: "model_slow" in codes(s) and s["state"] == "ready", timeout=30)
    to_slow = time.monotonic() - fell
    figures: list[float] = []

    def another(s: dict[str, Any]) -> bool:
        figure = qwen(s)["tokens_per_second"]
        if figure is not None and (not figures or figure != figures[-1]):
            figures.append(figure)
        return len(figures) >= 6

    after = run.wait_for(another, timeout=60)  # several more slow answers after the reload
    assert ("model_slow" in codes(after), len(events(run, "model_reloaded_slow"))) == (True, 1)
    speedy.cpu_fallback(1)
    fast = time.monotonic()
    run.wait_for(lambda s: "model_slow" not in codes(s), timeout=30)
    print(f"\nCPU fall-back: model_slow {to_slow:.2f} s; back at speed: cleared {time.monotonic() - fast:.2f} s")


def test_a_suspend_is_detected_and_reverified_at_once(
    speedy: SimInstall, start: Callable[..., Running], tmp_path: Path
) -> None:
    """Ready, answers due only every 10 minutes; the machine sleeps an hour (the clock's test
    seam): within a health interval the supervisor logs ``resumed`` with 3600 s, counts it,
    surveys with ``--refresh`` and asks the model again (a new answer in the status), and
    stays ready: the GPU came back with it."""
    wrapper, calls = speedy.counting_lms(tmp_path)
    extra = f'[lmstudio]\nlms = "{wrapper}"'
    run = start(
        speedy, "", config(answer_interval=600, extra=extra), env={"LMSUPERVISOR_ASLEEP_FILE": str(speedy.asleep_path)}
    )
    ready = run.wait_for(lambda s: s["state"] == "ready" and qwen(s)["last_answer_ms"] is not None)
    answered = qwen(ready)["last_answer_ms"], qwen(ready)["tokens_per_second"]
    before = calls.read_text().splitlines()
    speedy.suspend(3600)
    slept = time.monotonic()
    run.wait_for(lambda s: bool(events(run, "resumed")), timeout=10)
    to_resumed = time.monotonic() - slept
    again = run.wait_for(lambda s: (qwen(s)["last_answer_ms"], qwen(s)["tokens_per_second"]) != answered, timeout=10)
    to_verified = time.monotonic() - slept
    (resumed,) = events(run, "resumed")
    assert (resumed["asleep"] >= 3600, again["state"]) == (True, "ready")
    assert "runtime survey --json --refresh" in calls.read_text().splitlines()[len(before) :]
    metrics = Client(run.sock).request("GET", "/metrics").body.decode()
    assert "lmsupervisor_resumes_total 1.0" in metrics.splitlines()
    print(f"\nsuspend: resumed logged {to_resumed:.2f} s, re-verified (new answer) {to_verified:.2f} s")


def test_a_suspend_that_loses_the_gpu_is_gpu_missing_at_once(speedy: SimInstall, start: Callable[..., Running]) -> None:
    """The GPU does not come back from the sleep (Ollama #10053): the resume's re-survey
    says gpu_missing and unloads the model, without waiting for slow answers; the GPU back,
    ready again."""
    env = {"LMSUPERVISOR_ASLEEP_FILE": str(speedy.asleep_path)}
    run = start(speedy, "", config(answer_interval=600), env=env)
    run.wait_state("ready")
    speedy.suspend(600, lose_gpu=True)
    slept = time.monotonic()
    missing = run.wait_for(lambda s: "gpu_missing" in codes(s), timeout=15)
    to_missing = time.monotonic() - slept
    assert ("model_slow" in codes(missing), missing["state"]) == (False, "loading_models")
    speedy.restore_gpu()
    back = time.monotonic()
    run.wait_for(lambda s: s["state"] == "ready" and not codes(s), timeout=60)
    print(f"\nsuspend, GPU lost: gpu_missing {to_missing:.2f} s; GPU back: ready {time.monotonic() - back:.2f} s")
