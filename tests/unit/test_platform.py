"""The platform seam (:mod:`lmsupervisor.platform`): each OS's implementation on Linux, the
Windows one with ``tests/shapes/winfakes.py`` for ``_winapi``/``msvcrt`` and the macOS one
with ``tests/shapes/kqueue_fake.py`` for ``select.kqueue``. Real child processes, no sleeps:
every wait is on an event, bounded."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest

from lmsupervisor import platform
from lmsupervisor.errors import ConfigError
from lmsupervisor.platform.darwin import Darwin
from lmsupervisor.platform.linux import Linux
from lmsupervisor.platform.windows import Windows
from tests.conftest import eventually
from tests.shapes import kqueue_fake
from tests.shapes.winfakes import FakeMsvcrt, FakeWinapi

WAIT = 10.0  # seconds: the bound on any wait for a process event


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A Python that runs until its stdin closes (``child.stdin.close()`` ends it); not reaped
    by the test until it says so, so it is a zombie in between."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    proc.wait(WAIT)


def end(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()


def kqueue_select() -> ModuleType:
    module = ModuleType("select")
    kqueue_fake.install(module)
    return module


def test_the_platform_is_chosen_by_the_environment() -> None:
    """``$LMSUPERVISOR_PLATFORM`` names the implementation (case and spaces aside), else this
    machine's; a wrong name is a ConfigError naming the variable."""
    assert [platform.name({platform.ENV: v}) for v in ("windows", " Darwin ", "linux", "")] == [
        "windows",
        "darwin",
        "linux",
        platform.machine_name(),
    ]
    assert [platform.machine_name(p) for p in ("win32", "darwin", "linux", "freebsd14")] == [
        "windows",
        "darwin",
        "linux",
        "linux",
    ]
    with pytest.raises(ConfigError) as err:
        platform.name({platform.ENV: "beos"})
    assert err.value.key == platform.ENV
    assert [platform.of(n).name for n in platform.NAMES] == list(platform.NAMES)
    with pytest.raises(ValueError, match="beos"):
        platform.of("beos")


def test_folders_per_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux: XDG (the state folder holds the socket); macOS: platformdirs under ~/Library;
    Windows: %LOCALAPPDATA% (else the profile's AppData\\Local), the socket under Temp."""
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"HOME": "/h", "XDG_STATE_HOME": "/s", "XDG_CONFIG_HOME": "/c"}
    assert [f(env) for f in (Linux().config_folder, Linux().state_folder, Linux().runtime_folder)] == [
        "/c/lmsupervisor",
        "/s/lmsupervisor",
        "/s/lmsupervisor",
    ]
    assert Linux().state_folder({"HOME": "/h", "XDG_STATE_HOME": "relative"}) == "/h/.local/state/lmsupervisor"
    mac = Darwin()
    assert [mac.config_folder({}), mac.state_folder({}), mac.runtime_folder({})] == [
        f"{tmp_path}/Library/Application Support/lmsupervisor",
        f"{tmp_path}/Library/Application Support/lmsupervisor",
        f"{tmp_path}/Library/Caches/TemporaryItems/lmsupervisor",
    ]
    win = Windows(FakeWinapi(), FakeMsvcrt())
    local = {"LOCALAPPDATA": "/u/AppData/Local", "USERPROFILE": "/other"}
    assert [win.config_folder(local), win.state_folder(local), win.runtime_folder(local)] == [
        "/u/AppData/Local/lmsupervisor",
        "/u/AppData/Local/lmsupervisor",
        "/u/AppData/Local/Temp/lmsupervisor",
    ]
    assert win.state_folder({"USERPROFILE": "/p"}) == "/p/AppData/Local/lmsupervisor"


def test_windows_has_no_uids_groups_or_unix_sockets() -> None:
    """What Windows lacks is an answer, not a crash: no uid, no account, not root, no fd limit;
    a status.group or an AF_UNIX socket is refused with the reason."""
    win = Windows(FakeWinapi(), FakeMsvcrt())
    assert (win.uid(), win.account("root"), win.user_name(), win.is_root(), win.raise_fd_limit()) == (
        None,
        None,
        None,
        False,
        None,
    )
    assert (win.unix_sockets, win.posix_files, win.default_transport) == (False, False, "tcp")
    with pytest.raises(ConfigError) as err:
        win.group_id("staff")
    assert err.value.key == "status.group"
    with pytest.raises(OSError, match="no Unix sockets on Windows") as refused:
        win.unix_socket()
    assert refused.value.errno == errno.EAFNOSUPPORT
    assert win.new_group_options() == {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    assert Linux().new_group_options() == {"start_new_session": True}


def test_posix_identity_is_the_password_database() -> None:
    """Our uid, our name, our account and its primary group, as ``id`` would say."""
    unix = Linux()
    me = unix.user_name()
    assert me is not None
    account = unix.account(me)
    assert account is not None
    assert (account.uid, unix.uid(), unix.account("no-such-user-h20")) == (os.getuid(), os.getuid(), None)
    if account.group is not None:
        assert unix.group_id(account.group) == account.gid
    assert unix.group_id(str(account.gid)) == account.gid
    assert unix.group_id("no-such-group-h20") is None


@pytest.mark.parametrize("system", [Linux(), Windows(FakeWinapi(), FakeMsvcrt())], ids=["flock", "msvcrt"])
def test_the_instance_lock_is_exclusive_per_open_file(tmp_path: Path, system: Linux | Windows) -> None:
    """A second open of the lock file cannot lock it while the first holds it (even in the
    same process); closing the first frees it; a symlink is refused with ELOOP."""
    path = str(tmp_path / "status.sock.lock")
    first, second = system.open_lock(path), system.open_lock(path)
    try:
        assert (system.try_lock(first), system.try_lock(second)) == (True, False)
        os.close(first)
        assert system.try_lock(second) is True
    finally:
        os.close(second)
    os.symlink(tmp_path / "elsewhere", tmp_path / "link.lock")
    with pytest.raises(OSError, match=r"symlink|Too many levels") as err:
        system.open_lock(str(tmp_path / "link.lock"))
    assert err.value.errno == errno.ELOOP


SYSTEMS = {
    "linux-pidfd": Linux,
    "darwin-kqueue": lambda: Darwin(kqueue_select()),
    "windows-handle": lambda: Windows(FakeWinapi(), FakeMsvcrt()),
}


@pytest.mark.parametrize("make", SYSTEMS.values(), ids=SYSTEMS.keys())
async def test_a_process_exit_is_reported_without_polling(make: type[Linux], child: subprocess.Popen[bytes]) -> None:
    """The exit of a process we do not reap (a zombie) fires ``on_exit``; a PID already gone
    fires on the next loop iteration."""
    system = make()
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    cancel = system.watch_exit(loop, child.pid, exited.set)
    assert cancel is not None
    assert not exited.is_set()
    end(child)
    await asyncio.wait_for(exited.wait(), WAIT)
    assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE  # not reaped: the watch saw the exit
    cancel()
    child.wait(WAIT)
    gone = asyncio.Event()
    assert system.watch_exit(loop, child.pid, gone.set) is not None
    await asyncio.wait_for(gone.wait(), WAIT)


async def test_without_kqueue_or_winapi_the_caller_polls(child: subprocess.Popen[bytes]) -> None:
    """Where the OS offers no watch (a select without kqueue, no _winapi), None: poll instead."""
    loop = asyncio.get_running_loop()
    bare = Windows(FakeWinapi(), FakeMsvcrt())
    bare.winapi = None
    assert Darwin(ModuleType("select")).watch_exit(loop, child.pid, lambda: None) is None
    assert bare.watch_exit(loop, child.pid, lambda: None) is None


async def test_a_cancelled_windows_watch_closes_its_handle(child: subprocess.Popen[bytes]) -> None:
    """Cancelling ends the waiting thread within a slice and closes the process handle."""
    api = FakeWinapi()
    cancel = Windows(api, FakeMsvcrt()).watch_exit(asyncio.get_running_loop(), child.pid, lambda: None)
    assert (cancel is not None, api.opened) == (True, 1)
    assert cancel is not None
    cancel()
    assert eventually(lambda: api.opened == 0, timeout=WAIT)


def test_windows_pid_alive_asks_the_exit_code(child: subprocess.Popen[bytes]) -> None:
    """STILL_ACTIVE while it runs; an exited (zombie) or reaped process is dead; a process we
    may not open (access denied) exists."""
    api = FakeWinapi()
    win = Windows(api, FakeMsvcrt())
    assert win.pid_alive(child.pid) is True
    end(child)
    assert eventually(lambda: not win.pid_alive(child.pid), timeout=WAIT)
    child.wait(WAIT)
    assert (win.pid_alive(child.pid), api.opened) == (False, 0)

    class Denied(FakeWinapi):
        def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
            exc = PermissionError(errno.EACCES, "Access is denied")
            exc.winerror = 5  # type: ignore[attr-defined]
            raise exc

    assert Windows(Denied(), FakeMsvcrt()).pid_alive(1) is True


@pytest.mark.parametrize("make", [Linux, lambda: Windows(FakeWinapi(), FakeMsvcrt())], ids=["killpg", "psutil-tree"])
def test_killing_a_process_group_takes_its_children(make: type[Linux]) -> None:
    """A child started with the platform's group options and its own child are both gone
    after ``kill_group``; a group already gone is no error."""
    system = make()
    script = (
        "import subprocess as s, sys; c = s.Popen([sys.executable, '-c', 'input()']); print(c.pid, flush=True); input()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, **system.new_group_options()
    ) as parent:
        assert parent.stdout is not None
        grandchild = psutil.Process(int(parent.stdout.readline()))
        system.kill_group(parent.pid)
        parent.wait(WAIT)
        grandchild.wait(WAIT)  # psutil: reaped by init or gone; raises TimeoutExpired if still alive
    assert parent.returncode == -signal.SIGKILL
    system.kill_group(parent.pid)


async def test_windows_stops_on_ctrl_c_through_the_loop() -> None:
    """SIGINT (Ctrl-C; SIGBREAK where it exists) is handed to the loop as ``stop("SIGINT")``;
    nothing reloads; restoring puts the old handler back."""
    before = signal.getsignal(signal.SIGINT)
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[str] = loop.create_future()
    restore = Windows(FakeWinapi(), FakeMsvcrt()).on_signals(
        loop, stopped.set_result, lambda: pytest.fail("no reload signal on Windows")
    )
    try:
        signal.raise_signal(signal.SIGINT)
        assert await asyncio.wait_for(stopped, WAIT) == "SIGINT"
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is before


async def test_unix_stops_on_term_and_reloads_on_hup() -> None:
    """SIGHUP reloads, SIGTERM stops with its name; restoring removes the loop's handlers."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[str] = loop.create_future()
    reloaded = asyncio.Event()
    restore = Linux().on_signals(loop, stopped.set_result, reloaded.set)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(reloaded.wait(), WAIT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(stopped, WAIT) == "SIGTERM"
    finally:
        restore()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
