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
