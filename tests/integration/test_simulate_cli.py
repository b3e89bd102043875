"""`lmsupervisor simulate` as other projects use it: a real process, a real client, real signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from lmsupervisor.pids import pid_alive
from lmsupervisor.simulator import common, hardware
from lmsupervisor.simulator.home import SimInstall, open_install
from tests.conftest import eventually

pytestmark = pytest.mark.integration


class Simulate:
    """A running `lmsupervisor simulate` and the environment it printed."""

    def __init__(self, proc: subprocess.Popen[str], env: dict[str, str], comments: list[str]) -> None:
        self.proc, self.env, self.comments = proc, env, comments

    @property
    def endpoint(self) -> str:
        line = next(c for c in self.comments if c.startswith("# HTTP endpoint: "))
        return line.removeprefix("# HTTP endpoint: ").split()[0]


def start_simulate(*args: str) -> Simulate:
    """Start `lmsupervisor simulate ARGS` and read what it prints until the last line of its block."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmsupervisor", "simulate", "--time-scale", "0.02", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    env: dict[str, str] = {}
    comments: list[str] = []
    for line in proc.stdout:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            env[name] = value.strip('"')
        else:
            comments.append(line.strip())
        if line.startswith("# Ctrl-C"):
            break
    else:
        assert proc.stderr is not None
        raise AssertionError(f"simulate exited {proc.wait(10)}: {proc.stderr.read()}")
    return Simulate(proc, env, comments)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Simulate]:
    """A `simulate` on a free port with its home in tmp_path; interrupted and reaped at teardown."""
    sim = start_simulate("--home", str(tmp_path / "home"), "--port", str(common.free_port()), "--load", "qwen/qwen3-4b")
    yield sim
    if sim.proc.poll() is None:
        sim.proc.send_signal(signal.SIGINT)
    sim.proc.wait(30)
    for stream in (sim.proc.stdout, sim.proc.stderr):
        if stream is not None:
            stream.close()
    open_install(tmp_path / "home").stop()


def fault(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmsupervisor", "simulate", "--home", str(home), "--fault", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prints_the_environment_and_serves_real_clients(running: Simulate, tmp_path: Path) -> None:
    """It prints HOME, PATH and the endpoint, loads --load models; the openai client chats there."""
    home = tmp_path / "home"
    assert [m["identifier"] for m in open_install(home).loaded()] == ["qwen/qwen3-4b"]
    assert (running.env["HOME"], running.env["PATH"].startswith(str(home / ".lmstudio" / "bin"))) == (str(home), True)
    assert running.env["OPENAI_BASE_URL"] == f"{running.endpoint}/v1"
    with openai.OpenAI(base_url=running.env["OPENAI_BASE_URL"], api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(model="qwen/qwen3-4b", messages=[{"role": "user", "content": "hi"}])
    assert (reply.choices[0].message.content or "").startswith("Simulated reply from qwen/qwen3-4b")


def test_faults_reach_the_running_simulator(running: Simulate, tmp_path: Path) -> None:
    """`--fault crash` kills its daemon; `--fault fail-load` makes the next load fail; unknown homes are refused."""
    home = tmp_path / "home"
    sim = open_install(home)
    pid = sim.daemon_pid()
    crashed = fault(home, "crash")
    assert (crashed.returncode, f"daemon {pid} killed" in crashed.stdout) == (0, True)
    assert eventually(lambda: not pid_alive(pid or 0))
    assert fault(home, "fail-load", "--model", "google/gemma-3-1b").returncode == 0
    load = sim.lms("load", "lmstudio-community/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf", "--exact", "--yes")
    assert (load.returncode, "insufficient system resources" in load.stderr) == (1, True)
    nowhere = fault(tmp_path / "nothing", "crash")
    assert (nowhere.returncode, "no simulated LM Studio here" in nowhere.stderr) == (1, True)


def test_ctrl_c_cleans_up(tmp_path: Path) -> None:
    """SIGINT stops the daemon and removes the temporary home it made; exit 0."""
    sim = start_simulate("--port", str(common.free_port()))
    root = Path(sim.env["HOME"])
    pid = open_install(root).daemon_pid()
    sim.proc.send_signal(signal.SIGINT)
    assert sim.proc.wait(30) == 0
    for stream in (sim.proc.stdout, sim.proc.stderr):
        if stream is not None:
            stream.close()
    assert (pid is not None, pid_alive(pid or 0), root.exists()) == (True, False, False)


def test_taken_port_is_refused(tmp_path: Path) -> None:
    """A port already in use (a real LM Studio, say) is an error naming the fix, exit 1."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "lmsupervisor", "simulate", "--home", str(tmp_path / "h"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert (proc.returncode, "pass another --port" in proc.stderr) == (1, True)


def test_every_simulator_fault_is_a_choice() -> None:
    """`simulate --fault` accepts exactly the faults the simulator knows (tool.FAULTS)."""
    from lmsupervisor.cliparser import SIMULATOR_FAULTS
    from lmsupervisor.simulator.tool import FAULTS

    assert sorted(SIMULATOR_FAULTS) == sorted(FAULTS)


def test_hardware_faults_take_their_options(make_sim: Callable[..., SimInstall]) -> None:
    """`--fault runtime-update --runtime X` selects X, `--fault cpu-fallback --factor 3` and
    `--fault gpu-late --seconds 7` land in the install's faults, `gpu-lost`/`gpu-back` toggle."""
    sim = make_sim()
    cpu = f"{hardware.CPU_ENGINE}@{hardware.ENGINE_VERSION}"
    updated = fault(sim.root, "runtime-update", "--runtime", cpu)
    assert (updated.returncode, updated.stdout.strip(), sim.selected_runtime()) == (
        0,
        f"the selected runtime is now {cpu}",
        cpu,
    )
    assert fault(sim.root, "cpu-fallback", "--factor", "3").returncode == 0
    assert fault(sim.root, "gpu-late", "--seconds", "7").returncode == 0
    assert fault(sim.root, "gpu-lost").returncode == 0
    faults = common.read_json(common.sim_dir(sim.home) / "faults.json", {})
    assert (faults["cpu_fallback"], faults["gpu_late"], faults["gpu_lost"]) == (3.0, 7.0, True)
    assert fault(sim.root, "gpu-back").returncode == 0
    assert common.read_json(common.sim_dir(sim.home) / "faults.json", {})["gpu_lost"] is False
    unknown = fault(sim.root, "runtime-update", "--runtime", "nowhere@1")
    assert (unknown.returncode, "runtime nowhere@1 is not installed" in unknown.stderr) == (1, True)
