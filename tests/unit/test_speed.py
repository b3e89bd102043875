"""The pure speed rules (:mod:`lmsupervisor.core.speed`), their state file, and the answer
probe's figure (:func:`lmsupervisor.lmstudio.loadpass.ask`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmsupervisor.core.hardware import Compatibility, Gpu, Hardware, RuntimeEngine
from lmsupervisor.core.speed import Baseline, baselines_from_json, baselines_to_json, speed_key, tokens_per_second
from lmsupervisor.statefile import SpeedMemory, StateFiles

CUDA = RuntimeEngine("llama.cpp-cuda", "1.52.1")
RTX = Hardware((Gpu("RTX", "CUDA", "discrete", 1),), CUDA, Compatibility("compatible"), surveyed_at=1.0)


@pytest.mark.parametrize(
    ("asked", "generated", "seconds", "figure"),
    [
        (16, 16, 0.5, 32.0),  # measured
        (8, 8, 2.0, 4.0),  # the least that is measured
        (7, 7, 1.0, None),  # fewer than 8 asked: the request's cost, not the generation's
        (16, 3, 1.0, None),  # the model stopped early: too few generated
        (16, None, 1.0, None),  # no usage in the reply
        (16, 16, 0.0, None),  # no time: no figure
    ],
)
def test_tokens_per_second_needs_eight_tokens_asked_and_generated(
    asked: int, generated: int | None, seconds: float, figure: float | None
) -> None:
    """Completion tokens over wall seconds, only from 8 tokens asked and generated."""
    assert tokens_per_second(asked, generated, seconds) == figure


def test_a_baseline_is_kept_per_model_version_and_runtime_on_a_gpu_only() -> None:
    """The key names the model key, LM Studio's version and the runtime; no GPU (or an
    incompatible runtime, or no survey): no key."""
    assert speed_key("q/q", "0.4.1", RTX) == ("q/q", "0.4.1", "llama.cpp-cuda@1.52.1")
    assert speed_key("q/q", None, RTX) == ("q/q", "", "llama.cpp-cuda@1.52.1")
    no_gpu = Hardware((), CUDA, Compatibility("gpuRequiredButNoneFound"), surveyed_at=1.0)
    incompatible = Hardware(RTX.gpus, CUDA, Compatibility("gpuDriverUnsupported"), surveyed_at=1.0)
    assert [speed_key("q/q", "0.4.1", hw) for hw in (no_gpu, incompatible, None)] == [None, None, None]


def test_baselines_survive_the_state_file_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    """speed.json round-trips; a file that is not a list of baselines (a bad figure, a
    missing name) is ignored whole (baselines are measured again), never raised."""
    memory = SpeedMemory(tmp_path / "speed.json", StateFiles())
    assert memory.load() == ()
    kept = (Baseline("q/q", "0.4.1", "cuda@1", 48.5), Baseline("g/g", "", "metal@2", 12.0))
    assert memory.save(kept)
    assert (memory.load(), json.loads((tmp_path / "speed.json").read_text())) == (kept, baselines_to_json(kept))
    bad_files: list[object] = [
        [{"model": "q", "lmstudio": "", "runtime": "r", "tokens_per_second": -1}],
        [{"model": "q"}],
        {},
    ]
    for bad in bad_files:
        assert baselines_from_json(bad) is None
        (tmp_path / "speed.json").write_text(json.dumps(bad))
        assert memory.load() == ()
