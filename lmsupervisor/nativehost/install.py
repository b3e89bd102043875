"""`lmsupervisor native-host install|uninstall`: register the host with a browser.

Rendering is pure (:func:`plan_install`, :func:`plan_uninstall` return files and the
Windows registry key); :func:`apply` writes or removes them. The platform is passed in,
so the Linux, macOS and Windows layouts are all tested on any machine.

Where each browser looks for a user-level host manifest named ``<name>.json``
(Chrome "Native messaging host location", MDN "Native manifests", Microsoft Edge
"Native messaging"):

========  ===========================================================  ==============================================
browser   Linux                                                        macOS (under ``~/Library/Application Support``)
========  ===========================================================  ==============================================
chrome    ``$XDG_CONFIG_HOME/google-chrome/NativeMessagingHosts``       ``Google/Chrome/NativeMessagingHosts``
chromium  ``$XDG_CONFIG_HOME/chromium/NativeMessagingHosts``            ``Chromium/NativeMessagingHosts``
edge      ``$XDG_CONFIG_HOME/microsoft-edge/NativeMessagingHosts``      ``Microsoft Edge/NativeMessagingHosts``
firefox   ``~/.mozilla/native-messaging-hosts``                         ``Mozilla/NativeMessagingHosts``
========  ===========================================================  ==============================================

(``$XDG_CONFIG_HOME`` defaults to ``~/.config``.) On Windows the manifest may live
anywhere and ``HKCU\\Software\\<vendor>\\NativeMessagingHosts\\<name>`` names it; we
write it to our data folder and print that key, we do not edit the registry.

The manifest's ``path`` must be an absolute path to an executable that takes no
arguments of ours (browsers pass only the caller's origin, or Firefox's manifest path
and extension id), so it names a launcher script, written in our data folder
(``$XDG_DATA_HOME/lmsupervisor/native-messaging/<browser>/``), that execs this
installation's ``lmsupervisor native-host``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from lmsupervisor.errors import NativeHostInstallError
from lmsupervisor.lmstudio.install import Platform

HOST_NAME = "org.lmsupervisor.host"
DESCRIPTION = "lmsupervisor: start, check and talk to the local LM Studio"
BROWSERS = ("chrome", "chromium", "edge", "firefox")
# Chrome: "lowercase alphanumeric characters, underscores and dots", no dot at either end or twice.
NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
CHROMIUM_ID_RE = re.compile(r"^[a-p]{32}$")  # 32 letters a-p (a hash of the key, in base 16 shifted to a-p)
FIREFOX_ID_RE = re.compile(r"^(\{[0-9a-fA-F-]{36}\}|[A-Za-z0-9._+-]*@[A-Za-z0-9._-]+)$")  # {uuid} or name@domain

_LINUX_DIRS = {"chrome": "google-chrome", "chromium": "chromium", "edge": "microsoft-edge"}
_MACOS_DIRS = {
    "chrome": "Google/Chrome/NativeMessagingHosts",
    "chromium": "Chromium/NativeMessagingHosts",
    "edge": "Microsoft Edge/NativeMessagingHosts",
    "firefox": "Mozilla/NativeMessagingHosts",
}
_REGISTRY = {
    "chrome": r"HKEY_CURRENT_USER\Software\Google\Chrome\NativeMessagingHosts",
    "chromium": r"HKEY_CURRENT_USER\Software\Chromium\NativeMessagingHosts",
    "edge": r"HKEY_CURRENT_USER\Software\Microsoft\Edge\NativeMessagingHosts",
    "firefox": r"HKEY_CURRENT_USER\Software\Mozilla\NativeMessagingHosts",
}


@dataclass(frozen=True)
class File:
    """A file to write: ``mode`` 0o755 for the launcher, 0o644 for the manifest."""

    path: Path
    content: str
    mode: int


@dataclass(frozen=True)
class Plan:
    """What install writes (``files``) or uninstall removes (``remove``), and on Windows
    the registry key whose default value must name ``manifest``."""

    browser: str
    manifest: Path
    launcher: Path
    files: tuple[File, ...] = ()
    remove: tuple[Path, ...] = ()
    registry_key: str | None = None

    def registry_command(self, adding: bool = True) -> str | None:
        """The `reg` command a Windows user runs to register (or unregister) the manifest."""
        if self.registry_key is None:
            return None
        if adding:
            return f'reg add "{self.registry_key}" /ve /t REG_SZ /d "{self.manifest}" /f'
        return f'reg delete "{self.registry_key}" /f'


def manifest_dir(browser: str, platform: Platform) -> Path | None:
    """Where ``browser`` looks for user-level host manifests; None on Windows (registry)."""
    home = platform.user_home
    if platform.system == "darwin":
        return home / "Library" / "Application Support" / _MACOS_DIRS[browser]
    if platform.system == "windows":
        return None
    if browser == "firefox":
        return home / ".mozilla" / "native-messaging-hosts"
    config_home = Path(platform.env.get("XDG_CONFIG_HOME") or home / ".config")
    return config_home / _LINUX_DIRS[browser] / "NativeMessagingHosts"


def data_dir(platform: Platform) -> Path:
    """Our per-user data folder (what platformdirs' ``user_data_dir`` gives on each system)."""
    home = platform.user_home
    if platform.system == "darwin":
        return home / "Library" / "Application Support" / "lmsupervisor"
    if platform.system == "windows":
        return Path(platform.env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "lmsupervisor"
    return Path(platform.env.get("XDG_DATA_HOME") or home / ".local" / "share") / "lmsupervisor"


def console_script(argv0: str | None = None, executable: str | None = None) -> list[str]:
    """The command that runs this installation's `lmsupervisor`: the console script we were
    started as, else the one in this interpreter's scripts folder, else ``python -m``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    names = ("lmsupervisor", "lmsupervisor.exe")
    if os.path.basename(argv0) in names and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    scripts = sysconfig.get_path("scripts")
    for name in names:
        candidate = os.path.join(scripts, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [candidate]
    return [os.path.abspath(executable), "-m", "lmsupervisor"]


def _check(browser: str, name: str) -> None:
    if browser not in BROWSERS:
        raise NativeHostInstallError(f"--browser: expected one of {', '.join(BROWSERS)}, got {browser!r}")
    if not NAME_RE.match(name):
        raise NativeHostInstallError(
            f"--name: expected lowercase letters, digits, underscores and single inner dots, got {name!r}"
        )


def _paths(browser: str, platform: Platform, name: str) -> tuple[Path, Path]:
    launcher_dir = data_dir(platform) / "native-messaging" / browser
    launcher = launcher_dir / (f"{name}.bat" if platform.system == "windows" else name)
    mdir = manifest_dir(browser, platform) or launcher_dir
    return mdir / f"{name}.json", launcher


def _launcher(platform: Platform, browser: str, command: list[str]) -> str:
    if platform.system == "windows":
        quoted = " ".join(f'"{c}"' for c in command)
        return f"@echo off\r\nrem lmsupervisor native-messaging host for {browser}\r\n{quoted}\r\n"
    return (
        "#!/bin/sh\n"
        f"# lmsupervisor native-messaging host for {browser}, written by `lmsupervisor native-host install`.\n"
        "# The browser passes the caller's origin (Chrome, Edge) or the manifest path and\n"
        "# extension id (Firefox); the host needs neither.\n"
        f"exec {shlex.join(command)}\n"
    )


def plan_install(
    browser: str,
    extension_ids: list[str],
    platform: Platform,
    command: list[str],
    *,
    name: str = HOST_NAME,
    config: Path | None = None,
    socket: Path | None = None,
) -> Plan:
    """The manifest and launcher that register ``command`` (see :func:`console_script`)
    for ``extension_ids``; ``config``/``socket`` are baked into the launcher.

    Raises :class:`NativeHostInstallError` for an unknown browser, a bad name or an
    extension id of the wrong form for that browser.
    """
    _check(browser, name)
    if not extension_ids:
        raise NativeHostInstallError("--extension-id: give the id of the extension that may start the host")
    id_re, form = (
        (FIREFOX_ID_RE, "name@domain or {uuid}")
        if browser == "firefox"
        else (CHROMIUM_ID_RE, "32 letters a to p, as shown in the browser's extensions page")
    )
    for ext in extension_ids:
        if not id_re.match(ext):
            raise NativeHostInstallError(f"--extension-id: expected {form} for {browser}, got {ext!r}")
    manifest, launcher = _paths(browser, platform, name)
    run = [*command, "native-host"]
    if config is not None:
        run += ["--config", str(config)]
    if socket is not None:
        run += ["--socket", str(socket)]
    body: dict[str, object] = {"name": name, "description": DESCRIPTION, "path": str(launcher), "type": "stdio"}
    if browser == "firefox":
        body["allowed_extensions"] = list(extension_ids)
    else:
        body["allowed_origins"] = [f"chrome-extension://{ext}/" for ext in extension_ids]
    return Plan(
        browser,
        manifest,
        launcher,
        files=(
            File(launcher, _launcher(platform, browser, run), 0o755),
            File(manifest, json.dumps(body, indent=2) + "\n", 0o644),
        ),
        registry_key=f"{_REGISTRY[browser]}\\{name}" if platform.system == "windows" else None,
    )


def plan_uninstall(browser: str, platform: Platform, *, name: str = HOST_NAME) -> Plan:
    """The manifest and launcher :func:`plan_install` wrote for ``browser``, to remove."""
    _check(browser, name)
    manifest, launcher = _paths(browser, platform, name)
    return Plan(
        browser,
        manifest,
        launcher,
        remove=(manifest, launcher),
        registry_key=f"{_REGISTRY[browser]}\\{name}" if platform.system == "windows" else None,
    )


def apply(plan: Plan) -> list[Path]:
    """Write ``plan.files`` (each atomically, through a temporary file) and remove
    ``plan.remove``; returns the paths changed. Raises ``OSError`` as it comes."""
    changed: list[Path] = []
    for f in plan.files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.path.with_name(f".{f.path.name}.tmp")
        tmp.write_text(f.content, encoding="utf-8", newline="")
        tmp.chmod(f.mode)
        os.replace(tmp, f.path)
        changed.append(f.path)
    for path in plan.remove:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        changed.append(path)
    return changed


def outcome(plan: Plan, changed: list[Path], adding: bool) -> str:
    """What `native-host install` (``adding``) or `uninstall` tells the user it did with
    ``plan`` (``changed``: the paths :func:`apply` returned), and on Windows the `reg`
    command that registers or unregisters the manifest."""
    if adding:
        lines = [f"wrote {plan.manifest}", f"wrote {plan.launcher}"]
    else:
        lines = [f"removed {p}" for p in changed] or [f"nothing to remove for {plan.browser}"]
    if plan.registry_key is not None:
        verb = "register" if adding else "unregister"
        lines += [f"Windows: {verb} it under {plan.registry_key}:", f"  {plan.registry_command(adding=adding)}"]
    return "\n".join(lines)
