"""The status server's transports: loopback TCP with a bearer token (found by the client through
its endpoint file), peer credentials per platform, and the /v1/status body encoded once per change."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from lmsupervisor import config, platform
from lmsupervisor.client import AsyncClient, Client
from lmsupervisor.client.locate import check_peer
from lmsupervisor.endpoint import tokenfile
from lmsupervisor.endpoint.peer import socket_peer_uid
from lmsupervisor.errors import ConfigError, StatusSocketError
from lmsupervisor.statusd.server import StatusServer
from lmsupervisor.statusd.transport import control_refusal, peer_uid
from tests.unit.test_statusd import FakeSupervisor, exchange, sock_path, started, statuses

__all__ = ["sock_path"]  # the fixture, imported for its name

HEALTH = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n%s\r\n"


# -- config ------------------------------------------------------------------------------
def test_transport_key_parses_and_defaults_per_platform() -> None:
    """`[status] transport` takes "unix" or "tcp"; unset, it is "tcp" on Windows and "unix" elsewhere."""
    windows, linux, darwin = (platform.of(n).default_transport for n in ("windows", "linux", "darwin"))
    assert config.status_transport(config.parse({"status": {"transport": "tcp"}}), default=linux) == "tcp"
    assert config.status_transport(config.parse({"status": {"transport": "unix"}}), default=windows) == "unix"
    assert (windows, linux, darwin) == ("tcp", "unix", "unix")
    assert config.status_transport(config.Config(), default=windows) == "tcp"
    assert config.status_transport(config.Config()) == platform.current().default_transport


def test_an_unknown_transport_names_the_key() -> None:
    """Any other value is refused with the key and the choices."""
    with pytest.raises(ConfigError, match=r'status\.transport: expected one of "unix", "tcp"') as err:
        config.parse({"status": {"transport": "http"}})
    assert err.value.key == "status.transport"


# -- TCP ---------------------------------------------------------------------------------
async def tcp_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(tokenfile.HOST, port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def endpoint(sock: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(Path(tokenfile.token_path(sock)).read_text())
    return value


async def test_tcp_needs_the_right_bearer_token(sock_path: Path) -> None:
    """A missing or wrong token is answered 401 with WWW-Authenticate; the right one is served, POST included."""
    server, sup = await started(sock_path, transport="tcp")
    try:
        info = endpoint(sock_path)
        assert set(info) == {"port", "token", "pid", "pid_namespace", "started"}
        assert stat.S_IMODE(os.stat(tokenfile.token_path(sock_path)).st_mode) == 0o600
        assert not sock_path.exists()  # no Unix socket with this transport
        missing = await tcp_exchange(info["port"], HEALTH % b"")
        wrong_token = ("y" if info["token"].startswith("x") else "x") + info["token"][1:]  # never the right one
        wrong = await tcp_exchange(info["port"], HEALTH % f"Authorization: Bearer {wrong_token}\r\n".encode())
        basic = await tcp_exchange(info["port"], HEALTH % b"Authorization: Basic Zm9vOmJhcg==\r\n")
        right = await tcp_exchange(info["port"], HEALTH % f"Authorization: Bearer {info['token']}\r\n".encode())
        post = await tcp_exchange(
            info["port"],
            f"POST /v1/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {info['token']}\r\n"
            "Content-Length: 0\r\n\r\n".encode(),
        )
        assert [statuses(a) for a in (missing, wrong, basic, right, post)] == [[401], [401], [401], [200], [202]]
        assert b'WWW-Authenticate: Bearer realm="lmsupervisor"' in missing
        assert b"missing `Authorization: Bearer <token>`" in missing
        assert b"wrong bearer token" in wrong
        assert sup.posts == [("reload", {})]
    finally:
        await server.close()
    assert not os.path.exists(tokenfile.token_path(sock_path))  # removed at shutdown


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_the_bearer_scheme_is_case_insensitive(sock_path: Path, scheme: str) -> None:
    """RFC 7235: the auth scheme is case-insensitive (`bearer <token>` is served); the token is not."""
    server, _ = await started(sock_path, transport="tcp")
    try:
        info = endpoint(sock_path)
        token = info["token"]
        right = await tcp_exchange(info["port"], HEALTH % f"Authorization: {scheme}  {token}\r\n".encode())
        upper = await tcp_exchange(info["port"], HEALTH % f"Authorization: {scheme} {token.upper()}\r\n".encode())
        assert [statuses(right), statuses(upper) if token.upper() != token else [401]] == [[200], [401]]
    finally:
        await server.close()


async def test_each_start_draws_a_new_token_and_port_file(sock_path: Path) -> None:
    """Two runs never share a token."""
    first, _ = await started(sock_path, transport="tcp")
    token = endpoint(sock_path)["token"]
    await first.close()
    second, _ = await started(sock_path, transport="tcp")
    try:
        assert endpoint(sock_path)["token"] != token
        assert len(endpoint(sock_path)["token"]) >= 43  # 32 random bytes, URL-safe base64
    finally:
        await second.close()


async def test_clients_find_the_tcp_endpoint_transparently(sock_path: Path) -> None:
    """Client and AsyncClient given the socket path read the endpoint file and send the token."""
    server, sup = await started(sock_path, transport="tcp")
    try:
        assert (await AsyncClient(sock_path).health()) == {"ready": True, "state": "ready"}
        assert (await AsyncClient(sock_path).status())["state"] == "ready"
        assert (await asyncio.to_thread(Client(sock_path).health)) == {"ready": True, "state": "ready"}
        await asyncio.to_thread(Client(sock_path).restart, True)
        await AsyncClient(sock_path).reload()
        stream = await AsyncClient(sock_path).subscribe(timeout=5)
        async with stream:
            sup.publish({"type": "state", "state": "starting", "previous": "ready"})
            assert (await anext(stream))["state"] == "starting"
        assert [kind for kind, _ in sup.posts] == ["restart", "reload"]
    finally:
        await server.close()
    with pytest.raises(StatusSocketError, match="no supervisor answers"):
        await AsyncClient(sock_path).health()


async def test_a_deleted_endpoint_file_is_written_again(sock_path: Path) -> None:
    """A tmp cleaner deleting the endpoint file is undone at the next check (same port and token)."""
    server, _ = await started(sock_path, transport="tcp")
    try:
        before = endpoint(sock_path)
        os.unlink(tokenfile.token_path(sock_path))
        with capture_logs() as logs:
            assert await server.ensure_socket() is True
        assert [(e["event"], e["reason"]) for e in logs] == [("status_socket_recreated", "missing")]
        assert endpoint(sock_path) == before
        assert await server.ensure_socket() is False
    finally:
        await server.close()


async def test_switching_transport_removes_the_other_ones_leftover(sock_path: Path) -> None:
    """A TCP run removes a dead Unix socket at the path, a Unix run a stale endpoint file: clients never try them."""
    unix, _ = await started(sock_path)
    unix.transport.remove = lambda: None  # type: ignore[method-assign]  # a crash leaves the socket behind
    await unix.close()
    assert sock_path.exists()
    tcp, _ = await started(sock_path, transport="tcp")
    assert not sock_path.exists()
    tcp.transport.remove = lambda: None  # type: ignore[method-assign]
    await tcp.close()
    again, _ = await started(sock_path)
    try:
        assert not os.path.exists(tokenfile.token_path(sock_path))
        assert statuses(await exchange(sock_path, HEALTH % b"")) == [200]
    finally:
        await again.close()


def test_the_client_refuses_an_endpoint_file_others_can_read(tmp_path: Path) -> None:
    """An endpoint file readable by group or others leaks the token: refused, with the fix."""
    sock = tmp_path / "s.sock"
    tokenfile.write(tokenfile.token_path(sock), 1234, "secret", 1)
    os.chmod(tokenfile.token_path(sock), 0o644)
    with pytest.raises(StatusSocketError, match="lets others read the token"):
        Client(sock).health()


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown needs root")
def test_the_client_refuses_an_endpoint_file_of_another_user(tmp_path: Path) -> None:
    """An endpoint file planted by another uid would send our token to them: refused."""
    sock = tmp_path / "s.sock"
    tokenfile.write(tokenfile.token_path(sock), 1234, "secret", 1)
    os.chown(tokenfile.token_path(sock), 65534, 65534)
    with pytest.raises(StatusSocketError, match="belongs to uid 65534"):
        Client(sock).health()


@pytest.mark.parametrize(
    "content",
    [b"{}", b"not json", b'{"port": 0, "token": "x"}', b'{"port": 80, "token": ""}', b'{"port": true, "token": "x"}'],
)
def test_a_malformed_endpoint_file_is_an_error_not_a_crash(tmp_path: Path, content: bytes) -> None:
    """Whatever is in the file, the client raises StatusSocketError."""
    sock = tmp_path / "s.sock"
    path = Path(tokenfile.token_path(sock))
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(StatusSocketError, match="not an endpoint file"):
        Client(sock).health()


# -- peer credentials ----------------------------------------------------------------------
class CredSocket:
    """A socket whose getsockopt answers like a BSD kernel: a ``struct xucred`` for LOCAL_PEERCRED."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.asked: list[tuple[int, int, int]] = []

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        self.asked.append((level, option, size))
        if (level, option) != (0, 1):
            raise OSError(92, "Protocol not available")
        return struct.pack("=IihH16I", 0, self.uid, 1, 0, *[20] * 16)  # version 0, uid, ngroups, pad, groups


@pytest.mark.parametrize("platform", ["darwin", "freebsd14"])
def test_bsd_peer_credentials_come_from_local_peercred(platform: str) -> None:
    """On macOS and FreeBSD the uid is read with getsockopt(SOL_LOCAL, LOCAL_PEERCRED) as getpeereid does."""
    sock = CredSocket(501)
    assert peer_uid(sock, platform) == 501  # type: ignore[arg-type]
    assert sock.asked == [(0, 1, 76)]


def test_the_client_refuses_a_bsd_server_of_another_uid() -> None:
    """The client's spoof check uses the same macOS branch: a server run by another uid is refused."""
    with pytest.raises(StatusSocketError, match="runs as uid 4242"):
        check_peer(CredSocket(4242), "/x.sock", {0, os.getuid()}, platform="darwin")  # type: ignore[arg-type]
    check_peer(CredSocket(os.getuid()), "/x.sock", {0, os.getuid()}, platform="darwin")  # type: ignore[arg-type]


def test_linux_peer_credentials_and_unknown_platforms() -> None:
    """Linux reads SO_PEERCRED of a real socket pair (our uid); a platform without a way gives None."""
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_uid(a, "linux") == os.getuid()
        assert socket_peer_uid(a, "win32") is None
        assert peer_uid(a, "darwin") is None  # the BSD option on a Linux socket: unreadable, not a crash
    assert peer_uid(None) is None


@pytest.mark.parametrize(("uid", "refused"), [(4242, True), (0, False), (os.getuid(), False)])
def test_control_verbs_on_macos_are_refused_to_another_uid(uid: int, refused: bool) -> None:
    """On the macOS branch another uid is refused control, its uid named; root and we are not."""
    refusal = control_refusal(CredSocket(uid), "darwin", own_uid=os.getuid())  # type: ignore[arg-type]
    assert refusal == ("uid 4242 may read but not control" if refused else None)


async def test_the_server_passes_its_platform_to_the_control_check(sock_path: Path) -> None:
    """A server told it runs on macOS asks LOCAL_PEERCRED, unreadable on Linux: the 0600 socket is the guard."""
    server, _ = await started(sock_path, platform="darwin")
    try:
        answer = await exchange(sock_path, b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert (server.platform, statuses(answer)) == ("darwin", [202])
    finally:
        await server.close()


# -- item 7: encoded once per change -----------------------------------------------------------
async def test_status_is_encoded_once_per_snapshot_change(sock_path: Path) -> None:
    """Many requests between two changes encode the snapshot once; a new snapshot object is encoded again."""
    sup = FakeSupervisor()
    calls: list[int] = []
    original = sup.snapshot

    def counting() -> dict[str, Any]:
        calls.append(1)
        return original()

    sup.snapshot = counting  # type: ignore[method-assign]
    server, _ = await started(sock_path, sup)
    try:
        request = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n" * 20
        answer = await exchange(sock_path, request)
        assert (statuses(answer), len(calls)) == ([200] * 20, 1)
        sup.snap = object()  # the supervisor changed
        answer = await exchange(sock_path, request[: len(request) // 20])
        assert (statuses(answer), len(calls), server.status_encodings) == ([200], 2, 2)
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == original()
    finally:
        await server.close()


def test_the_tcp_server_is_a_status_server() -> None:
    """The transport is chosen by name: anything but "tcp" is the Unix socket."""
    assert StatusServer(FakeSupervisor(), Path("/tmp/x.sock"), transport="tcp").transport.kind == "tcp"
    assert StatusServer(FakeSupervisor(), Path("/tmp/x.sock")).transport.kind == "unix"


def test_an_endpoint_file_of_a_dead_supervisor_is_not_used(tmp_path: Path) -> None:
    """After a kill -9 the endpoint file stays; whoever binds its port next must not get our
    token: the client checks the recorded PID first and says no supervisor runs."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        squatter.setblocking(False)
        sock = tmp_path / "s.sock"
        tokenfile.write(tokenfile.token_path(sock), squatter.getsockname()[1], "secret", gone.pid)
        with pytest.raises(StatusSocketError, match=f"PID {gone.pid}.* not running"):
            Client(sock).health()
        with pytest.raises(BlockingIOError):
            squatter.accept()  # nobody connected: the token never left


def test_a_pid_from_another_pid_namespace_is_not_judged(tmp_path: Path) -> None:
    """A supervisor in a container (another PID namespace) writes a PID that means nothing
    here: the client does not call the file stale for it, it connects and asks."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        sock = tmp_path / "s.sock"
        path = Path(tokenfile.token_path(sock))
        tokenfile.write(path, server.getsockname()[1], "secret", gone.pid)
        body = json.loads(path.read_text())
        path.write_text(json.dumps({**body, "pid_namespace": 1}))  # not ours (inode 1 is the root dir's)
        with pytest.raises(StatusSocketError, match="did not answer"):
            Client(sock, timeout=0.5).health()
        conn, _ = server.accept()  # the request was sent: the file was trusted
        conn.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="start times come from procfs")
def test_a_recycled_pid_does_not_make_a_stale_file_live(tmp_path: Path) -> None:
    """The recorded PID runs, but it started at another time than the writer did: another
    process has that PID now, and the file is stale."""
    from lmsupervisor.pids import start_ticks

    sock = tmp_path / "s.sock"
    path = Path(tokenfile.token_path(sock))
    tokenfile.write(path, 1234, "secret", os.getpid())
    assert tokenfile.read(str(path), {os.getuid()}) == (1234, "secret")  # the writer itself: live
    body = json.loads(path.read_text())
    assert body["started"] == start_ticks(os.getpid())
    path.write_text(json.dumps({**body, "started": body["started"] - 1}))
    with pytest.raises(StatusSocketError, match="belongs to another process"):
        Client(sock).health()
