"""The one exception tree of lmsupervisor: every exception class the package raises is here.

Every error carries a ``hint``: the next step that fixes it, shown to the user. The exit
code each one ends a command with is ``cli.EXIT_CODES`` (the one table).

::

    LmSupervisorError
     +-- ConfigError                  a config file is unreadable or invalid (exit 78)
     +-- InstanceLockedError          another `run` holds the lock (exit 69)
     +-- IllegalTransition            a trigger with no edge out of the state (a bug: core.states.TRANSITIONS)
     +-- LmsError                     a call of the `lms` CLI failed
     |    +-- LmsNotFoundError        no `lms` executable where we looked
     |    +-- LmsTimeoutError         `lms` did not finish within its timeout
     |    +-- LmsExitError            `lms` exited non-zero (carries code, stderr, the Error: line)
     |    +-- LmsOutputError          `lms` printed something we cannot parse
     +-- ProbeError                   the HTTP server did not prove it is LM Studio
     +-- RestError                    LM Studio's REST API v1 failed (refused, error body)
     |    +-- RestTimeoutError        no answer in time (a load may still finish)
     |    +-- RestConnectError        nothing listens on the port (refused, unreachable)
     |    +-- RestUnsupportedError    no REST v1 here (0.3.x: "Unexpected endpoint")
     |    +-- RestAuthError           401: the API token is missing or wrong
     +-- StatusSocketError            the status socket is unreachable or answered badly (exit 3)
     +-- HttpError                    the status server refuses a request (carries the HTTP status)
     +-- ServiceError                 installing or removing the system service failed (exit 1)
     +-- NativeHostError              a browser's native-messaging request failed (carries a code)
     |    +-- TruncatedFrameError     stdin ended inside a frame: the browser is gone
     |    +-- OversizedFrameError     a message over the host's limit (read and discarded)
     +-- NativeHostInstallError       `native-host install|uninstall` was given a value it cannot use (exit 2)
     +-- NativeHostFileError          the host's manifest or launcher could not be written or removed (exit 1)
     +-- SimulateError                `lmsupervisor simulate` could not do what was asked (exit 1)
     +-- NotifyError                  a [[notify]] receiver did not take a notification (retried)
     +-- DashboardError               no dashboard to open: off, or no supervisor serves it (exit 3)
     +-- ProxyUpstreamError           the holding proxy's request got no answer from LM Studio (held again)
          +-- ProxyUnreachedError     no connection to LM Studio: the request never reached it
          +-- ProxyUnansweredError    LM Studio took the request and closed before an answer's head

The simulator's own exceptions stay in :mod:`lmsupervisor.simulator`: they model LM Studio's
errors (``WsError``, the simulated `lms`'s exits) or steer its chaos harness, and the
simulator must re-derive LM Studio rather than share the supervisor's code (style.md 20).
Standard library only: ``lmsupervisor status`` and the simulated `lms` import this.
"""

from __future__ import annotations

import enum


class LmSupervisorError(Exception):
    """Base of every error lmsupervisor raises on purpose.

    ``hint`` says what the user can do about it; it may be empty.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(LmSupervisorError):
    """The config file is unreadable or invalid; ``key`` is the TOML path at fault."""

    def __init__(self, message: str, key: str = "", hint: str = "") -> None:
        super().__init__(message, hint or "fix the key named above, then reload")
        self.key = key


class InstanceLockedError(LmSupervisorError):
    """Another `lmsupervisor run` holds the lock for the same status socket."""


class LmsError(LmSupervisorError):
    """A call of the `lms` CLI failed; ``argv`` is the command that was run."""

    def __init__(self, message: str, argv: list[str] | None = None, hint: str = "") -> None:
        super().__init__(message, hint)
        self.argv = list(argv or [])


class LmsNotFoundError(LmsError):
    """No `lms` executable was found (configured path, PATH, `<home>/bin/lms`)."""


class LmsTimeoutError(LmsError):
    """`lms` did not finish within ``timeout`` seconds; its process group was killed."""

    def __init__(self, message: str, argv: list[str], timeout: float, hint: str = "") -> None:
        super().__init__(message, argv, hint)
        self.timeout = timeout


class LmsExitError(LmsError):
    """`lms` exited with a non-zero ``returncode``.

    ``error_line`` is LM Studio's own message (the ``Error: `` line on stderr, or the
    last non-empty stderr line), suitable for showing to the user as is.
    """

    def __init__(
        self,
        message: str,
        argv: list[str],
        returncode: int,
        stdout: str,
        stderr: str,
        error_line: str,
        hint: str = "",
    ) -> None:
        super().__init__(message, argv, hint)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.error_line = error_line


class LmsOutputError(LmsError):
    """`lms` exited 0 but printed output that is not the documented shape."""


class ProbeError(LmSupervisorError):
    """An HTTP probe failed: refused, timed out, or the body was not LM Studio's."""


class StatusSocketError(LmSupervisorError):
    """The status socket could not be reached or answered with something unexpected."""


class RestError(LmSupervisorError):
    """LM Studio's REST API (``/api/v1/*``, facts §4) failed: refused, timed out, or an error body."""


class RestTimeoutError(RestError):
    """A REST request got no answer in time (a load may still finish in LM Studio)."""


class RestConnectError(RestError):
    """A REST request could not connect (refused, unreachable): nothing listens on the port."""


class RestUnsupportedError(RestError):
    """This LM Studio has no REST v1: the route answered ``Unexpected endpoint`` (0.3.x)."""


class RestAuthError(RestError):
    """HTTP 401 from the REST API: "Require Authentication" is on and the token is missing or
    wrong. ``code`` is ``api_token_missing`` or ``api_token_invalid`` (a problem code)."""

    def __init__(self, message: str, code: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.code = code


class IllegalTransition(LmSupervisorError):
    """``trigger`` has no edge out of ``state`` in :data:`lmsupervisor.core.states.TRANSITIONS`:
    a bug in the reducer, raised instead of silently changing state."""

    def __init__(self, state: enum.Enum, trigger: enum.Enum) -> None:
        super().__init__(f"no transition from {state.value!r} on {trigger.value!r}")
        self.state = state
        self.trigger = trigger


class HttpError(LmSupervisorError):
    """A request the status server refuses with ``status``; the message is for the client
    (``{"error": ...}``, see :mod:`lmsupervisor.statusd.http1`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServiceError(LmSupervisorError):
    """Installing or removing the service failed (a command exited non-zero, a file
    could not be written); ``hint`` says what to do."""


class NativeHostError(LmSupervisorError):
    """A request failed; ``message`` is the ``error`` answered, ``code`` its kind.

    Codes: ``bad_request``, ``too_large``, ``not_installed``, ``unreachable``,
    ``lmstudio_error``, ``timeout``, ``supervised``, ``internal``.
    """

    def __init__(self, message: str, code: str = "bad_request", hint: str = "") -> None:
        super().__init__(message, hint)
        self.code = code


class TruncatedFrameError(NativeHostError):
    """stdin ended inside a frame: the browser is gone, nothing more can be read."""


class OversizedFrameError(NativeHostError):
    """An incoming message over the host's ``MAX_INCOMING``; its bytes were read and discarded."""


class NativeHostInstallError(LmSupervisorError):
    """A value given to `native-host install|uninstall` cannot be used (a usage error)."""


class NativeHostFileError(LmSupervisorError):
    """The native-messaging host's manifest or launcher could not be written or removed;
    the message names the file and the system's reason."""


class SimulateError(LmSupervisorError):
    """`lmsupervisor simulate` could not do what was asked; ``hint`` says what to do instead."""


class NotifyError(LmSupervisorError):
    """A ``[[notify]]`` receiver did not take a notification: unreachable, timed out, or
    answered with an error status; or its ``url_file`` cannot be read. The message names
    the receiver by kind and host only (a URL's path or query may hold its token)."""


class DashboardError(LmSupervisorError):
    """`lmsupervisor dashboard` found no dashboard: ``[dashboard] listen`` is off, or no
    supervisor runs (exit 3, as `status` when nobody answers)."""


class ProxyUpstreamError(LmSupervisorError):
    """The holding proxy's request got no answer from LM Studio; the proxy holds it again
    (never shown to a user as such: it becomes a hold, a resend, or the 502 body)."""


class ProxyUnreachedError(ProxyUpstreamError):
    """No connection to LM Studio could be made (refused, or not within the connect
    timeout): the request never reached it."""


class ProxyUnansweredError(ProxyUpstreamError):
    """LM Studio took the request, then closed the connection (or sent bytes that are no
    HTTP answer) before an answer's head; the message says which."""
