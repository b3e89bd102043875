"""Plan which declared models to download and load (pure), from `lms ls`/`lms ps` data.

A declared model is satisfied by a loaded instance whose identifier is the declared
``identifier``, or, with no identifier declared, by any instance of that model (by
``modelKey`` or ``path``). A satisfied model is never loaded again: `lms load` of a
loaded model would add a ``<key>:2`` duplicate (BT#619).

Only this machine counts: instances and models on LM Link devices (``device`` set,
``deviceIdentifier`` in `lms ls/ps --json`, facts §9) neither satisfy a declared model
nor give `lms load --exact` its path.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from lmsupervisor.config import ModelConfig
from lmsupervisor.core.observed import DownloadedModel, LoadedModel


class Decision(enum.StrEnum):
    """What :func:`plan` decides for one declared model; the value is its JSON spelling.

    ``KEEP``: a loaded instance satisfies it. ``LOAD``: downloaded, `lms load` it.
    ``DOWNLOAD_AND_LOAD``: `lms get` it first (``download = true``). ``MISSING``: not
    downloaded and ``download = false``. ``CONFLICT``: its identifier is taken by another
    model.
    """

    KEEP = "keep"  # already loaded
    LOAD = "load"
    DOWNLOAD_AND_LOAD = "download_and_load"
    MISSING = "missing"  # not downloaded and download = false
    CONFLICT = "conflict"  # the declared identifier is taken by another model


@dataclass(frozen=True)
class Planned:
    """What to do for one declared model. ``path`` is what `lms load --exact` needs
    (the model's ``path``; ``None`` until it is known, e.g. before a download)."""

    model: ModelConfig
    decision: Decision
    path: str | None = None
    detail: str = ""


def _matches(model: ModelConfig, key: str, path: str) -> bool:
    return model.key in (key, path)


def instance_of(model: ModelConfig, loaded: Sequence[LoadedModel]) -> LoadedModel | None:
    """The loaded instance that satisfies declared ``model``: the one holding its declared
    identifier, else the first of that model (by ``modelKey`` or ``path``); None if none.
    Instances on LM Link devices are never it (facts §9)."""
    loaded = [i for i in loaded if i.device is None]
    if model.identifier:
        return next((i for i in loaded if i.identifier == model.identifier), None)
    return next((i for i in loaded if _matches(model, i.model_key, i.path)), None)


def plan(
    desired: Sequence[ModelConfig], loaded: Sequence[LoadedModel], downloaded: Sequence[DownloadedModel]
) -> list[Planned]:
    """One :class:`Planned` per declared model, in declaration order; what LM Link
    devices hold is left out (facts §9)."""
    linked = [d for d in downloaded if d.device is not None]
    loaded = [i for i in loaded if i.device is None]
    downloaded = [d for d in downloaded if d.device is None]
    out = []
    for model in desired:
        if model.identifier:
            holder = next((i for i in loaded if i.identifier == model.identifier), None)
            if holder is not None:
                if _matches(model, holder.model_key, holder.path):
                    out.append(Planned(model, Decision.KEEP, holder.path))
                else:
                    out.append(
                        Planned(
                            model,
                            Decision.CONFLICT,
                            None,
                            f'identifier "{model.identifier}" is taken by {holder.model_key}',
                        )
                    )
                continue
        elif any(_matches(model, i.model_key, i.path) for i in loaded):
            out.append(Planned(model, Decision.KEEP))
            continue
        found = next((d for d in downloaded if _matches(model, d.model_key, d.path)), None)
        if found is not None:
            out.append(Planned(model, Decision.LOAD, found.path))
        elif model.download:
            out.append(Planned(model, Decision.DOWNLOAD_AND_LOAD))
        else:
            there = next((d.device for d in linked if _matches(model, d.model_key, d.path)), None)
            where = f" on this machine (only on the linked device {there})" if there else ""
            out.append(
                Planned(
                    model,
                    Decision.MISSING,
                    None,
                    f"{model.key} is not downloaded{where} (set download = true, or run `lms get {model.key} --yes`)",
                )
            )
    return out
