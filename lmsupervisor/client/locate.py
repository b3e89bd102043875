"""Finding the supervisor and deciding whether to believe it, for both clients.

:func:`resolve_socket` finds the socket as the CLI does (the rule is
:func:`lmsupervisor.paths.resolve_socket`; this adds reading the config file and probing
who listens). :func:`locate` chooses the transport: the Unix socket at the path, or, where
none is there, the TCP endpoint file beside it (``<socket>.tcp.json``,
:mod:`lmsupervisor.endpoint.tokenfile`: ``127.0.0.1:<port>`` with a bearer token).

The server is verified before anything it says is believed: the socket (or endpoint file)
must belong to our own uid or root (or to the user named in ``$LMSUPERVISOR_SOCKET_OWNER``,
for members of ``status.group``), and so must the process answering on a socket
(:func:`check_peer`). Every refusal is a :class:`~lmsupervisor.errors.StatusSocketError`
with the reason. Standard library only: ``lmsupervisor status`` imports this.
"""

from __future__ import annotations

import os
import socket
import stat
import sys

from lmsupervisor import paths
from lmsupervisor.endpoint import tokenfile
from lmsupervisor.endpoint.peer import socket_peer_uid
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.platform import current as this_os

OWNER_ENV = "LMSUPERVISOR_SOCKET_OWNER"
LISTEN_CHECK_TIMEOUT = 1.0  # seconds a connect to a local Unix socket may take (a busy supervisor)


def resolve_socket(
    cli: str | os.PathLike[str] | None, system_root: str | None = None, unit_socket: str | None = None
) -> str:
    """``--socket``, else ``$LMSUPERVISOR_SOCKET``, else the config's, else the default; when
    nothing names one and no supervisor listens on the default, the system unit's socket
    (``/run/lmsupervisor/USER/status.sock``, :func:`lmsupervisor.paths.system_socket`;
    ``system_root`` replaces ``/run/lmsupervisor``) if one listens there. The rule is
    :func:`lmsupervisor.paths.resolve_socket`; ``unit_socket`` (the socket of a system unit
    found installed, for `service status`) wins over the config's."""
    return paths.resolve_socket(
        cli, os.environ, lambda: unit_socket or _config_socket(), _listening, system_root or paths.SYSTEM_RUNTIME
    )


def _config_socket() -> str | None:
    """``status.socket`` of the default config file; None without one (then it is not parsed)."""
    if not os.path.exists(paths.default_config_file(os.environ)):
        return None
    from lmsupervisor import config  # noqa: PLC0415 - only when a config file may name the socket
    from lmsupervisor.errors import ConfigError  # noqa: PLC0415

    try:
        cfg, _ = config.load(None)
    except ConfigError:
        return None
    return None if cfg.status.socket is None else str(cfg.status.socket)


def _listening(path: str) -> bool:
    """Whether a supervisor answers at ``path``: a Unix socket that accepts a connection (a
    socket file left by a killed supervisor does not), or a TCP endpoint file beside it that
    is ours and not stale (see :func:`lmsupervisor.endpoint.tokenfile.read`)."""
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        is_socket = False
    if is_socket:
        try:
            with this_os().unix_socket() as probe:
                probe.settimeout(LISTEN_CHECK_TIMEOUT)
                probe.connect(path)
        except OSError:
            return False
        return True
    try:
        tokenfile.read(tokenfile.token_path(path), trusted_uids())
    except (OSError, StatusSocketError):
        return False
    return True


# -- trust ---------------------------------------------------------------------
def trusted_uids(env: dict[str, str] | os._Environ[str] | None = None) -> set[int]:
    """Our uid, root, and the user named (or numbered) in ``$LMSUPERVISOR_SOCKET_OWNER``."""
    env = os.environ if env is None else env
    own = this_os().uid()
    uids = set() if own is None else {0, own}
    owner = env.get(OWNER_ENV, "").strip()
    if owner.isdigit():
        uids.add(int(owner))
    elif owner:
        account = this_os().account(owner)
        if account is None:
            raise StatusSocketError(f"${OWNER_ENV} names no user: {owner!r}")
        uids.add(account.uid)
    return uids


def check_socket_owner(path: str, trusted: set[int] | None = None) -> None:
    """Refuse a socket file that is not a socket or not owned by a trusted uid (a spoof)."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise StatusSocketError(f"no supervisor answers on {path}", hint="start `lmsupervisor run`") from exc
    except OSError as exc:
        raise StatusSocketError(f"cannot reach {path}: {exc.strerror}") from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise StatusSocketError(f"{path} is not a socket", hint="check status.socket / --socket")
    trusted = trusted_uids() if trusted is None else trusted
    if trusted and info.st_uid not in trusted:
        raise StatusSocketError(
            f"refusing {path}: it belongs to uid {info.st_uid}, not to you or root; "
            "another user may be impersonating the supervisor",
            hint=f"use a socket in a folder only you control, or set {OWNER_ENV} to the supervisor's user",
        )


def check_peer(sock: socket.socket, path: str, trusted: set[int] | None = None, platform: str = sys.platform) -> None:
    """Refuse a peer process whose uid is not trusted (see
    :func:`lmsupervisor.endpoint.peer.socket_peer_uid`; a no-op where the uid cannot be read)."""
    uid = socket_peer_uid(sock, platform)
    if uid is None:
        return
    trusted = trusted_uids() if trusted is None else trusted
    if trusted and uid not in trusted:
        raise StatusSocketError(f"refusing {path}: the process answering runs as uid {uid}, not as you or root")


def locate(path: str, trusted: set[int]) -> tuple[int, str] | None:
    """Where the supervisor of ``path`` answers: None for the Unix socket at ``path``
    (checked by :func:`check_socket_owner`), else ``(port, token)`` from the TCP endpoint
    file beside it. Raises :class:`StatusSocketError` when neither is there or trusted."""
    if not os.path.lexists(path):
        try:
            return tokenfile.read(tokenfile.token_path(path), trusted)
        except (FileNotFoundError, NotADirectoryError):
            pass  # neither: check_socket_owner says so
        except OSError as exc:
            raise StatusSocketError(f"cannot read {tokenfile.token_path(path)}: {exc.strerror}") from exc
    check_socket_owner(path, trusted)
    return None
