"""Where `lmsupervisor dashboard` finds the page: ``<socket>.dashboard.json`` beside the
status socket, in the supervisor's private folder (0700), mode 0600, written atomically by
:func:`lmsupervisor.endpoint.tokenfile.write` with the listen ``host``, ``port`` and a
``token`` made at each start (and refused, as the TCP endpoint file is, when it is not
ours, readable by others, or left by a supervisor that is gone)."""

from __future__ import annotations

import os
from pathlib import Path

from lmsupervisor.endpoint import tokenfile
from lmsupervisor.errors import DashboardError, StatusSocketError

SUFFIX = ".dashboard.json"


def dashboard_path(socket_path: str | os.PathLike[str]) -> Path:
    """The dashboard's file for the status socket ``socket_path``."""
    return Path(os.fspath(socket_path) + SUFFIX)


def url(host: str, port: int, token: str | None = None) -> str:
    """``http://127.0.0.1:PORT/`` (an IPv6 host in brackets), with ``?token=`` when given."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def dashboard_url(cli_socket: str | os.PathLike[str] | None) -> str:
    """The running supervisor's dashboard URL with its token (Jupyter-style ``?token=``);
    the socket is found as `status` finds it (``--socket``, ``$LMSUPERVISOR_SOCKET``, the
    config, the default). Raises :class:`DashboardError` when no dashboard is served
    (``[dashboard] listen`` off, or no supervisor) or its file cannot be trusted."""
    from lmsupervisor.client.locate import resolve_socket, trusted_uids  # noqa: PLC0415 - the CLI's path only

    path = dashboard_path(resolve_socket(cli_socket))
    try:
        value = tokenfile.read_endpoint(str(path), trusted_uids())
    except FileNotFoundError:
        raise DashboardError(
            f"no dashboard at {path}",
            hint='start `lmsupervisor run` (the dashboard is on unless [dashboard] listen = "")',
        ) from None
    except OSError as exc:
        raise DashboardError(f"cannot read {path}: {exc.strerror}") from exc
    except StatusSocketError as exc:
        raise DashboardError(exc.message, exc.hint) from exc
    return url(str(value.get("host") or tokenfile.HOST), value["port"], value["token"])
