"""The status server in process, on a real Unix socket, with a fake supervisor: every HTTP
shape, bounded resources, clean event streams, and a socket that comes back (issue 7)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from lmsupervisor.core.states import State
from lmsupervisor.statusd.server import StatusServer

SNAPSHOT: dict[str, Any] = {
    "state": "ready",
    "ready": True,
    "since": "2026-11-21T10:00:00.000Z",
    "server": {"consecutive_failures": 0, "last_probe_ms": 1.5},
    "restarts": {"count": 0},
    "models": [],
}


class FakeSupervisor:
    """The supervisor's public surface: posts are recorded, events come from ``publish``."""

    def __init__(self) -> None:
        self.state = State.READY
        self.ready = True
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.snap: object = object()  # a new object after every change, as Supervisor.snap
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.fail = False

    def post(self, kind: str, **data: Any) -> None:
        self.posts.append((kind, data))

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(8)
        self.subscribers.add(q)
        return q

    async def events(
        self, q: asyncio.Queue[dict[str, Any] | None] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        q = q or self.subscribe()
        try:
            while (event := await q.get()) is not None:
                yield event
        finally:
            self.subscribers.discard(q)

    def publish(self, event: dict[str, Any]) -> None:
        for q in list(self.subscribers):
            q.put_nowait(event)

    def snapshot(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("snapshot broke")
        return SNAPSHOT


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A socket path short enough for AF_UNIX, in a fresh private folder."""
    base = Path(tempfile.mkdtemp(prefix="lmsu", dir="/tmp"))
    yield base / "lmsupervisor" / "s.sock"
    shutil.rmtree(base, ignore_errors=True)


async def started(path: Path, sup: FakeSupervisor | None = None, **kwargs: Any) -> tuple[StatusServer, FakeSupervisor]:
    sup = sup or FakeSupervisor()
    kwargs.setdefault("check_interval", 0)
    server = StatusServer(sup, path, **kwargs)
    await server.start()
    return server, sup


async def exchange(path: Path, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, half-close, and read until the server closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    try:
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"POST /v1/restart HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", [202]),
        (b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", [202]),
        (b"POST /v1/reload HTTP/1.1\r\nHost: x\r\n\r\n", [202]),  # curl -X POST with no body
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", [200]),
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n", [200, 200]),
        (b"GARBAGE\r\n\r\n", [400]),
        (b"GET /v1/health HTTP/1.1\r\n\r\n", [400]),  # HTTP/1.1 without Host
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", [431]),
        (b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", [413]),
        (b"POST /v1/reload HTTP/1.0\r\n\r\n", [411]),
        (b"PUT /v1/status HTTP/1.1\r\nHost: x\r\n\r\n", [405]),
        (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", [404]),
        ("GET /v1/st\u00e4tus HTTP/1.1\r\nHost: x\r\n\r\n".encode(), [400]),  # raw UTF-8 is not a target
        (b"GET /v1/st%C3%A4tus HTTP/1.1\r\nHost: x\r\n\r\n", [404]),
        (b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", [501]),
    ],
)
async def test_every_http_shape_is_answered(sock_path: Path, request_bytes: bytes, expected: list[int]) -> None:
    """Bodies (sized or chunked), pipelining and malformed requests each get their status, nothing hangs."""
    server, _ = await started(sock_path)
    try:
        with capture_logs() as logs:
            answer = await exchange(sock_path, request_bytes)
        assert statuses(answer) == expected, answer[:300]
        assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    finally:
        await server.close()


async def test_chunked_body_over_the_cap_is_413(sock_path: Path) -> None:
    """A chunked body past 1 MiB is refused with 413 while it streams in."""
    server, sup = await started(sock_path)
    try:
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        head = b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer = await exchange(sock_path, head + chunk * 17)
        assert (statuses(answer), sup.posts) == ([413], [])
    finally:
        await server.close()


async def test_head_has_the_headers_and_no_body(sock_path: Path) -> None:
    """HEAD answers like GET without a body, and logs nothing (it used to log an h11 traceback)."""
    server, _ = await started(sock_path)
    try:
        with capture_logs() as logs:
            answer = await exchange(sock_path, b"HEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert (statuses(answer), body, b"content-length: " in head.lower(), logs) == ([200], b"", True, [])
    finally:
        await server.close()


async def test_a_failing_handler_answers_500_and_logs_its_traceback(sock_path: Path) -> None:
    """An exception in a handler is a 500 with a JSON error, logged as status_request_failed."""
    server, sup = await started(sock_path)
    sup.fail = True
    try:
        with capture_logs() as logs:
            answer = await exchange(sock_path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(answer) == [500]
        assert b'"error": "internal error: RuntimeError"' in answer
        failed = [e for e in logs if e["event"] == "status_request_failed"]
        assert (len(failed), failed[0]["path"], failed[0].get("exc_info")) == (1, "/v1/status", True)
    finally:
        await server.close()


async def test_a_trickling_client_is_cut_at_the_request_deadline(sock_path: Path) -> None:
    """A client that sends a byte now and then is disconnected once its request deadline passes."""
    server, _ = await started(sock_path, request_timeout=0.2, idle_timeout=0.2)
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock_path))
        writer.write(b"GET /v1/hea")
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server, no answer
        writer.close()
        assert server.connections == 0
    finally:
        await server.close()


async def test_past_the_cap_the_oldest_idle_connection_makes_room_for_health(sock_path: Path) -> None:
    """With every slot held by idle clients, a health check still answers: the oldest idle one is dropped."""
    server, _ = await started(sock_path, max_connections=4)
    idle = [await asyncio.open_unix_connection(str(sock_path)) for _ in range(4)]
    try:
        await asyncio.sleep(0)  # let the server accept them
        answer = await exchange(sock_path, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(answer) == [200]
        async with asyncio.timeout(5):
            assert await idle[0][0].read() == b""  # the oldest was dropped
        assert server.connections <= 4
    finally:
        for _, w in idle:
            w.close()
        await server.close()


async def test_a_subscriber_that_leaves_is_removed_without_an_error(sock_path: Path) -> None:
    """Leaving /v1/events unsubscribes cleanly: no 'aclose(): asynchronous generator is already running'."""
    server, sup = await started(sock_path)
    try:
        with capture_logs() as logs:
            for _ in range(3):
                reader, writer = await asyncio.open_unix_connection(str(sock_path))
                writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
                async with asyncio.timeout(5):
                    await reader.readuntil(b"\r\n\r\n")
                    sup.publish({"type": "state", "state": "ready"})
                    assert b'"state": "ready"' in await reader.readuntil(b"}\n")
                writer.close()
                async with asyncio.timeout(5):
                    while sup.subscribers:
                        await asyncio.sleep(0.01)
        assert (sup.subscribers, [e for e in logs if e["log_level"] != "debug"]) == (set(), [])
    finally:
        await server.close()


async def test_events_end_with_the_supervisor(sock_path: Path) -> None:
    """When the supervisor stops (None on the queue) the stream ends with its last chunk."""
    server, sup = await started(sock_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock_path))
        writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        sup.publish({"type": "state", "state": "stopping"})
        for q in list(sup.subscribers):
            q.put_nowait(None)
        async with asyncio.timeout(5):
            rest = await reader.read()
        writer.close()
        assert (b'"stopping"' in rest, rest.endswith(b"0\r\n\r\n"), sup.subscribers) == (True, True, set())
    finally:
        await server.close()


async def test_a_deleted_socket_is_bound_again(sock_path: Path) -> None:
    """A tmp cleaner deleting the socket (or its folder) is undone at the next check, and logged."""
    recreated: list[int] = []
    server, _ = await started(sock_path, on_recreated=lambda: recreated.append(1))
    try:
        assert await server.ensure_socket() is False  # ours: nothing to do
        sock_path.unlink()
        with capture_logs() as logs:
            assert await server.ensure_socket() is True
        assert [(e["event"], e["reason"]) for e in logs] == [("status_socket_recreated", "missing")]
        shutil.rmtree(sock_path.parent)
        assert await server.ensure_socket() is True
        sock_path.unlink()
        sock_path.write_text("not a socket")
        with capture_logs() as logs:
            assert await server.ensure_socket() is True
        assert [e["reason"] for e in logs] == ["replaced"]
        answer = await exchange(sock_path, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (statuses(answer), len(recreated), oct(sock_path.stat().st_mode & 0o777)) == ([200], 3, "0o600")
    finally:
        await server.close()
    assert not os.path.exists(sock_path)


async def test_the_health_round_check_rebinds_in_its_own_wakeup(sock_path: Path) -> None:
    """check_now (called by the health round after each probe) sees a deleted socket at once,
    long before the server's own timer (interval x FALLBACK) would; a second call within half
    an interval does not look again."""
    server, _ = await started(sock_path, check_interval=60.0)
    try:
        sock_path.unlink()
        server.check_now()
        async with asyncio.timeout(5):
            while not sock_path.exists():
                await asyncio.sleep(0.02)
        sock_path.unlink()
        server.check_now()
        await asyncio.sleep(0.1)
        assert sock_path.exists() is False
    finally:
        await server.close()


async def test_the_periodic_check_rebinds_by_itself(sock_path: Path) -> None:
    """With a check interval and no health round calling check_now, the server notices a deleted
    socket by its own timer."""
    server, _ = await started(sock_path, check_interval=0.05)
    try:
        sock_path.unlink()
        async with asyncio.timeout(5):
            while not sock_path.exists():
                await asyncio.sleep(0.02)
        assert statuses(await exchange(sock_path, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]
    finally:
        await server.close()
