"""Make a simulated LM Studio install and drive it (start, stop, inject faults).

Layout written by :func:`create_install` under ``root`` (which stands in for ``HOME``),
following facts §1-§2::

    root/.lmstudio-home-pointer            (unless pointer=False)
    root/.bashrc                           with the PATH line when bootstrapped
    <home>/bin/lms  (lms.exe for the windows layout)
    <home>/.internal/http-server-config.json, llmster- or app-install-location.json
    <home>/settings.json, <home>/models/<path>/, <home>/llmster/<ver>/llmster (0.4)
    <home>/.sim/{config,catalog,faults}.json   the simulator's own settings

``<home>`` is ``root/.lmstudio``, or ``root/.cache/lm-studio`` with ``legacy_home=True``.

Faults, the documented interface (:class:`SimInstall`):

===========================  ===============================================================
``crash_daemon()``            SIGKILL the daemon: the process is gone, models with it
``hang_daemon()``             the daemon accepts connections and never answers (both ports)
``hang_http()``               LM Studio's HTTP server stops answering; the daemon lives
``slow_start(seconds)``       every daemon start takes ``seconds`` more (wall seconds)
``occupy_port(port)``         a context manager holding a TCP port, so ``server start`` fails
``fail_load(key, message)``   loading ``key`` fails with LM Studio's error text (guardrails)
``corrupt(name)``             overwrite ``settings.json`` or ``http-server-config.json``
===========================  ===============================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmsupervisor
from lmsupervisor.simulator import common
from lmsupervisor.simulator.catalog import default_catalog

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


def _script(target_module: str, args: str = "") -> str:
    package_parent = str(Path(lmsupervisor.__file__).resolve().parent.parent)
    # -S: skip site; the package path is inserted by hand and the module is stdlib-only,
    # so `lms` starts in a few ms like the real single binary.
    return (
        f"#!{sys.executable} -S\n"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        f"from {target_module} import main\n"
        f"sys.exit(main({args}))\n"
    )


def _write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


@dataclass
class SimInstall:
    """A simulated install: paths, an environment to run it in, and fault injection."""

    root: Path
    home: Path
    profile: str
    lms_path: Path

    # -- environment ---------------------------------------------------------
    def env(self, base: dict[str, str] | None = None, lms_on_path: bool = False) -> dict[str, str]:
        """``base`` (default ``os.environ``) with ``HOME=root``; ``bin/`` added to PATH if asked."""
        env = dict(os.environ if base is None else base)
        env["HOME"] = str(self.root)
        env.pop("LMS_API_SERVER_INFO_PATH", None)
        if lms_on_path:
            env["PATH"] = f"{self.lms_path.parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def lms(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the simulated `lms` with ``args``; stdout and stderr captured as text."""
        return subprocess.run(
            [str(self.lms_path), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def config(self) -> dict[str, Any]:
        return common.load_config(self.home)

    @property
    def server_config_path(self) -> Path:
        return self.home / ".internal" / "http-server-config.json"

    @property
    def http_port(self) -> int:
        cfg = common.read_json(self.server_config_path, {})
        return int(cfg.get("port", 1234)) if isinstance(cfg, dict) else 1234

    @property
    def api_port(self) -> int:
        return int(self.config["api_ports"][0])

    def _rpc(self, method: str, timeout: float = 5.0, **params: Any) -> dict[str, Any]:
        import urllib.request  # noqa: PLC0415 - only the driver needs it

        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/sim/rpc",
            data=json.dumps({"method": method, "params": params}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            found: dict[str, Any] = json.loads(resp.read())
            return found

    def daemon_pid(self) -> int | None:
        """The running daemon's PID (asked over the API port), or None."""
        try:
            return int(self._rpc("info", timeout=2.0)["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def loaded(self) -> list[dict[str, Any]]:
        """The loaded instances, in `lms ps --json` shape (empty when the daemon is down)."""
        try:
            return list(self._rpc("list_loaded")["models"])
        except (OSError, ValueError, KeyError):
            return []

    # -- faults ----------------------------------------------------------------
    def crash_daemon(self) -> int:
        """SIGKILL the daemon; returns the PID it had. Raises LookupError if none runs."""
        pid = self.daemon_pid()
        if pid is None:
            raise LookupError("no simulated daemon is running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def hang_daemon(self) -> None:
        """Make the daemon accept connections and never answer, on both ports."""
        with contextlib.suppress(OSError):
            self._rpc("fault", timeout=0.5, hang=True)

    def hang_http(self) -> None:
        """Make LM Studio's HTTP server stop answering while the daemon lives on."""
        self._rpc("fault", http_hang=True)

    def _update_faults(self, **changes: Any) -> None:
        path = common.sim_dir(self.home) / "faults.json"
        faults = common.load_faults(self.home)
        faults.update(changes)
        common.write_json(path, faults)

    def slow_start(self, seconds: float) -> None:
        """Every later daemon start takes ``seconds`` (wall) longer."""
        self._update_faults(daemon_start_delay=seconds)

    def fail_load(self, key: str, message: str | None = None) -> None:
        """Loading ``key`` fails; ``message`` defaults to the guardrail refusal (BT#1038)."""
        failing = dict(common.load_faults(self.home).get("fail_load", {}))
        failing[key] = message or common.GUARDRAIL_ERROR
        self._update_faults(fail_load=failing)

    def clear_faults(self) -> None:
        common.write_json(common.sim_dir(self.home) / "faults.json", {})

    def corrupt(self, name: str = "settings.json", content: str = '{"enableLocalService": tr') -> Path:
        """Overwrite ``settings.json`` or ``http-server-config.json`` with broken JSON."""
        path = self.home / name if name == "settings.json" else self.home / ".internal" / name
        path.write_text(content, encoding="utf-8")
        return path

    @contextlib.contextmanager
    def occupy_port(self, port: int | None = None) -> Iterator[int]:
        """Hold ``port`` (default: the configured HTTP port) with a listening socket."""
        port = self.http_port if port is None else port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            yield port

    def stop(self) -> None:
        """Kill the daemon, if any, and wait until it is gone (test teardown)."""
        pid = self.daemon_pid()
        if pid is None:
            info = common.read_json(self.home / ".internal" / "http-server.json", {})
            pid = info.get("pid") if isinstance(info, dict) else None
        if not isinstance(pid, int) or not common.pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and common.pid_alive(pid):
            time.sleep(0.01)


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
) -> SimInstall:
    """Make a simulated LM Studio under ``root`` and return its driver.

    ``profile`` ``"0.4"`` (llmster, ``lms daemon``) or ``"0.3"`` (the app, no daemon
    command). ``time_scale`` multiplies every simulated duration (1.0 about real). Ports:
    by default a free HTTP port and a free API port are picked so that parallel installs
    never meet; ``real_ports=True`` uses 1234 and LM Studio's API ports.
    ``layout`` ``"linux"``, ``"darwin"`` or ``"windows"`` only changes file names (``lms.exe``,
    where the app lives); the processes are always this machine's.
    ``downloaded`` lists the model keys on disk (default: the catalogue's choice).
    """
    if profile not in ("0.4", "0.3"):
        raise ValueError(f"profile: expected '0.4' or '0.3', got {profile!r}")
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    home = root / (".cache/lm-studio" if legacy_home else ".lmstudio")
    internal = home / ".internal"
    internal.mkdir(parents=True, exist_ok=True)
    if pointer and not legacy_home:
        (root / ".lmstudio-home-pointer").write_text(str(home), encoding="utf-8")

    if real_ports:
        ports = list(common.REAL_API_PORTS)
        port = 1234 if http_port is None else http_port
    else:
        ports = api_ports or [common.free_port()]
        port = http_port or common.free_port()
    version = "0.3.31" if profile == "0.3" else "0.4.12"
    sim_config = dict(common.DEFAULT_CONFIG, profile=profile, version=version, time_scale=time_scale, api_ports=ports)
    common.write_json(common.sim_dir(home) / "config.json", sim_config)
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
    daemon_script = _script("lmsupervisor.simulator.daemon")
    if profile == "0.4":
        llmster = home / "llmster" / "0.0.14-2" / ("llmster.exe" if layout == "windows" else "llmster")
        _write_exe(llmster, daemon_script)
        common.write_json(
            internal / "llmster-install-location.json",
            {"path": str(llmster), "argv": [str(llmster)], "cwd": str(llmster.parent)},
        )
    else:
        if layout == "darwin":
            app = root / "Applications" / "LM Studio.app" / "Contents" / "MacOS" / "LM Studio"
        elif layout == "windows":
            app = root / "AppData" / "Local" / "Programs" / "LM Studio" / "LM Studio.exe"
        else:
            app = root / "Applications" / "LM-Studio-0.3.31-x64.AppImage"
        _write_exe(app, daemon_script)
        common.write_json(
            internal / "app-install-location.json", {"path": str(app), "argv": [str(app)], "cwd": str(app.parent)}
        )

    rc = root / ".bashrc"
    rc.write_text("# ~/.bashrc\n", encoding="utf-8")
    if bootstrapped:
        with rc.open("a") as f:
            f.write(f'\n# Added by LM Studio CLI tool (lms)\nexport PATH="$PATH:{home / "bin"}"\n')
    return SimInstall(root=root, home=home, profile=profile, lms_path=lms_path)
