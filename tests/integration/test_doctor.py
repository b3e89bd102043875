"""`lmsupervisor doctor` against the simulator: the real CLI process, HOME in tmp_path.

The Windows and macOS layouts run `diagnose` in-process with that Platform and the
simulated lms.exe / app rendered in tmp folders (the processes are this machine's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.config import Config, ModelConfig, ServerConfig
from lmsupervisor.doctor import diagnose, render
from lmsupervisor.lmstudio.install import Platform
from lmsupervisor.simulator.home import SimInstall

pytestmark = pytest.mark.integration
ORNITH = "jedisct1/Ornith-1.0-35B-MLX-oQ8"


def doctor(root: Path, *args: str) -> tuple[int, Any, str]:
    env = {**os.environ, "HOME": str(root), "PATH": "/usr/bin:/bin", "LMSUPERVISOR_CONFIG": str(root / "none.toml")}
    proc = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "doctor", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def codes(report: Any) -> set[str]:
    return {p["code"] for p in report["problems"]}


def errors(report: Any) -> set[str]:
    return {p["code"] for p in report["problems"] if p["severity"] == "error"}


def test_nothing_installed(tmp_path: Path) -> None:
    """An empty HOME: exit 1, not installed, the fix says where to download LM Studio."""
    code, report, _ = doctor(tmp_path)
    assert (code, report["lmstudio"]["installed"], codes(report)) == (1, False, {"not_installed"})
    assert "https://lmstudio.ai/download" in report["problems"][0]["fix"]


def test_installed_not_bootstrapped(make_sim: Any) -> None:
    """lms is found in the home, but bootstrap was never run: a warning with the command."""
    sim = make_sim(bootstrapped=False)
    _, report, _ = doctor(sim.root)
    assert (report["lmstudio"]["installed"], report["lmstudio"]["bootstrapped"]) == (True, False)
    assert "not_bootstrapped" in codes(report)


def test_daemon_down(sim: SimInstall) -> None:
    """Nothing running: daemon and server problems, and doctor does not start anything."""
    code, report, _ = doctor(sim.root)
    assert (code, errors(report)) == (1, {"daemon_not_running", "server_not_running"})
    assert report["lmstudio"]["daemon"]["running"] is False
    assert sim.daemon_pid() is None  # doctor woke nothing


def test_daemon_up_server_off(sim: SimInstall) -> None:
    """The daemon runs, the server is off: one error, whose fix is `lms server start` with the port."""
    sim.lms("daemon", "up")
    code, report, _ = doctor(sim.root)
    assert (code, errors(report)) == (1, {"server_not_running"})
    [problem] = report["problems"]
    assert f"server start --port {sim.http_port} --bind 127.0.0.1" in problem["fix"]
    assert report["lmstudio"]["daemon"]["pid"] == sim.daemon_pid()


def test_server_on_with_models(sim: SimInstall) -> None:
    """All up: exit 0, the endpoint, the latency and the loaded model identifiers."""
    sim.lms("server", "start")
    sim.lms("load", ORNITH, "--exact", "--yes")
    code, report, _ = doctor(sim.root)
    assert (code, report["problems"], report["server"]["running"]) == (0, [], True)
    assert report["server"]["api_endpoint"] == f"http://127.0.0.1:{sim.http_port}"
    assert [m["identifier"] for m in report["models"]] == ["ornith-1.0-35b-mlx-oq8"]
    assert report["server"]["last_probe_ms"] > 0


def test_declared_model_missing(sim: SimInstall, tmp_path: Path) -> None:
    """A model declared in the config but not loaded is an error naming it."""
    sim.lms("server", "start")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[models]]\nkey = "openai/gpt-oss-20b"\n')
    code, report, _ = doctor(sim.root, "--config", str(cfg))
    assert (code, errors(report)) == (1, {"model_not_loaded"})


def test_corrupt_settings_file(sim: SimInstall) -> None:
    """Corrupt settings.json and http-server-config.json: problems, no traceback."""
    sim.corrupt("settings.json")
    sim.corrupt("http-server-config.json", "\x00garbage")
    code, report, stderr = doctor(sim.root)
    assert {"settings_corrupt", "server_config_corrupt"} <= codes(report)
    assert (code, "Traceback" in stderr) == (1, False)


@pytest.mark.parametrize("value", ["localhost:1234", "999.1.1.1", "0.0.0.0 "])
def test_an_unusable_network_interface_is_named(sim: SimInstall, value: str) -> None:
    """LM Studio's saved networkInterface cannot be bound: doctor names server_address_invalid
    (an error, exit 1) with the value and the fix, instead of a traceback."""
    sim.server_config_path.write_text(json.dumps({"port": 1234, "networkInterface": value}))
    code, report, stderr = doctor(sim.root)
    problem = next(p for p in report["problems"] if p["code"] == "server_address_invalid")
    assert (code, "Traceback" in stderr, repr(value) in problem["message"]) == (1, False, True)
    assert "[server] bind" in problem["fix"]


def test_legacy_cache_home(make_sim: Any) -> None:
    """An install in ~/.cache/lm-studio is found and its server diagnosed; it warns about cleaners."""
    sim = make_sim(legacy_home=True)
    sim.lms("server", "start")
    code, report, _ = doctor(sim.root)
    # lms wrote the pointer file on its first run, as LM Studio does; the home stays in ~/.cache.
    assert (code, report["lmstudio"]["home"], report["server"]["running"]) == (
        0,
        str(sim.root / ".cache" / "lm-studio"),
        True,
    )
    assert "home_in_cache" in codes(report)


def test_legacy_profile(make_sim: Any) -> None:
    """LM Studio 0.3 (no `lms daemon`): the daemon is reported unsupported, not down."""
    sim = make_sim(profile="0.3")
    sim.lms("server", "start")
    code, report, _ = doctor(sim.root)
    assert (code, report["lmstudio"]["daemon"]["supported"], report["lmstudio"]["kind"]) == (0, False, "app")


def test_hung_lms_is_reported(sim: SimInstall, tmp_path: Path) -> None:
    """An lms that prints garbage becomes an lms_failed problem, not a traceback."""
    fake = tmp_path / "fake-lms"
    fake.write_text("#!/bin/sh\necho 'not json'\n")
    fake.chmod(0o755)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[lmstudio]\nlms = "{fake}"\n')
    code, report, stderr = doctor(sim.root, "--config", str(cfg))
    assert (code, "lms_failed" in codes(report), "Traceback" in stderr) == (1, True, False)


def test_bad_config_exits_78(tmp_path: Path) -> None:
    """A broken --config exits 78 with the key named."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[health]\ninterval = 'often'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "doctor", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode, "health.interval" in proc.stderr) == (78, True)


async def test_windows_layout(make_sim: Any) -> None:
    """Windows: lms.exe in the home and the app under AppData; bootstrap via the User PATH."""
    sim = make_sim(layout="windows", profile="0.3", bootstrapped=False)
    sim.lms("server", "start")
    platform = Platform("windows", sim.root, sim.env(), windows_user_path=str(sim.home / "bin"))
    diag = await diagnose(Config(), platform)
    assert (diag.install.lms, diag.install.bootstrapped, diag.ok) == (sim.home / "bin" / "lms.exe", True, True)
    assert diag.install.service_path == sim.root / "AppData" / "Local" / "Programs" / "LM Studio" / "LM Studio.exe"
    assert "running at" in render(diag)


async def test_macos_layout(make_sim: Any) -> None:
    """macOS: the app bundle from app-install-location.json, with a declared model loaded."""
    sim = make_sim(layout="darwin", profile="0.3")
    sim.lms("server", "start")
    sim.lms("load", ORNITH, "--exact", "--yes")
    diag = await diagnose(
        Config(models=(ModelConfig("ornith-1.0-35b-mlx-oq8"),)), Platform("darwin", sim.root, sim.env())
    )
    assert diag.install.kind == "app" and diag.ok, diag.problems
    assert str(diag.install.service_path).endswith("LM Studio.app/Contents/MacOS/LM Studio")
    assert [m.identifier for m in diag.loaded or []] == ["ornith-1.0-35b-mlx-oq8"]


async def test_capabilities_and_bind_problem(make_sim: Any) -> None:
    """doctor shows what this lms can do (0.3.31: Commander, daemon status only, no --bind,
    no REST v1) and that a declared LAN bind cannot be set from this CLI."""
    sim = make_sim(profile="0.3.31")
    sim.lms("server", "start")
    diag = await diagnose(Config(server=ServerConfig(bind="0.0.0.0")), Platform("linux", sim.root, sim.env()))
    caps = diag.to_json()["lmstudio"]["capabilities"]
    assert (caps["dialect"], caps["daemon"], caps["bind"], caps["rest_v1"]) == ("commander", ["status"], False, False)
    assert "bind_unsupported" in [p.code for p in diag.problems]
    assert "--bind no" in render(diag)


async def test_api_token_refused(make_sim: Any) -> None:
    """On 0.4 with "Require Authentication" and no token, doctor reports api_token_missing."""
    sim = make_sim(profile="0.4", api_token="sk-lm-abcd1234:abcdefghij0123456789")  # noqa: S106 - a test value
    sim.lms("server", "start")
    env = {k: v for k, v in sim.env().items() if k != "LM_API_TOKEN"}
    diag = await diagnose(Config(), Platform("linux", sim.root, env))
    assert (diag.rest_v1, "api_token_missing" in [p.code for p in diag.problems]) == (True, True)


def test_the_front_doors_are_shown_and_a_remote_proxy_warned(sim: SimInstall, tmp_path: Path) -> None:
    """`doctor` shows the proxy and metrics listen addresses, and warns (not errs) when the
    proxy listens where other machines reach LM Studio through it."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[proxy]\nlisten = "0.0.0.0:1235"\nallow_remote = true\n[metrics]\nlisten = "127.0.0.1:9464"\n')
    _, report, _ = doctor(sim.root, "--config", str(cfg))
    assert (report["proxy"], report["metrics"]) == (
        {"listen": "0.0.0.0:1235"},
        {"listen": "127.0.0.1:9464", "tls": False},
    )
    remote = [p for p in report["problems"] if p["code"] == "proxy_remote"]
    assert [p["severity"] for p in remote] == ["warning"]


def test_hardware_survey_and_the_gate(sim: SimInstall) -> None:
    """With the daemon up, doctor shows LM Studio's survey (GPU, runtime, compatibility) and
    no GPU problem; after a restart of the daemon without its GPU, the survey shows none and
    the remembered GPU (lmsupervisor's hardware.json) makes it gpu_missing."""
    assert sim.lms("daemon", "up").returncode == 0
    _, report, _ = doctor(sim.root)
    hardware = report["hardware"]
    assert ([g["name"] for g in hardware["gpus"]], hardware["compatibility"]["status"], hardware["remembered"]) == (
        ["NVIDIA GeForce RTX 4090"],
        "compatible",
        False,
    )
    state = sim.root / ".local" / "state" / "lmsupervisor"
    state.mkdir(parents=True, exist_ok=True)
    (state / "hardware.json").write_text(json.dumps({**hardware, "surveyed_at": 1.0}))
    sim.lose_gpu()
    assert sim.lms("daemon", "down").returncode == 0
    assert sim.lms("daemon", "up").returncode == 0  # its start-up survey finds no GPU
    code, report, _ = doctor(sim.root)
    assert (code, report["hardware"]["gpus"], "gpu_missing" in errors(report)) == (1, [], True)
