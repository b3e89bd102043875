"""The status client's sans-I/O core: what both clients send, and what the answers mean.

The blocking client (:mod:`~lmsupervisor.client.sync`) and the asyncio one
(:mod:`~lmsupervisor.client.aio`) differ only in how they move bytes; every rule they
share is here, with no socket in sight:

- :func:`request_bytes`: one HTTP/1.1 request a connection (``Connection: close``), with
  ``Authorization: Bearer <token>`` on the TCP transport;
- :class:`Parser` collects one answer (``Content-Length``, chunked, or up to the end of
  the connection), parsed by httptools (llhttp), into a :class:`Response`; a stream's
  complete lines become events with :func:`events_in`;
- :func:`health`, :func:`snapshot`, :func:`accepted`, :func:`subscribed`: what an answer
  of each endpoint means, or the :class:`StatusSocketError` saying why it is not one;
- :func:`address`, :func:`connect_error`, :func:`recv_error`: a failed connect or read as
  the error the user sees;
- :class:`ReadyWait`: the rule of ``wait_ready``.

Standard library and httptools only: ``lmsupervisor status`` imports this.
"""

from __future__ import annotations

import json

import httptools

from lmsupervisor.endpoint import tokenfile
from lmsupervisor.errors import StatusSocketError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the name costs nothing this way
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

TIMEOUT = 5.0  # seconds for one request
MAX_ANSWER = 16 * 1024 * 1024  # bytes: a bigger answer is not the supervisor's
EVENTS = "/v1/events"


def request_bytes(method: str, target: str, token: str | None = None) -> bytes:
    """The request ``method target`` (``Content-Length: 0`` on a POST; the bearer ``token``
    on TCP). Raises ValueError for a target that is not a path without blanks."""
    if not target.startswith("/") or any(c in target for c in " \r\n\t"):
        raise ValueError(f"not a request target: {target!r}")
    length = "Content-Length: 0\r\n" if method == "POST" else ""
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return f"{method} {target} HTTP/1.1\r\nHost: lmsupervisor\r\nConnection: close\r\n{auth}{length}\r\n".encode()


class Response:
    """One answer: ``status`` (int), ``headers`` (lower-case name -> value), ``body`` (bytes)."""

    __slots__ = ("body", "headers", "status", "target")

    def __init__(self, target: str, status: int, headers: dict[str, str], body: bytes) -> None:
        self.target, self.status, self.headers, self.body = target, status, headers, body

    def json(self) -> Any:
        """The body as JSON; raises :class:`StatusSocketError` if it is not."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise StatusSocketError(f"{self.target} answered {self.status} without JSON") from exc

    def error(self) -> str:
        """The server's ``{"error": ...}`` text, or a description of the status."""
        try:
            value = json.loads(self.body)
        except ValueError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("error"), str):
            return str(value["error"])
        return f"{self.target} answered {self.status}"


class Parser:
    """httptools callbacks collecting one answer to ``target``; :meth:`feed` it what arrives
    (``b""`` at the end of the connection), then take :meth:`response` or :meth:`lines`."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.head_done = False
        self.done = False
        self._parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header line (names are kept lower-case)."""
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        """httptools: the head is complete."""
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        """httptools: a piece of the body."""
        self.body += body

    def on_message_complete(self) -> None:
        """httptools: the answer is complete."""
        self.done = True

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises :class:`StatusSocketError` for what is not the supervisor's
        answer (not HTTP, over :data:`MAX_ANSWER`, or cut short by the end of the connection)."""
        if not data:
            self._eof()
            return
        if self.done:
            return  # anything after the answer is not for us
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise StatusSocketError(f"{self.target}: not an HTTP answer ({exc})") from exc
        if len(self.body) > MAX_ANSWER:
            raise StatusSocketError(f"{self.target}: an answer over {MAX_ANSWER} bytes is not the supervisor's")

    def _eof(self) -> None:
        framed = "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")
        if self.head_done and not framed:
            self.done = True  # a body delimited by the end of the connection
        if not self.done:
            raise StatusSocketError(f"{self.target}: the connection closed mid-answer")

    def response(self) -> Response:
        """The answer received so far (all of it once :attr:`done`)."""
        return Response(self.target, self._parser.get_status_code(), self.headers, bytes(self.body))

    def lines(self) -> list[bytes]:
        """Complete lines of the body received so far (removed from it)."""
        if b"\n" not in self.body:
            return []
        *lines, rest = bytes(self.body).split(b"\n")
        self.body = bytearray(rest)
        return [line for line in lines if line.strip()]


def events_in(parser: Parser) -> list[dict[str, Any]]:
    """The events of ``/v1/events`` in the complete lines received so far: each line's JSON
    object, anything else JSON as ``{"type": "unknown", "value": ...}``; a line that is not
    JSON is not ours and is skipped (the stream goes on)."""
    events = []
    for line in parser.lines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        events.append(value if isinstance(value, dict) else {"type": "unknown", "value": value})
    return events


def subscribed(parser: Parser) -> None:
    """Raise :class:`StatusSocketError` unless the head of ``/v1/events`` says 200."""
    status = parser.response().status
    if status != 200:
        raise StatusSocketError(f"{EVENTS} answered {status}")


def stream_timed_out(exc: StatusSocketError) -> bool:
    """Whether ``exc`` is a stream's read timeout, which ends the iteration quietly."""
    return isinstance(exc.__cause__, TimeoutError)


def health(answer: Response) -> dict[str, Any]:
    """``{"ready": bool, "state": str}`` from ``GET /v1/health`` (503 is an answer, not an error)."""
    value = answer.json()
    if answer.status not in (200, 503) or not isinstance(value, dict):
        raise StatusSocketError(f"/v1/health answered {answer.status}: {answer.error()}")
    return {"ready": value.get("ready") is True, "state": str(value.get("state", "unknown"))}


def snapshot(answer: Response) -> dict[str, Any]:
    """The snapshot of design §5 from ``GET /v1/status``."""
    value = answer.json()
    if answer.status != 200 or not isinstance(value, dict):
        raise StatusSocketError(f"/v1/status answered {answer.status}: {answer.error()}")
    return value


def accepted(answer: Response) -> None:
    """Raise :class:`StatusSocketError` with the server's reason unless a POST got 202."""
    if answer.status != 202:
        raise StatusSocketError(answer.error())


def control_target(verb: str, daemon: bool = False) -> str:
    """The target of ``POST`` ``restart`` (``?daemon=1`` restarts the daemon too) or ``reload``."""
    return f"/v1/{verb}" + ("?daemon=1" if daemon else "")


def is_ready_event(event: dict[str, Any]) -> bool:
    """Whether a raw event says the supervisor entered ``ready``."""
    return event.get("type") == "state" and event.get("state") == "ready"


def address(path: str, tcp: tuple[int, str] | None) -> str:
    """How errors name where the supervisor answers: the socket ``path``, or the port of the
    TCP endpoint file beside it (``tcp`` is its ``(port, token)``)."""
    return path if tcp is None else f"{tokenfile.HOST}:{tcp[0]} (from {tokenfile.token_path(path)})"


def connect_error(exc: OSError, where: str, timeout: float) -> StatusSocketError:
    """A failed connect to ``where`` within ``timeout`` seconds as the user sees it."""
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return StatusSocketError(f"no supervisor answers on {where}", hint="start `lmsupervisor run`")
    if isinstance(exc, TimeoutError):
        return StatusSocketError(f"{where} did not accept within {timeout:g} s")
    return StatusSocketError(f"cannot connect to {where}: {exc.strerror}")


def recv_error(exc: OSError, path: str, target: str) -> StatusSocketError:
    """A failed read of the answer to ``target`` as the user sees it (a reset, typically:
    the supervisor is shutting down)."""
    if isinstance(exc, TimeoutError):
        return StatusSocketError(f"{path} did not answer {target} in time")
    return StatusSocketError(f"{path}: connection lost ({exc.strerror or type(exc).__name__})")


class ReadyWait:
    """The rule of ``wait_ready`` for both clients, on their clock (``now``, seconds).

    Each attempt subscribes to events first, then reads health, then events until a
    ``ready`` one, so no change is missed and nothing polls. While nobody answers (boot
    order) attempts repeat every :data:`PAUSE` s; at the deadline the wait gives up: False
    once a supervisor was reached (:attr:`reached`), else the last
    :class:`StatusSocketError` is raised. A client does only the I/O::

        while wait.verdict is None:
            if wait.pause is not None:  # nobody answered: sleep, then find the socket again
                ...
            with wait.attempt(), <subscribed to events for wait.remaining() s> as events:
                wait.reached = True
                if not wait.saw_health(<health>):
                    for event in events:
                        if wait.saw(event):
                            break
        return wait.verdict
    """

    PAUSE = 0.2  # seconds between attempts while nobody answers

    def __init__(self, timeout: float | None, now: Callable[[], float]) -> None:
        self._now = now
        self._deadline = None if timeout is None else now() + timeout
        self.reached = False
        self.verdict: bool | None = None  # what wait_ready returns, once known
        self.pause: float | None = None  # seconds to sleep before the next attempt; None: at once

    def remaining(self) -> float | None:
        """Seconds this attempt's stream may wait for an event (at least 0.01); None: forever."""
        return None if self._deadline is None else max(0.01, self._deadline - self._now())

    def over(self) -> bool:
        """Whether the deadline has passed."""
        return self._deadline is not None and self._now() >= self._deadline

    def saw_health(self, health: dict[str, Any]) -> bool:
        """Whether ``health`` (see :func:`health`) says ready: then the verdict is True."""
        if health["ready"]:
            self.verdict = True
        return self.verdict is True

    def saw(self, event: dict[str, Any]) -> bool:
        """Whether to stop reading events: a ``ready`` one (the verdict is True) or the deadline passed."""
        if is_ready_event(event):
            self.verdict = True
            return True
        return self.over()

    def attempt(self) -> ReadyWait:
        """One attempt, as a ``with`` block around it (see :meth:`__exit__`)."""
        return self

    def __enter__(self) -> ReadyWait:
        self.pause = None
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        """An attempt that ended without an answer past the deadline gives False. One that
        failed (:class:`StatusSocketError`, swallowed) sets :attr:`pause`; past the deadline
        it gives False once a supervisor was reached, else the error goes on."""
        if exc is None:
            if self.verdict is None and self.over():
                self.verdict = False
            return False
        if not isinstance(exc, StatusSocketError):
            return False
        if self.over():
            if not self.reached:
                return False
            self.verdict = False
            return True
        self.pause = self.PAUSE if self._deadline is None else min(self.PAUSE, max(0.0, self._deadline - self._now()))
        return True
