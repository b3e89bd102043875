"""The survey before a load pass: the runtime pin, then LM Studio's hardware survey (issue 17).

:func:`survey_pass` performs a :class:`~lmsupervisor.core.effects.Survey` effect and
*returns* its :class:`~lmsupervisor.core.messages.Surveyed` message; the reducer decides
what the survey means (the GPU gate, :func:`lmsupervisor.core.hardware.gate`). What this
`lms` lacks is skipped (capabilities, facts §9): `runtime ls`/`select` since 2025-09-23,
`runtime survey` since 2025-12-18. An `lms` failure is a message, never an exception.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from lmsupervisor.core.effects import Survey
from lmsupervisor.core.hardware import InstalledRuntime
from lmsupervisor.core.messages import Surveyed
from lmsupervisor.errors import LmsError, LmsExitError
from lmsupervisor.lmstudio.facade import QUICK_TIMEOUT, LmStudio
from lmsupervisor.lmstudio.lms import LmsClient

SURVEY_TIMEOUT = 30.0  # seconds for `lms runtime survey --json [--refresh]` (a refresh surveys each runtime)

log = structlog.get_logger("lmsupervisor")


async def survey_pass(lm: LmStudio, eff: Survey) -> Surveyed:
    """Re-select ``eff.runtime`` if an update changed it, then survey the hardware
    (``--refresh`` with ``eff.refresh``); ``surveyed_at`` is the clock's wall time.
    Returns :class:`Surveyed` (its ``error`` LM Studio's words when the survey failed)."""
    caps = eff.capabilities
    if eff.lms is None or caps is None:
        return Surveyed(eff.action)
    lms = lm.lms(eff.lms)
    runtime: tuple[str, str] | None = None
    runtime_error: str | None = None
    if eff.runtime is not None and caps.runtime:
        runtime, runtime_error = await pin_runtime(lms, eff.runtime)
    if not caps.survey:
        return Surveyed(eff.action, runtime=runtime, runtime_error=runtime_error)
    try:
        found = await lms.runtime_survey(eff.refresh, timeout=SURVEY_TIMEOUT)
    except LmsError as exc:
        return Surveyed(eff.action, None, _words(exc), runtime, runtime_error)
    return Surveyed(eff.action, replace(found, surveyed_at=lm.clock.wall()), None, runtime, runtime_error)


async def pin_runtime(lms: LmsClient, declared: str) -> tuple[tuple[str, str] | None, str | None]:
    """Make ``declared`` (``name`` or ``name@version``) the selected runtime for the model
    formats it runs: `lms runtime ls`, and `lms runtime select` when another is selected.
    Returns ``((found, declared), error)`` when it was not selected (``found`` the runtimes
    selected instead; ``error`` LM Studio's words when `select` failed), ``(None, None)``
    when it was, or when `runtime ls` could not tell (logged)."""
    try:
        installed = await lms.runtime_ls(timeout=QUICK_TIMEOUT)
    except LmsError as exc:
        log.warning("runtime_list_failed", error=_words(exc))
        return None, None
    formats = {f for r in installed if _is(r, declared) for f in r.formats}
    chosen = [r for r in installed if r.selected and (not formats or formats & set(r.formats))]
    if any(_is(r, declared) for r in chosen):
        return None, None
    found = ", ".join(r.runtime.key for r in chosen) or "none"
    try:
        await lms.runtime_select(declared, timeout=QUICK_TIMEOUT)
    except LmsError as exc:
        return (found, declared), _words(exc)
    return (found, declared), None


def _is(row: InstalledRuntime, declared: str) -> bool:
    return declared in (row.runtime.key, row.runtime.name)


def _words(exc: LmsError) -> str:
    return exc.error_line if isinstance(exc, LmsExitError) and exc.error_line else exc.message
