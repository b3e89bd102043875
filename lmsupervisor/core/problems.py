"""A problem: something wrong with the user's machine, with the fix. Pure data.

Problems are reported (``doctor``, ``GET /v1/status`` ``problems``), never raised: a
missing or corrupt LM Studio file is a problem, not a crash. The builders here are those
with no module of their own (``server_address_invalid``, ``app_hung``, ``download_paused``,
the generic failures); others stand beside what they judge
(:func:`~lmsupervisor.core.capabilities.ttl_problem`,
:func:`~lmsupervisor.lmstudio.rest.token_problem`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmsupervisor.config import server_address
from lmsupervisor.core.hardware import Gate, Hardware


@dataclass(frozen=True)
class Problem:
    """``code`` is stable (tools match on it); ``severity`` is ``"error"`` or ``"warning"``."""

    code: str
    message: str
    fix: str
    severity: str = "error"

    def to_json(self) -> dict[str, Any]:
        """``{"code", "message", "fix", "severity"}``, as in the status ``problems`` list (design §5)."""
        return asdict(self)


SUPERVISOR_ERROR = "supervisor_error"  # the problem code of a failure of lmsupervisor's own code


def bring_up_problem(reason: str) -> Problem:
    """The problem shown while bring-ups fail for a reason with no name of its own."""
    return Problem(
        "bring_up_failed",
        f"LM Studio's server could not be brought up: {reason}",
        "lmsupervisor retries with backoff (restarting the server, then the daemon, once per cause); if it "
        "persists, run `lmsupervisor doctor` and read LM Studio's server log",
    )


def crash_problem(effect: str, error: str) -> Problem:
    """The problem shown when lmsupervisor's own code failed while performing ``effect``."""
    return Problem(
        SUPERVISOR_ERROR,
        f"lmsupervisor's {effect} failed: {error}",
        "a bug in lmsupervisor (it retries without stopping LM Studio): please report it with the "
        "`action_crashed` log event and its traceback",
    )


def address_problem(home: Path, value: str, declarable: bool) -> Problem:
    """``server_address_invalid``: LM Studio's saved ``networkInterface`` (``value``, from
    ``<home>/.internal/http-server-config.json``) is not an address its server can bind,
    and no ``[server] bind`` is declared (or this `lms` cannot pass one, facts §8:
    ``declarable`` False)."""
    path = home / ".internal" / "http-server-config.json"
    trimmed = server_address(value.strip())
    hint = f" (did you mean {trimmed!r}?)" if trimmed is not None else ""
    declare = 'declare [server] bind (e.g. "127.0.0.1") in lmsupervisor\'s config, or ' if declarable else ""
    return Problem(
        "server_address_invalid",
        f"{path}: networkInterface {value!r} is not an address LM Studio's server can bind{hint}; "
        "lmsupervisor does not start the server with it",
        f"{declare}set the server's network interface in LM Studio's Developer settings (127.0.0.1 for this "
        "machine only, 0.0.0.0 for the local network)",
    )


def app_hung_problem(pid: int) -> Problem:
    """``app_hung``: LM Studio's GUI app (PID ``pid``) holds a service that does not
    recover, and is spared: it is the user's interactive program (facts §8)."""
    return Problem(
        "app_hung",
        f"LM Studio's app (PID {pid}) holds the server and does not recover; lmsupervisor does not "
        "kill the app, your interactive program",
        "quit and reopen LM Studio; or set [restart] kill_app = true to let lmsupervisor restart it; "
        "or install llmster for a headless service",
    )


def download_paused_problem(names: Sequence[str]) -> Problem:
    """``download_paused``: REST v1 downloads of ``names`` wait for a person (facts §9)."""
    return Problem(
        "download_paused",
        f"LM Studio's download of {', '.join(names)} is paused; a paused download does not resume by itself",
        "resume it in LM Studio's downloads panel; lmsupervisor loads the model once it completes",
        "warning",
    )


CONFIG_WATCH_FAILED = "config_watch_failed"


def config_watch_failed_problem(path: str, error: str) -> Problem:
    """``config_watch_failed``: the config file ``path`` cannot be watched (``error``: the
    OS's words, e.g. no inotify watches left); a saved change is not reloaded by itself."""
    return Problem(
        CONFIG_WATCH_FAILED,
        f"the config file {path} cannot be watched ({error}): a saved change is not reloaded by itself",
        "reload by hand after each change (`lmsupervisor reload`, or SIGHUP); for inotify, raise "
        "fs.inotify.max_user_watches, then restart lmsupervisor to watch again",
        "warning",
    )


GPU_PROBLEMS = ("gpu_missing", "gpu_incompatible", "gpu_survey_failed")  # the GPU gate's, one at a time
_NO_GPU = ("gpuRequiredButNoneFound", "noSupportedGpus", "gpuSurveyUnsuccessful")  # compatibility: no GPU seen
_HARDWARE_FILE = "hardware.json in lmsupervisor's state folder"


def _runtime(survey: Hardware) -> str:
    return f"runtime {survey.runtime.key}" if survey.runtime is not None else "no runtime"


def _compat(survey: Hardware) -> str:
    c = survey.compatibility
    return f"{c.status}: {c.message}" if c.message else c.status


def gpu_problem(survey: Hardware, verdict: Gate, wait: float) -> Problem | None:
    """The GPU gate's problem for ``survey`` (LM Studio's `lms runtime survey`), None when
    the gate has nothing to say: ``gpu_missing`` (a required GPU is not there, or the runtime
    found none), else ``gpu_incompatible`` (LM Studio's compatibility status and message).
    An error while models wait (``wait`` seconds of re-surveys, then one daemon restart); a
    warning when ``[gpu] require = false`` lets them load on the CPU anyway."""
    if not verdict.missing and verdict.incompatible is None:
        return None
    seen = ", ".join(g.name for g in survey.gpus) or "no GPU"
    if verdict.missing:
        what = f"required GPU missing ({', '.join(verdict.missing)}): LM Studio's {_runtime(survey)} sees {seen}"
        code = "gpu_missing"
    else:
        what = f"LM Studio's {_runtime(survey)} sees {seen}"
        code = "gpu_missing" if verdict.incompatible in _NO_GPU else "gpu_incompatible"
    what += f" (compatibility {_compat(survey)})"
    if verdict.on_cpu:
        return Problem(
            code,
            f"{what}; models are loaded anyway, on the CPU if LM Studio runs them there ([gpu] require = false)",
            'check the GPU driver and LM Studio\'s runtime (`lms runtime survey`); set [gpu] require = "auto" '
            "to keep models off the CPU",
            "warning",
        )
    return Problem(
        code,
        f"{what}; no model is loaded until it is there, never onto the CPU",
        f"lmsupervisor surveys again with backoff, restarts LM Studio's daemon once after {wait:g} s, and loads "
        "the models when the GPU is back; check the GPU driver (a boot or resume may not have loaded it) and "
        "the selected runtime (`lms runtime ls`, `lms runtime select`); if the machine's GPUs changed on "
        f"purpose, delete {_HARDWARE_FILE}, or set [gpu] require = false",
    )


def survey_failed_problem(error: str, blocking: bool) -> Problem:
    """``gpu_survey_failed``: `lms runtime survey` failed (``error``, LM Studio's words). An
    error while a GPU is required (``blocking``: no model loads without knowing), else a
    warning (the models load, unchecked)."""
    if blocking:
        return Problem(
            "gpu_survey_failed",
            f"LM Studio's hardware survey failed: {error}; a GPU is required, so no model is loaded until a "
            "survey shows it",
            "lmsupervisor surveys again with backoff and restarts LM Studio's daemon once; run "
            "`lms runtime survey` to see LM Studio's error",
        )
    return Problem(
        "gpu_survey_failed",
        f"LM Studio's hardware survey failed: {error}; the models are loaded without knowing the GPU",
        "run `lms runtime survey` to see LM Studio's error",
        "warning",
    )


def runtime_changed_problem(found: str, declared: str, error: str | None = None) -> Problem:
    """``runtime_changed``: LM Studio had ``found`` selected instead of the declared
    ``[lmstudio] runtime`` (an update changed it, BT#846); re-selected before loading, or
    ``error`` (LM Studio's words) when `lms runtime select` refused."""
    if error is None:
        return Problem(
            "runtime_changed",
            f"LM Studio's selected runtime was {found}, not the declared {declared} (an update may have changed "
            f"it); lmsupervisor selected {declared} again before loading any model",
            "nothing to do; to follow LM Studio's choice instead, remove [lmstudio] runtime",
            "warning",
        )
    return Problem(
        "runtime_changed",
        f"LM Studio's selected runtime is {found}, not the declared {declared}, and selecting it failed: {error}",
        "install the declared runtime in LM Studio, or set [lmstudio] runtime to one `lms runtime ls` lists",
    )


MODEL_SLOW = "model_slow"


def model_slow_problem(slow: Sequence[tuple[str, float, float | None]], factor: float, gpu: bool) -> Problem | None:
    """``model_slow``: each of ``slow`` (``(name, tokens/s now, baseline tokens/s)``, the
    baseline None when the last survey has none for it, e.g. no GPU any more) answered
    below ``factor`` of its baseline 3 times in a row (:mod:`lmsupervisor.core.speed`); None
    when none. ``gpu``: the last survey still showed a GPU (the model may have fallen back to
    the CPU without LM Studio saying so, BT#2312)."""
    if not slow:
        return None
    figures = "; ".join(
        f"{name} at {now:.1f} tokens/s, baseline {'unknown' if base is None else f'{base:.1f}'}"
        for name, now, base in slow
    )
    return Problem(
        MODEL_SLOW,
        f"below {factor:g} of their baseline speed for 3 answers in a row: {figures}",
        ("lmsupervisor surveyed the hardware again (a lost GPU is then gpu_missing); " if gpu else "")
        + "check the GPU driver, LM Studio's runtime (`lms runtime survey`, `lms runtime ls`) and what else uses the "
        "GPU; [[models]] reload_when_slow = true reloads a slow model once",
        "warning",
    )


NOTIFY_FAILING = "notify_failing"


def notify_failing_problem(receivers: Sequence[str]) -> Problem:
    """``notify_failing``: deliveries to ``receivers`` (``"<kind> <host>: <why>"`` each, never
    the URL's path or query, where tokens live) fail; they are retried with capped backoff."""
    return Problem(
        NOTIFY_FAILING,
        f"notifications cannot be delivered: {'; '.join(receivers)}",
        "check the [[notify]] url (or url_file) and that the receiver is reachable from this machine; "
        "`lmsupervisor notify test` sends a test message to each",
        "warning",
    )
