"""Default file locations, with ``os.path`` only (no pathlib): `status` imports this.

The one place that decides where the config file and the status socket live by
default; :mod:`lmsupervisor.config` wraps these in ``Path``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

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


def default_socket(env: Mapping[str, str]) -> str:
    """``$XDG_RUNTIME_DIR/lmsupervisor/status.sock`` (``/run/user/<uid>/...``); else the per-user
    state folder, ``$XDG_STATE_HOME`` or ``~/.local/state`` + ``lmsupervisor/status.sock`` (what
    ``platformdirs.user_state_dir`` gives on Linux, computed here without importing it); the
    platformdirs runtime dir on macOS. Never a guessable shared ``/tmp`` name: anyone can
    pre-create or plant a symlink there (issue 7)."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "lmsupervisor", "status.sock")
    if sys.platform.startswith(("darwin", "win")):
        import platformdirs  # noqa: PLC0415 - only off Linux

        return os.path.join(platformdirs.user_runtime_dir("lmsupervisor", appauthor=False), "status.sock")
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        home = env.get("HOME") or os.path.expanduser("~")
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "lmsupervisor", "status.sock")


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
