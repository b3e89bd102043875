"""The supervisor's states and its transition table (design §5). Stdlib only.

``TRANSITIONS`` maps ``(state, trigger)`` to the next state. It is data: the supervisor's
single writer looks edges up here, tests iterate over it, and an edge that is not in
it raises :class:`IllegalTransition` instead of silently changing state.
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    NOT_INSTALLED = "not_installed"
    STARTING = "starting"
    LOADING_MODELS = "loading_models"
    READY = "ready"
    DEGRADED = "degraded"  # server healthy, a declared model failed
    BACKOFF = "backoff"  # waiting to retry after a failure
    STOPPING = "stopping"
    STOPPED = "stopped"


class Trigger(enum.StrEnum):
    START = "start"  # the supervisor begins
    NOT_INSTALLED = "not_installed"  # detection found no LM Studio
    SERVER_UP = "server_up"  # daemon and HTTP server are up (started or adopted)
    MODELS_LOADED = "models_loaded"  # every declared model is loaded
    MODEL_FAILED = "model_failed"  # a declared model could not be loaded
    FAILED = "failed"  # daemon exited, probes failed, or a bring-up step failed
    TIMER = "timer"  # a backoff or retry delay ran out
    DRIFT = "drift"  # a declared model disappeared (TTL, eviction, crash)
    RECONFIGURE_SERVER = "reconfigure_server"  # server settings changed: restart the server
    RECONFIGURE_MODELS = "reconfigure_models"  # declared models changed: reconcile
    RESTART = "restart"  # a restart was requested (socket, CLI)
    STOP = "stop"  # SIGTERM/SIGINT
    STOPPED = "stopped"  # shutdown finished


S, T = State, Trigger
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
    **{(s, T.FAILED): S.BACKOFF for s in _ACTIVE},
    **{(s, T.RECONFIGURE_SERVER): S.STARTING for s in (S.LOADING_MODELS, S.READY, S.DEGRADED)},
    **{(s, T.RESTART): S.STARTING for s in (*_ACTIVE, S.BACKOFF, S.NOT_INSTALLED)},
    **{(s, T.STOP): S.STOPPING for s in (*_ACTIVE, S.BACKOFF, S.NOT_INSTALLED)},
    (S.STOPPING, T.STOPPED): S.STOPPED,
}


class IllegalTransition(Exception):
    """``trigger`` has no edge out of ``state`` in :data:`TRANSITIONS`."""

    def __init__(self, state: State, trigger: Trigger) -> None:
        super().__init__(f"no transition from {state.value!r} on {trigger.value!r}")
        self.state = state
        self.trigger = trigger


def next_state(state: State, trigger: Trigger) -> State:
    """The state after ``trigger`` in ``state``; raises :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(state, trigger) from None


def accepts(state: State, trigger: Trigger) -> bool:
    return (state, trigger) in TRANSITIONS
