"""`lmsupervisor` as it runs on Windows and on macOS, on this Linux machine: the supervisor's
processes start under ``tests/shapes/sitecustomize.py`` (a Windows- or macOS-shaped
interpreter, see ``shape_guard.py``) with ``$LMSUPERVISOR_PLATFORM`` naming the platform,
against a simulated LM Studio laid out as on that OS (``lms.exe``, a home under
``%USERPROFILE%``). The simulated LM Studio itself is an ordinary Linux process.

Windows: status over loopback TCP + token (the endpoint file in
``%LOCALAPPDATA%\\Temp\\lmsupervisor``), a Ctrl-C stop. macOS: the Unix socket, a SIGTERM
stop, the daemon watched through kqueue (the stand-in of ``kqueue_fake.py``). In both, every
Unix-only call the shape refuses (even one the code caught) fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.client.sync import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.simulator.home import SimInstall
from tests.conftest import eventually
from tests.integration.test_nativehost import Browser
from tests.integration.test_run import BASE_CONFIG

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "tests" / "shapes"
ONE_MODEL = '[[models]]\nkey = "qwen/qwen3-4b"\nidentifier = "qwen"\n'
STOP = {"windows": signal.SIGINT, "darwin": signal.SIGTERM}  # Ctrl-C on Windows; launchd sends SIGTERM


class Shaped:
    """The environment of a ``shape`` (windows or darwin) machine whose user home is ``sim.root``."""

    def __init__(self, shape: str, sim: SimInstall, short_dir: Path, tmp_path: Path) -> None:
        self.shape, self.sim = shape, sim
        self.refused = tmp_path / f"refused-{shape}.log"
        env = sim.env()
        for var in (
            "XDG_RUNTIME_DIR",
            "XDG_CONFIG_HOME",
            "XDG_STATE_HOME",
            "LMSUPERVISOR_SOCKET",
            "LMSUPERVISOR_CONFIG",
        ):
            env.pop(var, None)
        env["LMSUPERVISOR_PLATFORM"] = shape
        env["PYTHONPATH"] = os.pathsep.join([str(SHAPES), str(REPO)])
        if shape == "windows":
            local = sim.root / "AppData" / "Local"
            env.update(
                USERPROFILE=str(sim.root), LOCALAPPDATA=str(local), APPDATA=str(sim.root / "AppData" / "Roaming")
            )
            env["PATH"] = f"{sim.lms_path.parent}{os.pathsep}{env.get('PATH', '')}"  # lms bootstrap's User PATH
            self.sock = local / "Temp" / "lmsupervisor" / "status.sock"  # the default: no socket named anywhere
        else:
            self.sock = short_dir / "status.sock"  # ~/Library/Caches/... under tmp_path is too long for sun_path
            env["LMSUPERVISOR_SOCKET"] = str(self.sock)
        self.env = env

    def shaped(self) -> dict[str, str]:
        """The environment that shapes the next Python started with it (one process: the variable goes)."""
        return {**self.env, "LMSUPERVISOR_TEST_SHAPE": self.shape, "LMSUPERVISOR_TEST_SHAPE_LOG": str(self.refused)}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lmsupervisor", *args],
            env=self.shaped(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        try:
            snap: dict[str, Any] = request(str(self.sock), "GET", "/v1/status", timeout=5)[1]
        except StatusSocketError:
            return {}
        return snap

    def refusals(self) -> list[str]:
        return self.refused.read_text().splitlines() if self.refused.exists() else []


def test_the_shaped_interpreter_refuses_unix_calls(make_sim: Any, short_dir: Path, tmp_path: Path) -> None:
    """The shapes are real: a Windows-shaped Python refuses lmsupervisor's Unix room (and logs
    it, though caught); a macOS-shaped one has no pidfd but a kqueue."""
    windows = Shaped("windows", make_sim("w", layout="windows"), short_dir, tmp_path)
    probe = (
        "from lmsupervisor.platform.posix import Posix\n"
        "try:\n    Posix().uid()\nexcept AttributeError as e:\n    print('refused:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=windows.shaped(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "refused: module 'os' has no attribute 'getuid'", done
    assert windows.refusals() == ["lmsupervisor.platform.posix: os.getuid"]
    darwin = Shaped("darwin", make_sim("d", layout="darwin"), short_dir, tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "import os, select; print(hasattr(os, 'pidfd_open'), hasattr(select, 'kqueue'))"],
        env=darwin.shaped(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split() == ["False", "True"], done


@pytest.mark.parametrize("shape", ["windows", "darwin"])
def test_run_on_the_platform_seam(shape: str, make_sim: Any, short_dir: Path, tmp_path: Path) -> None:
    """`run` reaches ready, recovers a kill -9 of the daemon, answers `status`, `wait`,
    `doctor`, `service install --dry-run` and the native host, stops cleanly on the
    platform's stop path, and leaves LM Studio running; no Unix-only call was attempted."""
    sim = make_sim(layout=shape)
    box = Shaped(shape, sim, short_dir, tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(BASE_CONFIG + ONE_MODEL, encoding="utf-8")
    log = tmp_path / "run.log"
    with log.open("ab") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "lmsupervisor", "run", "--config", str(config)],
            env=box.shaped(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert eventually(lambda: box.status().get("state") == "ready", timeout=60), log.read_text()[-3000:]
        snap = box.status()
        assert snap["lmstudio"]["lms"] == str(sim.lms_path)
        assert sim.lms_path.name == ("lms.exe" if shape == "windows" else "lms")
        endpoint = Path(f"{box.sock}.tcp.json")
        if shape == "windows":  # TCP + token: no socket file, the endpoint file instead
            assert (box.sock.exists(), sorted(json.loads(endpoint.read_text()))) == (
                False,
                ["pid", "pid_namespace", "port", "started", "token"],
            )
        else:
            assert (stat.S_ISSOCK(box.sock.stat().st_mode), endpoint.exists()) == (True, False)

        old = sim.crash_daemon()
        recovered = lambda: (s := box.status()).get("state") == "ready" and s["restarts"]["count"] == 1  # noqa: E731
        assert eventually(recovered, timeout=60), log.read_text()[-3000:]
        snap = box.status()
        assert snap["lmstudio"]["daemon_pid"] not in (None, old)
        assert "exited" in snap["restarts"]["last_reason"]
        pid = sim.daemon_pid()

        status = box.cli("status")
        assert (status.returncode, "qwen/qwen3-4b as qwen: loaded" in status.stdout) == (0, True), status
        waited = box.cli("wait", "--timeout", "30")
        assert waited.returncode == 0, waited
        doctor = box.cli("doctor", "--json", "--config", str(config))
        assert "Traceback" not in doctor.stderr, doctor.stderr
        assert json.loads(doctor.stdout), doctor
        unit = box.cli("service", "install", "--dry-run", "--config", str(config))
        manager = "schtasks" if shape == "windows" else "launchd"
        assert (unit.returncode, f": {manager} " in unit.stdout) == (0, True), unit

        host_config = tmp_path / "host.toml"
        host_config.write_text("", encoding="utf-8")
        argv = [sys.executable, "-m", "lmsupervisor", "native-host", "--config", str(host_config)]
        browser = Browser(argv, box.shaped(), tmp_path / "host.err")
        checked = browser.ask({"action": "check_lmstudio"})
        assert browser.close() == 0
        assert (checked["status"], checked["payload"]["supervisor"]["state"]) == ("success", "ready"), checked

        run.send_signal(STOP[shape])
        assert run.wait(30) == 0, log.read_text()[-3000:]
        assert '"supervisor_exited"' in log.read_text()
        assert not endpoint.exists() and not box.sock.exists()  # removed at shutdown
        assert sim.daemon_pid() == pid  # LM Studio left running
        assert json.loads(sim.lms("server", "status", "--json").stdout)["running"] is True
        assert box.refusals() == []
        assert "Traceback" not in log.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
