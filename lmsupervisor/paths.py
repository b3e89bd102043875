"""File locations, with ``os.path`` only (no pathlib): `status` imports this.

The one place that decides where the config file, the state folder and the status socket
are: the defaults, and which of ``--socket``, ``$LMSUPERVISOR_SOCKET``, ``status.socket``
and the default wins (:func:`resolve_socket`). :mod:`lmsupervisor.config` and
:mod:`lmsupervisor.statefile` wrap these in ``Path``; the client adds its probe of who
listens (:func:`lmsupervisor.client.resolve_socket`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from lmsupervisor.platform import current as this_os

APP = "lmsupervisor"  # the folder name under every per-user base folder
SOCKET_ENV = "LMSUPERVISOR_SOCKET"
SYSTEM_RUNTIME = "/run/lmsupervisor"  # RuntimeDirectory= of service-units/lmsupervisor@.service


def default_config_file(env: Mapping[str, str]) -> str:
    """``$LMSUPERVISOR_CONFIG``, else ``config.toml`` in the platform's config folder
    (:meth:`~lmsupervisor.platform.base.OsPlatform.config_folder`: ``$XDG_CONFIG_HOME`` or
    ``~/.config`` + ``lmsupervisor`` on Linux, platformdirs' user config dir on macOS and Windows)."""
    if env.get("LMSUPERVISOR_CONFIG"):
        return os.path.expanduser(env["LMSUPERVISOR_CONFIG"])
    return os.path.join(this_os().config_folder(env), "config.toml")


def state_folder(env: Mapping[str, str]) -> str:
    """lmsupervisor's own state folder (:mod:`lmsupervisor.statefile`): ``$XDG_STATE_HOME``
    (when absolute) or ``~/.local/state``, + ``lmsupervisor`` on Linux; platformdirs'
    ``user_state_dir`` on macOS and Windows (:meth:`~lmsupervisor.platform.base.OsPlatform.state_folder`)."""
    return this_os().state_folder(env)


def default_socket(env: Mapping[str, str]) -> str:
    """``$XDG_RUNTIME_DIR/lmsupervisor/status.sock`` (``/run/user/<uid>/...``); else
    ``status.sock`` in the platform's runtime folder: the state folder (:func:`state_folder`)
    on Linux, platformdirs' runtime dir on macOS and Windows (where it names the TCP endpoint
    file ``status.sock.tcp.json``). Never a guessable shared ``/tmp`` name: anyone can
    pre-create or plant a symlink there (issue 7)."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, APP, "status.sock")
    return os.path.join(this_os().runtime_folder(env), "status.sock")


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
    if this_os().name != "linux":
        return None
    if user is None:
        user = this_os().user_name()
        if user is None:
            return None
    return os.path.join(root, user, "status.sock")
