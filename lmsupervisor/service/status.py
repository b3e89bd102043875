"""What `lmsupervisor service status` reports, and the lingering note `service install` prints.

:func:`service_report` asks the service manager about our units (:func:`~lmsupervisor.service.install.query`),
then the supervisor behind the unit's status socket for its snapshot (design §5); the
:class:`ServiceReport` renders both as text or JSON. ``clicommands.py`` turns its verdict (``active``,
``ready``) into the exit code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmsupervisor import paths
from lmsupervisor.client import resolve_socket
from lmsupervisor.client.summary import summary
from lmsupervisor.client.sync import request
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.service.install import UnitState, installed_services, plan_for, query, run_command
from lmsupervisor.service.report import rows


@dataclass(frozen=True)
class ServiceReport:
    """Our units as the service manager sees them (``states``, user scope first), the
    status socket asked (``socket``) and the supervisor's snapshot there (``snapshot``;
    None when nobody answered, ``unreachable`` then says why)."""

    states: list[UnitState]
    socket: str
    snapshot: dict[str, Any] | None
    unreachable: str = ""

    @property
    def active(self) -> bool:
        """Whether the service manager says any of the units is active."""
        return any(s.active for s in self.states)

    @property
    def ready(self) -> bool:
        """Whether the supervisor answered and says it is ready."""
        return bool(self.snapshot and self.snapshot.get("ready"))

    def to_json(self) -> str:
        """``{"services": [UnitState.to_json(), ...], "supervisor": snapshot}``, indented."""
        return json.dumps({"services": [s.to_json() for s in self.states], "supervisor": self.snapshot}, indent=2)

    def text(self) -> str:
        """Label/value rows per unit and for the supervisor, then its status summary."""
        lines: list[tuple[str, str]] = []
        for st in self.states:
            if not st.installed and not st.loaded:
                lines.append(
                    ("lmsupervisor", f"not installed ({st.manager} {st.unit}); `lmsupervisor service install`")
                )
                continue
            lines += rows(st)
        lines.append(("supervisor", f"answering on {self.socket}" if self.snapshot is not None else self.unreachable))
        width = max(len(k) for k, _ in lines)
        text = "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)
        return text if self.snapshot is None else f"{text}\n{summary(self.snapshot)}"


def service_report(scope: str | None, config: Path | None) -> ServiceReport:
    """The units of ``scope`` (``"user"`` or ``"system"``; None: those installed, else the
    user unit) for ``config``, and the supervisor answering on their socket: a system
    unit's own (active, or asked for) unless ``$LMSUPERVISOR_SOCKET`` names one, else the
    usual lookup (:func:`~lmsupervisor.client.resolve_socket`). Never raises for a
    supervisor that does not answer."""
    states = [query(plan_for(scope, config))] if scope else installed_services() or [query(plan_for("user", config))]
    system = next((st for st in states if st.unit.startswith("lmsupervisor@")), None)
    unit_socket = None
    if system is not None and (system.active or scope):  # its socket, unless $LMSUPERVISOR_SOCKET names one
        unit_socket = paths.system_socket(system.unit.removeprefix("lmsupervisor@").removesuffix(".service"))
    socket_path = resolve_socket(None, unit_socket=unit_socket)
    try:
        snap = request(socket_path, "GET", "/v1/status")[1]
    except StatusSocketError as exc:
        return ServiceReport(states, socket_path, None, str(exc))
    return ServiceReport(states, socket_path, snap)


def linger_note(linger: tuple[str, ...]) -> str:
    """Linux user units start at boot only with lingering: whether it is on, and how, from
    the ``linger`` command (``loginctl show-user <user> --property=Linger``, its third
    word the user)."""
    fix = f"loginctl enable-linger {linger[2]}"
    res = run_command(linger)
    if res.returncode == 0 and "Linger=yes" in res.stdout:
        return "lingering is on: the unit starts at boot, before anyone logs in"
    if res.returncode == 0:
        return f"note: lingering is off: the unit starts at your first login, not at boot; to start it at boot: `{fix}`"
    why = " ".join((res.stderr or res.stdout).split()) or f"exit {res.returncode}"
    return f"note: could not ask logind whether lingering is on ({why}); to start the unit at boot: `{fix}`"
