"""What the escalation ladder asks LM Studio on its way (:mod:`lmsupervisor.lmstudio.bringup`).

Each question is bounded in time and answered, never raised for LM Studio's own failures
(logged, and "no verdict"): which process is its daemon (:func:`find_daemon`), whether
its service answers (:func:`service_answers`) and its version (:func:`service_version`),
whether its server has REST v1 and accepts our token (:func:`rest_available`), and
whether the declared CORS is applied (:func:`cors_problem`).
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from lmsupervisor.clock import within
from lmsupervisor.core.capabilities import CliCapabilities
from lmsupervisor.core.observed import DaemonProcess, Install
from lmsupervisor.core.problems import Problem
from lmsupervisor.errors import LmsError, LmsTimeoutError, RestAuthError, RestError, RestUnsupportedError
from lmsupervisor.lmstudio.facade import QUICK_TIMEOUT, LmStudio
from lmsupervisor.lmstudio.lms import LmsClient
from lmsupervisor.lmstudio.rest import token_problem

log = structlog.get_logger("lmsupervisor")


async def rest_available(lm: LmStudio, url: str, timeout: float) -> tuple[bool | None, list[Problem]]:
    """Whether the server at ``url`` has REST v1 (None: unknown), and a problem when it
    refuses our token (v1 exists, `lms` is used meanwhile)."""
    if lm.rest is None:
        return None, []
    try:
        await within(lm.clock, lm.rest.models(url, timeout=timeout), timeout)
    except RestUnsupportedError:
        return False, []
    except RestAuthError as exc:
        return True, [token_problem(exc.code, exc.message)]
    except (RestError, TimeoutError) as exc:
        log.info("rest_check_failed", error=str(exc))
        return None, []
    return True, []


async def cors_problem(lm: LmStudio, url: str, declared: bool, timeout: float) -> Problem | None:
    """Verify the declared CORS with an ``Origin`` probe; a problem when LM Studio differs."""
    if lm.rest is None:
        return None
    try:
        actual = await within(lm.clock, lm.rest.cors(url, timeout=timeout), timeout)
    except (RestError, TimeoutError) as exc:
        log.info("cors_check_failed", error=str(exc))
        return None
    if actual == declared:
        return None
    return Problem(
        "cors_not_applied",
        f"server.cors = {str(declared).lower()} is declared, but {url} "
        f"{'does not answer' if declared else 'answers'} cross-origin requests",
        "set CORS in LM Studio's Developer settings to match, or update LM Studio",
        "warning",
    )


async def service_answers(
    lm: LmStudio, install: Install, lms: LmsClient, caps: CliCapabilities, timeout: float, lms_timeout: float
) -> bool:
    """Whether LM Studio's service (a live app's) answers, asked the one way this install
    allows: ``/lms-status`` on the API port named in ``.internal/http-server.json``
    (2026+) within ``timeout`` seconds (``health.timeout``); else `lms daemon status
    --json` (0.3.31+) within ``lms_timeout`` seconds (the ladder's). That `lms` asks the app on its API port: no
    answer in time (before [lms] 7795183, 2025-11-27, its discovery has no timeout, so a
    hung app holds it) or "not running" while the process lives is no answer. True where
    it cannot be asked (no port published and no `daemon status`) or `lms` fails
    otherwise (a refused passkey is not a hung app): no verdict is no evidence."""
    port = (install.api_server or {}).get("port")
    if lm.rest is not None and isinstance(port, int) and not isinstance(port, bool):
        return await service_version(lm, install, timeout) is not None
    if "status" not in caps.daemon:
        return True
    try:
        status = await lms.daemon_status(timeout=lms_timeout)
    except LmsTimeoutError as exc:
        log.info("daemon_status_failed", error=exc.message)
        return False
    except LmsError as exc:
        log.info("daemon_status_failed", error=exc.message)
        return True
    return status.running or not status.supported


async def service_version(lm: LmStudio, install: Install, timeout: float) -> str | None:
    """The app/llmster version from ``/lms-status`` on the API port named in
    ``.internal/http-server.json`` (2025-11+); None elsewhere."""
    port = (install.api_server or {}).get("port")
    if lm.rest is None or not isinstance(port, int) or isinstance(port, bool):
        return None
    try:
        return await within(lm.clock, lm.rest.service_version(port, timeout=timeout), timeout)
    except TimeoutError:
        return None


async def find_daemon(lm: LmStudio, lms: LmsClient, install: Install, caps: CliCapabilities) -> DaemonProcess | None:
    """LM Studio's daemon: the verified PID of ``.internal/http-server.json`` (2026+, no
    `lms` call), else `lms daemon status --json` where this `lms` has it, else (0.3) the
    process running the install's executable itself. Never a process that merely
    mentions the path."""
    pid = _api_server_pid(install.home)
    if pid is not None:
        proc = lm.processes.identify(pid, install.service_path)
        if proc is not None and proc.verified:
            return proc
    if "status" in caps.daemon:
        try:
            status = await lms.daemon_status(timeout=QUICK_TIMEOUT)
            if status.running and status.pid:
                return lm.processes.identify(status.pid, install.service_path, status.is_daemon)
        except LmsError as exc:
            log.info("daemon_status_failed", error=exc.message)
    if install.service_path is not None:  # 0.3: the app that runs the install's executable itself
        return lm.processes.find_running(install.service_path)
    return None


def _api_server_pid(home: Path) -> int | None:
    """The PID in ``.internal/http-server.json`` (2026+, a hint that may be stale)."""
    try:
        data = json.loads((home / ".internal" / "http-server.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
