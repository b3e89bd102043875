"""Make this Linux interpreter Windows-shaped or macOS-shaped for lmsupervisor's own code.

Installed by ``sitecustomize.py`` (this folder on ``PYTHONPATH``) when
``LMSUPERVISOR_TEST_SHAPE`` is ``windows`` or ``darwin``; the variable is removed at once,
so the processes the supervisor starts (the simulated LM Studio, which may use whatever
Linux has) are ordinary. Every refusal is also appended to ``$LMSUPERVISOR_TEST_SHAPE_LOG``,
so a test sees one even where the code caught the error.

**windows**: for callers in ``lmsupervisor`` (outside the simulator), importing ``fcntl``,
``grp``, ``pwd``, ``termios``, ``resource`` or ``posix`` raises ModuleNotFoundError;
``os.getuid``/``getgid``/``geteuid``/``getegid``/``killpg``/``setsid``/``setpgid``/
``getpgid``/``pidfd_open``/``fork`` raise AttributeError; an ``AF_UNIX`` socket,
``asyncio.open_unix_connection``/``start_unix_server``, and the loop's
``add_signal_handler``/``add_reader`` raise as on Windows' proactor loop; ``Popen`` with
``start_new_session``, ``process_group`` or ``preexec_fn`` raises ValueError (whoever calls:
asyncio passes them on). ``_winapi`` and ``msvcrt`` are the stand-ins of ``winfakes.py``.
The stdlib and psutil keep Linux underneath: only our code is held to Windows' shape.

**darwin**: ``os.pidfd_open`` and the Linux-only ``socket.SOCK_CLOEXEC``/``SOCK_NONBLOCK``
flags do not exist (macOS has none of them), and ``select.kqueue`` is the stand-in of
``kqueue_fake.py`` (added after :mod:`selectors` chose its default, so asyncio
keeps epoll). With ``LMSUPERVISOR_TEST_SHAPE_HOME`` (removed at once too), the password
database gives our own user that home: the Mac's ``/Users/NAME``, under the test's folder.
"""

from __future__ import annotations

import builtins
import os
import sys
from collections.abc import Callable
from typing import Any

BLOCKED_MODULES = {"fcntl", "grp", "pwd", "termios", "resource", "posix"}
BLOCKED_OS = ("getuid", "getgid", "geteuid", "getegid", "killpg", "setsid", "setpgid", "getpgid", "pidfd_open", "fork")
BLOCKED_POPEN = ("start_new_session", "process_group", "preexec_fn")
MACOS_MISSING_SOCKET = ("SOCK_CLOEXEC", "SOCK_NONBLOCK")  # Linux's socket() type flags
_log_path = ""


def _ours(module: str) -> bool:
    return (module == "lmsupervisor" or module.startswith("lmsupervisor.")) and not module.startswith(
        "lmsupervisor.simulator"
    )


def _caller() -> str:
    """The module name of the first frame outside this file."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in (__name__, "shape_guard"):
        frame = frame.f_back  # type: ignore[assignment]
    return str(frame.f_globals.get("__name__", "")) if frame is not None else ""


def _refused(what: str, caller: str) -> None:
    if _log_path:
        with open(_log_path, "a", encoding="utf-8") as log:
            log.write(f"{caller}: {what}\n")


def _guard(
    name: str, original: Callable[..., Any], error: type[Exception] = NotImplementedError, message: str = ""
) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        caller = _caller()
        if _ours(caller):
            _refused(name, caller)
            raise error(message or f"{name} is not available on Windows")
        return original(*args, **kwargs)

    guarded.__name__ = getattr(original, "__name__", name)
    return guarded


def _windows() -> None:
    import asyncio
    import asyncio.selector_events
    import asyncio.unix_events
    import socket
    import subprocess

    from tests.shapes import winfakes

    real_import = builtins.__import__

    def guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        importer = str((globals or {}).get("__name__", ""))
        if level == 0 and name.split(".", maxsplit=1)[0] in BLOCKED_MODULES and _ours(importer):
            _refused(f"import {name}", importer)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import
    for attr in BLOCKED_OS:
        if hasattr(os, attr):
            missing = f"module 'os' has no attribute {attr!r}"
            setattr(os, attr, _guard(f"os.{attr}", getattr(os, attr), AttributeError, missing))

    class WindowsSocket(socket.socket):
        def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> None:
            if family == socket.AF_UNIX:
                caller = _caller()
                if _ours(caller):
                    _refused("socket(AF_UNIX)", caller)
                    raise OSError(97, "Address family not supported by protocol (no AF_UNIX on Windows)")
            super().__init__(family, type, proto, fileno)

    socket.socket = WindowsSocket  # type: ignore[misc]
    for attr in ("open_unix_connection", "start_unix_server"):
        setattr(asyncio, attr, _guard(f"asyncio.{attr}", getattr(asyncio, attr)))
    for cls, attr in (
        (asyncio.unix_events._UnixSelectorEventLoop, "add_signal_handler"),
        (asyncio.selector_events.BaseSelectorEventLoop, "add_reader"),
        (asyncio.selector_events.BaseSelectorEventLoop, "remove_reader"),
    ):
        setattr(cls, attr, _guard(f"loop.{attr}", getattr(cls, attr)))

    real_popen_init = subprocess.Popen.__init__

    def popen_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        for key in BLOCKED_POPEN:
            if kwargs.get(key) not in (None, False, -1):
                _refused(f"Popen({key}=)", _caller())
                raise ValueError(f"{key} is not supported on Windows platforms")
        real_popen_init(self, *args, **kwargs)

    subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]
    sys.modules["_winapi"] = winfakes.as_module("_winapi", winfakes.FakeWinapi())
    sys.modules["msvcrt"] = winfakes.as_module("msvcrt", winfakes.FakeMsvcrt())


def _darwin() -> None:
    import select
    import selectors  # noqa: F401 - first: its DefaultSelector must stay epoll
    import socket

    from tests.shapes import kqueue_fake, winfakes  # noqa: F401 - both keep os.pidfd_open before it goes

    del os.pidfd_open
    for flag in MACOS_MISSING_SOCKET:
        if hasattr(socket, flag):
            delattr(socket, flag)
    kqueue_fake.install(select)
    home = os.environ.pop("LMSUPERVISOR_TEST_SHAPE_HOME", "")
    if home:
        _home_in_passwd(home)


def _home_in_passwd(home: str) -> None:
    """``pwd.getpwnam``/``getpwuid`` answer ``home`` as our own uid's home folder."""
    import pwd

    uid = os.getuid()
    real_getpwnam, real_getpwuid = pwd.getpwnam, pwd.getpwuid

    def moved(entry: pwd.struct_passwd) -> pwd.struct_passwd:
        if entry.pw_uid != uid:
            return entry
        return pwd.struct_passwd((*entry[:5], home, entry[6]))

    pwd.getpwnam = lambda name: moved(real_getpwnam(name))
    pwd.getpwuid = lambda number: moved(real_getpwuid(number))


def install(shape: str, log_path: str = "") -> None:
    """Shape this interpreter as ``shape`` (``windows`` or ``darwin``; ValueError otherwise)."""
    global _log_path
    _log_path = log_path
    if shape == "windows":
        _windows()
    elif shape == "darwin":
        _darwin()
    else:
        raise ValueError(f"LMSUPERVISOR_TEST_SHAPE: expected windows or darwin, got {shape!r}")
