"""The status client (``lmsupervisor.client``): the API against the server in process, and the
CLI's tolerance of spoofed, odd and broken answers (issues 7 and 10)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lmsupervisor.cli import status_main, wait_main
from lmsupervisor.client import AsyncClient, Client, StateEvent, StatusSocketError
from tests.unit.test_statusd import FakeSupervisor, sock_path, started

__all__ = ["sock_path"]  # the fixture, shared with the server's tests


@pytest.fixture
def fake_server(sock_path: Path) -> Iterator[Callable[[bytes], Path]]:
    """A Unix socket server that answers every connection with the given raw bytes, then closes."""
    servers: list[socketserver.UnixStreamServer] = []

    def serve(answer: bytes) -> Path:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(65536)
                self.request.sendall(answer)

        sock_path.parent.mkdir(mode=0o700, exist_ok=True)
        server = socketserver.UnixStreamServer(str(sock_path), Handler)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(server)
        return sock_path

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def http(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@pytest.mark.parametrize(
    ("answer", "code", "stderr_has"),
    [
        (http(b'{"ready": true}'), 0, "shape this version does not know"),  # a spoof's shape: no KeyError
        (http(b'{"ready": "yes", "state": 3}'), 1, "shape this version does not know"),
        (http(b"[1, 2]"), 3, "answered 200"),
        (http(b"not json"), 3, "without JSON"),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"ready"', 3, "closed mid-answer"),  # cut by a shutdown
        (b"SSH-2.0-OpenSSH\r\n", 3, "not an HTTP answer"),
        (b"", 3, "closed mid-answer"),
        (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nF\r\n{"ready": true}\r\n0\r\n\r\n', 0, "shape"),
    ],
)
def test_status_tolerates_any_answer(
    fake_server: Callable[[bytes], Path], capsys: pytest.CaptureFixture[str], answer: bytes, code: int, stderr_has: str
) -> None:
    """Whatever answers on the socket, `status` exits 0, 1 or 3 with a reason, never a traceback."""
    path = fake_server(answer)
    assert status_main(str(path), as_json=False) == code
    assert stderr_has in capsys.readouterr().err


def test_status_refuses_a_socket_owned_by_another_user(
    fake_server: Callable[[bytes], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A socket file that belongs to neither us nor root is not believed (a spoof in a shared folder)."""
    path = fake_server(http(b'{"ready": true}'))
    os.chown(path, 65534, 65534)
    assert status_main(str(path), as_json=True) == 3
    err = capsys.readouterr().err
    assert "refusing" in err and "uid 65534" in err
    os.environ["LMSUPERVISOR_SOCKET_OWNER"] = "65534"  # members of status.group name the supervisor's user
    try:
        assert status_main(str(path), as_json=True) == 0
    finally:
        del os.environ["LMSUPERVISOR_SOCKET_OWNER"]


def test_a_path_that_is_not_a_socket_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A regular file at the socket path is reported, not connected to."""
    (tmp_path / "s.sock").write_text("")
    assert status_main(str(tmp_path / "s.sock"), as_json=False) == 3
    assert "is not a socket" in capsys.readouterr().err


def test_wait_gives_up_with_3_when_nobody_ever_answers(tmp_path: Path) -> None:
    """`wait` retries while the supervisor is not up (boot order), then exits 3 at its timeout."""
    assert wait_main(str(tmp_path / "none.sock"), 0.3) == 3


async def test_the_blocking_client_against_the_server(sock_path: Path) -> None:
    """status, health, restart, reload, typed events and wait_ready, as documented."""
    server, sup = await started(sock_path)
    client = Client(sock_path)
    try:
        assert (await asyncio.to_thread(client.health)) == {"ready": True, "state": "ready"}
        assert (await asyncio.to_thread(client.status))["state"] == "ready"
        await asyncio.to_thread(client.restart, True)
        await asyncio.to_thread(client.reload)
        assert [k for k, _ in sup.posts] == ["restart", "reload"]
        assert sup.posts[0][1]["daemon"] is True
        stream = await asyncio.to_thread(client.events, 5.0)
        sup.publish({"type": "state", "time": "t", "state": "ready", "previous": "starting", "reason": "up"})
        event = await asyncio.to_thread(next, iter(stream))
        stream.close()
        assert event == StateEvent("state", "t", {}, "ready", "starting", "up")
        assert await asyncio.to_thread(client.wait_ready, 5.0) is True
    finally:
        await server.close()


async def test_wait_ready_sees_the_ready_event(sock_path: Path) -> None:
    """wait_ready subscribes, sees not ready, and returns True on the `ready` event (no polling)."""
    sup = FakeSupervisor()
    sup.ready = False
    server, _ = await started(sock_path, sup)
    try:
        waiting = asyncio.ensure_future(AsyncClient(sock_path).wait_ready(5.0))
        async with asyncio.timeout(5):
            while not sup.subscribers:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # its health check is done
            sup.publish({"type": "state", "state": "ready"})
            assert await waiting is True
        assert await AsyncClient(sock_path).wait_ready(0.2) is False  # reachable, never ready
    finally:
        await server.close()


async def test_the_async_client_against_the_server(sock_path: Path) -> None:
    """AsyncClient has the same methods; a refused control verb raises with the server's reason."""
    server, sup = await started(sock_path)
    client = AsyncClient(sock_path)
    try:
        assert (await client.health())["ready"] is True
        assert (await client.status())["ready"] is True
        await client.reload()
        events = client.events(timeout=5.0)
        first = asyncio.ensure_future(anext(events))
        async with asyncio.timeout(5):
            while not sup.subscribers:
                await asyncio.sleep(0.01)
        sup.publish({"type": "restart", "count": 2, "reason": "asked", "step": "server"})
        event = await first
        await events.aclose()  # type: ignore[attr-defined]
        assert (event.type, getattr(event, "count", None)) == ("restart", 2)
        with pytest.raises(StatusSocketError, match="no supervisor answers"):
            await AsyncClient(sock_path.with_name("none.sock")).health()
    finally:
        await server.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the system unit is systemd's")
def test_the_system_service_socket_is_found_when_no_default_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lmsupervisor@USER.service` (a system unit: no XDG_RUNTIME_DIR) listens on
    /run/lmsupervisor/USER/status.sock; with no flag, variable or config naming a socket, the
    client uses it when nothing listens on the per-user default (absent, or a socket file left
    by a killed supervisor), and the per-user one when it listens (on a socket, or over TCP)."""
    from lmsupervisor import paths
    from lmsupervisor.client import resolve_socket
    from lmsupervisor.endpoint import tokenfile

    root = str(tmp_path / "run")
    monkeypatch.delenv("LMSUPERVISOR_SOCKET", raising=False)
    monkeypatch.setenv("LMSUPERVISOR_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user"))
    default = tmp_path / "user" / "lmsupervisor" / "status.sock"
    system = Path(paths.system_socket(None, root) or "")
    assert resolve_socket(None, root) == str(default)  # nobody listens: the default, named in errors
    with listening(system):
        assert resolve_socket(None, root) == str(system)
        with listening(default):
            assert resolve_socket(None, root) == str(default)  # a per-user supervisor wins
        assert default.exists()  # the file a killed supervisor leaves: nobody accepts on it
        assert resolve_socket(None, root) == str(system)
        default.unlink()
        tokenfile.write(tokenfile.token_path(default), 1234, "secret", os.getpid())
        assert resolve_socket(None, root) == str(default)  # a per-user supervisor on TCP wins too
    assert resolve_socket(str(tmp_path / "flag.sock"), root) == str(tmp_path / "flag.sock")


@contextlib.contextmanager
def listening(path: Path) -> Iterator[None]:
    """A Unix socket listening at ``path`` while the block runs; its file stays behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        yield
