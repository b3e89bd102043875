"""What a chaos soak is made of: its settings (:class:`SoakConfig`), the config it declares to
``lmsupervisor run`` (:func:`config_text`, the invalid ones a live edit may leave behind), and
the fault kinds with their order (:data:`KINDS`, :data:`DETERMINISTIC`, :func:`fault_order`).

How each kind is injected is :mod:`chaos_soak.faults`; the loop is :mod:`chaos_soak.soak`.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS: tuple[str, ...] = (  # each injected by its function in chaos_soak.faults (its docstring has the table)
    "kill_daemon",
    "hang_daemon",
    "hang_http",
    "server_stopped",
    "model_unloaded",
    "load_fails",
    "slow_daemon_start",
    "corrupt_settings",
    "corrupt_server_config",
    "port_taken",
    "socket_deleted",
    "supervisor_killed",
    "supervisor_killed_during_load",
    "reload_valid",
    "reload_invalid",
    "reload_during_load",
    "restart_request",
    "restart_during_load",
    "bad_network_interface",
    "state_folder_unwritable",
    "auth_without_token",
    "app_hung",
)
DETERMINISTIC: dict[str, str] = {  # kind -> the problem code it must raise (lmsupervisor's design §9)
    "bad_network_interface": "server_address_invalid",
    "state_folder_unwritable": "state_folder_unwritable",
    "auth_without_token": "api_token_missing",
    "app_hung": "app_hung",
}

SLOW = ("openai/gpt-oss-20b", None)  # (key, identifier): 15 simulated seconds to load
QWEN = ("qwen/qwen3-4b", "qwen")
GEMMA = ("google/gemma-3-1b", None)
BASE_MODELS: tuple[tuple[str, str | None], ...] = (SLOW, QWEN)
USER_SERVER = {"cors": True}  # LM Studio's own setting that a plain `server start` would lose
STEADY_BEFORE_FAULT = 0.4  # seconds steady before a fault: past restart.reset_after (0.3 s)
SECOND_INSTALL = frozenset({"app_hung"})  # kinds played on their own install: no reset of the soak's

Model = tuple[str, str | None]
Snapshot = dict[str, Any]


def model_name(model: Model) -> str:
    """The name `lms` and the status know ``model`` by: its identifier, else its key."""
    return model[1] or model[0]


@dataclass
class SoakConfig:
    """What a soak does. Durations are wall seconds.

    ``faults`` and ``time_limit`` bound the soak: no fault starts past ``time_limit``; one in
    progress still finishes (each of its waits bounded by ``recover_timeout``) unless
    ``hard_limit`` cuts it short (it is then not counted and the soak ends).
    ``time_scale`` is the simulator's (0.12: the slow model loads in 1.8 s, longer than a
    restart takes to list the models again, so a restart during a load can make a duplicate).
    ``kinds`` restricts the catalogue (to reproduce one kind). ``workdir`` defaults to a
    new folder under /tmp (the socket path must stay short), removed at the end unless
    ``keep``.
    """

    faults: int = 200
    seed: int = 0
    time_limit: float = 3600.0
    hard_limit: float | None = None
    time_scale: float = 0.12
    recover_timeout: float = 60.0
    wedge_after: float = 30.0
    status_rate: float = 4.0  # /v1/status queries per second from the background thread
    kinds: tuple[str, ...] = KINDS
    workdir: Path | None = None
    keep: bool = False


# -- the supervisor's config --------------------------------------------------------------
def config_text(models: tuple[Model, ...] = BASE_MODELS, interval: str = "0.2", level: str = "info") -> str:
    """The soak's config: fast probes (0.2 s, 1 s timeout, 3 failures), backoff 0.1-1 s, starts 8 s."""
    text = (
        "[server]\nstart_timeout = 8\n"
        f"[health]\ninterval = {interval}\ntimeout = 1\nfailures_before_restart = 3\n"
        "[restart]\ninitial_delay = 0.1\nmax_delay = 1\njitter = 0\nreset_after = 0.3\n"
        f'[log]\nlevel = "{level}"\nformat = "json"\n'
    )
    for key, ident in models:
        text += f'[[models]]\nkey = "{key}"\n' + (f'identifier = "{ident}"\n' if ident else "")
    return text


def _invalid_configs() -> dict[str, str]:
    """Configs a live edit may leave behind; every one must be rejected, none may harm."""
    base = config_text()
    return {
        "not_toml": base + "[health\n",
        "unknown_key": base.replace("[health]\n", "[health]\nbogus = 1\n"),
        "wrong_type": base.replace('key = "qwen/qwen3-4b"\n', 'key = "qwen/qwen3-4b"\nttl = "10m"\n'),
        "nan_interval": config_text(interval="nan"),
        "inf_interval": config_text(interval="inf"),
        "nan_initial_delay": base.replace("initial_delay = 0.1", "initial_delay = nan"),
        "inf_ttl": base.replace('key = "qwen/qwen3-4b"\n', 'key = "qwen/qwen3-4b"\nttl = inf\n'),
        "deep_nesting": base + "x = " + "[" * 3000 + "]" * 3000 + "\n",
    }


INVALID_CONFIGS = _invalid_configs()


def problem_bound(text: str) -> float:
    """``failures_before_restart x interval + timeout`` (seconds) of the config ``text``: the
    time within which a deterministic fault must be a named problem in ``/v1/status``
    (1.6 s for :func:`config_text`)."""
    health = tomllib.loads(text)["health"]
    return float(health["failures_before_restart"]) * float(health["interval"]) + float(health["timeout"])


def problem_codes(snap: Snapshot) -> set[str]:
    """The codes of the snapshot's ``problems``."""
    return {str(p.get("code")) for p in snap.get("problems") or [] if isinstance(p, dict)}


def fault_order(seed: int, count: int, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """``count`` kinds in shuffled rounds of ``kinds``: random, yet every kind early and often."""
    rng = random.Random(seed)  # noqa: S311 - reproducible order
    order: list[str] = []
    while len(order) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        order += round_
    return order[:count]
