"""The real `lmsupervisor run` against every simulated release line (facts §8): the main
scenarios, LAN binds, CORS, REST v1 with API tokens, and what `lms` costs while idle."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmsupervisor.client import Client
from lmsupervisor.client.sync import open_events
from lmsupervisor.lmstudio.capabilities import CapabilityCache
from lmsupervisor.lmstudio.lms import Lms, LmsClient
from lmsupervisor.simulator import profiles
from lmsupervisor.simulator.home import SimInstall, create_install
from tests.conftest import eventually
from tests.integration.test_run import BASE_CONFIG, Running, loaded_ids

pytestmark = pytest.mark.integration

PROFILES = list(profiles.PROFILES)
FAST_LADDER = BASE_CONFIG.replace("start_timeout = 15", "start_timeout = 3")
KILL_APP = FAST_LADDER.replace("[restart]", "[restart]\nkill_app = true")


def probes_judged(run: Running) -> float:
    """Liveness probes the supervisor has judged so far (ok or failed), from its /metrics."""
    text = Client(run.sock).request("GET", "/metrics").body.decode()
    families = text_string_to_metric_families(text)
    return sum(s.value for f in families for s in f.samples if s.name == "lmsupervisor_probes_total")


def server(line: str, base: str = BASE_CONFIG) -> str:
    """``base`` with ``line`` added to its ``[server]`` table."""
    return base.replace("[server]", f"[server]\n{line}")


MODELS = """
[[models]]
key = "google/gemma-3-1b"
[[models]]
key = "qwen/qwen3-4b"
identifier = "qwen"
"""
# 0.3.10's `ls --json` has no modelKey (facts §8): models are declared by their path there.
LEGACY_MODELS = """
[[models]]
key = "lmstudio-community/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf"
[[models]]
key = "lmstudio-community/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf"
identifier = "qwen"
"""
TOKEN = "sk-lm-abcd1234:abcdefghij0123456789"


def declared(profile: str) -> str:
    """The two declared models, as a user of ``profile`` can write them."""
    return MODELS if profiles.get(profile).ls_model_key else LEGACY_MODELS


def expected_capabilities(name: str) -> dict[str, object]:
    """The capabilities a supervisor must detect for a profile: its row of the table.
    ``load --local`` is hidden from help (facts §9; the load pass learns it from
    ``deviceIdentifier``), so help never shows it."""
    row = profiles.get(name)
    return {
        "dialect": row.dialect,
        "daemon": sorted(row.daemon & {"status", "up", "down"}),
        "bind": row.bind_flag,
        "local": False,
        "ttl": row.ttl_flag,
        "rest_v1": row.rest_v1,
    }


@pytest.mark.parametrize("profile", PROFILES)
def test_main_scenarios(profile: str, make_sim: Callable[..., SimInstall], start: Callable[..., Running]) -> None:
    """Cold start, kill -9 recovery, a server stopped behind our back, then adoption by a new
    supervisor: ready each time with both models and no `:2`, on every release line."""
    sim = make_sim(profile=profile)
    run = start(sim, declared(profile))
    snap = run.wait_state("ready")
    assert loaded_ids(sim) == ["google/gemma-3-1b", "qwen"]
    caps = snap["lmstudio"]["capabilities"]
    assert {k: caps[k] for k in expected_capabilities(profile)} == expected_capabilities(profile)
    assert (snap["lmstudio"]["cli_version"], snap["problems"]) == (sim.release.cli_version, [])
    if sim.release.rest_v1 or "up" in sim.release.daemon:
        assert snap["lmstudio"]["version"] == sim.release.version  # daemon up --json or /lms-status

    old = sim.crash_daemon()
    snap = run.wait_for(lambda s: s["state"] == "ready" and s["restarts"]["count"] == 1)
    assert snap["lmstudio"]["daemon_pid"] not in (None, old)
    assert loaded_ids(sim) == ["google/gemma-3-1b", "qwen"]

    assert sim.lms("server", "stop").returncode == 0
    snap = run.wait_for(lambda s: s["state"] == "ready" and s["restarts"]["count"] == 2)
    assert "probes" in snap["restarts"]["last_reason"]

    pid = sim.daemon_pid()
    assert run.stop() == 0  # LM Studio is left running
    again = start(sim, declared(profile))
    snap = again.wait_state("ready")
    assert (snap["lmstudio"]["daemon_pid"], snap["restarts"]["count"], loaded_ids(sim)) == (
        pid,
        0,
        ["google/gemma-3-1b", "qwen"],
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_hang_is_recovered(profile: str, make_sim: Callable[..., SimInstall], start: Callable[..., Running]) -> None:
    """A daemon (or app, with kill_app = true) that accepts and never answers is replaced."""
    sim = make_sim(profile=profile)
    run = start(sim, declared(profile), base=KILL_APP)
    run.wait_state("ready")
    old = sim.daemon_pid()
    sim.hang_daemon()
    run.wait_for(lambda s: s["state"] == "backoff", timeout=20)
    snap = run.wait_for(lambda s: s["state"] == "ready" and s["lmstudio"]["daemon_pid"] not in (None, old), timeout=60)
    assert loaded_ids(sim) == ["google/gemma-3-1b", "qwen"]
    assert snap["restarts"]["count"] >= 1


def test_hung_app_is_never_killed_by_default(
    make_sim: Callable[..., SimInstall], start: Callable[..., Running]
) -> None:
    """With the GUI app holding a hung service and kill_app left false, the app lives on and
    the status reports app_hung with the fix (facts §8: the app is the user's program)."""
    sim = make_sim(profile="0.4-app")
    run = start(sim, "", base=FAST_LADDER)
    run.wait_state("ready")
    app = sim.daemon_pid()
    assert app is not None
    sim.hang_daemon()
    snap = run.wait_for(lambda s: "app_hung" in [p["code"] for p in s["problems"]], timeout=60)
    problem = next(p for p in snap["problems"] if p["code"] == "app_hung")
    assert "kill_app = true" in problem["fix"]
    assert psutil.pid_exists(app)  # still running
    assert "daemon_terminating" not in run.log.read_text()


def test_lan_bind_on_04(make_sim: Callable[..., SimInstall], start: Callable[..., Running]) -> None:
    """bind = "0.0.0.0" on 0.4: `server start` exits 1 while serving (BT#1720); the probe
    decides, so the supervisor is ready, without restarts, bound as declared."""
    sim = make_sim(profile="0.4")
    run = start(sim, MODELS, base=server('bind = "0.0.0.0"'))
    snap = run.wait_state("ready")
    assert (snap["server"]["bind"], snap["restarts"]["count"], snap["problems"]) == ("0.0.0.0", 0, [])
    assert json.loads(sim.server_config_path.read_text())["networkInterface"] == "0.0.0.0"
    assert "server_start_exit_ignored" in run.log.read_text()


@pytest.mark.parametrize("profile", ["0.4", "0.3.31"])
def test_specific_address_bind(
    profile: str, make_sim: Callable[..., SimInstall], start: Callable[..., Running]
) -> None:
    """A server bound to one address (127.0.0.2 here, a LAN IP on real machines). On 0.3.31
    `lms server status`/`stop` probe 127.0.0.1 and call it "not running" (lms#622); on 0.4 they
    probe the saved address. Either way our probe at the bound address decides: a restart
    request, a server-only hang and an adoption all end ready, still bound there."""
    sim = make_sim(profile=profile, server_config={"networkInterface": "127.0.0.2"})
    run = start(sim, MODELS, base=server('bind = "127.0.0.2"'))
    snap = run.wait_state("ready")
    assert (snap["server"]["bind"], snap["server"]["api_endpoint"], snap["problems"]) == (
        "127.0.0.2",
        f"http://127.0.0.2:{sim.http_port}",
        [],
    )
    stop = sim.lms("server", "stop")  # what the restart rung will run: lms#622 on 0.3.31
    assert (stop.returncode, "not running" in stop.stderr) == ((1, True) if profile == "0.3.31" else (0, False))
    if stop.returncode == 0:
        run.wait_for(lambda s: s["restarts"]["count"] == 1 and s["state"] == "ready")
    Client(run.sock).restart()
    snap = run.wait_for(lambda s: s["state"] == "ready" and "requested" in (s["restarts"]["last_reason"] or ""))
    sim.hang_http()
    snap = run.wait_for(lambda s: s["state"] == "ready" and "probes" in (s["restarts"]["last_reason"] or ""), 60)
    assert (snap["server"]["bind"], loaded_ids(sim)) == ("127.0.0.2", ["google/gemma-3-1b", "qwen"])
    assert json.loads(sim.server_config_path.read_text())["networkInterface"] == "127.0.0.2"
    pid = sim.daemon_pid()
    assert run.stop() == 0
    again = start(sim, MODELS, base=server('bind = "127.0.0.2"'))
    snap = again.wait_state("ready")
    assert (snap["lmstudio"]["daemon_pid"], snap["restarts"]["count"]) == (pid, 0)


def test_lan_bind_without_bind_flag(make_sim: Callable[..., SimInstall], start: Callable[..., Running]) -> None:
    """bind = "0.0.0.0" on an lms without --bind (0.3.31): never passed (it would fail the whole
    command); the server keeps its saved interface and bind_unsupported says how to fix it."""
    sim = make_sim(profile="0.3.31")
    run = start(sim, "", base=server('bind = "0.0.0.0"'))
    snap = run.wait_state("ready")
    assert (snap["server"]["bind"], snap["restarts"]["count"]) == ("127.0.0.1", 0)
    problem = next(p for p in snap["problems"] if p["code"] == "bind_unsupported")
    assert "Serve on Local Network" in problem["fix"]
    assert "--bind" not in run.log.read_text()


def test_declared_cors_is_applied_and_verified(
    make_sim: Callable[..., SimInstall], start: Callable[..., Running]
) -> None:
    """A declared CORS change is applied by stop then start and verified with an Origin probe,
    at start (the running server differs) and on a reload."""
    sim = make_sim(profile="0.4")
    assert sim.lms("server", "start").returncode == 0  # running, CORS off
    run = start(sim, "", base=server("cors = true"))
    snap = run.wait_state("ready")
    assert (snap["server"]["cors"], snap["problems"]) == (True, [])
    assert json.loads(sim.server_config_path.read_text())["cors"] is True
    run.config.write_text(server("cors = false"))
    run.proc.send_signal(signal.SIGHUP)
    run.wait_for(lambda s: s["server"]["cors"] is False and s["state"] == "ready")
    assert json.loads(sim.server_config_path.read_text())["cors"] is False


def test_idle_04_runs_no_lms(
    make_sim: Callable[..., SimInstall], start: Callable[..., Running], tmp_path: Path
) -> None:
    """On 0.4 with REST v1, recovery after kill -9 runs only `daemon up`, `server start` and
    the hardware survey before loading (issue 17), and idle drift checks run no `lms` at all
    (GET /api/v1/models instead)."""
    sim = make_sim(profile="0.4")
    wrapper, calls = sim.counting_lms(tmp_path)
    run = start(sim, f'[lmstudio]\nlms = "{wrapper}"\n' + MODELS.replace('identifier = "qwen"\n', ""))
    snap = run.wait_state("ready")
    assert snap["lmstudio"]["capabilities"]["rest_drift"] is True
    before = len(calls.read_text().splitlines())
    sim.crash_daemon()
    run.wait_for(lambda s: s["state"] == "ready" and s["restarts"]["count"] == 1)
    recovery = calls.read_text().splitlines()[before:]
    assert [c.split()[:2] for c in recovery] == [["daemon", "up"], ["server", "start"], ["runtime", "survey"]]
    idle_from, probed = len(calls.read_text().splitlines()), probes_judged(run)
    # ten probe rounds, however long the machine takes for them (about 2 s idle)
    assert eventually(lambda: probes_judged(run) >= probed + 10, timeout=30)
    assert calls.read_text().splitlines()[idle_from:] == []  # 10 probe rounds, no lms


def test_api_token(make_sim: Callable[..., SimInstall], start: Callable[..., Running], tmp_path: Path) -> None:
    """ "Require Authentication" on: the configured token (from a file) makes REST work; a wrong
    one is a problem with its fix, never a restart loop, while `lms` stands in."""
    sim = make_sim(profile="0.4", api_token=TOKEN)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    run = start(sim, f'[lmstudio]\napi_token_file = "{token_file}"\n' + MODELS)
    snap = run.wait_state("ready")
    assert (snap["problems"], snap["lmstudio"]["capabilities"]["rest_v1"]) == ([], True)
    assert run.stop() == 0
    wrong = start(sim, '[lmstudio]\napi_token = "sk-lm-wrong123:abcdefghij0123456789"\n' + MODELS)
    snap = wrong.wait_state("ready")
    assert "api_token_invalid" in [p["code"] for p in snap["problems"]]
    snap = wrong.wait_for(lambda s: s["state"] == "ready", timeout=5)
    assert snap["restarts"]["count"] == 0


def test_rest_download_progress(make_sim: Callable[..., SimInstall], start: Callable[..., Running]) -> None:
    """A declared model that is not downloaded is fetched through REST v1, its progress (bytes,
    total) in a model event, then loaded."""
    sim = make_sim(profile="0.4", time_scale=0.5)
    run = start(sim, '[[models]]\nkey = "ibm/granite-4-micro"\ndownload = true\n')
    assert eventually(lambda: run.status() is not None, timeout=30)
    events = open_events(run.sock, timeout=60)
    seen = []
    for event in events:
        if event.get("type") == "model" and event.get("download"):
            seen.append(event["download"])
        if event.get("type") == "state" and event["state"] == "ready":
            break
    events.close()
    assert seen and seen[0]["total"] == 2_100_000_000
    assert loaded_ids(sim) == ["ibm/granite-4-micro"]


@pytest.mark.parametrize("name", list(profiles.PROFILES))
def test_every_profile_detected_as_its_row(name: str, tmp_path: Path) -> None:
    """The simulated `lms` of every release line is detected as its row of the profile table,
    also with FORCE_COLOR in the environment. The JSON shapes are not told by a 0.0.x
    version (facts §9): the parsers read both, so they are not compared here."""
    sim = create_install(tmp_path, profile=name, lms_cost=(0.0, 0.0))
    env = {**sim.env(), "FORCE_COLOR": "1"}
    caps = asyncio.run(CapabilityCache().get(sim.lms_path, LmsClient(Lms(sim.lms_path, env=env))))
    row = sim.release
    assert (caps.cli_version, caps.dialect, caps.daemon, caps.bind, caps.local, caps.ttl) == (
        row.cli_version,
        row.dialect,
        row.daemon & {"status", "up", "down"},
        row.bind_flag,
        False,  # hidden from help (facts §9)
        row.ttl_flag,
    )
