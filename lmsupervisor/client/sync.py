"""The blocking client of the status socket: :class:`Client`, :class:`EventStream`, :func:`request`.

Plain sockets, one request a connection; what is said and what the answers mean is
:mod:`~lmsupervisor.client.protocol`, where and whom to trust is
:mod:`~lmsupervisor.client.locate`. ``lmsupervisor status`` runs in loops in other tools,
so this path imports neither asyncio nor structlog.
"""

from __future__ import annotations

import os
import socket
import time

from lmsupervisor.client import protocol
from lmsupervisor.client.locate import check_peer, locate, resolve_socket, trusted_uids
from lmsupervisor.client.protocol import TIMEOUT, Parser, Response
from lmsupervisor.endpoint import tokenfile
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.platform import current as this_os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the name costs nothing this way
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from lmsupervisor.client.events import Event


def _connect(path: str, timeout: float, trusted: set[int]) -> tuple[socket.socket, str | None]:
    """A connected socket, and the bearer token to send (None on a Unix socket)."""
    tcp = locate(path, trusted)
    if tcp is None:
        sock = this_os().unix_socket()
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    try:
        if tcp is None:
            sock.connect(path)
            check_peer(sock, path, trusted)
        else:
            sock.connect((tokenfile.HOST, tcp[0]))
    except OSError as exc:
        sock.close()
        raise protocol.connect_error(exc, protocol.address(path, tcp), timeout) from exc
    except StatusSocketError:
        sock.close()
        raise
    return sock, None if tcp is None else tcp[1]


def _recv(sock: socket.socket, path: str, parser: Parser) -> None:
    try:
        chunk = sock.recv(65536)
    except OSError as exc:
        raise protocol.recv_error(exc, path, parser.target) from exc
    parser.feed(chunk)


class EventStream:
    """Blocking iterator of raw event dicts from ``/v1/events``; subscribed once constructed.

    Iteration ends when the server ends the stream or ``timeout`` s pass without data
    (None: never). A connection lost mid-stream raises :class:`StatusSocketError`.
    """

    def __init__(self, path: str, timeout: float | None = None, trusted: set[int] | None = None) -> None:
        self.path = path
        self._parser = Parser(protocol.EVENTS)
        self._sock, token = _connect(path, TIMEOUT, trusted_uids() if trusted is None else trusted)
        try:
            self._sock.sendall(protocol.request_bytes("GET", protocol.EVENTS, token))
            while not self._parser.head_done:
                _recv(self._sock, path, self._parser)
            protocol.subscribed(self._parser)
            self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._sock:
            while True:
                yield from protocol.events_in(self._parser)
                if self._parser.done:
                    return
                try:
                    _recv(self._sock, self.path, self._parser)
                except StatusSocketError as exc:
                    if protocol.stream_timed_out(exc):
                        return
                    raise

    def close(self) -> None:
        """Leave the stream (the server drops the subscription)."""
        self._sock.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TypedEventStream(EventStream):
    """:class:`EventStream` yielding :class:`~lmsupervisor.client.events.Event` objects."""

    def __iter__(self) -> Iterator[Event]:  # type: ignore[override]
        from lmsupervisor.client.events import parse_event  # noqa: PLC0415 - not on the `status` path

        for raw in super().__iter__():
            yield parse_event(raw)


def request(path: str | os.PathLike[str], method: str, target: str, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """One request; returns (HTTP status, parsed JSON body). Raises :class:`StatusSocketError`."""
    answer = Client(path, timeout=timeout).request(method, target)
    return answer.status, answer.json()


def open_events(path: str | os.PathLike[str], timeout: float | None = None) -> EventStream:
    """Subscribe now (connected, head read: no later event is missed), iterate later."""
    return EventStream(os.fspath(path), timeout)


class Client:
    """Blocking client of a running supervisor's status socket.

    ``socket``: a path, else resolved as the CLI does; ``timeout``: seconds for one
    request. Every method raises :class:`StatusSocketError` when the supervisor cannot
    be reached or trusted, or answers with something unexpected.

    >>> from lmsupervisor.client import Client
    >>> Client().health()
    {'ready': True, 'state': 'ready'}
    """

    def __init__(self, socket: str | os.PathLike[str] | None = None, timeout: float = TIMEOUT) -> None:
        self.path = resolve_socket(socket)
        self._named = socket is not None  # else looked for again while waiting (see wait_ready)
        self.timeout = timeout
        self._trusted: set[int] | None = None

    @property
    def trusted(self) -> set[int]:
        """The uids a socket and its server may run as (see :func:`~lmsupervisor.client.locate.trusted_uids`)."""
        if self._trusted is None:
            self._trusted = trusted_uids()
        return self._trusted

    def request(self, method: str, target: str) -> Response:
        """One HTTP request on a fresh connection; any status is returned, not raised."""
        parser = Parser(target)
        sock, token = _connect(self.path, self.timeout, self.trusted)
        with sock:
            try:
                sock.sendall(protocol.request_bytes(method, target, token))
            except OSError as exc:
                raise StatusSocketError(f"{self.path}: connection lost ({exc.strerror})") from exc
            while not parser.done:
                _recv(sock, self.path, parser)
        return parser.response()

    def status(self) -> dict[str, Any]:
        """The snapshot of design §5 (``GET /v1/status``), as a dict."""
        return protocol.snapshot(self.request("GET", "/v1/status"))

    def health(self) -> dict[str, Any]:
        """``{"ready": bool, "state": str}`` (``GET /v1/health``; 503 is an answer, not an error)."""
        return protocol.health(self.request("GET", "/v1/health"))

    def events(self, timeout: float | None = None) -> TypedEventStream:
        """Typed events (:mod:`lmsupervisor.client.events`) as they happen, until the supervisor
        stops or ``timeout`` s pass without one. Subscribed when this returns; use it in a
        ``with`` block (or call ``close()``) to leave early."""
        return TypedEventStream(self.path, timeout, self.trusted)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until ready (True), or False once ``timeout`` s pass while it is not.

        Keeps retrying while no supervisor answers yet (boot order); raises
        :class:`StatusSocketError` if none answered by the deadline. No polling: it
        subscribes to events first, then checks health, then reads the stream
        (:class:`~lmsupervisor.client.protocol.ReadyWait`).
        """
        wait = protocol.ReadyWait(timeout, time.monotonic)
        while wait.verdict is None:
            if wait.pause is not None:
                time.sleep(wait.pause)
                if not self._named:  # at boot the system unit's socket may appear after we started
                    self.path = resolve_socket(None)
            with wait.attempt(), EventStream(self.path, wait.remaining(), self.trusted) as events:
                wait.reached = True
                if not wait.saw_health(self.health()):
                    for event in events:
                        if wait.saw(event):
                            break
        return wait.verdict

    def restart(self, daemon: bool = False) -> None:
        """Ask for a restart of LM Studio's server (and daemon): 202, else StatusSocketError
        (a 403 for another uid carries the server's reason)."""
        protocol.accepted(self.request("POST", protocol.control_target("restart", daemon)))

    def reload(self) -> None:
        """Ask the supervisor to reread its config (like SIGHUP)."""
        protocol.accepted(self.request("POST", protocol.control_target("reload")))
