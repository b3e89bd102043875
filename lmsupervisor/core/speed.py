"""How fast each declared model generates, and when that is too slow (design §9). Pure.

The answer probe asks for ``[health] answer_tokens`` tokens; with :data:`MEASURE_TOKENS` or
more asked *and* generated, :func:`tokens_per_second` is the answer's figure: completion
tokens (the response's ``usage.completion_tokens``, facts §4) over the request's wall time.
The first figure measured while LM Studio's last hardware survey shows a compatible runtime
with a GPU (:func:`speed_key`) becomes the model's :class:`Baseline`, kept in the state
folder per model key, LM Studio version and runtime (a new version or runtime gets a
baseline of its own). A figure below ``[health] slow_factor`` of the baseline is slow
(:func:`is_slow`); :data:`SLOW_ANSWERS` slow answers in a row make the problem
``model_slow`` (:func:`~lmsupervisor.core.problems.model_slow_problem`); one figure at speed
clears it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lmsupervisor.core.hardware import COMPATIBLE, Hardware

MEASURE_TOKENS = 8  # tokens asked and generated from which an answer's speed is measured
SLOW_ANSWERS = 3  # slow answers in a row that make a model model_slow


@dataclass(frozen=True)
class Baseline:
    """A model's speed on a GPU: ``tokens_per_second`` of its first measured answer with
    ``model`` (the model key) on LM Studio ``lmstudio`` (its version, ``""`` unknown) and
    runtime ``runtime`` (``name@version``)."""

    model: str
    lmstudio: str
    runtime: str
    tokens_per_second: float

    @property
    def key(self) -> tuple[str, str, str]:
        """``(model, lmstudio, runtime)``: what a baseline is kept per."""
        return (self.model, self.lmstudio, self.runtime)


def tokens_per_second(asked: int, generated: int | None, seconds: float) -> float | None:
    """An answer's tokens per second: ``generated`` completion tokens over ``seconds`` of
    wall time, when at least :data:`MEASURE_TOKENS` were ``asked`` (max_tokens) and
    generated; None otherwise (a short reply measures the request, not the generation)."""
    if asked < MEASURE_TOKENS or generated is None or generated < MEASURE_TOKENS:
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return generated / seconds


def on_gpu(hw: Hardware | None) -> bool:
    """Whether survey ``hw`` shows a ``compatible`` runtime that sees a GPU."""
    return hw is not None and hw.runtime is not None and bool(hw.gpus) and hw.compatibility.status == COMPATIBLE


def speed_key(model: str, lmstudio: str | None, hw: Hardware | None) -> tuple[str, str, str] | None:
    """The :attr:`Baseline.key` of model key ``model`` on LM Studio ``lmstudio`` (version)
    under survey ``hw``; None when ``hw`` is no GPU survey (:func:`on_gpu`): no baseline is
    set or judged off the GPU."""
    if not on_gpu(hw) or hw is None or hw.runtime is None:
        return None
    return (model, lmstudio or "", hw.runtime.key)


def baseline_of(baselines: tuple[Baseline, ...], key: tuple[str, str, str] | None) -> Baseline | None:
    """The baseline kept for ``key``, None when there is none (or no key)."""
    return next((b for b in baselines if b.key == key), None) if key is not None else None


def is_slow(figure: float, baseline: float, factor: float) -> bool:
    """Whether ``figure`` (tokens/s) is below ``factor`` of ``baseline`` (tokens/s)."""
    return figure < factor * baseline


def baselines_to_json(baselines: tuple[Baseline, ...]) -> list[dict[str, Any]]:
    """The state folder's ``speed.json``: ``[{"model","lmstudio","runtime","tokens_per_second"}]``."""
    return [
        {"model": b.model, "lmstudio": b.lmstudio, "runtime": b.runtime, "tokens_per_second": b.tokens_per_second}
        for b in baselines
    ]


def baselines_from_json(data: Any) -> tuple[Baseline, ...] | None:
    """What :func:`baselines_to_json` wrote, or None when ``data`` is not that (every entry
    checked: strings, and a finite positive figure)."""
    if not isinstance(data, list):
        return None
    found = []
    for entry in data:
        if not isinstance(entry, dict):
            return None
        names = [entry.get(k) for k in ("model", "lmstudio", "runtime")]
        figure = entry.get("tokens_per_second")
        if not all(isinstance(n, str) for n in names) or isinstance(figure, bool):
            return None
        if not isinstance(figure, int | float) or not math.isfinite(figure) or figure <= 0:
            return None
        found.append(Baseline(str(names[0]), str(names[1]), str(names[2]), float(figure)))
    return tuple(found)
