"""A problem: something wrong with the user's machine, with the fix. Pure data.

Problems are reported (``doctor``, ``GET /v1/status`` ``problems``), never raised: a
missing or corrupt LM Studio file is a problem, not a crash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
