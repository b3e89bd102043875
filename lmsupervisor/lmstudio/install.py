"""Find LM Studio on this machine: home, `lms`, app or llmster, bootstrap, settings.

Pure file inspection, no processes: :func:`detect` reads what LM Studio left on disk and
returns an :class:`Install` whose ``problems`` say what is missing or corrupt, each with
its fix. It never raises for anything found on disk.

Sources (facts sheet): §1 for the home (``findLMStudioHome.ts``), the executables, the
``.internal/*-install-location.json`` files and what ``lms bootstrap`` writes; §2 for
``settings.json`` and ``.internal/http-server-config.json``. The platform is passed in as a
:class:`Platform`, so Linux, macOS and Windows layouts are all tested on any machine.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmsupervisor.config import server_port
from lmsupervisor.core.observed import DEFAULT_BIND, DEFAULT_PORT, Install, ServerSettings
from lmsupervisor.core.problems import Problem
from lmsupervisor.lmstudio.homedir import resolve_home
from lmsupervisor.platform import current as this_os

DOWNLOAD_URL = "https://lmstudio.ai/download"
# The rc files `lms bootstrap` appends to when they exist ([js] installCli).
RC_FILES = (".profile", ".bashrc", ".bash_profile", ".zshrc", ".config/fish/config.fish", ".cshrc", ".tcshrc")


@dataclass(frozen=True)
class Platform:
    """What differs between operating systems, passed in so every branch is testable.

    ``system`` is ``"linux"``, ``"darwin"`` or ``"windows"``; ``env`` supplies ``PATH``;
    ``windows_user_path`` is the User ``PATH`` from the registry (what ``lms bootstrap``
    edits on Windows), ``None`` when unknown.
    """

    system: str
    user_home: Path
    env: Mapping[str, str] = field(default_factory=dict)
    windows_user_path: str | None = None

    @classmethod
    def current(cls, env: Mapping[str, str] | None = None, platform_name: str | None = None) -> Platform:
        """This machine's platform; ``env`` defaults to :data:`os.environ`, ``platform_name``
        (tests) to :func:`lmsupervisor.platform.current`'s (``$LMSUPERVISOR_PLATFORM`` or this machine's).

        The user home is what LM Studio's ``os.homedir()`` gives: on Windows ``USERPROFILE``
        even where ``HOME`` is set (Git Bash, Cygwin; facts §8), elsewhere ``HOME``; then the
        other, then :meth:`Path.home`. On Windows the User ``PATH`` is read from the
        registry (None when it cannot be read).
        """
        system = platform_name or this_os().name
        env = dict(os.environ if env is None else env)
        order = ("USERPROFILE", "HOME") if system == "windows" else ("HOME", "USERPROFILE")
        user_home = Path(next((env[k] for k in order if env.get(k)), None) or Path.home())
        return cls(system, user_home, env, _windows_user_path() if system == "windows" else None)

    @property
    def exe(self) -> str:
        """The executable suffix: ``".exe"`` on Windows, else ``""``."""
        return ".exe" if self.system == "windows" else ""

    @property
    def path_sep(self) -> str:
        """The ``PATH`` separator: ``";"`` on Windows, else ``":"``."""
        return ";" if self.system == "windows" else ":"

    @property
    def app_data(self) -> Path:
        """The GUI app's own folder (Electron ``userData``), where 0.3 keeps ``settings.json``
        (facts §2, §9): ``$XDG_CONFIG_HOME`` or ``~/.config`` + ``LM Studio`` on Linux,
        ``~/Library/Application Support/LM Studio`` on macOS, ``%APPDATA%\\LM Studio``
        (else ``~\\AppData\\Roaming``) on Windows."""
        if self.system == "darwin":
            return self.user_home / "Library" / "Application Support" / "LM Studio"
        if self.system == "windows":
            return Path(self.env.get("APPDATA") or self.user_home / "AppData" / "Roaming") / "LM Studio"
        return Path(self.env.get("XDG_CONFIG_HOME") or self.user_home / ".config") / "LM Studio"

    def path_entries(self, value: str | None = None) -> list[str]:
        """The non-empty entries of ``value`` split on :attr:`path_sep` (default: ``env["PATH"]``)."""
        raw = self.env.get("PATH", "") if value is None else value
        return [p for p in raw.split(self.path_sep) if p]


def _windows_user_path() -> str | None:  # pragma: no cover - needs a Windows registry
    try:
        import winreg  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError:
        return None
    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, "Environment") as key:  # type: ignore[attr-defined,unused-ignore]
            value, _ = winreg.QueryValueEx(key, "PATH")  # type: ignore[attr-defined,unused-ignore]
            return str(value)
    except OSError:
        return None


class _Reader:
    """Reads JSON files, turning each unreadable one into a problem."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def json(self, path: Path, code: str, fix: str) -> Any:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(Problem(code, f"{path}: cannot read it ({exc})", fix))
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            self.problems.append(Problem(code, f"{path}: not valid JSON ({exc})", fix))
            return None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def read_server_settings(home: Path, reader: _Reader | None = None) -> ServerSettings:
    """Parse ``<home>/.internal/http-server-config.json``; defaults for what is missing."""
    reader = reader or _Reader()
    path = home / ".internal" / "http-server-config.json"
    data = reader.json(
        path, "server_config_corrupt", "repair the file, or delete it and set the server options in LM Studio again"
    )
    if data is None:
        return ServerSettings()
    if not isinstance(data, dict):
        reader.problems.append(
            Problem(
                "server_config_corrupt",
                f"{path}: expected a JSON object, got {type(data).__name__}",
                "repair the file, or delete it",
            )
        )
        return ServerSettings()
    port = server_port(data.get("port"))
    if port is None:
        if "port" in data:
            written = data["port"]
            reader.problems.append(
                Problem(
                    "server_config_corrupt",
                    f"{path}: port: expected 1..65535, got {written!r}",
                    "set a valid port in LM Studio's server settings",
                    "warning",
                )
            )
        port = DEFAULT_PORT
    # Absent, null or empty: LM Studio's default. Any other value is kept as written
    # (a non-string as its JSON text), so the bring-up can name an unusable one
    # (`server_address_invalid`) instead of quietly serving elsewhere.
    bind = data.get("networkInterface")
    return ServerSettings(
        port=port,
        bind=DEFAULT_BIND if bind in (None, "") else bind if isinstance(bind, str) else json.dumps(bind),
        cors=data.get("cors") is True,
        jit=_bool(data.get("justInTimeModelLoading")),
        auto_start=_bool(data.get("autoStartOnLaunch")),
        found=True,
    )


def find_lms(platform: Platform, home: Path, configured: Path | None = None) -> tuple[Path | None, str | None]:
    """Locate `lms`: the configured path, then ``PATH``, then ``<home>/bin/lms(.exe)``.

    Returns ``(path, source)`` with source ``"config"``, ``"PATH"`` or ``"home"``.
    A configured path that does not exist is not replaced by a guess: ``(None, None)``.
    """
    if configured is not None:
        return (configured, "config") if configured.is_file() else (None, None)
    name = "lms" + platform.exe
    found = shutil.which(name, path=platform.path_sep.join(platform.path_entries()))
    if found and platform.system != "windows":
        return Path(found), "PATH"
    if platform.system == "windows":
        for entry in platform.path_entries():
            candidate = Path(entry) / name
            if candidate.is_file():
                return candidate, "PATH"
    candidate = home / "bin" / name
    if candidate.is_file():
        return candidate, "home"
    return None, None


def is_bootstrapped(platform: Platform, home: Path) -> bool:
    """``lms bootstrap``'s effect (§1): ``<home>/bin`` on PATH or in an existing rc file.

    On Windows the User PATH (registry) counts, as that is what bootstrap edits.
    """
    bin_dir = str(home / "bin")
    entries = [e.rstrip("/\\") for e in platform.path_entries()]
    if bin_dir in entries:
        return True
    if platform.system == "windows":
        user = platform.windows_user_path
        return user is not None and bin_dir in [e.rstrip("\\") for e in platform.path_entries(user)]
    for rc in RC_FILES:
        try:
            if bin_dir in (platform.user_home / rc).read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            continue
    return False


def detect(platform: Platform, home: Path | None = None, lms: Path | None = None) -> Install:
    """Inspect LM Studio's files; ``home`` and ``lms`` are the configured overrides."""
    reader = _Reader()
    problems = reader.problems
    if home is not None:
        resolution_home, source = home.expanduser(), "config"
    else:
        resolution = resolve_home(platform.user_home)
        resolution_home, source = resolution.home, resolution.source
        if resolution.pointer_error:
            problems.append(
                Problem(
                    "home_pointer_unreadable",
                    resolution.pointer_error,
                    "delete the pointer file; LM Studio rewrites it",
                    "warning",
                )
            )
    home = resolution_home
    home_exists = home.is_dir()
    lms_path, lms_source = find_lms(platform, home, lms)
    internal = home / ".internal"

    kind: str | None = None
    service_path: Path | None = None
    for name, this_kind in (("llmster-install-location.json", "llmster"), ("app-install-location.json", "app")):
        loc = reader.json(
            internal / name, "install_location_corrupt", "run LM Studio (or `llmster bootstrap`) once to rewrite it"
        )
        if isinstance(loc, dict) and isinstance(loc.get("path"), str):
            path = Path(loc["path"])
            if path.exists():
                kind, service_path = this_kind, path
                break
            if this_kind == "app" and _is_appimage_mount(path):
                # lms#97, BT#1068: the mount of a past AppImage run; lms cannot start the app.
                kind = "appimage"
                problems.append(
                    Problem(
                        "appimage_not_startable",
                        f"LM Studio is an AppImage: {internal / name} names {path}, the mount of a past run, "
                        "gone once the app exits, so lms cannot start LM Studio when it is not running",
                        "start LM Studio yourself; or extract the AppImage (`./LM-Studio-*.AppImage "
                        "--appimage-extract`) and run the extracted app once; or install llmster "
                        "(`curl -fsSL https://lmstudio.ai/install.sh | bash`)",
                    )
                )
                break
            if this_kind == "llmster":
                # lms does not fall back to the app when this file exists (facts §8).
                kind = "llmster"
                problems.append(
                    Problem(
                        "install_location_stale",
                        f"{internal / name} names {path}, which does not exist; lms uses it and does not fall "
                        "back to the app, so it cannot start LM Studio",
                        "reinstall llmster (`curl -fsSL https://lmstudio.ai/install.sh | bash`), or delete "
                        f"{internal / name} to let lms start the app",
                    )
                )
                break
            problems.append(
                Problem(
                    "install_location_stale",
                    f"{internal / name} names {path}, which does not exist",
                    "run LM Studio (or reinstall llmster) once so it records where it lives",
                    "warning",
                )
            )

    server = read_server_settings(home, reader)

    settings = reader.json(
        home / "settings.json",
        "settings_corrupt",
        "repair settings.json, or move it away so LM Studio writes a new one",
    )
    local_service: bool | None = None
    if isinstance(settings, dict):
        local_service = _bool(settings.get("enableLocalService"))
    if local_service is None:  # 0.3: the app's own folder (facts §2, §9)
        app_settings = reader.json(
            platform.app_data / "settings.json",
            "settings_corrupt",
            "repair the app's settings.json, or move it away so LM Studio writes a new one",
        )
        if isinstance(app_settings, dict):
            local_service = _bool(app_settings.get("enableLocalService"))
    preferences = reader.json(home / "preferences.json", "preferences_corrupt", "repair or delete preferences.json")
    if local_service is None and isinstance(preferences, dict):
        # Not documented by LM Studio (facts §2 says it is not real); read where it exists.
        developer = preferences.get("developer")
        if isinstance(developer, dict):
            local_service = _bool(developer.get("enableLocalLLMService"))

    api_server = reader.json(
        internal / "http-server.json",
        "api_server_info_corrupt",
        "delete it; LM Studio writes it again when its service starts",
    )
    if not isinstance(api_server, dict):
        api_server = None

    bootstrapped = home_exists and is_bootstrapped(platform, home)
    install = Install(
        home,
        source,
        home_exists,
        lms_path,
        lms_source,
        bootstrapped,
        kind,
        service_path,
        server,
        local_service,
        api_server,
        (),
    )

    if not install.installed:
        problems.append(
            Problem(
                "not_installed",
                f"LM Studio is not installed (no {home})"
                if not home_exists
                else f"LM Studio's home {home} has neither lms nor an app or llmster",
                f"install it from {DOWNLOAD_URL} (headless: `curl -fsSL https://lmstudio.ai/install.sh"
                " | bash`) and run it once",
            )
        )
    else:
        if lms_path is None:
            where = f"at the configured {lms}" if lms is not None else f"on PATH or in {home / 'bin'}"
            problems.append(
                Problem(
                    "lms_not_found",
                    f"the lms CLI was not found {where}",
                    "run LM Studio once (it installs lms), or set lmstudio.lms",
                )
            )
        if not bootstrapped:
            problems.append(
                Problem(
                    "not_bootstrapped",
                    f"{home / 'bin'} is not on PATH nor in a shell rc file",
                    f"run `{home / 'bin' / ('lms' + platform.exe)} bootstrap`, then open a new shell",
                    "warning",
                )
            )
        in_cache = source == "legacy" or _same_path(home, platform.user_home / ".cache" / "lm-studio")
        if in_cache:
            problems.append(
                Problem(
                    "home_in_cache",
                    f"LM Studio's home is {home}, which cache cleaners may wipe (BT#230)",
                    "move it to ~/.lmstudio and write that path into ~/.lmstudio-home-pointer",
                    "warning",
                )
            )
        if kind == "app" and local_service is False:
            problems.append(
                Problem(
                    "local_service_disabled",
                    "the app's 'Enable Local LLM Service' is off, so LM Studio does not run headless after login",
                    "turn it on in LM Studio's settings, or install llmster",
                    "warning",
                )
            )
    return replace(install, problems=tuple(problems))


def _is_appimage_mount(path: Path) -> bool:
    """A path inside an AppImage's runtime mount, ``/tmp/.mount_<name><random>/`` (BT#1492)."""
    return any(part.startswith(".mount_") for part in path.parts)


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
