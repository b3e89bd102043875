"""The native host starts and stops LM Studio without a supervisor, through the supervisor's
own bring-up (capabilities included), on every release line the simulator models (issue 14
item 4): a real `lmsupervisor native-host` process against the simulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_nativehost import Browser

pytestmark = pytest.mark.integration


def greets(sim: SimInstall) -> bool:
    """Whether LM Studio's HTTP server answers its greeting (facts §4), asked directly."""
    try:
        answer = httpx.get(f"{sim.http_url}/lmstudio-greeting", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.json() == {"lmstudio": True}


@pytest.mark.parametrize("profile", ["0.3.31", "0.3-cmdts", "0.4", "0.4-app"])
def test_start_follows_the_capabilities_of_the_install(
    make_sim: Callable[..., SimInstall], native_host: Callable[..., Browser], tmp_path: Path, profile: str
) -> None:
    """Nothing running, no supervisor: ``start_lmstudio`` brings LM Studio up with only the
    `lms` commands and flags this install has (no ``--bind`` on 0.3, no ``daemon up`` where
    only ``daemon status`` exists); a second start finds it running."""
    sim = make_sim(profile=profile)
    wrapper, calls = sim.counting_lms(tmp_path)
    port = native_host(sim, f'[lmstudio]\nlms = "{wrapper}"\n')
    started = port.ask({"action": "start_lmstudio", "id": "s1"}, timeout=60)
    assert started["status"] == "success", (started, calls.read_text())
    p = started["payload"]
    assert (p["started_by"], p["how"], p["server_running"], started["id"]) == ("native_host", "started", True, "s1")
    assert greets(sim)
    commands = [line.split() for line in calls.read_text().splitlines() if "--help" not in line]
    if not sim.release.bind_flag:
        assert not [c for c in commands if "--bind" in c], commands
    if "up" not in sim.release.daemon:
        assert ["daemon", "up", "--json"] not in commands, commands
    again = port.ask({"action": "start_lmstudio"})
    assert (again["status"], again["payload"]["how"]) == ("success", "already_running")
    assert port.close() == 0


@pytest.mark.parametrize("profile", ["0.4", "0.3.31", "0.3-cmdts"])
def test_stop_with_nothing_running_is_done(
    make_sim: Callable[..., SimInstall], native_host: Callable[..., Browser], profile: str
) -> None:
    """``stop_lmstudio`` with ``daemon: true`` and nothing running succeeds: `lms server stop`
    says it is not running, `daemon down` says "Daemon is not running." (exit 1, facts §9) or
    does not exist on this install; nothing is started by the stop."""
    sim = make_sim(profile=profile)
    port = native_host(sim)
    stopped = port.ask({"action": "stop_lmstudio", "daemon": True, "id": 7}, timeout=60)
    assert stopped["status"] == "success", stopped
    p = stopped["payload"]
    assert (p["stopped"], p["daemon_stopped"], p["server_running"], stopped["id"]) == (False, False, False, 7)
    assert (sim.daemon_pid(), greets(sim)) == (None, False)
    assert port.close() == 0


def test_start_then_stop_the_daemon_on_04(
    make_sim: Callable[..., SimInstall], native_host: Callable[..., Browser]
) -> None:
    """On 0.4 a started LM Studio is stopped, server and daemon, by ``stop_lmstudio`` with ``daemon: true``."""
    sim = make_sim(profile="0.4")
    port = native_host(sim)
    assert port.ask({"action": "start_lmstudio"}, timeout=60)["status"] == "success"
    assert sim.daemon_pid() is not None
    stopped = port.ask({"action": "stop_lmstudio", "daemon": True}, timeout=60)
    assert stopped["status"] == "success", stopped
    assert (stopped["payload"]["stopped"], stopped["payload"]["daemon_stopped"]) == (True, True)
    assert greets(sim) is False
    assert port.close() == 0
