"""`lmsupervisor service status`: the report of the units and the supervisor behind them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lmsupervisor.service.install import UnitState
from lmsupervisor.service.status import ServiceReport

SOCKET = "/run/user/1000/lmsupervisor/status.sock"


def unit(**fields: Any) -> UnitState:
    return UnitState("systemd", "lmsupervisor.service", **{"installed": True, "loaded": True, **fields})


def test_a_unit_not_installed_says_how_and_the_unreachable_supervisor_why() -> None:
    """A unit neither installed nor loaded is one row with the install command; a supervisor
    that did not answer is the reason, and no summary follows."""
    report = ServiceReport([unit(installed=False, loaded=False)], SOCKET, None, f"no supervisor answers on {SOCKET}")
    assert report.text() == (
        "lmsupervisor  not installed (systemd lmsupervisor.service); `lmsupervisor service install`\n"
        f"supervisor    no supervisor answers on {SOCKET}"
    )


@pytest.mark.parametrize(
    ("active", "snapshot", "verdict"),
    [
        (None, None, (False, False)),
        (True, None, (True, False)),
        (True, {"ready": False}, (True, False)),
        (True, {"ready": True}, (True, True)),
    ],
)
def test_the_verdict_is_the_units_activity_and_the_supervisors_readiness(
    active: bool | None, snapshot: dict[str, Any] | None, verdict: tuple[bool, bool]
) -> None:
    """``active`` comes from the manager, ``ready`` only from a snapshot that says so."""
    report = ServiceReport([unit(active=active)], SOCKET, snapshot)
    assert (report.active, report.ready) == verdict


def test_json_holds_every_unit_and_the_snapshot() -> None:
    """`--json`: the units as UnitState.to_json() gives them, and the snapshot as answered."""
    report = ServiceReport([unit(active=True)], SOCKET, {"ready": True, "state": "ready"})
    assert json.loads(report.to_json()) == {
        "services": [unit(active=True).to_json()],
        "supervisor": {"ready": True, "state": "ready"},
    }
