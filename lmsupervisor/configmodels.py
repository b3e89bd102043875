"""The ``[[models]]`` and ``[gpu]`` sections: what the supervisor loads, and whether it
may load it without a GPU (design §4, §9). Frozen dataclasses and the strict readers of
their keys; :mod:`lmsupervisor.config` builds them into its :class:`Config` and stays the
import path of every name here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmsupervisor.configvalues import boolean, fail, gpu, gpu_require, integer, keys, number, string, table
from lmsupervisor.errors import ConfigError

MODEL_PROBES = ("none", "load", "answer")
MAX_TTL = 365 * 86_400.0  # a model's TTL may be long, but finite
GPU_REQUIRE = ("auto", True, False)  # gpu.require: what the last good survey had, a GPU always, never


@dataclass(frozen=True)
class ModelConfig:
    """One ``[[models]]`` entry: a model to preload, keep loaded and reload after restarts.

    ``key`` is a model key (``modelKey`` of `lms ls --json`) or its path; ``identifier``,
    ``context_length``, ``gpu`` (``"off"``, ``"max"`` or 0.0..1.0) and ``ttl`` (seconds,
    None: never unloaded) become the flags of `lms load` (lmstudio-facts.md §3).
    ``download`` runs `lms get --yes` when the model is missing. ``reload_when_slow``: a
    ``model_slow`` model (below ``[health] slow_factor`` of its baseline) is reloaded once
    per cause.
    """

    key: str  # model key (`lms ls --json` modelKey) or its path
    identifier: str | None = None
    context_length: int | None = None
    gpu: str | float | None = None  # "off", "max" or 0.0..1.0
    ttl: float | None = None  # seconds; None: never unloaded
    download: bool = False
    probe: str = "load"  # "none": load it, never check; "load": kept loaded; "answer": and answering
    reload_when_slow: bool = False  # model_slow: reload it once (per cause)


@dataclass(frozen=True)
class GpuConfig:
    """``[gpu]``: the GPU gate (design §9, issue 17).

    ``require`` is ``"auto"`` (the GPUs of the last good hardware survey), True (at least
    one GPU, and those of the last good survey) or False (never gated: models may load on
    the CPU, and the status says so). While required GPUs are missing, or LM Studio's
    runtime is not ``compatible``, no model is loaded: the supervisor surveys again with
    backoff for ``wait`` seconds (0..86400), then restarts LM Studio's daemon once.
    """

    require: str | bool = "auto"
    wait: float = 180.0  # seconds of re-surveys before the daemon is restarted once


def read_models(top: Mapping[str, Any]) -> tuple[ModelConfig, ...]:
    """The ``[[models]]`` entries of the config's top-level table ``top`` (no model
    declared twice); raises :class:`ConfigError` naming the bad key."""
    raw_models = top.get("models", [])
    if not isinstance(raw_models, list):
        raise fail("models", "an array of tables ([[models]])", raw_models)
    models = tuple(_entry(f"models[{i}]", m) for i, m in enumerate(raw_models))
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        name = m.identifier or m.key
        if name in seen:
            raise ConfigError(
                f"models[{i}]: declares {name!r} again (also models[{seen[name]}]); give one an `identifier`",
                key=f"models[{i}]",
            )
        seen[name] = i
    return models


def read_gpu(top: Mapping[str, Any]) -> GpuConfig:
    """``[gpu]`` of the config's top-level table ``top``; raises :class:`ConfigError` naming the bad key."""
    d = GpuConfig()
    gp = table("gpu", top.get("gpu", {}), keys(GpuConfig))
    return GpuConfig(
        require=gpu_require("gpu.require", gp.get("require", d.require)),
        wait=number("gpu.wait", gp.get("wait", d.wait)),
    )


def _entry(key: str, raw: Any) -> ModelConfig:
    """The ``[[models]]`` entry at TOML path ``key``; raises :class:`ConfigError` naming the bad key."""
    entry = table(key, raw, keys(ModelConfig))
    if "key" not in entry:
        raise ConfigError(f"{key}.key: required (the model key as in `lms ls --json`)", key=f"{key}.key")
    model_key = string(f"{key}.key", entry["key"])
    if not model_key.strip():
        raise fail(f"{key}.key", "a model key", model_key)
    ident = entry.get("identifier")
    ctx = entry.get("context_length")
    ttl = entry.get("ttl")
    return ModelConfig(
        key=model_key,
        identifier=string(f"{key}.identifier", ident) if ident is not None else None,
        context_length=integer(f"{key}.context_length", ctx, 1, 16_777_216) if ctx is not None else None,
        gpu=gpu(f"{key}.gpu", entry["gpu"]) if "gpu" in entry else None,
        ttl=number(f"{key}.ttl", ttl, minimum=1, maximum=MAX_TTL) if ttl is not None else None,
        download=boolean(f"{key}.download", entry.get("download", False)),
        probe=string(f"{key}.probe", entry.get("probe", "load"), MODEL_PROBES),
        reload_when_slow=boolean(f"{key}.reload_when_slow", entry.get("reload_when_slow", False)),
    )
