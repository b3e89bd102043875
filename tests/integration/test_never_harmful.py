"""Never silent, never harmful (issue 14), outside in: a real `lmsupervisor run` against the
simulator. A failure the supervisor cannot fix is a named problem in the status at once, and
it never makes the supervisor stop, restart or kill LM Studio's daemon over and over."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from lmsupervisor.client import Client, StateEvent
from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_run import BASE_CONFIG, Running

pytestmark = pytest.mark.integration

ONE_MODEL = """
[[models]]
key = "qwen/qwen3-4b"
"""


def problems(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["code"]: p for p in snap["problems"]}


def set_network_interface(sim: SimInstall, value: object) -> None:
    """Write ``networkInterface`` into LM Studio's own http-server-config.json, as its GUI would."""
    path = sim.server_config_path
    data = json.loads(path.read_text()) if path.exists() else {"port": 1234}
    path.write_text(json.dumps({**data, "networkInterface": value}))


@pytest.mark.parametrize("value", ["localhost:1234", "127.0.0.1\n"])
def test_an_unusable_network_interface_is_named_and_starts_nothing(
    sim: SimInstall, start: Callable[..., Running], value: str
) -> None:
    """LM Studio's saved networkInterface cannot be bound and no bind is declared: the problem
    server_address_invalid (the file, the value, the fix) from the first bring-up, retries go
    on at the capped delay, LM Studio's daemon is never started, stopped or killed for it; once
    the setting is corrected, ready and the problem gone."""
    set_network_interface(sim, value)
    run = start(sim, ONE_MODEL)
    snap = run.wait_for(lambda s: "server_address_invalid" in problems(s))
    problem = problems(snap)["server_address_invalid"]
    assert (snap["state"] in ("starting", "backoff"), repr(value) in problem["message"]) == (True, True), snap
    assert "[server] bind" in problem["fix"]
    run.wait_for(lambda s: s["restarts"]["count"] >= 4)  # it keeps trying (max_delay 1 s here)
    assert (sim.daemon_starts(), sim.daemon_pid()) == (0, None)
    set_network_interface(sim, "127.0.0.1")
    snap = run.wait_state("ready")
    assert "server_address_invalid" not in problems(snap)
    assert sim.daemon_starts() == 1


def test_a_declared_bind_wins_over_an_unusable_network_interface(
    sim: SimInstall, start: Callable[..., Running]
) -> None:
    """With `[server] bind` declared, LM Studio's broken setting is not used: ready, no problem."""
    set_network_interface(sim, "localhost:1234")
    run = start(sim, ONE_MODEL, BASE_CONFIG.replace("start_timeout = 15", 'start_timeout = 15\nbind = "127.0.0.1"'))
    snap = run.wait_state("ready")
    assert (snap["server"]["bind"], problems(snap)) == ("127.0.0.1", {})


def test_a_broken_state_folder_is_a_problem_not_an_exit(sim: SimInstall, start: Callable[..., Running]) -> None:
    """lmsupervisor's state folder cannot be written (here its path is a file): `run` starts
    all the same (it used to exit 78 blaming status.socket), reaches ready, and the status
    names state_folder_unwritable with the fix."""
    state = sim.root / ".local" / "state" / "lmsupervisor"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("not a folder")
    run = start(sim, ONE_MODEL)
    snap = run.wait_for(lambda s: s["state"] == "ready" and "state_folder_unwritable" in problems(s))
    problem = problems(snap)["state_folder_unwritable"]
    assert (str(state) in problem["message"], snap["restarts"]["count"]) == (True, 0)
    assert run.proc.poll() is None


def test_a_hung_app_is_shown_while_the_bring_up_runs(
    make_sim: Callable[..., SimInstall], start: Callable[..., Running]
) -> None:
    """The GUI app (profile 0.4-app) hangs: the supervisor spares it and reports app_hung while
    the bring-up that found it still runs (a `problems` event in state `starting`), not when it
    ends; the app is never killed."""
    sim = make_sim(profile="0.4-app")
    sim.launch_app()
    run = start(sim, "", BASE_CONFIG.replace("start_timeout = 15", "start_timeout = 120"))
    run.wait_state("ready")
    app = sim.daemon_pid()
    assert app is not None
    seen: list[tuple[str, list[str]]] = []  # (state when sent, problem codes), for each problems event
    events = Client(str(run.sock)).events()
    with events:
        sim.hang_daemon()
        state = "ready"
        for event in events:
            if isinstance(event, StateEvent):
                state = event.state
            elif event.type == "problems":
                codes = [p["code"] for p in event.raw["problems"]]
                seen.append((state, codes))
                if "app_hung" in codes:
                    break
    assert seen and seen[-1][0] == "starting", seen
    assert psutil.pid_exists(app)  # never killed


def test_auth_on_without_a_token_is_a_problem_not_a_restart(make_sim: Callable[..., SimInstall], tmp_path: Path,
                                                            start: Callable[..., Running]) -> None:  # fmt: skip
    """LM Studio requires an API token and none is configured: ready through `lms` all the
    same, the token problem is shown, and nothing is restarted for it."""
    sim = make_sim(api_token="sk-lm-abcdefgh:abcdefghijklmnopqrst")  # noqa: S106 - the simulator's token
    run = start(sim, ONE_MODEL)
    snap = run.wait_for(lambda s: s["state"] == "ready" and any(c.startswith("api_token") for c in problems(s)))
    assert (snap["restarts"]["count"], sim.daemon_starts()) == (0, 1)
