"""The client of the status socket: the public API (``lmsupervisor.client``) and the CLI's.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) offer ``status()``,
``health()``, ``events()`` (typed events, see :mod:`lmsupervisor.api.events`),
``wait_ready(timeout)``, ``restart(daemon=False)`` and ``reload()``. Both find the socket
as the CLI does (:func:`resolve_socket`: argument, ``$LMSUPERVISOR_SOCKET``, the config's
``status.socket``, the default) and speak HTTP/1.1, one request a connection, with
answers (``Content-Length`` or chunked) parsed by httptools (llhttp).

Where no socket is at that path but the TCP transport's endpoint file is beside it
(``<socket>.tcp.json``, :mod:`lmsupervisor.api.tokenfile`), they connect to
``127.0.0.1:<port>`` and send ``Authorization: Bearer <token>`` instead, transparently.

The server is verified before anything it says is believed: the socket (or endpoint file)
must belong to our own uid or root (or to the user named in ``$LMSUPERVISOR_SOCKET_OWNER``,
for members of ``status.group``), and so must the process answering on a socket
(``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` on macOS).
Every failure (nobody there, refused, reset, timeout, not HTTP, not JSON, a spoofed
socket) raises :class:`~lmsupervisor.errors.StatusSocketError` with the reason.

``lmsupervisor status`` runs in loops in other tools, so the blocking path imports
neither asyncio nor structlog: :class:`AsyncClient` imports asyncio when first used.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time

import httptools

from lmsupervisor import paths
from lmsupervisor.api import tokenfile
from lmsupervisor.errors import StatusSocketError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the name costs nothing this way
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from typing import Any

    from lmsupervisor.api.events import Event

TIMEOUT = 5.0  # seconds for one request
MAX_ANSWER = 16 * 1024 * 1024  # bytes: a bigger answer is not the supervisor's
OWNER_ENV = "LMSUPERVISOR_SOCKET_OWNER"


def resolve_socket(
    cli: str | os.PathLike[str] | None, system_root: str | None = None, unit_socket: str | None = None
) -> str:
    """``--socket``, else ``$LMSUPERVISOR_SOCKET``, else the config's, else the default; when
    nothing names one and no supervisor listens on the default, the system unit's socket
    (``/run/lmsupervisor/USER/status.sock``, :func:`lmsupervisor.paths.system_socket`;
    ``system_root`` replaces ``/run/lmsupervisor``) if one listens there. The rule is
    :func:`lmsupervisor.paths.resolve_socket`; ``unit_socket`` (the socket of a system unit
    found installed, for `service status`) wins over the config's."""
    return paths.resolve_socket(
        cli, os.environ, lambda: unit_socket or _config_socket(), _listening, system_root or paths.SYSTEM_RUNTIME
    )


def _config_socket() -> str | None:
    """``status.socket`` of the default config file; None without one (then it is not parsed)."""
    if not os.path.exists(paths.default_config_file(os.environ)):
        return None
    from lmsupervisor import config  # noqa: PLC0415 - only when a config file may name the socket
    from lmsupervisor.errors import ConfigError  # noqa: PLC0415

    try:
        cfg, _ = config.load(None)
    except ConfigError:
        return None
    return None if cfg.status.socket is None else str(cfg.status.socket)


LISTEN_CHECK_TIMEOUT = 1.0  # seconds a connect to a local Unix socket may take (a busy supervisor)


def _listening(path: str) -> bool:
    """Whether a supervisor answers at ``path``: a Unix socket that accepts a connection (a
    socket file left by a killed supervisor does not), or a TCP endpoint file beside it that
    is ours and not stale (see :func:`lmsupervisor.api.tokenfile.read`)."""
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        is_socket = False
    if is_socket:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(LISTEN_CHECK_TIMEOUT)
                probe.connect(path)
        except OSError:
            return False
        return True
    try:
        tokenfile.read(tokenfile.token_path(path), trusted_uids())
    except (OSError, StatusSocketError):
        return False
    return True


# -- trust ---------------------------------------------------------------------
def trusted_uids(env: dict[str, str] | os._Environ[str] | None = None) -> set[int]:
    """Our uid, root, and the user named (or numbered) in ``$LMSUPERVISOR_SOCKET_OWNER``."""
    env = os.environ if env is None else env
    uids = {0, os.getuid()} if hasattr(os, "getuid") else set()
    owner = env.get(OWNER_ENV, "").strip()
    if owner.isdigit():
        uids.add(int(owner))
    elif owner:
        import pwd  # noqa: PLC0415 - only when someone asked for it

        try:
            uids.add(pwd.getpwnam(owner).pw_uid)
        except KeyError:
            raise StatusSocketError(f"${OWNER_ENV} names no user: {owner!r}") from None
    return uids


def check_socket_owner(path: str, trusted: set[int] | None = None) -> None:
    """Refuse a socket file that is not a socket or not owned by a trusted uid (a spoof)."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise StatusSocketError(f"no supervisor answers on {path}", hint="start `lmsupervisor run`") from exc
    except OSError as exc:
        raise StatusSocketError(f"cannot reach {path}: {exc.strerror}") from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise StatusSocketError(f"{path} is not a socket", hint="check status.socket / --socket")
    trusted = trusted_uids() if trusted is None else trusted
    if trusted and info.st_uid not in trusted:
        raise StatusSocketError(
            f"refusing {path}: it belongs to uid {info.st_uid}, not to you or root; "
            "another user may be impersonating the supervisor",
            hint=f"use a socket in a folder only you control, or set {OWNER_ENV} to the supervisor's user",
        )


def socket_peer_uid(sock: socket.socket, platform: str = sys.platform) -> int | None:
    """The uid of the process at the other end of a Unix socket: ``SO_PEERCRED`` (Linux),
    ``LOCAL_PEERCRED`` (macOS, FreeBSD: ``struct xucred``, as ``getpeereid(3)``); None
    elsewhere or when it cannot be read. ``platform`` is ``sys.platform``."""
    try:
        if platform.startswith("linux"):
            creds = sock.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_PEERCRED", 17), 12)
            return int.from_bytes(creds[4:8], sys.byteorder, signed=True)
        if platform.startswith(("darwin", "freebsd")):
            # SOL_LOCAL 0, LOCAL_PEERCRED 1 (<sys/un.h>); struct xucred {u_int cr_version; uid_t cr_uid;
            # short cr_ngroups; gid_t cr_groups[16]} is 76 bytes
            creds = sock.getsockopt(getattr(socket, "SOL_LOCAL", 0), getattr(socket, "LOCAL_PEERCRED", 1), 76)
            return int.from_bytes(creds[4:8], sys.byteorder)
    except OSError:
        return None
    return None


def check_peer(sock: socket.socket, path: str, trusted: set[int] | None = None, platform: str = sys.platform) -> None:
    """Refuse a peer process whose uid is not trusted (see :func:`socket_peer_uid`; a no-op
    where the uid cannot be read)."""
    uid = socket_peer_uid(sock, platform)
    if uid is None:
        return
    trusted = trusted_uids() if trusted is None else trusted
    if trusted and uid not in trusted:
        raise StatusSocketError(f"refusing {path}: the process answering runs as uid {uid}, not as you or root")


def locate(path: str, trusted: set[int]) -> tuple[int, str] | None:
    """Where the supervisor of ``path`` answers: None for the Unix socket at ``path``
    (checked by :func:`check_socket_owner`), else ``(port, token)`` from the TCP endpoint
    file beside it. Raises :class:`StatusSocketError` when neither is there or trusted."""
    if not os.path.lexists(path):
        try:
            return tokenfile.read(tokenfile.token_path(path), trusted)
        except (FileNotFoundError, NotADirectoryError):
            pass  # neither: check_socket_owner says so
        except OSError as exc:
            raise StatusSocketError(f"cannot read {tokenfile.token_path(path)}: {exc.strerror}") from exc
    check_socket_owner(path, trusted)
    return None


# -- HTTP ----------------------------------------------------------------------
def _request_bytes(method: str, target: str, token: str | None = None) -> bytes:
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


class _Parser:
    """httptools callbacks collecting one answer; ``lines()`` splits a streamed body."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.head_done = False
        self.done = False
        self._parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True

    def feed(self, data: bytes) -> None:
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
        return Response(self.target, self._parser.get_status_code(), self.headers, bytes(self.body))

    def lines(self) -> list[bytes]:
        """Complete lines of the body received so far (removed from it)."""
        if b"\n" not in self.body:
            return []
        *lines, rest = bytes(self.body).split(b"\n")
        self.body = bytearray(rest)
        return [line for line in lines if line.strip()]


def _connect(path: str, timeout: float | None, trusted: set[int]) -> tuple[socket.socket, str | None]:
    """A connected socket, and the bearer token to send (None on a Unix socket)."""
    tcp = locate(path, trusted)
    where = path if tcp is None else f"{tokenfile.HOST}:{tcp[0]} (from {tokenfile.token_path(path)})"
    if tcp is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise StatusSocketError(f"no supervisor answers on {where}", hint="start `lmsupervisor run`") from exc
    except TimeoutError as exc:
        sock.close()
        raise StatusSocketError(f"{where} did not accept within {timeout:g} s") from exc
    except OSError as exc:
        sock.close()
        raise StatusSocketError(f"cannot connect to {where}: {exc.strerror}") from exc
    except StatusSocketError:
        sock.close()
        raise
    return sock, None if tcp is None else tcp[1]


def _recv(sock: socket.socket, path: str, parser: _Parser) -> None:
    try:
        chunk = sock.recv(65536)
    except TimeoutError as exc:
        raise StatusSocketError(f"{path} did not answer {parser.target} in time") from exc
    except OSError as exc:  # a reset, typically: the supervisor is shutting down
        raise StatusSocketError(f"{path}: connection lost ({exc.strerror or type(exc).__name__})") from exc
    parser.feed(chunk)


class EventStream:
    """Blocking iterator of raw event dicts from ``/v1/events``; subscribed once constructed.

    Iteration ends when the server ends the stream or ``timeout`` s pass without data
    (None: never). A connection lost mid-stream raises :class:`StatusSocketError`.
    """

    def __init__(self, path: str, timeout: float | None = None, trusted: set[int] | None = None) -> None:
        self.path = path
        self._parser = _Parser("/v1/events")
        self._sock, token = _connect(path, TIMEOUT, trusted_uids() if trusted is None else trusted)
        try:
            self._sock.sendall(_request_bytes("GET", "/v1/events", token))
            while not self._parser.head_done:
                _recv(self._sock, path, self._parser)
            status = self._parser.response().status
            if status != 200:
                raise StatusSocketError(f"/v1/events answered {status}")
            self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._sock:
            while True:
                for line in self._parser.lines():
                    try:
                        value = json.loads(line)
                    except ValueError:
                        continue  # not a line of ours; the stream goes on
                    yield value if isinstance(value, dict) else {"type": "unknown", "value": value}
                if self._parser.done:
                    return
                try:
                    _recv(self._sock, self.path, self._parser)
                except StatusSocketError as exc:
                    if isinstance(exc.__cause__, TimeoutError):
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
    """:class:`EventStream` yielding :class:`~lmsupervisor.api.events.Event` objects."""

    def __iter__(self) -> Iterator[Event]:  # type: ignore[override]
        from lmsupervisor.api.events import parse_event  # noqa: PLC0415 - not on the `status` path

        for raw in super().__iter__():
            yield parse_event(raw)


def request(path: str | os.PathLike[str], method: str, target: str, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """One request; returns (HTTP status, parsed JSON body). Raises :class:`StatusSocketError`."""
    answer = Client(path, timeout=timeout).request(method, target)
    return answer.status, answer.json()


def open_events(path: str | os.PathLike[str], timeout: float | None = None) -> EventStream:
    """Subscribe now (connected, head read: no later event is missed), iterate later."""
    return EventStream(os.fspath(path), timeout)


def _health(answer: Response) -> dict[str, Any]:
    value = answer.json()
    if answer.status not in (200, 503) or not isinstance(value, dict):
        raise StatusSocketError(f"/v1/health answered {answer.status}: {answer.error()}")
    return {"ready": value.get("ready") is True, "state": str(value.get("state", "unknown"))}


def _snapshot(answer: Response) -> dict[str, Any]:
    value = answer.json()
    if answer.status != 200 or not isinstance(value, dict):
        raise StatusSocketError(f"/v1/status answered {answer.status}: {answer.error()}")
    return value


def _accepted(answer: Response) -> None:
    if answer.status != 202:
        raise StatusSocketError(answer.error())


def _is_ready_event(event: dict[str, Any]) -> bool:
    return event.get("type") == "state" and event.get("state") == "ready"


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
        """The uids a socket and its server may run as (see :func:`trusted_uids`)."""
        if self._trusted is None:
            self._trusted = trusted_uids()
        return self._trusted

    def request(self, method: str, target: str) -> Response:
        """One HTTP request on a fresh connection; any status is returned, not raised."""
        parser = _Parser(target)
        sock, token = _connect(self.path, self.timeout, self.trusted)
        with sock:
            try:
                sock.sendall(_request_bytes(method, target, token))
            except OSError as exc:
                raise StatusSocketError(f"{self.path}: connection lost ({exc.strerror})") from exc
            while not parser.done:
                _recv(sock, self.path, parser)
        return parser.response()

    def status(self) -> dict[str, Any]:
        """The snapshot of design §5 (``GET /v1/status``), as a dict."""
        return _snapshot(self.request("GET", "/v1/status"))

    def health(self) -> dict[str, Any]:
        """``{"ready": bool, "state": str}`` (``GET /v1/health``; 503 is an answer, not an error)."""
        return _health(self.request("GET", "/v1/health"))

    def events(self, timeout: float | None = None) -> TypedEventStream:
        """Typed events (:mod:`lmsupervisor.api.events`) as they happen, until the supervisor
        stops or ``timeout`` s pass without one. Subscribed when this returns; use it in a
        ``with`` block (or call ``close()``) to leave early."""
        return TypedEventStream(self.path, timeout, self.trusted)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until ready (True), or False once ``timeout`` s pass while it is not.

        Keeps retrying while no supervisor answers yet (boot order); raises
        :class:`StatusSocketError` if none answered by the deadline. No polling: it
        subscribes to events first, then checks health, then reads the stream.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        reached = False
        while True:
            remaining = None if deadline is None else max(0.01, deadline - time.monotonic())
            try:
                with EventStream(self.path, remaining, self.trusted) as events:
                    reached = True
                    if self.health()["ready"]:
                        return True
                    for event in events:
                        if _is_ready_event(event):
                            return True
                        if deadline is not None and time.monotonic() >= deadline:
                            break
            except StatusSocketError:
                if deadline is not None and time.monotonic() >= deadline:
                    if reached:
                        return False
                    raise
                time.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic())))
                if not self._named:  # at boot the system unit's socket may appear after we started
                    self.path = resolve_socket(None)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def restart(self, daemon: bool = False) -> None:
        """Ask for a restart of LM Studio's server (and daemon): 202, else StatusSocketError
        (a 403 for another uid carries the server's reason)."""
        _accepted(self.request("POST", "/v1/restart" + ("?daemon=1" if daemon else "")))

    def reload(self) -> None:
        """Ask the supervisor to reread its config (like SIGHUP)."""
        _accepted(self.request("POST", "/v1/reload"))


class AsyncClient:
    """The asyncio twin of :class:`Client`: same methods, awaited; ``events()`` is an
    async iterator of typed events."""

    def __init__(self, socket: str | os.PathLike[str] | None = None, timeout: float = TIMEOUT) -> None:
        self.path = resolve_socket(socket)
        self._named = socket is not None  # else looked for again while waiting (see wait_ready)
        self.timeout = timeout
        self.trusted = trusted_uids()

    async def _open(self, target: str, method: str = "GET") -> tuple[Any, Any, _Parser]:
        import asyncio  # noqa: PLC0415 - never on the blocking path

        tcp = locate(self.path, self.trusted)
        where = self.path if tcp is None else f"{tokenfile.HOST}:{tcp[0]} (from {tokenfile.token_path(self.path)})"
        try:
            async with asyncio.timeout(self.timeout):
                if tcp is None:
                    reader, writer = await asyncio.open_unix_connection(self.path)
                else:
                    reader, writer = await asyncio.open_connection(tokenfile.HOST, tcp[0])
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise StatusSocketError(f"no supervisor answers on {where}", hint="start `lmsupervisor run`") from exc
        except TimeoutError as exc:
            raise StatusSocketError(f"{where} did not accept within {self.timeout:g} s") from exc
        except OSError as exc:
            raise StatusSocketError(f"cannot connect to {where}: {exc.strerror}") from exc
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None and tcp is None:
                check_peer(sock, self.path, self.trusted)
            writer.write(_request_bytes(method, target, None if tcp is None else tcp[1]))
            parser = _Parser(target)
            while not parser.head_done:
                await self._recv(reader, parser, self.timeout)
        except BaseException:
            writer.close()
            raise
        return reader, writer, parser

    async def _recv(self, reader: Any, parser: _Parser, timeout: float | None) -> None:
        import asyncio  # noqa: PLC0415

        try:
            async with asyncio.timeout(timeout):
                chunk = await reader.read(65536)
        except TimeoutError as exc:
            raise StatusSocketError(f"{self.path} did not answer {parser.target} in time") from exc
        except OSError as exc:
            raise StatusSocketError(f"{self.path}: connection lost ({exc.strerror or type(exc).__name__})") from exc
        parser.feed(chunk)

    async def request(self, method: str, target: str) -> Response:
        """One HTTP request on a fresh connection; any status is returned, not raised."""
        reader, writer, parser = await self._open(target, method)
        try:
            while not parser.done:
                await self._recv(reader, parser, self.timeout)
        finally:
            writer.close()
        return parser.response()

    async def status(self) -> dict[str, Any]:
        """See :meth:`Client.status`."""
        return _snapshot(await self.request("GET", "/v1/status"))

    async def health(self) -> dict[str, Any]:
        """See :meth:`Client.health`."""
        return _health(await self.request("GET", "/v1/health"))

    async def subscribe(self, timeout: float | None = None) -> AsyncEventStream:
        """Subscribe now (connected, head read); iterate the raw event dicts later."""
        reader, writer, parser = await self._open("/v1/events")
        status = parser.response().status
        if status != 200:
            writer.close()
            raise StatusSocketError(f"/v1/events answered {status}")
        return AsyncEventStream(self, reader, writer, parser, timeout)

    async def events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        """Typed events as they happen, until the supervisor stops or ``timeout`` s pass
        without one. Subscribed at the first ``anext``."""
        from lmsupervisor.api.events import parse_event  # noqa: PLC0415

        async with await self.subscribe(timeout) as stream:
            async for raw in stream:
                yield parse_event(raw)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """See :meth:`Client.wait_ready`."""
        import asyncio  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        reached = False
        while True:
            remaining = None if deadline is None else max(0.01, deadline - loop.time())
            try:
                async with await self.subscribe(remaining) as stream:
                    reached = True
                    if (await self.health())["ready"]:
                        return True
                    async for event in stream:
                        if _is_ready_event(event):
                            return True
                        if deadline is not None and loop.time() >= deadline:
                            break
            except StatusSocketError:
                if deadline is not None and loop.time() >= deadline:
                    if reached:
                        return False
                    raise
                await asyncio.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - loop.time())))
                if not self._named:  # at boot the system unit's socket may appear after we started
                    self.path = await asyncio.to_thread(resolve_socket, None)  # may parse the config
                continue
            if deadline is not None and loop.time() >= deadline:
                return False

    async def restart(self, daemon: bool = False) -> None:
        """See :meth:`Client.restart`."""
        _accepted(await self.request("POST", "/v1/restart" + ("?daemon=1" if daemon else "")))

    async def reload(self) -> None:
        """See :meth:`Client.reload`."""
        _accepted(await self.request("POST", "/v1/reload"))


class AsyncEventStream:
    """Async iterator of raw event dicts on an open ``/v1/events`` connection."""

    def __init__(self, client: AsyncClient, reader: Any, writer: Any, parser: _Parser, timeout: float | None) -> None:
        self._client, self._reader, self._writer, self._parser = client, reader, writer, parser
        self._timeout = timeout
        self._pending: list[dict[str, Any]] = []

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while not self._pending:
            for line in self._parser.lines():
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                self._pending.append(value if isinstance(value, dict) else {"type": "unknown", "value": value})
            if self._pending:
                break
            if self._parser.done:
                await self.aclose()
                raise StopAsyncIteration
            try:
                await self._client._recv(self._reader, self._parser, self._timeout)
            except StatusSocketError as exc:
                await self.aclose()
                if isinstance(exc.__cause__, TimeoutError):
                    raise StopAsyncIteration from None
                raise
        return self._pending.pop(0)

    async def aclose(self) -> None:
        """Leave the stream (the server drops the subscription)."""
        self._writer.close()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
