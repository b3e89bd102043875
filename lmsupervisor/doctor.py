"""`lmsupervisor doctor`: a one-shot diagnosis without a running supervisor.

It changes nothing: it reads LM Studio's files (:func:`lmsupervisor.lmstudio.install.detect`),
asks `lms daemon status --json` (which never starts anything), probes the HTTP server's
greeting, and lists loaded models with `lms ps --json` only when the daemon or server is
already up (other `lms` commands would wake LM Studio, facts §1), and so does LM Studio's
hardware survey (`lms runtime survey --json`, where this `lms` has it); otherwise the last
good survey lmsupervisor remembers is shown, and the GPU gate's verdict on it.

It also reports lmsupervisor's own service (which manager, enabled, active, whether it
starts before login) and warns when LM Studio's own autostart would start a second copy
at boot: the app's "Enable Local LLM Service" (``settings.json`` ``enableLocalService``),
or a unit like LM Studio's documented oneshot one (``lms daemon up`` / ``lms server start``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmsupervisor.config import Config
from lmsupervisor.core.capabilities import CliCapabilities, bind_problem
from lmsupervisor.core.hardware import Hardware, gate
from lmsupervisor.core.observed import (
    DEFAULT_BIND,
    DaemonStatus,
    Install,
    LoadedModel,
    ProbeResult,
    ServerSettings,
    base_url,
    effective_server,
    usable_server,
)
from lmsupervisor.core.problems import Problem, gpu_problem
from lmsupervisor.core.status import hardware_json
from lmsupervisor.errors import LmsError, RestAuthError, RestError, RestUnsupportedError
from lmsupervisor.lmstudio.capabilities import CapabilityCache
from lmsupervisor.lmstudio.install import DOWNLOAD_URL, Platform, detect
from lmsupervisor.lmstudio.lms import Lms, LmsClient, LmsRunner
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.rest import RestClient, resolve_token, token_problem
from lmsupervisor.proxy.health import remote_proxy_problem
from lmsupervisor.service.install import UnitState, installed_services
from lmsupervisor.service.report import rows as service_rows
from lmsupervisor.statefile import HardwareMemory

LMS_TIMEOUT = 15.0  # seconds for each `lms` call doctor makes


@dataclass
class Diagnosis:
    """Everything doctor found; ``ok`` when no problem has severity ``"error"``."""

    install: Install
    server: ServerSettings
    api_endpoint: str
    daemon: DaemonStatus | None = None
    probe: ProbeResult | None = None
    loaded: list[LoadedModel] | None = None
    capabilities: CliCapabilities | None = None
    rest_v1: bool | None = None
    hardware: Hardware | None = None  # LM Studio's survey now, else the remembered one
    hardware_remembered: bool = False  # ``hardware`` is lmsupervisor's last good survey, not a new one
    problems: list[Problem] = field(default_factory=list)
    services: list[UnitState] = field(default_factory=list)
    proxy: str = ""  # [proxy] listen ("" when off)
    metrics: str = ""  # [metrics] listen ("" when off)
    metrics_tls: bool = False

    @property
    def ok(self) -> bool:
        """True when no problem has severity ``"error"`` (the CLI then exits 0)."""
        return not any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        """The ``doctor --json`` dict: ``ok``, ``lmstudio`` (install plus ``daemon``), ``server``,
        ``models`` (None when not listed), ``hardware`` (design §9 shape plus ``remembered``;
        None without a survey), ``services`` and ``problems``.
        """
        d = self.daemon
        return {
            "ok": self.ok,
            "lmstudio": {
                **self.install.to_json(),
                "daemon": None
                if d is None
                else {"supported": d.supported, "running": d.running, "pid": d.pid, "is_daemon": d.is_daemon},
                "capabilities": None
                if self.capabilities is None
                else {**self.capabilities.to_json(), "rest_v1": self.rest_v1, "install_kind": self.install.kind},
            },
            "server": {
                "running": bool(self.probe and self.probe.ok),
                "bind": self.server.bind,
                "port": self.server.port,
                "cors": self.server.cors,
                "api_endpoint": self.api_endpoint,
                "last_probe_ms": round(self.probe.latency_ms, 3) if self.probe else None,
                "error": self.probe.error if self.probe else None,
            },
            "models": None
            if self.loaded is None
            else [
                {"identifier": m.identifier, "key": m.model_key, "path": m.path, "status": m.status}
                for m in self.loaded
            ],
            "hardware": None
            if self.hardware is None
            else {**hardware_json(self.hardware), "remembered": self.hardware_remembered},
            "services": [st.to_json() for st in self.services],
            "proxy": {"listen": self.proxy or None},
            "metrics": {"listen": self.metrics or None, "tls": self.metrics_tls},
            "problems": [p.to_json() for p in self.problems],
        }


async def diagnose(
    config: Config,
    platform: Platform,
    runner_factory: Callable[[Path], LmsRunner] | None = None,
    prober: Prober | None = None,
    services: Callable[[], list[UnitState]] | None = None,
    unit_dirs: list[Path] | None = None,
    capabilities: CapabilityCache | None = None,
    hardware: HardwareMemory | None = None,
) -> Diagnosis:
    """Diagnose this machine; never raises for what it finds (it becomes a problem).

    ``services`` lists lmsupervisor's installed units (default: ask the service managers
    about the units under ``platform.user_home``); ``unit_dirs`` are the folders searched
    for LM Studio's own systemd units (default: the user's and /etc/systemd/system).
    ``capabilities`` caches what the `lms` binary can do (default: memory only; the CLI
    passes the supervisor's cache file, so a known binary costs no call); ``hardware`` is
    the last good survey lmsupervisor remembers (default: none)."""
    install = detect(platform, config.lmstudio.home, config.lmstudio.lms)
    server = effective_server(config.server.bind, config.server.port, config.server.cors, install.server)
    problems = list(install.problems)
    usable = usable_server(server, install)
    if isinstance(usable, Problem):  # LM Studio's saved networkInterface is unusable: named, and probed on the default
        problems.append(usable)
    url = base_url(DEFAULT_BIND if isinstance(usable, Problem) else usable.bind, server.port)
    diag = Diagnosis(install, server, url, problems=problems)
    diag.proxy, diag.metrics = config.proxy.listen, config.metrics.listen
    diag.metrics_tls = config.metrics.tls_cert_file is not None
    remote = remote_proxy_problem(config.proxy)
    diag.problems += [remote] if remote else []
    diag.services = services() if services is not None else installed_services(home=platform.user_home)
    if unit_dirs is None:
        unit_dirs = [platform.user_home / ".config/systemd/user", Path("/etc/systemd/system")]
    _service_problems(diag, install, unit_dirs)
    if not install.installed:
        return diag

    client = None
    if install.lms is not None:

        def default_factory(p: Path) -> LmsRunner:
            return Lms(p, env=platform.env)

        client = LmsClient((runner_factory or default_factory)(install.lms))
        try:
            diag.capabilities = await (capabilities or CapabilityCache(quiet=True)).get(install.lms, client)
        except LmsError as exc:
            diag.problems.append(Problem("lms_failed", f"`lms` cannot run: {exc.message}", exc.hint or "reinstall lms"))
        if diag.capabilities is not None:
            note = bind_problem(config.server.bind, install.server.bind, diag.capabilities)
            diag.problems += [note] if note else []
        try:
            diag.daemon = await client.daemon_status(timeout=LMS_TIMEOUT)
        except LmsError as exc:
            diag.problems.append(
                Problem(
                    "lms_failed",
                    f"`lms daemon status` failed: {exc.message}",
                    exc.hint or "run `lms daemon status` to see why",
                )
            )

    own_prober = prober is None
    prober = prober or Prober(timeout=config.health.timeout)
    try:
        diag.probe = await prober.greeting(url)
    finally:
        if own_prober:
            await prober.aclose()

    lms_cmd = str(install.lms) if install.lms else "lms"
    daemon_down = diag.daemon is not None and diag.daemon.supported and not diag.daemon.running
    if daemon_down:
        diag.problems.append(
            Problem(
                "daemon_not_running",
                "LM Studio's daemon is not running",
                f"run `{lms_cmd} daemon up`, or start `lmsupervisor run`",
            )
        )
    if not diag.probe.ok:
        if diag.probe.status is not None:
            diag.problems.append(
                Problem(
                    "port_not_lmstudio",
                    f"something other than LM Studio answers at {url}: {diag.probe.error}",
                    f"free port {server.port}, or set server.port to another port",
                )
            )
        else:
            flags = f"--port {server.port} --bind {server.bind}" + (" --cors" if server.cors else "")
            diag.problems.append(
                Problem(
                    "server_not_running",
                    f"LM Studio is not responding at {url} ({diag.probe.error})",
                    f"run `{lms_cmd} server start {flags}`"
                    if install.lms
                    else f"Install LM Studio from {DOWNLOAD_URL} and run `lms server start`",
                )
            )

    if diag.probe.ok:
        rest = RestClient(timeout=config.health.timeout, token=lambda: resolve_token(config, platform.env))
        try:
            await rest.models(url)
            diag.rest_v1 = True
        except RestUnsupportedError:
            diag.rest_v1 = False
        except RestAuthError as exc:
            diag.rest_v1 = True
            diag.problems.append(token_problem(exc.code, exc.message))
        except RestError:
            pass
        finally:
            await rest.aclose()

    service_up = (diag.daemon is not None and diag.daemon.running) or diag.probe.ok
    if client is not None and service_up:
        try:
            diag.loaded = await client.ps(timeout=LMS_TIMEOUT)
        except LmsError as exc:
            diag.problems.append(
                Problem("lms_failed", f"`lms ps --json` failed: {exc.message}", exc.hint or "run `lms ps` to see why")
            )
    await _survey(diag, client if service_up else None, config, hardware)
    if diag.loaded is not None:
        loaded_names = (
            {m.identifier for m in diag.loaded} | {m.model_key for m in diag.loaded} | {m.path for m in diag.loaded}
        )
        for model in config.models:
            if (model.identifier or model.key) not in loaded_names:
                diag.problems.append(
                    Problem(
                        "model_not_loaded",
                        f"the declared model {model.key} is not loaded",
                        f"run `{lms_cmd} load {model.key} --yes`, or start `lmsupervisor run`",
                    )
                )
    return diag


async def _survey(diag: Diagnosis, client: LmsClient | None, config: Config, memory: HardwareMemory | None) -> None:
    """LM Studio's hardware survey where this `lms` has it and the service is up (the
    daemon's own survey: it starts nothing), else the remembered one; and the GPU gate's
    verdict on it (``[gpu] require``) as a problem."""
    remembered = memory.load() if memory is not None else None
    if client is not None and diag.capabilities is not None and diag.capabilities.survey:
        try:
            diag.hardware = await client.runtime_survey(timeout=LMS_TIMEOUT)
        except LmsError as exc:
            diag.problems.append(
                Problem("lms_failed", f"`lms runtime survey` failed: {exc.message}", "run `lms runtime survey`")
            )
    if diag.hardware is None and remembered is not None:
        diag.hardware, diag.hardware_remembered = remembered, True
    if diag.hardware is not None:
        verdict = gate(diag.hardware, remembered, config.gpu.require)
        diag.problems += [p for p in (gpu_problem(diag.hardware, verdict, config.gpu.wait),) if p is not None]


_LMS_AUTOSTART = re.compile(r"\b(lms(\.exe)?\s+(daemon\s+up|server\s+start)|llmster)\b")


def lmstudio_units(dirs: list[Path]) -> list[Path]:
    """systemd units in ``dirs`` that start LM Studio themselves (LM Studio's documented
    oneshot unit runs ``lms daemon up`` and ``lms server start``); ours are skipped."""
    found = []
    for folder in dirs:
        try:
            candidates = sorted(folder.glob("*.service"))
        except OSError:
            continue
        for unit in candidates:
            if unit.name.startswith("lmsupervisor"):
                continue
            try:
                text = unit.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if _LMS_AUTOSTART.search(text):
                found.append(unit)
    return found


def _service_problems(diag: Diagnosis, install: Install, unit_dirs: list[Path]) -> None:
    """Warnings about starting at boot: LM Studio's own autostart next to ours, lingering."""
    if not diag.services:
        return
    # lmsupervisor starts LM Studio itself: the app's headless toggle being off is no problem then
    diag.problems = [p for p in diag.problems if p.code != "local_service_disabled"]
    if install.local_service_enabled:
        settings = install.home / "settings.json"
        diag.problems.append(
            Problem(
                "lmstudio_autostart",
                "LM Studio's own 'Enable Local LLM Service' (enableLocalService in "
                f"{settings}) starts it at login too: it races lmsupervisor's service at boot and can "
                "start a second copy or load `:2` duplicates",
                "turn off LM Studio's 'Enable Local LLM Service' / run-on-login setting (or set "
                f'"enableLocalService": false in {settings} while LM Studio is stopped); lmsupervisor starts it',
                "warning",
            )
        )
    for unit in lmstudio_units(unit_dirs):
        user = "/etc/" not in str(unit)
        cmd = f"systemctl {'--user ' if user else ''}disable --now {unit.name}"
        diag.problems.append(
            Problem(
                "lmstudio_unit",
                f"{unit} starts LM Studio at boot too (lms daemon up / server start), next to lmsupervisor",
                f"`{'' if user else 'sudo '}{cmd}`: lmsupervisor starts and watches LM Studio itself",
                "warning",
            )
        )
    for st in diag.services:
        if st.linger is False:
            diag.problems.append(
                Problem(
                    "service_not_before_login",
                    "lmsupervisor's user unit starts only at your first login (lingering is off)",
                    f"`{st.linger_fix}` starts it at boot, before anyone logs in",
                    "warning",
                )
            )


def _hardware_rows(diag: Diagnosis) -> list[tuple[str, str]]:
    """``GPUs`` and ``runtime`` rows from the survey (marked when it is the remembered one)."""
    hw = diag.hardware
    if hw is None:
        return []
    gpus = ", ".join(f"{g.name} ({g.platform}, {g.integration}, {g.vram_bytes / 2**30:.1f} GiB)" for g in hw.gpus)
    when = " (remembered)" if diag.hardware_remembered else ""
    compat = hw.compatibility.status + (f": {hw.compatibility.message}" if hw.compatibility.message else "")
    runtime = f"{hw.runtime.key} ({hw.runtime.engine or 'engine unknown'})" if hw.runtime else "none"
    return [("GPUs", (gpus or "none") + when), ("runtime", f"{runtime}, {compat}{when}")]


def render(diag: Diagnosis) -> str:
    """A compact human table, then the problems with their fixes."""
    inst = diag.install
    rows: list[tuple[str, str]] = []
    if inst.installed:
        rows.append(("LM Studio", f"installed, home {inst.home} ({inst.home_source})"))
    else:
        rows.append(("LM Studio", "not installed"))
    rows.append(("lms", f"{inst.lms} (from {inst.lms_source})" if inst.lms else "not found"))
    rows.append(("bootstrapped", "yes" if inst.bootstrapped else "no"))
    kinds = {"llmster": "llmster (headless daemon)", "app": "LM Studio app", "appimage": "LM Studio app (AppImage)"}
    rows.append(("service", kinds.get(inst.kind or "", "not found")))
    c = diag.capabilities
    if c is not None:
        rows.append(
            (
                "lms capabilities",
                f"{c.cli_version or 'version unknown'}, {c.dialect} errors, daemon "
                f"{'/'.join(sorted(c.daemon)) or 'none'}, --bind {'yes' if c.bind else 'no'}, "
                f"load --ttl {'yes' if c.ttl else 'no'}, ps --json {c.ps_json}, REST v1 "
                f"{ {True: 'yes', False: 'no', None: 'unknown'}[diag.rest_v1] }",
            )
        )
    rows.append(("local service", {True: "enabled", False: "disabled", None: "unknown"}[inst.local_service_enabled]))
    d = diag.daemon
    if d is not None:
        if not d.supported:
            rows.append(("daemon", "n/a (this lms has no `daemon` command: LM Studio 0.3)"))
        else:
            rows.append(("daemon", f"running (PID {d.pid})" if d.running else "not running"))
    if diag.probe is not None:
        if diag.probe.ok:
            rows.append(
                (
                    "server",
                    f"running at {diag.api_endpoint} "
                    f"({diag.probe.latency_ms:.1f} ms), CORS {'on' if diag.server.cors else 'off'}",
                )
            )
        else:
            rows.append(("server", f"not responding at {diag.api_endpoint}"))
    if diag.loaded is not None:
        rows.append(("models", ", ".join(m.identifier for m in diag.loaded) or "none loaded"))
    rows.append(("proxy", f"holding proxy on {diag.proxy}" if diag.proxy else "off ([proxy] listen)"))
    scheme = "https" if diag.metrics_tls else "http"
    rows.append(("metrics", f"{scheme}://{diag.metrics}/metrics" if diag.metrics else "off ([metrics] listen)"))
    rows += _hardware_rows(diag)
    for st in diag.services:
        rows += service_rows(st)
    if not diag.services:
        rows.append(("lmsupervisor", "not installed as a service (`lmsupervisor service install`)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if diag.problems:
        lines.append("")
        lines.append("problems:")
        for p in diag.problems:
            lines.append(f"  {'!' if p.severity == 'error' else '~'} {p.code}: {p.message}")
            lines.append(f"      fix: {p.fix}")
    else:
        lines.append("")
        lines.append("no problems found")
    return "\n".join(lines)
