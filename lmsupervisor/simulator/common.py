"""What the simulated `lms`, daemon and test driver share: layout, settings, timing.

The simulator keeps its own settings in ``<home>/.sim/`` (nothing of LM Studio's):

- ``config.json``: ``{"profile": <a name in profiles.PROFILES>, "version": str,
  "time_scale": float, "api_ports": [int], "daemon_start_s": float, "daemon_stop_s": float,
  "load_s_base": float, "load_s_per_gb": float, "download_s_per_gb": float,
  "lms_cost": {"cpu_s": float, "sleep_s": float}, "api_token": str | null}``; durations
  are *simulated* seconds, multiplied by ``time_scale`` to get wall seconds (1.0 = about
  as slow as a real machine), except ``lms_cost``, which is real CPU and wall seconds
  that every `lms` call spends before it starts (what a Node/bun CLI costs, facts §8);
- ``catalog.json``: every model the simulated hub knows, in `lms ls --json` shape plus
  ``"downloaded": bool`` (the daemon lists those whose marker folder exists);
- ``faults.json``: persistent faults (see :mod:`lmsupervisor.simulator.install`);
- ``daemon.log``: what the daemon printed.

LM Studio's home is found here as facts §1 describes it (:func:`find_home`), not with the
supervisor's own code (``lmsupervisor.lmstudio.homedir``), which the simulator checks.

Stdlib only: `bin/lms` imports this on every call.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

SIM_DIR = ".sim"
POINTER_FILE = ".lmstudio-home-pointer"  # in realpath(homedir()), facts §1
# Real LM Studio's API-server ports, facts §1 ([js] lms-common/src/apiServerPorts.ts).
REAL_API_PORTS = [41343, 52993, 16141, 39414, 22931]
GUARDRAIL_ERROR = (
    "Model loading was stopped due to insufficient system resources. Continuing to load "
    "the model will likely overload your system and cause it to freeze. If you believe "
    "this is a mistake, you can try to change the model loading guardrails in the settings."
)

DEFAULT_CONFIG: dict[str, Any] = {
    "profile": "0.4",
    "version": "0.4.12",
    "cli_commit": "07b7252",
    "time_scale": 1.0,
    "api_ports": REAL_API_PORTS,
    "daemon_start_s": 1.5,
    "daemon_stop_s": 1.0,
    "server_start_s": 0.2,
    "load_s_base": 0.5,
    "load_s_per_gb": 1.2,
    "download_s_per_gb": 1.0,
    "lms_cost": {"cpu_s": 0.15, "sleep_s": 0.05},
    "api_token": None,
}


# ModelInfo's keys in the SDK's schema order ([js] lms-shared-types ModelInfoBase), up to the
# optional ones; MODEL_OPTIONAL are z.optional(): left out when unset (null fails the zod check,
# and the real `lms` prints no ``"paramsString": null``). Shared by `ls/ps --json` and the websocket.
MODEL_INFO_HEAD = (
    "type",
    "modelKey",
    "format",
    "displayName",
    "publisher",
    "path",
    "sizeBytes",
    "indexedModelIdentifier",
    "deviceIdentifier",
)
MODEL_OPTIONAL = ("paramsString", "architecture", "quantization")


def linked_instance(entry: dict[str, Any], identifier: str) -> dict[str, Any]:
    """A loaded instance of catalogue ``entry`` on a linked LM Link device, as `ps --json`
    lists it (idle, 4096 context, no TTL)."""
    return {
        **entry,
        "identifier": identifier,
        "ttlMs": None,
        "lastUsedTime": None,
        "contextLength": 4096,
        "status": "idle",
        "queued": 0,
        "parallel": 1,
    }


def find_home(user_home: Path) -> tuple[Path, bool]:
    """LM Studio's home for the user whose home folder is ``user_home``, as
    ``findLMStudioHome()`` resolves it (facts §1, [js] ``lms-common-server/src/findLMStudioHome.ts``),
    and whether the pointer file named it:

    1. the trimmed content of ``realpath(user_home)/.lmstudio-home-pointer``;
    2. else ``user_home/.cache/lm-studio`` if that folder exists;
    3. else ``user_home/.lmstudio``.

    No environment variable changes this (facts §1). An empty or unreadable pointer file is
    passed over like a missing one (and :func:`lmstudio_home` rewrites it): a simplification
    kept from before; LM Studio itself would take the empty text as its home, or fail reading.
    """
    with contextlib.suppress(OSError, UnicodeDecodeError):
        named = Path(os.path.realpath(user_home), POINTER_FILE).read_text(encoding="utf-8").strip()
        if named:
            return Path(named), True
    cache = user_home / ".cache" / "lm-studio"
    return (cache if cache.is_dir() else user_home / ".lmstudio"), False


def lmstudio_home() -> Path:
    """The home LM Studio would use for the current ``HOME`` (:func:`find_home`); when the
    pointer file did not name it, writes it there, as LM Studio does (facts §1)."""
    user_home = Path.home()
    home, from_pointer = find_home(user_home)
    if not from_pointer:
        with contextlib.suppress(OSError):
            Path(os.path.realpath(user_home), POINTER_FILE).write_text(str(home), encoding="utf-8")
    return home


def sim_dir(home: Path) -> Path:
    """The simulator's own folder, ``<home>/.sim`` (nothing of LM Studio's lives there)."""
    return home / SIM_DIR


def read_json(path: Path, default: Any) -> Any:
    """Parse ``path`` as JSON; ``default`` when it is missing or corrupt."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (temp file + rename), as a careful app would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def load_config(home: Path) -> dict[str, Any]:
    """``<home>/.sim/config.json`` over :data:`DEFAULT_CONFIG` (shape in the module docstring).

    A missing or corrupt file gives the defaults; never raises.
    """
    config = dict(DEFAULT_CONFIG)
    found = read_json(sim_dir(home) / "config.json", {})
    if isinstance(found, dict):
        config.update(found)
    return config


def load_faults(home: Path) -> dict[str, Any]:
    """The persistent faults in ``<home>/.sim/faults.json``; ``{}`` when missing or corrupt."""
    found = read_json(sim_dir(home) / "faults.json", {})
    return found if isinstance(found, dict) else {}


def models_dir(home: Path) -> Path:
    """``settings.json`` ``downloadsFolder`` if set (observed), else ``<home>/models``."""
    settings = read_json(home / "settings.json", {})
    if isinstance(settings, dict) and isinstance(settings.get("downloadsFolder"), str):
        return Path(settings["downloadsFolder"])
    return home / "models"


def catalog(home: Path) -> list[dict[str, Any]]:
    """Every model the simulated hub knows (``<home>/.sim/catalog.json``), in `lms ls --json`
    shape plus ``"downloaded"`` (facts §3); ``[]`` when missing or corrupt.
    """
    found = read_json(sim_dir(home) / "catalog.json", [])
    return found if isinstance(found, list) else []


def is_downloaded(home: Path, model: dict[str, Any]) -> bool:
    """True when ``model``'s ``path`` folder exists under :func:`models_dir`, as LM Studio
    decides what is downloaded.
    """
    return (models_dir(home) / str(model["path"])).is_dir()


def downloaded_models(home: Path) -> list[dict[str, Any]]:
    """The catalogue entries on disk, in `lms ls --json` shape (facts §3)."""
    return [{k: v for k, v in m.items() if k != "downloaded"} for m in catalog(home) if is_downloaded(home, m)]


def scaled(config: dict[str, Any], simulated_seconds: float) -> float:
    """Wall seconds for ``simulated_seconds`` under the configured ``time_scale``."""
    return max(0.0, float(simulated_seconds) * float(config["time_scale"]))


def sleep_simulated(config: dict[str, Any], simulated_seconds: float) -> None:
    """Sleep ``simulated_seconds`` times the configured ``time_scale`` (wall seconds)."""
    time.sleep(scaled(config, simulated_seconds))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def format_size(size_bytes: int) -> str:
    """Size in SI units as lms prints it (`formatSizeBytes1000`): ``4.69 GB``."""
    value = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.2f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return f"{value:.2f} TB"


def format_size_1024(size_bytes: int) -> str:
    """Size in binary units as `lms load` prints it since ee91760 (2026-02, `formatSizeBytes1024`): ``11.28 GiB``."""
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.2f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.2f} TiB"


def format_elapsed(seconds: float) -> str:
    """A duration as `lms load` prints it ([lms] ``formatElapsedTime.ts``): ``311.00ms``,
    ``6.88s``, ``1m 5.00s``, ``1h 0m 0.00s``."""
    ms = seconds * 1000
    if ms < 1000:
        return f"{ms:.2f}ms"
    segments: list[str] = []
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    if hours:
        segments.append(f"{int(hours)}h")
    if hours or minutes:
        segments.append(f"{int(minutes)}m")
    segments.append(f"{ms / 1000:.2f}s")
    return " ".join(segments)


def socket_hosts(bind: str) -> tuple[str, ...]:
    """The addresses the simulator really binds for LM Studio's ``networkInterface`` ``bind``.

    House rule: everything stays on this machine, so each address LM Studio would serve is
    bound on its loopback stand-in. A loopback address (``127.x``, ``localhost``, ``::1``)
    is bound as given; ``::``, which real LM Studio (Node's ``listen``) serves dual-stack, on
    both ``::1`` and ``127.0.0.1``; any other IPv6 address on ``::1``; anything else
    (``0.0.0.0``, a LAN IP) on ``127.0.0.1``. The daemon still reports and persists the
    address it was asked for.
    """
    if bind.startswith("127.") or bind == "localhost":
        return (bind,)
    if bind == "::":
        return ("::1", "127.0.0.1")
    if ":" in bind:
        return ("::1",)
    return ("127.0.0.1",)


def burn(cost: Any) -> None:
    """Spend ``cost`` = ``{"cpu_s": s, "sleep_s": s}`` (real seconds): CPU first, then idle."""
    if not isinstance(cost, dict):
        return
    cpu_s, sleep_s = float(cost.get("cpu_s") or 0), float(cost.get("sleep_s") or 0)
    if cpu_s > 0:
        end = time.process_time() + cpu_s
        n = 0
        while time.process_time() < end:
            n = (n * 1103515245 + 12345) & 0x7FFFFFFF  # busy work, as a JS engine's startup
    if sleep_s > 0:
        time.sleep(sleep_s)
