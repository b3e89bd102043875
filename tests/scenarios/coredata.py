"""Shared data for the reducer tests: a config, an install, loaded instances, snapshots in any state."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lmsupervisor.config import Config, HealthConfig, ModelConfig, RestartConfig
from lmsupervisor.core.messages import Now
from lmsupervisor.core.observed import DaemonProcess, LoadedModel
from lmsupervisor.core.snapshot import LmStudioSeen, Snapshot, Work, initial
from lmsupervisor.core.states import State
from tests.scenarios.fakes import make_install

CFG = Config(
    health=HealthConfig(interval=5, timeout=1, failures_before_restart=3),
    restart=RestartConfig(initial_delay=1, max_delay=300, multiplier=2, jitter=0, reset_after=60),
    models=(ModelConfig("a/one"), ModelConfig("b/two", identifier="two")),
)
NOW = Now(mono=1000.0, wall=1_800_000_000.0, jitter=0.0)
INSTALL = make_install()
DAEMON = DaemonProcess(pid=77, create_time=1.0, verified=True, is_daemon=True)
ONE = LoadedModel("a/one", "a/one", "a/one", "llm", "idle", None, None, 1)
TWO = LoadedModel("two", "b/two", "hf/b-two-GGUF/two.gguf", "llm", "idle", None, None, 2)


WORK = Work(action=5, timer=3, epoch=2)


def at(state: State, *, loaded: bool = False, **changes: Any) -> Snapshot:
    """A snapshot in ``state`` with :data:`WORK` (action 5, timer 3, epoch 2), LM Studio
    detected; ``changes`` replace top-level fields or whole sub-records."""
    detected = {"work": WORK, "lmstudio": LmStudioSeen(install=INSTALL, daemon=DAEMON)}
    snap = replace(initial(CFG, 0.0), state=state, **{**detected, **changes})
    if loaded:
        snap = replace(snap, models=tuple(replace(m, state="loaded") for m in snap.models))
    return snap
