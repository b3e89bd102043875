"""A stand-in for macOS' ``select.kqueue`` on Linux, for process exits only
(``KQ_FILTER_PROC`` with ``KQ_NOTE_EXIT``), so the darwin implementation of the platform seam
(:mod:`lmsupervisor.platform.darwin`) runs every line here.

The kqueue is an epoll instance: like a kqueue, its descriptor is readable while an event
is pending, and it can itself sit on an event loop's reader. Each registered PID is a pidfd
in it (readable once the process exits, zombie or not). Registering a PID that does not
exist raises ``ProcessLookupError`` (ESRCH), as ``kevent()`` does; ``KQ_EV_ONESHOT`` events
are removed once reported. Other filters raise ``OSError(EINVAL)``: nothing here uses them.
"""

from __future__ import annotations

import errno
import os
import select

KQ_FILTER_PROC = -5
KQ_EV_ADD = 0x0001
KQ_EV_DELETE = 0x0002
KQ_EV_ONESHOT = 0x0010
KQ_NOTE_EXIT = 0x80000000
_pidfd_open = os.pidfd_open  # kept: the darwin shape deletes os.pidfd_open


class kevent:
    """One change or event: ``ident`` (the PID), ``filter``, ``flags``, ``fflags``."""

    def __init__(self, ident: int, filter: int = 0, flags: int = KQ_EV_ADD, fflags: int = 0) -> None:
        self.ident, self.filter, self.flags, self.fflags = ident, filter, flags, fflags


class kqueue:
    """``select.kqueue()`` for process exits."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watched: dict[int, tuple[int, int]] = {}  # pidfd -> (pid, flags)

    @property
    def closed(self) -> bool:
        return self._epoll.closed

    def fileno(self) -> int:
        return self._epoll.fileno()

    def close(self) -> None:
        if not self._epoll.closed:
            for fd in self._watched:
                os.close(fd)
            self._watched.clear()
            self._epoll.close()

    def control(self, changes: list[kevent] | None, max_events: int, timeout: float | None = None) -> list[kevent]:
        for change in changes or []:
            if change.filter != KQ_FILTER_PROC or not change.fflags & KQ_NOTE_EXIT:
                raise OSError(errno.EINVAL, "only KQ_FILTER_PROC/KQ_NOTE_EXIT is modelled")
            if change.flags & KQ_EV_DELETE:
                for fd, (pid, _) in list(self._watched.items()):
                    if pid == change.ident:
                        self._epoll.unregister(fd)
                        os.close(fd)
                        del self._watched[fd]
                continue
            fd = _pidfd_open(change.ident)  # ProcessLookupError (ESRCH) for a PID that is gone
            self._epoll.register(fd, select.EPOLLIN)
            self._watched[fd] = (change.ident, change.flags)
        if max_events <= 0:
            return []
        events = []
        for fd, _ in self._epoll.poll(-1 if timeout is None else timeout, max_events):
            pid, flags = self._watched[fd]
            events.append(kevent(pid, KQ_FILTER_PROC, flags, KQ_NOTE_EXIT))
            if flags & KQ_EV_ONESHOT:
                self._epoll.unregister(fd)
                os.close(fd)
                del self._watched[fd]
        return events


def install(module: object) -> None:
    """Put ``kqueue``, ``kevent`` and the constants on ``module`` (the ``select`` module)."""
    for name in ("kqueue", "kevent", "KQ_FILTER_PROC", "KQ_EV_ADD", "KQ_EV_DELETE", "KQ_EV_ONESHOT", "KQ_NOTE_EXIT"):
        setattr(module, name, globals()[name])
