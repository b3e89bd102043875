"""Stand-ins for Windows' ``_winapi`` and ``msvcrt``, built on Linux's own primitives, so the
Windows implementation of the platform seam (:mod:`lmsupervisor.platform.windows`) runs
every line here.

- A process handle is a pidfd: like a Windows process object it becomes signalled
  (readable) once the process exits, zombie or not. ``OpenProcess`` of a PID that does not
  exist fails with ``winerror`` 87 (ERROR_INVALID_PARAMETER), as Windows does.
- ``msvcrt.locking`` is an ``flock`` of the descriptor: held per open file (per handle on
  Windows), so a second open of the same file in the same process is refused too; a lock
  that cannot be taken at once raises ``OSError`` (EACCES), as ``LK_NBLCK`` does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
from types import ModuleType

STILL_ACTIVE = 259
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
INFINITE = 0xFFFFFFFF
_pidfd_open = os.pidfd_open  # kept: the darwin shape deletes os.pidfd_open


def _winerror(code: int, text: str) -> OSError:
    exc = OSError(errno.EINVAL if code == 87 else errno.EACCES, text)
    exc.winerror = code  # type: ignore[attr-defined]
    return exc


class FakeWinapi:
    """The part of ``_winapi`` the seam uses: OpenProcess, WaitForSingleObject,
    GetExitCodeProcess, CloseHandle. ``opened`` counts handles not yet closed."""

    def __init__(self) -> None:
        self.handles: dict[int, int] = {}  # handle -> pidfd
        self._next = 0x100

    @property
    def opened(self) -> int:
        return len(self.handles)

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        try:
            fd = _pidfd_open(pid)
        except ProcessLookupError:
            raise _winerror(87, "The parameter is incorrect") from None
        self._next += 4
        self.handles[self._next] = fd
        return self._next

    def _signalled(self, handle: int, timeout_ms: int) -> bool:
        fd = self.handles.get(handle)
        if fd is None:
            raise _winerror(6, "The handle is invalid")
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout_ms == INFINITE else timeout_ms))

    def WaitForSingleObject(self, handle: int, milliseconds: int) -> int:
        return WAIT_OBJECT_0 if self._signalled(handle, milliseconds) else WAIT_TIMEOUT

    def GetExitCodeProcess(self, handle: int) -> int:
        return 0 if self._signalled(handle, 0) else STILL_ACTIVE

    def CloseHandle(self, handle: int) -> None:
        fd = self.handles.pop(handle, None)
        if fd is None:
            raise _winerror(6, "The handle is invalid")
        os.close(fd)


class FakeMsvcrt:
    """``msvcrt.locking`` and its modes."""

    LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = 0, 1, 2, 3, 4

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        if mode == self.LK_UNLCK:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
        flags = fcntl.LOCK_EX if mode in (self.LK_LOCK, self.LK_NBLCK) else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, flags | fcntl.LOCK_NB)
        except OSError:
            raise OSError(errno.EACCES, "Permission denied") from None


def as_module(name: str, fake: object) -> ModuleType:
    """``fake``'s public attributes as a module called ``name`` (for ``sys.modules``)."""
    module = ModuleType(name)
    for attr in dir(fake):
        if not attr.startswith("_"):
            setattr(module, attr, getattr(fake, attr))
    return module
