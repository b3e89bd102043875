"""The status server's HTTP/1.1 layer (httptools) and its event fan-out: trickled heads, pipelined
errors, HTTP/1.0 streams, and subscribers that do not read."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lmsupervisor.statusd.broadcast import STREAM_BUFFER
from lmsupervisor.statusd.http1 import MAX_HEAD, RequestParser, chunk, response
from tests.unit.test_statusd import exchange, sock_path, started, statuses

__all__ = ["sock_path"]  # the fixture, imported for its name


def test_a_head_trickled_past_the_cap_is_431() -> None:
    """A header that never ends, fed a byte at a time, is refused once past the cap (not buffered forever)."""
    parser = RequestParser()
    parser.feed(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX: ")
    fed = 0
    while parser.error is None and fed < 4 * MAX_HEAD:
        parser.feed(b"a" * 64)
        fed += 64
    assert parser.error is not None
    assert (parser.error.status, fed <= MAX_HEAD + 64) == (431, True)


def test_pipelined_requests_before_an_error_are_answered_first() -> None:
    """Complete requests before a malformed one stay ready, in order; the error comes after them."""
    parser = RequestParser()
    parser.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
    assert ([r.target for r in parser.ready], parser.error and parser.error.status) == (["/a", "/b"], 400)


def test_a_pipelining_client_is_not_mistaken_for_a_big_head() -> None:
    """Many small pipelined requests over several reads never add up to a 431."""
    parser = RequestParser()
    data = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    for i in range(0, len(data), 16 * 1024):
        parser.feed(data[i : i + 16 * 1024])
    assert (len(parser.ready), parser.error) == (2000, None)


def test_keep_alive_follows_the_version_and_connection_header() -> None:
    """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless asked to keep it."""
    heads = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ]
    kept = []
    for head in heads:
        parser = RequestParser()
        parser.feed(head)
        kept.append(parser.ready[0].keep_alive)
    assert kept == [True, False, False, True]


def test_answers_are_framed() -> None:
    """An answer has its length, HEAD the same head without the body, chunks their size in hex."""
    whole = response(200, b'{"a": 1}\n')
    assert whole.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 9\r\n" in whole
    assert whole.endswith(b"\r\n\r\n" + b'{"a": 1}\n')
    assert response(200, b'{"a": 1}\n', head_only=True) == whole[: -len(b'{"a": 1}\n')]
    assert b"Connection: close\r\n" in response(404, b"", close=True)
    assert (chunk(b"x" * 26), chunk(b"")) == (b"1a\r\n" + b"x" * 26 + b"\r\n", b"0\r\n\r\n")


async def test_an_http10_subscriber_gets_a_stream_ended_by_closing(sock_path: Path) -> None:
    """HTTP/1.0 has no chunks: the NDJSON lines come raw and the end of the stream is the end of the connection."""
    server, sup = await started(sock_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock_path))
        writer.write(b"GET /v1/events HTTP/1.0\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            sup.publish({"type": "state", "state": "ready"})
            line = await reader.readline()
            for q in list(sup.subscribers):
                q.put_nowait(None)
            rest = await reader.read()
        writer.close()
        assert (b"Transfer-Encoding" in head, b"Connection: close" in head) == (False, True)
        assert (line, rest) == (b'{"type": "state", "state": "ready"}\n', b"")
    finally:
        await server.close()


async def test_events_reach_every_subscriber_with_one_subscription(sock_path: Path) -> None:
    """Many streams share one subscription to the supervisor; events published together arrive together, in order."""
    server, sup = await started(sock_path)
    try:
        clients = [await asyncio.open_unix_connection(str(sock_path)) for _ in range(20)]
        for _, w in clients:
            w.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            for r, _ in clients:
                await r.readuntil(b"\r\n\r\n")
            assert len(sup.subscribers) == 1
            sup.publish({"type": "restart", "count": 1})
            sup.publish({"type": "state", "state": "starting"})
            for r, _ in clients:
                size = int(await r.readuntil(b"\r\n"), 16)
                body = await r.readexactly(size)
                while body.count(b"\n") < 2:  # a batch may be split when the events come apart
                    await r.readuntil(b"\r\n")
                    size = int(await r.readuntil(b"\r\n"), 16)
                    body += await r.readexactly(size)
                assert body == b'{"type": "restart", "count": 1}\n{"type": "state", "state": "starting"}\n'
        for _, w in clients:
            w.close()
        async with asyncio.timeout(5):
            while sup.subscribers:
                await asyncio.sleep(0.01)
    finally:
        await server.close()


async def test_a_subscriber_that_does_not_read_is_dropped(sock_path: Path) -> None:
    """Once more than STREAM_BUFFER bytes wait for a subscriber it is cut off; the others go on."""
    server, sup = await started(sock_path)
    try:
        stuck_r, stuck_w = await asyncio.open_unix_connection(str(sock_path), limit=1024)
        stuck_w.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            await stuck_r.readuntil(b"\r\n\r\n")
        transport = stuck_w.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the client stops reading
        big = {"type": "model", "key": "k" * 4000}
        published = 0
        async with asyncio.timeout(10):
            while server.connections:
                for _ in range(8):
                    sup.publish(big)
                published += 8
                await asyncio.sleep(0.01)
        assert published * 4000 > STREAM_BUFFER  # kept until its buffer was full, not before
        health = await exchange(sock_path, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(health) == [200]
        stuck_w.close()
    finally:
        await server.close()
