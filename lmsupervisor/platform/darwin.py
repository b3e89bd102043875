"""macOS: platformdirs' folders, and a process's exit seen through ``kqueue`` within milliseconds.

The watch registers ``EVFILT_PROC``/``NOTE_EXIT`` for the PID on a kqueue of its own and
puts that kqueue's descriptor on the event loop's reader (a kqueue is readable while it
has events pending). On Linux, where ``select.kqueue`` does not exist, the tests pass a
faithful stand-in as ``select_module`` (``tests/shapes/kqueue_fake.py``); the real kernel
calls run only on a Mac.
"""

from __future__ import annotations

import contextlib
import select

from lmsupervisor.platform.posix import APP, Posix, clock_gap

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping
    from typing import Any

    from platformdirs.macos import MacOS


class Darwin(Posix):
    """:class:`~lmsupervisor.platform.base.OsPlatform` for macOS. ``select_module`` (tests)
    replaces :mod:`select` as the source of ``kqueue``."""

    name = "darwin"

    def __init__(self, select_module: Any = None) -> None:
        self.select = select_module or select

    @staticmethod
    def _dirs() -> MacOS:
        from platformdirs.macos import MacOS  # noqa: PLC0415 - only off Linux

        return MacOS(APP, appauthor=False)

    def config_folder(self, env: Mapping[str, str]) -> str:
        """``~/Library/Application Support/lmsupervisor`` (platformdirs)."""
        return self._dirs().user_config_dir

    def state_folder(self, env: Mapping[str, str]) -> str:
        """``~/Library/Application Support/lmsupervisor`` (platformdirs' ``user_state_dir``)."""
        return self._dirs().user_state_dir

    def runtime_folder(self, env: Mapping[str, str]) -> str:
        """``~/Library/Caches/TemporaryItems/lmsupervisor`` (platformdirs' ``user_runtime_dir``)."""
        return self._dirs().user_runtime_dir

    def sleep_gap(self) -> float:
        """``CLOCK_MONOTONIC - CLOCK_UPTIME_RAW`` (seconds): on macOS ``CLOCK_MONOTONIC``
        "will continue to increment while the system is asleep" and ``CLOCK_UPTIME_RAW``
        "does not increment while the system is asleep" (macOS ``clock_gettime(3)``; Python's
        :data:`time.CLOCK_UPTIME_RAW`, macOS 10.12+)."""
        return clock_gap("CLOCK_MONOTONIC", "CLOCK_UPTIME_RAW")

    def watch_exit(
        self, loop: asyncio.AbstractEventLoop, pid: int, on_exit: Callable[[], None]
    ) -> Callable[[], None] | None:
        """``kqueue`` with ``KQ_FILTER_PROC``/``KQ_NOTE_EXIT`` (one shot) for ``pid``, its
        descriptor on the loop's reader. None without ``select.kqueue`` (the caller polls)."""
        sel = self.select
        if not hasattr(sel, "kqueue"):
            return None
        kq = sel.kqueue()
        event = sel.kevent(
            pid, filter=sel.KQ_FILTER_PROC, flags=sel.KQ_EV_ADD | sel.KQ_EV_ONESHOT, fflags=sel.KQ_NOTE_EXIT
        )
        try:
            kq.control([event], 0, 0)
        except ProcessLookupError:  # ESRCH: gone, or exiting already (a zombie): it has exited
            kq.close()
            loop.call_soon(on_exit)
            return lambda: None
        except OSError:
            kq.close()
            return None
        fd = kq.fileno()

        def close() -> None:
            if not kq.closed:
                with contextlib.suppress(ValueError, OSError, RuntimeError):
                    loop.remove_reader(fd)
                kq.close()

        def readable() -> None:
            close()
            on_exit()

        loop.add_reader(fd, readable)
        return close
