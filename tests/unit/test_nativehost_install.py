"""Rendering and writing the browsers' host manifests and the launcher, for each platform."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lmsupervisor.errors import NativeHostInstallError
from lmsupervisor.lmstudio.install import Platform
from lmsupervisor.nativehost.install import (
    BROWSERS,
    apply,
    console_script,
    outcome,
    plan_install,
    plan_uninstall,
)

CHROME_ID = "knldjmfmopnpolahpmmgbagdohdnhkik"
FIREFOX_ID = "lmsupervisor@example.org"
HOME = Path("/home/ann")


def ext_id(browser: str) -> str:
    return FIREFOX_ID if browser == "firefox" else CHROME_ID


@pytest.mark.parametrize(
    ("browser", "system", "env", "folder"),
    [
        ("chrome", "linux", {}, "/home/ann/.config/google-chrome/NativeMessagingHosts"),
        ("chrome", "linux", {"XDG_CONFIG_HOME": "/cfg"}, "/cfg/google-chrome/NativeMessagingHosts"),
        ("chromium", "linux", {}, "/home/ann/.config/chromium/NativeMessagingHosts"),
        ("edge", "linux", {}, "/home/ann/.config/microsoft-edge/NativeMessagingHosts"),
        ("firefox", "linux", {"XDG_CONFIG_HOME": "/cfg"}, "/home/ann/.mozilla/native-messaging-hosts"),
        ("chrome", "darwin", {}, "/home/ann/Library/Application Support/Google/Chrome/NativeMessagingHosts"),
        ("chromium", "darwin", {}, "/home/ann/Library/Application Support/Chromium/NativeMessagingHosts"),
        ("edge", "darwin", {}, "/home/ann/Library/Application Support/Microsoft Edge/NativeMessagingHosts"),
        ("firefox", "darwin", {}, "/home/ann/Library/Application Support/Mozilla/NativeMessagingHosts"),
    ],
)
def test_manifest_goes_where_the_browser_looks(browser: str, system: str, env: dict[str, str], folder: str) -> None:
    """Each browser's user-level NativeMessagingHosts folder on Linux and macOS, named <name>.json."""
    plan = plan_install(browser, [ext_id(browser)], Platform(system, HOME, env), ["/venv/bin/lmsupervisor"])
    assert plan.manifest == Path(folder) / "org.lmsupervisor.host.json"
    assert plan.registry_key is None


def test_chromium_manifest_names_origins_and_the_launcher() -> None:
    """Chrome-family manifests list chrome-extension:// origins and point at the absolute launcher."""
    plan = plan_install("chrome", [CHROME_ID], Platform("linux", HOME, {}), ["/venv/bin/lmsupervisor"])
    body = json.loads(plan.files[1].content)
    assert body == {
        "name": "org.lmsupervisor.host",
        "description": body["description"],
        "path": "/home/ann/.local/share/lmsupervisor/native-messaging/chrome/org.lmsupervisor.host",
        "type": "stdio",
        "allowed_origins": [f"chrome-extension://{CHROME_ID}/"],
    }
    assert plan.files[0].path == Path(body["path"])
    assert plan.files[0].content.splitlines()[-1] == "exec /venv/bin/lmsupervisor native-host"


def test_firefox_manifest_names_extensions() -> None:
    """Firefox manifests list add-on ids under allowed_extensions (allowed_origins is an error there)."""
    plan = plan_install("firefox", [FIREFOX_ID], Platform("linux", HOME, {}), ["/x/lmsupervisor"])
    body = json.loads(plan.files[1].content)
    assert (body["allowed_extensions"], "allowed_origins" in body) == ([FIREFOX_ID], False)


def test_launcher_carries_config_and_socket_quoted() -> None:
    """--config and --socket given at install are passed by the launcher, shell-quoted."""
    plan = plan_install(
        "chromium",
        [CHROME_ID],
        Platform("linux", HOME, {}),
        ["/opt/my env/python", "-m", "lmsupervisor"],
        config=Path("/etc/lms sup.toml"),
        socket=Path("/run/s.sock"),
    )
    last = plan.files[0].content.splitlines()[-1]
    assert (
        last
        == "exec '/opt/my env/python' -m lmsupervisor native-host --config '/etc/lms sup.toml' --socket /run/s.sock"
    )


def test_windows_prints_the_registry_key() -> None:
    """On Windows the manifest and a .bat launcher go to our data folder; the key is named, not written."""
    platform = Platform("windows", Path("C:/Users/ann"), {"LOCALAPPDATA": "C:/Users/ann/AppData/Local"})
    plan = plan_install("edge", [CHROME_ID], platform, ["C:/py/Scripts/lmsupervisor.exe"])
    assert plan.registry_key == r"HKEY_CURRENT_USER\Software\Microsoft\Edge\NativeMessagingHosts\org.lmsupervisor.host"
    assert (
        plan.manifest.parent
        == plan.launcher.parent
        == Path("C:/Users/ann/AppData/Local/lmsupervisor/native-messaging/edge")
    )
    assert plan.launcher.name == "org.lmsupervisor.host.bat"
    assert f'/d "{plan.manifest}"' in (plan.registry_command() or "")
    assert plan_uninstall("edge", platform).registry_command(adding=False) == f'reg delete "{plan.registry_key}" /f'


@pytest.mark.parametrize(
    ("browser", "ids", "name", "says"),
    [
        ("chrome", ["not-an-id"], "org.lmsupervisor.host", "32 letters a to p"),
        ("chrome", [FIREFOX_ID], "org.lmsupervisor.host", "32 letters a to p"),
        ("firefox", [CHROME_ID], "org.lmsupervisor.host", "name@domain"),
        ("chrome", [], "org.lmsupervisor.host", "give the id"),
        ("chrome", [CHROME_ID], "Org.Host", "--name"),
        ("chrome", [CHROME_ID], "org..host", "--name"),
        ("safari", [CHROME_ID], "org.lmsupervisor.host", "--browser"),
    ],
)
def test_bad_values_are_refused(browser: str, ids: list[str], name: str, says: str) -> None:
    """Ids of the wrong form for the browser, bad host names and unknown browsers are usage errors."""
    with pytest.raises(NativeHostInstallError, match=says):
        plan_install(browser, ids, Platform("linux", HOME, {}), ["/x/lmsupervisor"], name=name)


@pytest.mark.parametrize("browser", BROWSERS)
def test_install_then_uninstall_on_disk(tmp_path: Path, browser: str) -> None:
    """apply writes an executable launcher and a readable manifest; uninstall removes both."""
    platform = Platform("linux", tmp_path, {})
    plan = plan_install(browser, [ext_id(browser)], platform, ["/x/lmsupervisor"])
    assert apply(plan) == [plan.launcher, plan.manifest]
    assert stat.S_IMODE(plan.launcher.stat().st_mode) == 0o755
    assert os.access(plan.launcher, os.X_OK)
    assert json.loads(plan.manifest.read_text())["path"] == str(plan.launcher)
    assert apply(plan_uninstall(browser, platform)) == [plan.manifest, plan.launcher]
    assert (plan.manifest.exists(), plan.launcher.exists()) == (False, False)
    assert apply(plan_uninstall(browser, platform)) == []  # nothing left: not an error


def test_outcome_names_what_was_written_removed_and_registered() -> None:
    """install names both files; uninstall the files it removed, or that there was nothing;
    on Windows the `reg` command to run follows."""
    linux = Platform("linux", HOME, {})
    plan = plan_install("chrome", [CHROME_ID], linux, ["/x/lmsupervisor"])
    windows = Platform("windows", Path("C:/Users/ann"), {"LOCALAPPDATA": "C:/Users/ann/AppData/Local"})
    gone = plan_uninstall("edge", windows)
    assert outcome(plan, [plan.launcher, plan.manifest], adding=True) == f"wrote {plan.manifest}\nwrote {plan.launcher}"
    assert outcome(plan_uninstall("chrome", linux), [plan.manifest], adding=False) == f"removed {plan.manifest}"
    assert outcome(gone, [], adding=False).splitlines() == [
        "nothing to remove for edge",
        f"Windows: unregister it under {gone.registry_key}:",
        f'  reg delete "{gone.registry_key}" /f',
    ]


def test_console_script_prefers_the_script_we_run_as(tmp_path: Path) -> None:
    """The running console script is what the launcher execs; else python -m lmsupervisor."""
    script = tmp_path / "bin" / "lmsupervisor"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    assert console_script(str(script), "/usr/bin/python3") == [str(script)]
    fallback = console_script(str(tmp_path / "pytest"), "/usr/bin/python3")
    assert fallback[-1] == "lmsupervisor" or fallback[0].endswith("lmsupervisor")
