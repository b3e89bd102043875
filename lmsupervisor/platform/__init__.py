"""The platform seam of the runtime: everything lmsupervisor's own process does differently
on Linux, macOS and Windows, behind one small interface (:class:`~lmsupervisor.platform.base.OsPlatform`).

- stop and reload: the loop's signal handlers (TERM, INT stop; HUP reloads) on Linux and
  macOS; ``signal.signal`` for INT and BREAK handed over with ``call_soon_threadsafe``,
  and the console's close/logoff/shutdown events, on Windows (no reload signal there).
- the instance locks: ``flock`` on a file opened ``O_NOFOLLOW``; Windows ``msvcrt.locking``.
- a process's exit: a pidfd on the loop's reader (Linux), ``kqueue`` ``NOTE_EXIT`` (macOS),
  a process handle waited on in a thread (Windows); psutil polling where none works.
- a process group: ``start_new_session`` and ``killpg`` (Unix); ``CREATE_NEW_PROCESS_GROUP``
  and psutil's children then the process, killed (Windows).
- the status transport: a Unix socket (Linux, macOS), loopback TCP + token (Windows).
- folders: XDG (Linux), platformdirs (macOS; Windows ``%LOCALAPPDATA%``).
- identity: ``os.getuid``, ``pwd``, ``grp`` (Unix); none on Windows (no uids or groups).
- the open-files limit: ``resource`` (Unix); none on Windows.

:func:`current` is this process's platform: ``$LMSUPERVISOR_PLATFORM`` (``linux``,
``darwin`` or ``windows``; tests run every implementation on Linux with it), else this
machine's. Nothing outside ``lmsupervisor/platform/`` (and the simulator, which models
LM Studio, not us) imports a Unix-only module or calls a Unix-only function
(``tests/test_layers.py`` checks). Standard library only, and cheap to import:
``lmsupervisor status`` imports this.
"""

from __future__ import annotations

import os
import sys

from lmsupervisor.errors import ConfigError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the name costs nothing this way
if TYPE_CHECKING:
    from collections.abc import Mapping

    from lmsupervisor.platform.base import OsPlatform

ENV = "LMSUPERVISOR_PLATFORM"
NAMES = ("linux", "darwin", "windows")
_chosen: OsPlatform | None = None


def machine_name(sys_platform: str = sys.platform) -> str:
    """This interpreter's OS in lmsupervisor's names: ``"windows"``, ``"darwin"``, else ``"linux"``."""
    return {"win32": "windows", "darwin": "darwin"}.get(sys_platform, "linux")


def name(env: Mapping[str, str] | None = None) -> str:
    """``$LMSUPERVISOR_PLATFORM`` if set, else :func:`machine_name`. Raises
    :class:`~lmsupervisor.errors.ConfigError` for a value that names no platform."""
    chosen = (os.environ if env is None else env).get(ENV, "").strip().lower()
    if not chosen:
        return machine_name()
    if chosen not in NAMES:
        raise ConfigError(f"${ENV}: expected one of {', '.join(NAMES)}, got {chosen!r}", key=ENV, hint=f"unset {ENV}")
    return chosen


def of(platform_name: str) -> OsPlatform:
    """A new implementation for ``platform_name`` (one of :data:`NAMES`; ValueError otherwise)."""
    if platform_name == "linux":
        from lmsupervisor.platform.linux import Linux  # noqa: PLC0415 - only the one in use is imported

        return Linux()
    if platform_name == "darwin":
        from lmsupervisor.platform.darwin import Darwin  # noqa: PLC0415

        return Darwin()
    if platform_name == "windows":
        from lmsupervisor.platform.windows import Windows  # noqa: PLC0415

        return Windows()
    raise ValueError(f"platform: expected one of {NAMES}, got {platform_name!r}")


def current() -> OsPlatform:
    """This process's platform (:func:`name`), made once."""
    global _chosen
    if _chosen is None:
        _chosen = of(name())
    return _chosen
