"""The supervisor's states, its transition table and its entry actions (design §5, §6). Standard library and
:mod:`lmsupervisor.errors` only.

``TRANSITIONS`` maps ``(state, trigger)`` to the next state. It is data: the reducer
(:mod:`lmsupervisor.core.reducer`) looks edges up here, tests iterate over it, and an edge
that is not in it raises :class:`IllegalTransition` instead of silently changing state.

``ON_ENTER`` says what entering each state starts (a bring-up, model loading, probing,
a retry timer); the reducer turns each :class:`Entry` into effects. ``diagram()`` renders
both tables as the Mermaid state diagram in the README (a test fails when it is stale:
regenerate it with ``python -m lmsupervisor.core.states``).
"""

from __future__ import annotations

import enum

from lmsupervisor.errors import IllegalTransition


class State(enum.StrEnum):
    """The lifecycle state of ``GET /v1/status`` ``state`` (contract, design §5)."""

    NOT_INSTALLED = "not_installed"
    STARTING = "starting"
    LOADING_MODELS = "loading_models"
    READY = "ready"
    DEGRADED = "degraded"  # server healthy, a declared model failed
    BACKOFF = "backoff"  # waiting to retry after a failure
    STOPPING = "stopping"
    STOPPED = "stopped"


class Trigger(enum.StrEnum):
    """Why a state changes; one per edge label of the table."""

    START = "start"  # the supervisor begins
    NOT_INSTALLED = "not_installed"  # detection found no LM Studio
    SERVER_UP = "server_up"  # daemon and HTTP server are up (started or adopted)
    MODELS_LOADED = "models_loaded"  # every declared model is loaded
    MODEL_FAILED = "model_failed"  # a declared model could not be loaded
    FAILED = "failed"  # daemon exited, probes failed, a bring-up step failed or crashed
    TIMER = "timer"  # a backoff or retry delay ran out
    DRIFT = "drift"  # a declared model disappeared (eviction, crash; not a TTL unload)
    RECONFIGURE_SERVER = "reconfigure_server"  # server settings changed: restart the server
    RECONFIGURE_MODELS = "reconfigure_models"  # declared models changed: reconcile
    RESTART = "restart"  # a restart was requested (socket, CLI)
    GPU_WAIT_OVER = "gpu_wait_over"  # no GPU for [gpu] wait seconds: restart LM Studio's daemon, once
    STOP = "stop"  # SIGTERM/SIGINT
    STOPPED = "stopped"  # shutdown finished


class Entry(enum.StrEnum):
    """What entering a state starts; the reducer maps each to effects."""

    BRING_UP = "bring_up"  # adopt, or climb the escalation ladder (one new action)
    LOAD_MODELS = "load_models"  # plan and load the declared models (one new action)
    PROBE = "probe"  # greeting probes every health.interval (hangs enter the ladder)
    CHECK_DRIFT = "check_drift"  # also compare loaded models with the declared ones
    QUIET = "quiet"  # no probes, no drift checks
    CANCEL_WORK = "cancel_work"  # cancel the running action
    RETRY_LATER = "retry_later"  # backoff timer, then the next rung
    RECHECK_LATER = "recheck_later"  # backoff timer, then detect LM Studio again
    RETRY_MODELS_LATER = "retry_models_later"  # model backoff timer, then load again
    MARK_HEALTHY = "mark_healthy"  # start the healthy period that resets the backoff
    UNWATCH = "unwatch"  # stop watching the daemon's PID


S, T, E = State, Trigger, Entry
_ACTIVE = (S.STARTING, S.LOADING_MODELS, S.READY, S.DEGRADED)

TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (S.STOPPED, T.START): S.STARTING,
    (S.STARTING, T.NOT_INSTALLED): S.NOT_INSTALLED,
    (S.NOT_INSTALLED, T.TIMER): S.STARTING,
    (S.STARTING, T.SERVER_UP): S.LOADING_MODELS,
    (S.LOADING_MODELS, T.MODELS_LOADED): S.READY,
    (S.LOADING_MODELS, T.MODEL_FAILED): S.DEGRADED,
    (S.READY, T.DRIFT): S.LOADING_MODELS,
    (S.DEGRADED, T.DRIFT): S.LOADING_MODELS,
    (S.DEGRADED, T.TIMER): S.LOADING_MODELS,  # retry the failed models
    (S.BACKOFF, T.TIMER): S.STARTING,
    (S.READY, T.RECONFIGURE_MODELS): S.LOADING_MODELS,
    (S.DEGRADED, T.RECONFIGURE_MODELS): S.LOADING_MODELS,
    (S.LOADING_MODELS, T.RECONFIGURE_MODELS): S.LOADING_MODELS,  # a held change, at the end of a pass
    (S.LOADING_MODELS, T.GPU_WAIT_OVER): S.STARTING,  # a fresh daemon detects the GPU driver again
    **{(s, T.FAILED): S.BACKOFF for s in _ACTIVE},
    **{(s, T.RECONFIGURE_SERVER): S.STARTING for s in _ACTIVE},
    **{(s, T.RESTART): S.STARTING for s in (*_ACTIVE, S.BACKOFF, S.NOT_INSTALLED)},
    **{(s, T.STOP): S.STOPPING for s in (*_ACTIVE, S.BACKOFF, S.NOT_INSTALLED)},
    (S.STOPPING, T.STOPPED): S.STOPPED,
}

ON_ENTER: dict[State, tuple[Entry, ...]] = {
    S.STARTING: (E.CANCEL_WORK, E.QUIET, E.BRING_UP),
    S.LOADING_MODELS: (E.CANCEL_WORK, E.PROBE, E.LOAD_MODELS),
    S.READY: (E.PROBE, E.CHECK_DRIFT, E.MARK_HEALTHY),
    S.DEGRADED: (E.PROBE, E.CHECK_DRIFT, E.RETRY_MODELS_LATER),
    S.BACKOFF: (E.CANCEL_WORK, E.QUIET, E.RETRY_LATER),
    S.NOT_INSTALLED: (E.CANCEL_WORK, E.QUIET, E.RECHECK_LATER),
    S.STOPPING: (E.CANCEL_WORK, E.QUIET, E.UNWATCH),
    S.STOPPED: (),
}


def next_state(state: State, trigger: Trigger) -> State:
    """The state after ``trigger`` in ``state``; raises :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(state, trigger) from None


def accepts(state: State, trigger: Trigger) -> bool:
    """True when ``trigger`` has an edge out of ``state``."""
    return (state, trigger) in TRANSITIONS


def diagram() -> str:
    """Both tables as a Mermaid ``stateDiagram-v2`` (edges labelled with triggers, entry
    actions as notes), the text between the README's state-diagram markers."""
    lines = ["```mermaid", "stateDiagram-v2", "    [*] --> stopped"]
    edges: dict[tuple[State, State], list[str]] = {}
    for (src, trigger), dst in TRANSITIONS.items():
        edges.setdefault((src, dst), []).append(trigger.value)
    for (src, dst), triggers in edges.items():
        lines.append(f"    {src.value} --> {dst.value}: {', '.join(triggers)}")
    for state, entries in ON_ENTER.items():
        if entries:
            lines.append(f"    note right of {state.value}: on entry {', '.join(e.value for e in entries)}")
    lines.append("```")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - `python -m lmsupervisor.core.states`
    print(diagram())
