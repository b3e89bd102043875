"""A client of the status socket for the CLI and other tools. Stdlib only, on purpose.

Other tools run ``lmsupervisor status`` in loops, so this path imports neither httpx
nor structlog nor asyncio: a plain ``socket`` speaking HTTP/1.0 (the server closes after
each answer) and ``json``.

Exit codes (LSB): 0 ready, 1 reachable but not ready, 3 supervisor not running.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator

from lmsupervisor.errors import StatusSocketError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~3 ms on every `status`
if TYPE_CHECKING:
    from typing import Any

EXIT_READY, EXIT_NOT_READY, EXIT_NOT_RUNNING = 0, 1, 3
TIMEOUT = 5.0  # seconds for one request


def resolve_socket(cli: str | os.PathLike[str] | None) -> str:
    """``--socket``, else ``$LMSUPERVISOR_SOCKET``, else the config's, else the default."""
    if cli is not None:
        return os.fspath(cli)
    if os.environ.get("LMSUPERVISOR_SOCKET"):
        return os.environ["LMSUPERVISOR_SOCKET"]
    from lmsupervisor import paths  # noqa: PLC0415

    if not os.path.exists(paths.default_config_file(os.environ)):
        return paths.default_socket(os.environ)  # no config file: no need to parse one
    from lmsupervisor import config  # noqa: PLC0415 - only when a config file may name the socket
    from lmsupervisor.errors import ConfigError  # noqa: PLC0415

    try:
        cfg, _ = config.load(None)
    except ConfigError:
        cfg = config.Config()
    return str(config.socket_path(cfg))


def _connect(path: str | os.PathLike[str], timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise StatusSocketError(f"no supervisor answers on {path}", hint="start `lmsupervisor run`") from exc
    except OSError as exc:
        sock.close()
        raise StatusSocketError(f"cannot connect to {path}: {exc.strerror}") from exc
    return sock


def _send(sock: socket.socket, method: str, target: str) -> None:
    sock.sendall(f"{method} {target} HTTP/1.0\r\nHost: lms\r\nContent-Length: 0\r\n\r\n".encode())


def _split_head(data: bytes) -> tuple[int, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise StatusSocketError(f"not an HTTP answer: {head[:80]!r}") from exc
    return status, body


def request(path: str | os.PathLike[str], method: str, target: str, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """One request; returns (HTTP status, parsed JSON body). Raises :class:`StatusSocketError`."""
    with _connect(path, timeout) as sock:
        _send(sock, method, target)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError as exc:
            raise StatusSocketError(f"{path} did not answer within {timeout:g} s") from exc
    status, body = _split_head(b"".join(chunks))
    try:
        return status, json.loads(body)
    except ValueError as exc:
        raise StatusSocketError(f"{target} answered {status} without JSON") from exc


def open_events(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """Subscribe now (connected, head read: no later event is missed), iterate later."""
    sock = _connect(path, TIMEOUT)
    _send(sock, "GET", "/v1/events")
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise StatusSocketError("/v1/events closed before answering")
            buf += chunk
    except (TimeoutError, StatusSocketError):
        sock.close()
        raise
    status, rest = _split_head(buf)
    if status != 200:
        sock.close()
        raise StatusSocketError(f"/v1/events answered {status}")
    return _event_lines(sock, rest, timeout)


def _event_lines(sock: socket.socket, buf: bytes, timeout: float | None) -> Iterator[dict[str, Any]]:
    with sock:
        sock.settimeout(timeout)
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return
            if not chunk:
                return
            buf += chunk


def _err(message: str) -> None:
    sys.stderr.write(f"lmsupervisor: {message}\n")


def status_main(socket_path: str | os.PathLike[str] | None, as_json: bool) -> int:
    path = resolve_socket(socket_path)
    try:
        _, snap = request(path, "GET", "/v1/status")
    except StatusSocketError as exc:
        _err(str(exc))
        return EXIT_NOT_RUNNING
    if as_json:
        sys.stdout.write(json.dumps(snap, indent=2) + "\n")
    else:
        from lmsupervisor.api.status import summary  # noqa: PLC0415

        sys.stdout.write(summary(snap) + "\n")
    return EXIT_READY if snap.get("ready") else EXIT_NOT_READY


def wait_main(socket_path: str | os.PathLike[str] | None, timeout: float | None) -> int:
    """Block until ready: subscribe to events, check health once, then read the stream (no polling).

    Subscribing first matters: a ``ready`` that happens between the check and the
    subscription would otherwise be missed, and the wait would last until its timeout.
    """
    path = resolve_socket(socket_path)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            remaining = None if deadline is None else max(0.01, deadline - time.monotonic())
            events = open_events(path, remaining)
            _, health = request(path, "GET", "/v1/health")
            if health.get("ready"):
                return EXIT_READY
            for event in events:
                if event.get("type") == "state" and event.get("state") == "ready":
                    return EXIT_READY
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except StatusSocketError as exc:
            if deadline is None or time.monotonic() >= deadline:
                _err(str(exc))
                return EXIT_NOT_RUNNING
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))  # not up yet: boot order
            continue
        if deadline is not None and time.monotonic() >= deadline:
            _err(f"not ready after {timeout:g} s")
            return EXIT_NOT_READY


def events_main(socket_path: str | os.PathLike[str] | None) -> int:
    path = resolve_socket(socket_path)
    try:
        for event in open_events(path):
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
    except StatusSocketError as exc:
        _err(str(exc))
        return EXIT_NOT_RUNNING
    return 0


def post_main(socket_path: str | os.PathLike[str] | None, target: str) -> int:
    path = resolve_socket(socket_path)
    try:
        status, body = request(path, "POST", target)
    except StatusSocketError as exc:
        _err(str(exc))
        return EXIT_NOT_RUNNING
    if status != 202:
        _err(body.get("error", f"answered {status}") if isinstance(body, dict) else f"answered {status}")
        return 1
    sys.stdout.write("accepted\n")
    return 0
