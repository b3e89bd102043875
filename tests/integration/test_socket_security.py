"""The status socket against another local user (a child process switched to `nobody`), and a
socket that never disappears: the real `lmsupervisor run` against the simulator (issue 7)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.conftest import eventually
from tests.integration.test_run import BASE_CONFIG, Running

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="switching to nobody needs root"),
]

NOBODY = 65534
PY = shutil.which("python3", path="/usr/bin:/bin") or sys.executable  # stdlib only: nobody cannot read our venv
CLIENT = """
import json, socket, sys
path, method, target = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
try:
    s.connect(path)
except OSError as exc:
    print(json.dumps({"errno": exc.errno}))
    sys.exit(0)
s.sendall(f"{method} {target} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\nContent-Length: 0\\r\\n\\r\\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
print(json.dumps({"status": int(data.split(b" ")[1])}))
"""
SPOOF = """
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
s.listen()
s.settimeout(30)
body = b'{"ready": true}'
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
    c.close()
"""


def as_nobody(*argv: str, group: int = NOBODY) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as uid nobody with only ``group`` (no root group left over)."""
    return subprocess.run(
        argv, user=NOBODY, group=group, extra_groups=[], capture_output=True, text=True, timeout=30, check=False
    )


def nobody_request(sock: Path, method: str, target: str) -> dict[str, int]:
    proc = as_nobody(PY, "-c", CLIENT, str(sock), method, target)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture
def base() -> Iterator[Path]:
    """A short folder everyone may enter (0755), like a home or /run/user's parent."""
    path = Path(tempfile.mkdtemp(prefix="lmss", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def launch(base: Path, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    runs: list[Running] = []

    def start(sim: SimInstall, extra: str = "", interval: float = 0.2) -> Running:
        config = tmp_path / f"config{len(runs)}.toml"
        config.write_text(BASE_CONFIG.replace("interval = 0.2", f"interval = {interval}") + extra)
        run = Running(sim, base / "lmsupervisor" / "status.sock", config)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()


def run_once(sim: SimInstall, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`lmsupervisor ARGS` once (``run`` gets ``--config``), as the simulated install's user."""
    extra = ["--config", str(config)] if args[0] == "run" else []
    return subprocess.run(
        [sys.executable, "-m", "lmsupervisor", *args, *extra],
        env=sim.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_another_user_cannot_connect_with_default_modes(sim: SimInstall, launch: Callable[..., Running]) -> None:
    """Folder 0700 and socket 0600: another uid gets EACCES before it can say anything."""
    run = launch(sim)
    run.wait_state("ready")
    assert (oct(run.sock.parent.stat().st_mode & 0o777), oct(run.sock.stat().st_mode & 0o777)) == ("0o700", "0o600")
    assert nobody_request(run.sock, "GET", "/v1/health") == {"errno": 13}


def test_a_group_member_reads_but_may_not_control(sim: SimInstall, launch: Callable[..., Running]) -> None:
    """With status.group: folder 0750 and socket 0660 of that group; members read, POST is 403."""
    run = launch(sim, '[status]\ngroup = "nogroup"\n')
    run.wait_state("ready")
    folder, sock = run.sock.parent.stat(), run.sock.stat()
    assert (oct(folder.st_mode & 0o777), folder.st_gid, oct(sock.st_mode & 0o777), sock.st_gid) == (
        "0o750",
        NOBODY,
        "0o660",
        NOBODY,
    )
    assert nobody_request(run.sock, "GET", "/v1/status") == {"status": 200}
    assert nobody_request(run.sock, "POST", "/v1/restart") == {"status": 403}
    assert nobody_request(run.sock, "GET", "/v1/health") == {"status": 200}  # still serving after the refusal


def test_a_missing_group_is_78_at_start_and_in_config_check(sim: SimInstall, tmp_path: Path, base: Path) -> None:
    """An unknown status.group: `config check` and `run` both exit 78 naming the key, no traceback."""
    config = tmp_path / "c.toml"
    config.write_text(f'[status]\nsocket = "{base}/lmsupervisor/s.sock"\ngroup = "no-such-group-x"\n')
    for proc in (run_once(sim, config, "config", "check", str(config)), run_once(sim, config, "run")):
        assert (proc.returncode, "status.group" in proc.stderr, "Traceback" in proc.stderr) == (78, True, False), proc


def test_planted_symlink_and_foreign_folder_are_refused(sim: SimInstall, tmp_path: Path) -> None:
    """In a shared sticky folder, another user's symlink or folder at our name is refused (78), the target untouched."""
    shared = Path(tempfile.mkdtemp(prefix="lmst", dir="/tmp"))
    try:
        shared.chmod(0o1777)
        target, planted = shared / "target", shared / "lmsupervisor"
        plant = f"import os; os.mkdir({str(target)!r}, 0o755); os.symlink({str(target)!r}, {str(planted)!r})"
        assert as_nobody(PY, "-c", plant).returncode == 0
        config = tmp_path / "c.toml"
        config.write_text(BASE_CONFIG + f'[status]\nsocket = "{planted}/status.sock"\n')
        proc = run_once(sim, config, "run")
        assert (proc.returncode, "symlink" in proc.stderr) == (78, True), proc.stderr
        assert (oct(target.stat().st_mode & 0o777), list(target.iterdir())) == ("0o755", [])
        assert (
            as_nobody(PY, "-c", f"import os; os.unlink({str(planted)!r}); os.mkdir({str(planted)!r})").returncode == 0
        )
        proc = run_once(sim, config, "run")
        assert (proc.returncode, "belongs to uid 65534" in proc.stderr) == (78, True), proc.stderr
        check = run_once(sim, config, "config", "check", str(config))
        assert check.returncode == 78, check.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_spoofed_socket_is_refused_by_status(sim: SimInstall) -> None:
    """Another user's socket answering {"ready": true} at the configured path: `status` exits 3 and says why."""
    shared = Path(tempfile.mkdtemp(prefix="lmst", dir="/tmp"))
    shared.chmod(0o1777)
    sock = shared / "status.sock"
    spoof = subprocess.Popen([PY, "-c", SPOOF, str(sock)], user=NOBODY, group=NOBODY, extra_groups=[])
    try:
        assert eventually(sock.exists, timeout=10)
        proc = subprocess.run(
            [sys.executable, "-m", "lmsupervisor", "status", "--socket", str(sock)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (proc.returncode, "refusing" in proc.stderr, "Traceback" in proc.stderr) == (3, True, False), proc
    finally:
        spoof.kill()
        spoof.wait(5)
        shutil.rmtree(shared, ignore_errors=True)


def test_a_file_at_the_socket_path_exits_78(sim: SimInstall, tmp_path: Path, base: Path) -> None:
    """A path that exists and is not a socket is a config error (78), not 'another instance' (69)."""
    (base / "lmsupervisor").mkdir(mode=0o700)
    (base / "lmsupervisor" / "s.sock").write_text("")
    config = tmp_path / "c.toml"
    config.write_text(BASE_CONFIG + f'[status]\nsocket = "{base}/lmsupervisor/s.sock"\n')
    proc = run_once(sim, config, "run")
    assert (proc.returncode, "not a socket" in proc.stderr) == (78, True), proc.stderr


def test_a_deleted_socket_comes_back(sim: SimInstall, launch: Callable[..., Running]) -> None:
    """A tmp cleaner deleting the socket: re-bound at the next health round, logged; a second run still exits 69."""
    run = launch(sim)
    run.wait_state("ready")
    run.sock.unlink()
    assert eventually(lambda: run.status() is not None, timeout=10)
    assert "status_socket_recreated" in run.log.read_text()
    second = launch(sim)
    assert second.proc.wait(30) == 69


def test_sighup_brings_the_socket_back_at_once(sim: SimInstall, launch: Callable[..., Running]) -> None:
    """With a long health interval, SIGHUP re-binds a deleted socket folder without waiting for the round."""
    run = launch(sim, interval=60)
    run.wait_state("ready")
    shutil.rmtree(run.sock.parent)
    run.proc.send_signal(signal.SIGHUP)
    assert eventually(lambda: run.status() is not None, timeout=10)
    assert oct(run.sock.parent.stat().st_mode & 0o777) == "0o700"
