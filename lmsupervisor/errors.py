"""The one exception tree of lmsupervisor.

Every error carries a ``hint``: the next step that fixes it, shown to the user.

::

    LmSupervisorError
     +-- ConfigError                  a config file is unreadable or invalid (exit 78)
     +-- InstanceLockedError          another `run` holds the lock (exit 69)
     +-- LmsError                     a call of the `lms` CLI failed
     |    +-- LmsNotFoundError        no `lms` executable where we looked
     |    +-- LmsTimeoutError         `lms` did not finish within its timeout
     |    +-- LmsExitError            `lms` exited non-zero (carries code, stderr, the Error: line)
     |    +-- LmsOutputError          `lms` printed something we cannot parse
     +-- ProbeError                   the HTTP server did not prove it is LM Studio
     +-- StatusSocketError            the status socket is unreachable or answered badly
     +-- RestError                    LM Studio's REST API v1 failed (refused, error body)
          +-- RestTimeoutError        no answer in time (a load may still finish)
          +-- RestUnsupportedError    no REST v1 here (0.3.x: "Unexpected endpoint")
          +-- RestAuthError           401: the API token is missing or wrong
"""

from __future__ import annotations


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
