"""File locations, with ``os.path`` only (no pathlib): `status` imports this.

The one place that decides where the config file, the state folder and the status socket
are: the defaults, and which of ``--socket``, ``$LMSUPERVISOR_SOCKET``, ``status.socket``
and the default wins (:func:`resolve_socket`). :mod:`lmsupervisor.config` and
:mod:`lmsupervisor.statefile` wrap these in ``Path``; the client adds its probe of who
listens (:func:`lmsupervisor.client.resolve_socket`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

APP = "lmsupervisor"  # the folder name under every per-user base folder
SOCKET_ENV = "LMSUPERVISOR_SOCKET"
SYSTEM_RUNTIME = "/run/lmsupervisor"  # RuntimeDirectory= of service-units/lmsupervisor@.service


def default_config_file(env: Mapping[str, str]) -> str:
    """``$LMSUPERVISOR_CONFIG``, else ``$XDG_CONFIG_HOME`` or ``~/.config`` + ``lmsupervisor/config.toml``
    (Linux and other Unix), else platformdirs' user config dir (macOS, Windows)."""
    if env.get("LMSUPERVISOR_CONFIG"):
        return os.path.expanduser(env["LMSUPERVISOR_CONFIG"])
    if not sys.platform.startswith(("darwin", "win")):
        home = env.get("HOME") or os.path.expanduser("~")
        base = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        return os.path.join(base, "lmsupervisor", "config.toml")
    import platformdirs  # noqa: PLC0415 - only off Linux

    return os.path.join(platformdirs.user_config_dir("lmsupervisor", appauthor=False), "config.toml")


def state_folder(env: Mapping[str, str]) -> str:
    """lmsupervisor's own state folder (:mod:`lmsupervisor.statefile`): ``$XDG_STATE_HOME``
    (when absolute) or ``~/.local/state``, + ``lmsupervisor`` on Linux and other Unix (what
    ``platformdirs.user_state_dir`` gives there, computed without importing it); platformdirs'
    ``user_state_dir`` on macOS and Windows."""
    if sys.platform.startswith(("darwin", "win")):
        import platformdirs  # noqa: PLC0415 - only off Linux

        return platformdirs.user_state_dir(APP, appauthor=False)
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        home = env.get("HOME") or os.path.expanduser("~")
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, APP)


def default_socket(env: Mapping[str, str]) -> str:
    """``$XDG_RUNTIME_DIR/lmsupervisor/status.sock`` (``/run/user/<uid>/...``); else
    ``status.sock`` in the state folder (:func:`state_folder`) on Linux, in the platformdirs
    runtime dir on macOS and Windows. Never a guessable shared ``/tmp`` name: anyone can
    pre-create or plant a symlink there (issue 7)."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, APP, "status.sock")
    if sys.platform.startswith(("darwin", "win")):
        import platformdirs  # noqa: PLC0415 - only off Linux

        return os.path.join(platformdirs.user_runtime_dir(APP, appauthor=False), "status.sock")
    return os.path.join(state_folder(env), "status.sock")


def _nothing() -> None:
    return None


def resolve_socket(
    cli: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    configured: Callable[[], str | os.PathLike[str] | None] = _nothing,
    listening: Callable[[str], bool] | None = None,
    system_root: str = SYSTEM_RUNTIME,
) -> str:
    """Where the status socket is (design §3): ``--socket`` (``cli``), else
    ``$LMSUPERVISOR_SOCKET``, else ``status.socket`` (``configured()``, asked only when
    neither names one: it may read the config file), else :func:`default_socket`.

    A client looking for a supervisor passes ``listening`` (whether one answers at a path):
    when nothing names a socket and none answers on the default, the system unit's socket
    (:func:`system_socket` below ``system_root``) is taken if one answers there.
    """
    if cli is not None:
        return os.fspath(cli)
    if env.get(SOCKET_ENV):
        return env[SOCKET_ENV]
    named = configured()
    if named is not None:
        return os.fspath(named)
    default = default_socket(env)
    if listening is None:
        return default
    system = system_socket(None, system_root)
    if system is None or listening(default):  # no system unit's socket to fall back to (not Linux)
        return default
    return system if listening(system) else default


def system_socket(user: str | None = None, root: str = SYSTEM_RUNTIME) -> str | None:
    """Where ``lmsupervisor@USER.service`` (the system unit, which has no
    ``XDG_RUNTIME_DIR``) listens for ``user`` (default: ours): its ``RuntimeDirectory=``,
    ``/run/lmsupervisor/USER/status.sock``. None off Linux or for a uid without a name."""
    if not sys.platform.startswith("linux"):
        return None
    if user is None:
        import pwd  # noqa: PLC0415 - Unix only

        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            return None
    return os.path.join(root, user, "status.sock")
