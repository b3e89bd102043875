"""A throwaway user with a real systemd user manager (the recipe in service-facts.md).

Needs root, systemd's binaries and a writable cgroup2 mount; :func:`unavailable` says
what is missing, so tests skip with that reason. Everything it creates is removed by
:meth:`UserManager.destroy`: every process of the user (ended by PID), the user and its
home, the runtime folder, the cgroup subtree, and ``/run/systemd/system`` if it made it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SYSTEMD = Path("/lib/systemd/systemd")
TOOLS = ("useradd", "userdel", "setpriv", "setsid", "systemctl")
BOOTED_MARKER = Path("/run/systemd/system")  # what sd_booted() looks for


def cgroup2_mount() -> Path | None:
    """Where the cgroup2 hierarchy is mounted (``/sys/fs/cgroup/unified`` on these machines)."""
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


def unavailable() -> str | None:
    """Why a user manager cannot run here, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (to create a user and a cgroup for its systemd user manager)"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    mount = cgroup2_mount()
    if mount is None or not os.access(mount, os.W_OK):
        return "no writable cgroup2 mount"
    if system_python() is None:
        return f"no system python{sys.version_info.major}.{sys.version_info.minor} another user can run"
    return None


def system_python() -> Path | None:
    """An interpreter of our minor version outside any home (ours may live in /root)."""
    for folder in ("/usr/bin", "/usr/local/bin"):
        path = Path(folder) / f"python{sys.version_info.major}.{sys.version_info.minor}"
        if path.exists() and os.stat(path).st_mode & 0o005 == 0o005:
            return path
    return None


CHECKOUT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 600.0  # seconds for `pip wheel` with build isolation on a busy machine (~10 s idle)


def build_wheel(dest: Path) -> Path:
    """This checkout's lmsupervisor as a wheel in ``dest``, built by pip with the build
    requirements of pyproject.toml from a copy of the sources (no ``build/`` in the checkout).

    The throwaway user cannot read the checkout itself when it lies in a folder only root may
    enter (a clone under ``/root``): it gets this wheel instead. Returns the wheel's path."""
    src = dest / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(CHECKOUT / name, src / name)
    shutil.copytree(CHECKOUT / "lmsupervisor", src / "lmsupervisor", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dest), str(src)],
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )
    shutil.rmtree(src)
    (wheel,) = dest.glob("lmsupervisor-*.whl")
    return wheel


def runtime_distributions() -> list[metadata.Distribution]:
    """The installed distributions lmsupervisor needs to run (its requirements without extras,
    and theirs), from this environment."""
    found: dict[str, metadata.Distribution] = {}
    todo = [req.name for req in map(Requirement, metadata.requires("lmsupervisor") or []) if _runtime(req)]
    while todo:
        dist = metadata.distribution(todo.pop())
        name = canonicalize_name(dist.metadata["Name"])
        if name not in found:
            found[name] = dist
            todo += [req.name for req in map(Requirement, dist.requires or []) if _runtime(req)]
    return list(found.values())


def _runtime(req: Requirement) -> bool:
    return req.marker is None or req.marker.evaluate({"extra": ""})


def service_venv(dest: Path, wheel: Path) -> Path:
    """A venv under ``dest`` that another user can run: ``wheel`` installed by pip (which writes
    ``bin/lmsupervisor``), and the runtime dependencies copied from this environment (the same
    versions the tests run with, no package index needed). Nothing in it points back into the
    checkout or this environment. Returns the console script."""
    python = system_python()
    assert python is not None
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(dest)], check=True, timeout=60)
    purelib = Path(
        subprocess.run(
            [str(dest / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    )
    for dist in runtime_distributions():
        for file in dist.files or []:
            if ".." in file.parts or "__pycache__" in file.parts:
                continue  # console scripts of the dependencies, bytecode
            target = purelib / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(str(dist.locate_file(file))), target)
    pip = [sys.executable, "-m", "pip", "--python", str(dest / "bin" / "python"), "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, timeout=120)
    for folder, _, _ in os.walk(dest):  # whatever root's umask: the throwaway user runs it
        os.chmod(folder, 0o755)  # noqa: S103 - world-readable on purpose, like a venv under /tmp
    return dest / "bin" / "lmsupervisor"


class UserManager:
    """A user ``name`` (created here) running ``systemd --user`` in its own cgroup."""

    def __init__(self, name: str) -> None:
        self.name = name
        mount = cgroup2_mount()
        assert mount is not None
        self.cgroup = mount / f"lmsv-test-{name}"
        self.uid = self.gid = -1
        self.home = Path("/nonexistent")
        self.runtime = Path("/nonexistent")
        self.manager: subprocess.Popen[bytes] | None = None
        self.log_path = Path(f"/tmp/{name}-manager.log")
        self._made_marker = False
        self._made_user = False

    # -- setup ------------------------------------------------------------------------
    def create(self) -> None:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", self.name], check=True, capture_output=True, timeout=30)
        self._made_user = True
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)
        self.runtime = Path(f"/tmp/xdg-{self.uid}")
        self.runtime.mkdir(mode=0o700)
        os.chown(self.runtime, self.uid, self.gid)
        if not BOOTED_MARKER.exists():
            BOOTED_MARKER.mkdir(parents=True)
            self._made_marker = True
        self.cgroup.mkdir()
        for path in [self.cgroup, *self.cgroup.iterdir()]:
            os.chown(path, self.uid, self.gid)

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "XDG_RUNTIME_DIR": str(self.runtime),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }

    def chown_home(self) -> None:
        """Give everything in the home to the user (files made by the test as root)."""
        for folder, dirs, files in os.walk(self.home):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(folder, name), self.uid, self.gid)
        os.chown(self.home, self.uid, self.gid)

    # -- the manager --------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Start ``systemd --user`` in the cgroup and wait until it is running (or degraded)."""
        env = " ".join(f"{k}={v}" for k, v in self.env().items())
        script = (
            f"echo $$ > {self.cgroup}/cgroup.procs; "
            f"exec setpriv --reuid={self.uid} --regid={self.gid} --init-groups env -i {env} {SYSTEMD} --user"
        )
        with self.log_path.open("ab") as log:
            self.manager = subprocess.Popen(["setsid", "bash", "-c", script], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.systemctl("is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return
            if self.manager.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the user manager did not start ({self.manager.poll()=}): {self.manager_log()[-2000:]}")

    def manager_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        """``systemctl --user exit`` (stops every unit as at shutdown), then wait for the manager."""
        if self.manager is None or self.manager.poll() is not None:
            return
        self.systemctl("exit")
        try:
            self.manager.wait(timeout)
        except subprocess.TimeoutExpired:
            self.manager.kill()
            self.manager.wait(5)

    # -- acting as the user ---------------------------------------------------------------
    def run(self, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the user, with its environment, in its home."""
        return subprocess.run(
            list(argv),
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env=self.env(),
            cwd=self.home if self.home.exists() else "/",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--user", *args, timeout=120)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, f"--property={','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def processes(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["uids"]):
            uids: Any = proc.info.get("uids")
            if uids is not None and uids.real == self.uid:
                found.append(proc)
        return found

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process of the user, one PID at a time, until none is left."""
        deadline = time.monotonic() + timeout
        while (procs := self.processes()) and time.monotonic() < deadline:
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    os.kill(proc.pid, signal.SIGKILL)
            psutil.wait_procs(procs, timeout=2)
        if self.manager is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.manager.wait(5)

    # -- teardown -------------------------------------------------------------------------
    def destroy(self) -> None:
        """Remove everything :meth:`create` and :meth:`start` made; safe after a partial setup."""
        if self.uid >= 0:
            with contextlib.suppress(Exception):
                self.stop(timeout=15)
            self.kill_all()
        if self._made_user:
            subprocess.run(["userdel", "-r", "-f", self.name], capture_output=True, timeout=30, check=False)
            shutil.rmtree(self.home, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/var/mail/{self.name}")
        if self.runtime.name.startswith("xdg-"):
            shutil.rmtree(self.runtime, ignore_errors=True)
        if self.cgroup.exists():
            for folder, _, _ in sorted(os.walk(self.cgroup), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        if self._made_marker:
            with contextlib.suppress(OSError):
                BOOTED_MARKER.rmdir()
        self.log_path.unlink(missing_ok=True)
