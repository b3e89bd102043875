"""doctor reports lmsupervisor's service and warns about LM Studio's own autostart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmsupervisor.config import Config
from lmsupervisor.doctor import diagnose, lmstudio_units, render
from lmsupervisor.lmstudio.install import Platform
from lmsupervisor.service.install import UnitState

pytestmark = pytest.mark.integration

LMSTUDIO_ONESHOT = """[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=/home/alice/.lmstudio/bin/lms daemon up
ExecStart=/home/alice/.lmstudio/bin/lms server start
"""


def user_unit(**kw: Any) -> UnitState:
    values: dict[str, Any] = {
        "manager": "systemd",
        "unit": "lmsupervisor.service",
        "installed": True,
        "loaded": True,
        "enabled": True,
        "active": True,
        "state": "active (running)",
        "main_pid": 42,
        "restarts": 1,
        "linger": False,
        "before_login": False,
        "linger_fix": "loginctl enable-linger alice",
        **kw,
    }
    return UnitState(**values)


async def test_service_report_and_lmstudio_autostart_warning(make_sim: Any, tmp_path: Path) -> None:
    """With our unit installed and LM Studio's enableLocalService on: the unit's state, and a warning with the fix."""
    sim = make_sim()  # settings.json: enableLocalService true, as LM Studio writes it
    units = tmp_path / "units"
    units.mkdir()
    (units / "lmstudio.service").write_text(LMSTUDIO_ONESHOT)
    (units / "lmsupervisor.service").write_text("ExecStart=/x/lmsupervisor run  # lms server start\n")
    diag = await diagnose(
        Config(), Platform("linux", sim.root, sim.env()), services=lambda: [user_unit()], unit_dirs=[units]
    )
    codes = {p.code: p for p in diag.problems}
    assert codes["lmstudio_autostart"].severity == "warning"
    assert "enableLocalService" in codes["lmstudio_autostart"].fix
    assert codes["lmstudio_unit"].fix.startswith("`systemctl --user disable --now lmstudio.service`")
    assert "loginctl enable-linger alice" in codes["service_not_before_login"].fix
    text = render(diag)
    assert "systemd lmsupervisor.service: active (running), enabled, PID 42" in text
    assert "no, at first login (lingering off: `loginctl enable-linger alice` starts it at boot)" in text
    assert json.loads(json.dumps(diag.to_json()))["services"][0]["enabled"] is True


async def test_no_autostart_warning_without_our_service(make_sim: Any, tmp_path: Path) -> None:
    """Without our service LM Studio's autostart is the only one: no warning; doctor says how to install ours."""
    sim = make_sim()
    diag = await diagnose(Config(), Platform("linux", sim.root, sim.env()), services=list, unit_dirs=[tmp_path])
    assert not {"lmstudio_autostart", "lmstudio_unit"} & {p.code for p in diag.problems}
    assert "not installed as a service (`lmsupervisor service install`)" in render(diag)


async def test_app_local_service_off_is_fine_with_our_service(make_sim: Any, tmp_path: Path) -> None:
    """The app's headless toggle being off is no problem when lmsupervisor's unit starts LM Studio."""
    sim = make_sim(profile="0.3", settings={"enableLocalService": False})
    platform = Platform("linux", sim.root, sim.env())
    alone = await diagnose(Config(), platform, services=list, unit_dirs=[tmp_path])
    assert "local_service_disabled" in {p.code for p in alone.problems}
    ours = await diagnose(Config(), platform, services=lambda: [user_unit(linger=True)], unit_dirs=[tmp_path])
    assert not {"local_service_disabled", "lmstudio_autostart"} & {p.code for p in ours.problems}


def test_lmstudio_units_skips_ours_and_unreadable_folders(tmp_path: Path) -> None:
    """Only units that run `lms daemon up`/`lms server start`/llmster count; ours and missing folders do not."""
    (tmp_path / "a.service").write_text(LMSTUDIO_ONESHOT)
    (tmp_path / "b.service").write_text("ExecStart=/usr/bin/llmster --headless\n")
    (tmp_path / "c.service").write_text("ExecStart=/usr/bin/lmsx server start\n")
    (tmp_path / "lmsupervisor@.service").write_text(LMSTUDIO_ONESHOT)
    assert [p.name for p in lmstudio_units([tmp_path, tmp_path / "missing"])] == ["a.service", "b.service"]
