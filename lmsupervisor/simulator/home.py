"""Make a simulated LM Studio install (the files of its home) or find one made earlier.

Layout written by :func:`create_install` under ``root`` (which stands in for ``HOME``),
following facts §1-§2::

    root/.lmstudio-home-pointer            (unless pointer=False)
    root/.bashrc                           with the PATH line when bootstrapped
    <home>/bin/lms  (lms.exe for the windows layout)
    <home>/.internal/http-server-config.json, llmster- or app-install-location.json
    <home>/settings.json, <home>/models/<path>/, <home>/llmster/<ver>/llmster (llmster profiles)
    root/Applications/... the GUI app (app profiles; where depends on ``layout``)
    <home>/.sim/{config,catalog,faults}.json   the simulator's own settings

``<home>`` is ``root/.lmstudio``, or ``root/.cache/lm-studio`` with ``legacy_home=True``.
The release line (``profile``) is a row of :data:`lmsupervisor.simulator.profiles.PROFILES`.

``layout="appimage"`` is a Linux GUI install run from an AppImage (lms#97, BT#1068):
``app-install-location.json`` names ``/tmp/.mount_LM-Stu<random>/lm-studio``, the mount
of a past run, which no longer exists, so `lms` cannot wake the app;
:meth:`SimInstall.launch_app` starts it as the user would (from the ``.AppImage`` file).

The driver, :class:`SimInstall` (environment, `lms`, the daemon's state, faults), lives in
:mod:`lmsupervisor.simulator.install`; this module re-exports it, so
``from lmsupervisor.simulator.home import SimInstall, create_install`` keeps working.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lmsupervisor
from lmsupervisor.simulator import common, profiles
from lmsupervisor.simulator.catalog import default_catalog
from lmsupervisor.simulator.install import SimInstall

__all__ = ["DEFAULT_LMS_COST", "SimInstall", "create_install", "open_install"]

DEFAULT_SERVER_CONFIG: dict[str, Any] = {
    # The key set seen in 4+ public configs (facts §2), with LM Studio's defaults.
    "autoStartOnLaunch": False,
    "port": 1234,
    "cors": False,
    "logSensitiveData": True,
    "logIncomingTokens": False,
    "verbose": True,
    "logLinesLimit": 500,
    "networkInterface": "127.0.0.1",
    "justInTimeModelLoading": True,
    "fileLoggingMode": "succinct",
}
DEFAULT_SETTINGS: dict[str, Any] = {
    "enableLocalService": True,
    "developer": {"unloadPreviousJITModelOnLoad": True, "jitModelTTL": {"enabled": True, "ttlSeconds": 3600}},
    "defaultContextLength": {"type": "custom", "value": 4096},
    "modelLoadingGuardrails": {"mode": "high", "alwaysAllowLoadAnyway": False},
    "cliInstalled": True,
}


def _script(target_module: str, args: str = "", site: bool = False) -> str:
    package_parent = str(Path(lmsupervisor.__file__).resolve().parent.parent)
    # -S: skip site; the package path is inserted by hand and the module is stdlib-only,
    # so `lms` starts in a few ms like the real single binary. The daemon keeps site: its
    # websocket API needs the `websockets` package.
    return (
        f"#!{sys.executable}{'' if site else ' -S'}\n"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        f"from {target_module} import main\n"
        f"sys.exit(main({args}))\n"
    )


def _write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


DEFAULT_LMS_COST = (0.15, 0.05)  # (CPU s, sleep s) per `lms` call: a Node/bun CLI start, facts §8


def create_install(
    root: Path,
    profile: str = "0.4",
    *,
    time_scale: float = 1.0,
    legacy_home: bool = False,
    pointer: bool = True,
    bootstrapped: bool = True,
    layout: str = "linux",
    http_port: int | None = None,
    api_ports: list[int] | None = None,
    server_config: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    downloaded: list[str] | None = None,
    real_ports: bool = False,
    api_token: str | None = None,
    lms_cost: tuple[float, float] = DEFAULT_LMS_COST,
) -> SimInstall:
    """Make a simulated LM Studio under ``root`` and return its driver.

    ``profile`` names a release line in :data:`lmsupervisor.simulator.profiles.PROFILES`
    (``"0.4"`` llmster, ``"0.4-app"``, ``"0.3.31"``, ``"0.3-cmdts"``, ``"0.3.10"``, ``"0.3"``);
    an unknown name raises ValueError. ``time_scale`` multiplies every simulated duration
    (1.0 about real). Ports: by default a free HTTP port and a free API port are picked
    so that parallel installs never meet; ``real_ports=True`` uses 1234 and LM Studio's
    API ports. ``layout`` ``"linux"``, ``"darwin"``, ``"windows"`` or ``"appimage"`` (app
    profiles only) changes file names and where the app lives; the processes are always
    this machine's. ``downloaded`` lists the model keys on disk (default: the catalogue's
    choice). ``api_token`` turns on "Require Authentication" (profiles with API tokens).
    ``lms_cost`` is ``(cpu_s, sleep_s)`` that every `lms` call spends first (real seconds,
    not scaled); tests pass ``(0, 0)``.
    """
    release = profiles.get(profile)
    if layout not in ("linux", "darwin", "windows", "appimage"):
        raise ValueError(f"layout: expected 'linux', 'darwin', 'windows' or 'appimage', got {layout!r}")
    if layout == "appimage" and not release.is_app:
        raise ValueError(f"layout 'appimage' is a GUI app install; profile {profile!r} is llmster")
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    home = root / (".cache/lm-studio" if legacy_home else ".lmstudio")
    internal = home / ".internal"
    internal.mkdir(parents=True, exist_ok=True)
    if pointer and not legacy_home:
        (root / common.POINTER_FILE).write_text(str(home), encoding="utf-8")

    if real_ports:
        ports = list(common.REAL_API_PORTS)
        port = 1234 if http_port is None else http_port
    else:
        ports = api_ports or [common.free_port()]
        port = http_port or common.free_port()
    models = default_catalog()
    if downloaded is not None:
        for m in models:
            m["downloaded"] = m["modelKey"] in downloaded
    common.write_json(common.sim_dir(home) / "catalog.json", models)
    common.write_json(common.sim_dir(home) / "faults.json", {})
    for m in models:
        if m["downloaded"]:
            folder = home / "models" / m["path"]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.sim").write_text(m["modelKey"], encoding="utf-8")

    common.write_json(
        internal / "http-server-config.json", {**DEFAULT_SERVER_CONFIG, "port": port, **(server_config or {})}
    )
    common.write_json(home / "settings.json", {**DEFAULT_SETTINGS, **(settings or {})})
    (home / "mcp.json").write_text('{"mcpServers":{}}', encoding="utf-8")

    lms_path = home / "bin" / ("lms.exe" if layout == "windows" else "lms")
    _write_exe(lms_path, _script("lmsupervisor.simulator.lms_cli"))
    daemon_script = _script("lmsupervisor.simulator.daemon", site=True)
    if not release.is_app:
        exe = home / "llmster" / "0.0.14-2" / ("llmster.exe" if layout == "windows" else "llmster")
        _write_exe(exe, daemon_script)
        common.write_json(
            internal / "llmster-install-location.json",
            {"path": str(exe), "argv": [str(exe)], "cwd": str(exe.parent)},
        )
    else:
        if layout == "darwin":
            exe = root / "Applications" / "LM Studio.app" / "Contents" / "MacOS" / "LM Studio"
        elif layout == "windows":
            exe = root / "AppData" / "Local" / "Programs" / "LM Studio" / "LM Studio.exe"
        else:
            exe = root / "Applications" / f"LM-Studio-{release.version}-x64.AppImage"
        _write_exe(exe, daemon_script)
        recorded = exe
        if layout == "appimage":  # the mount of a past run: gone (lms#97, BT#1068)
            recorded = Path(f"/tmp/.mount_LM-Stu{os.urandom(3).hex()}/lm-studio")  # noqa: S108
        common.write_json(
            internal / "app-install-location.json",
            {"path": str(recorded), "argv": [str(recorded)], "cwd": str(recorded.parent)},
        )
    sim_config = dict(
        common.DEFAULT_CONFIG,
        profile=profile,
        version=release.version,
        time_scale=time_scale,
        api_ports=ports,
        api_token=api_token,
        lms_cost={"cpu_s": lms_cost[0], "sleep_s": lms_cost[1]},
        executable=str(exe),
    )
    common.write_json(common.sim_dir(home) / "config.json", sim_config)

    rc = root / ".bashrc"
    rc.write_text("# ~/.bashrc\n", encoding="utf-8")
    if bootstrapped:
        with rc.open("a") as f:
            f.write(f'\n# Added by LM Studio CLI tool (lms)\nexport PATH="$PATH:{home / "bin"}"\n')
    return SimInstall(root=root, home=home, profile=profile, lms_path=lms_path)


def open_install(root: Path) -> SimInstall:
    """The simulated install made earlier under ``root`` (for another process to drive it).

    Raises FileNotFoundError if ``root`` holds no simulated install.
    """
    root = root.resolve()
    for home in (root / ".lmstudio", root / ".cache" / "lm-studio"):
        config_path = common.sim_dir(home) / "config.json"
        if config_path.is_file():
            config = common.load_config(home)
            name = "lms.exe" if (home / "bin" / "lms.exe").exists() else "lms"
            return SimInstall(root=root, home=home, profile=str(config["profile"]), lms_path=home / "bin" / name)
    raise FileNotFoundError(f"{root}: no simulated LM Studio here (expected .lmstudio/.sim/config.json)")
