"""Linux: XDG folders, and a process's exit seen through a pidfd within milliseconds."""

from __future__ import annotations

import contextlib
import os

from lmsupervisor.platform.posix import APP, Posix, clock_gap

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


class Linux(Posix):
    """:class:`~lmsupervisor.platform.base.OsPlatform` for Linux (and other Unix without kqueue)."""

    name = "linux"

    def config_folder(self, env: Mapping[str, str]) -> str:
        """``$XDG_CONFIG_HOME`` or ``~/.config``, + ``lmsupervisor``."""
        return os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(_home(env), ".config"), APP)

    def state_folder(self, env: Mapping[str, str]) -> str:
        """``$XDG_STATE_HOME`` (when absolute) or ``~/.local/state``, + ``lmsupervisor`` (what
        ``platformdirs.user_state_dir`` gives here, without importing it)."""
        state = env.get("XDG_STATE_HOME", "")
        if not os.path.isabs(state):
            state = os.path.join(_home(env), ".local", "state")
        return os.path.join(state, APP)

    def sleep_gap(self) -> float:
        """``CLOCK_BOOTTIME - CLOCK_MONOTONIC`` (seconds): the first counts suspend, the second
        (and so :func:`time.monotonic` and asyncio's timers) does not."""
        return clock_gap("CLOCK_BOOTTIME", "CLOCK_MONOTONIC")

    def runtime_folder(self, env: Mapping[str, str]) -> str:
        """The state folder: no per-user runtime folder without ``$XDG_RUNTIME_DIR``, and never
        a guessable shared ``/tmp`` name (anyone can plant a symlink there; issue 7)."""
        return self.state_folder(env)

    def watch_exit(
        self, loop: asyncio.AbstractEventLoop, pid: int, on_exit: Callable[[], None]
    ) -> Callable[[], None] | None:
        """A pidfd (``os.pidfd_open``, Linux 5.3+) on the loop's reader: readable once ``pid``
        exits, zombie or not. None when the kernel has none (the caller polls)."""
        if not hasattr(os, "pidfd_open"):
            return None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            loop.call_soon(on_exit)
            return lambda: None
        except OSError:
            return None
        closed = False

        def close() -> None:
            nonlocal closed
            if not closed:
                closed = True
                with contextlib.suppress(ValueError, OSError, RuntimeError):
                    loop.remove_reader(fd)
                os.close(fd)

        def readable() -> None:
            close()
            on_exit()

        loop.add_reader(fd, readable)
        return close
