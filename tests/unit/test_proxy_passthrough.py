"""The holding proxy's streamed-request passthrough (``proxy/passthrough.py``) in process, on
loopback sockets: a real :class:`HoldingProxy` with a supervisor that is always ready, in
front of an LM Studio stand-in scripted to the byte, so every framing LM Studio may use
(chunked, Content-Length, close) and every way it may fail is seen from the client's side.

No sleeps: each step waits on what the other side sent (an event, a future, EOF), each wait
bounded by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import pytest
from aiohttp.abc import AbstractStreamWriter
from prometheus_client import CollectorRegistry
from yarl import URL

from lmsupervisor.config import Config, parse
from lmsupervisor.core.messages import Message, Probed
from lmsupervisor.core.observed import ProbeResult, ServerSettings
from lmsupervisor.core.snapshot import LmStudioSeen, Snapshot, initial
from lmsupervisor.core.states import State
from lmsupervisor.proxy.passthrough import EARLY_LIMIT, Upstreams
from lmsupervisor.proxy.server import KEEP_BODY, HoldingProxy
from tests.scenarios.fakes import FakeClock

WAIT = 5.0  # seconds any one step may take on a busy machine before the test fails
KEPT = 60.0  # seconds the proxy keeps an idle connection to LM Studio: none expires during a test
CHAT = "/v1/chat/completions"
STREAM = b'{"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "stream": true}'
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
EVENTS = [b'data: {"choices": [{"delta": {"content": "%d"}}]}\n\n' % i for i in range(5)] + [b"data: [DONE]\n\n"]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


# -- LM Studio's stand-in --------------------------------------------------------------------
@dataclass
class Arrived:
    """One request as LM Studio read it (head and body, byte-exact), and its connection."""

    head: bytes
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: int = 0  # which connection it came on: LM Studio's connections counted from 0 as accepted

    def headers(self) -> list[tuple[str, str]]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines if line)]

    async def eof(self) -> None:
        """Wait until the proxy closes this connection (EOF or a reset)."""
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(ConnectionError):
                while await self.reader.read(65536):
                    pass


Script = Callable[[Arrived], Awaitable[bool | None]]  # True: the connection stays open for its next request


class Upstream:
    """Answers each request with the next script (bytes in the script's hands); the
    connection is closed when its script returns, unless it returns True: then the next
    request on it gets the next script. ``arrived`` has every request read; ``ended`` a
    future per connection (in the order accepted), done when the connection ended (the
    proxy closed it between requests, or a script ended it). A script's error fails the
    test at the end."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.arrived: asyncio.Queue[Arrived] = asyncio.Queue()
        self.ended: list[asyncio.Future[None]] = []
        self.finished: list[asyncio.Task[None]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self.finished:  # each ends once the proxy closed its connection: a test that failed may leave one
            await asyncio.wait(self.finished, timeout=WAIT)
        for task in self.finished:
            task.cancel()
        ended = await asyncio.gather(*self.finished, return_exceptions=True)
        errors = [e for e in ended if isinstance(e, Exception)]
        if errors and exc[0] is None:
            raise errors[0]

    async def closed(self, conn: int) -> None:
        """Wait until connection ``conn`` ended."""
        async with asyncio.timeout(WAIT):
            await asyncio.shield(self.ended[conn])

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.finished.append(task)
        conn, ended = len(self.ended), asyncio.get_running_loop().create_future()
        self.ended.append(ended)
        try:
            for served in range(1000):  # bounded: no test sends as many on one connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if served and not exc.partial:  # closed between requests
                        return
                    raise
                lengths = [v for n, v in Arrived(head, b"", reader, writer).headers() if n.lower() == "content-length"]
                body = await reader.readexactly(int(lengths[0])) if lengths else b""
                arrived = Arrived(head[:-4], body, reader, writer, conn)
                self.arrived.put_nowait(arrived)
                if not await self.scripts.pop(0)(arrived):
                    return
        finally:
            writer.close()
            ended.set_result(None)


def answer(*parts: bytes, keep: bool = False) -> Script:
    """A script that writes ``parts`` and closes the connection (keeps it open for the next
    request when ``keep``)."""

    async def script(up: Arrived) -> bool:
        for part in parts:
            up.writer.write(part)
            await up.writer.drain()
        return keep

    return script


def hang_up() -> Script:
    """A script that closes the connection without a byte of answer."""
    return answer()


# -- the proxy ----------------------------------------------------------------------------------
class Ready:
    """A supervisor that is always ready (or as :meth:`post` says), LM Studio at ``port``."""

    def __init__(self, config: Config, port: int, state: State = State.READY) -> None:
        self.config = config
        self.snap: Snapshot = dataclasses.replace(
            initial(config, 0.0),
            state=state,
            lmstudio=LmStudioSeen(server=ServerSettings(port=port, bind="127.0.0.1")),
        )
        self.observers: list[Callable[[Message, Snapshot], None]] = []

    def observe(self, observer: Callable[[Message, Snapshot], None]) -> None:
        self.observers.append(observer)

    def post(self, message: Message, state: State | None = None) -> None:
        if state is not None:
            self.snap = dataclasses.replace(self.snap, state=state)
        for observer in self.observers:
            observer(message, self.snap)

    def sign_of_life(self) -> None:
        """A good health probe: what an unanswered request waits for before it is sent again."""
        self.post(Probed(0, ProbeResult(ok=True, latency_ms=1.0)))


@dataclass
class Proxied:
    proxy: HoldingProxy
    supervisor: Ready
    registry: CollectorRegistry
    port: int

    def outcomes(self) -> dict[str, float]:
        """Requests counted by outcome (those counted at least once)."""
        counts = {
            o: self.registry.get_sample_value("lmsupervisor_proxy_requests_total", {"outcome": o}) or 0.0
            for o in ("served", "held_served", "timed_out", "failed", "abandoned")
        }
        return {o: n for o, n in counts.items() if n}

    async def until(self, predicate: Callable[[HoldingProxy], bool]) -> None:
        """Let the proxy's tasks run until ``predicate(proxy)`` holds (its counters change in
        steps no event marks)."""
        async with asyncio.timeout(WAIT):
            while not predicate(self.proxy):
                await asyncio.sleep(0)

    async def settled(self) -> None:
        """Wait until no request is in the proxy (the handler's last step after a client's EOF)."""
        await self.until(lambda proxy: proxy.in_flight == 0)


@contextlib.asynccontextmanager
async def proxied(
    upstream: Upstream,
    state: State = State.READY,
    clock: FakeClock | None = None,
    upstream_keepalive: float = KEPT,
    **proxy: Any,
) -> AsyncIterator[Proxied]:
    """The proxy in front of ``upstream``; ``proxy`` are ``[proxy]`` settings, its connections
    to LM Studio kept ``upstream_keepalive`` seconds."""
    config = parse({"proxy": {"listen": "127.0.0.1:0", "keepalive": 0} | proxy})
    supervisor = Ready(config, upstream.port, state)
    registry = CollectorRegistry()
    upstreams = Upstreams(WAIT, upstream_keepalive)
    server = HoldingProxy(supervisor, registry, lambda: (200, {"ready": True, "state": "ready"}), clock, upstreams)
    await server.start()
    assert server.listen is not None
    try:
        yield Proxied(server, supervisor, registry, int(server.listen.rsplit(":", 1)[1]))
    finally:
        await server.close(WAIT)


class Logged:
    """Stands in for the proxy's logger: keeps each event (name and fields) and wakes whoever
    waits for one by name."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._waiters: dict[str, asyncio.Event] = {}

    def _log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))
        self._waiters.setdefault(event, asyncio.Event()).set()

    info = warning = error = debug = _log

    async def event(self, name: str) -> None:
        """Wait until ``name`` was logged."""
        await self._waiters.setdefault(name, asyncio.Event()).wait()


@contextlib.contextmanager
def capture(proxy: HoldingProxy) -> Iterator[Logged]:
    """The proxy's log events while in the block."""
    logged, kept = Logged(), proxy.log
    proxy.log = logged
    try:
        yield logged
    finally:
        proxy.log = kept


# -- clients ------------------------------------------------------------------------------------
def request(
    body: bytes = STREAM,
    path: str = CHAT,
    version: str = "1.1",
    headers: Iterable[tuple[str, str]] = (),
    close: bool = True,
) -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: client.example", "Content-Type: application/json"]
    lines += [f"{n}: {v}" for n, v in headers]
    lines += [f"Content-Length: {len(body)}"] + (["Connection: close"] if close else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str, close: bool = True) -> bytes:
    """A ``GET`` (no body)."""
    return f"GET {path} HTTP/1.1\r\nHost: client.example\r\n{'Connection: close' if close else ''}\r\n\r\n".encode()


async def ask(port: int, data: bytes) -> bytes:
    """Send ``data`` and read the answer until the proxy closes the connection."""
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        try:
            return await reader.read()
        finally:
            writer.close()


@dataclass
class Answer:
    """An answer as the client read it: ``complete`` when its framing says it ended, ``rest``
    whatever followed its end on the connection."""

    status: int = 0
    reason: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    rest: bytes = b""

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[0] if values else None

    def events(self) -> list[bytes]:
        return [e + b"\n\n" for e in self.body.split(b"\n\n") if e]

    def last_error(self) -> dict[str, Any]:
        last = self.events()[-1]
        assert last.startswith(b"data: "), last
        error: dict[str, Any] = json.loads(last[len(b"data: ") :])["error"]
        return error


class _Parsed:
    def __init__(self) -> None:
        self.answer = Answer()
        self.parser = httptools.HttpResponseParser(self)

    def on_status(self, reason: bytes) -> None:
        self.answer.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.answer.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.answer.body += body

    def on_message_complete(self) -> None:
        self.answer.complete = True


class Client:
    """One client connection kept alive across requests (:func:`connected`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(self, data: bytes) -> Answer:
        """Send ``data`` and read one answer, up to its end as framed (or EOF)."""
        self.writer.write(data)
        raw = b""
        async with asyncio.timeout(WAIT):
            while not (b"\r\n\r\n" in raw and (got := parsed(raw)).complete):
                more = await self.reader.read(65536)
                if not more:
                    return parsed(raw) if b"\r\n\r\n" in raw else Answer()
                raw += more
        return got


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[Client]:
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()


def parsed(raw: bytes) -> Answer:
    """The first answer in ``raw`` (its body without chunk framing); a framing error fails the test."""
    p = _Parsed()
    head_end = raw.find(b"\r\n\r\n") + 4
    p.parser.feed_data(raw[:head_end])
    body = raw[head_end:]
    if not p.answer.complete:
        for i in range(len(body)):  # byte by byte: where the answer ends is where ``rest`` starts
            p.parser.feed_data(body[i : i + 1])
            if p.answer.complete:
                p.answer.rest = body[i + 1 :]
                break
    return p.answer


# -- 1. chunked -------------------------------------------------------------------------------
async def test_a_chunked_stream_is_passed_on_event_by_event_and_ends_cleanly() -> None:
    """Each event of a chunked SSE answer reaches the client before LM Studio sends the next
    (upstream waits for the client to have it), in order; ``data: [DONE]`` and the zero chunk
    end the client's answer with valid framing; counted ``served``."""
    seen = [asyncio.get_running_loop().create_future() for _ in EVENTS]

    async def script(up: Arrived) -> None:
        up.writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        for event, had in zip(EVENTS, seen, strict=True):
            up.writer.write(chunk(event))
            await had
        up.writer.write(b"0\r\n\r\n")

    async with Upstream(script) as upstream, proxied(upstream) as p:
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(request())
            raw = b""
            for n, had in enumerate(seen, 1):
                while raw.count(b"\n\n") < n:
                    raw += await reader.read(65536)
                had.set_result(None)
            raw += await reader.read()
            writer.close()
        await p.settled()
    got = parsed(raw)
    assert (got.status, got.complete, got.rest, got.events()) == (200, True, b"", EVENTS)
    assert (got.header("Transfer-Encoding"), got.header("Content-Type")) == ("chunked", "text/event-stream")
    assert p.outcomes() == {"served": 1}


@pytest.mark.parametrize(
    "partial", [pytest.param(b"", id="between-chunks"), pytest.param(EVENTS[2][:10], id="mid-chunk")]
)
async def test_a_chunked_stream_cut_ends_with_a_final_error_event(partial: bytes) -> None:
    """LM Studio closing before the zero chunk (between chunks, or inside one): the client's
    stream is LM Studio's whole events (an unfinished one is not passed on: no client sees a
    broken event), then its own ``data: {"error"}`` event (code ``lmstudio_failed``), with
    valid chunk framing to the end; counted ``failed``."""
    cut = b"%x\r\n%b" % (len(EVENTS[2]), partial) if partial else b""
    script = answer(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(EVENTS[0]) + chunk(EVENTS[1]) + cut)
    async with Upstream(script) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request()))
        await p.settled()
    assert (got.status, got.complete, got.rest) == (200, True, b"")
    assert before_error(got.body) == EVENTS[0] + EVENTS[1]
    assert got.last_error()["code"] == "lmstudio_failed"
    assert p.outcomes() == {"failed": 1}


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def before_error(body: bytes) -> bytes:
    """What an SSE answer carried before the proxy's last ``data: {"error": ...}`` event."""
    return body[: body.rindex(b'data: {"error": ')]


# -- 3. Content-Length and close-delimited -------------------------------------------------------
WHOLE = b"".join(EVENTS)


@pytest.mark.parametrize(
    ("framing", "sent", "outcome"),
    [
        pytest.param(b"Content-Length: %d\r\n" % len(WHOLE), WHOLE, "served", id="length"),
        pytest.param(b"", WHOLE, "served", id="close"),
        pytest.param(b"Connection: close\r\n", WHOLE, "served", id="close-said"),
    ],
)
async def test_a_stream_framed_by_length_or_close_is_passed_on_whole(framing: bytes, sent: bytes, outcome: str) -> None:
    """A Content-Length SSE answer, or one LM Studio ends by closing the connection after
    ``data: [DONE]``: every event reaches the client, whose answer ends with valid framing."""
    async with Upstream(answer(SSE_HEAD + framing + b"\r\n" + sent)) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request()))
        await p.settled()
    assert (got.status, got.complete, got.rest, got.events()) == (200, True, b"", EVENTS)
    assert p.outcomes() == {outcome: 1}


@pytest.mark.parametrize(
    ("framing", "sent"),
    [
        pytest.param(b"Content-Length: %d\r\n" % len(WHOLE), b"".join(EVENTS[:-1]), id="length-without-done"),
        pytest.param(b"Content-Length: %d\r\n" % len(WHOLE), WHOLE[:-20], id="length-mid-event"),
        pytest.param(b"", b"".join(EVENTS[:-1]), id="close-without-done"),
        pytest.param(b"", WHOLE[:-3], id="close-mid-done"),
        pytest.param(b"", b"".join(EVENTS[:3]) + EVENTS[3][:12], id="close-mid-event"),
    ],
)
async def test_a_stream_framed_by_length_or_close_and_cut_ends_with_a_final_error_event(
    framing: bytes, sent: bytes
) -> None:
    """A Content-Length SSE answer shorter than its length, or a close-delimited one without
    its last event (``data: [DONE]``): the client's stream is the whole events that came (an
    unfinished one is not passed on), then its own ``lmstudio_failed`` event, with valid
    framing (the proxy's own, not LM Studio's length)."""
    async with Upstream(answer(SSE_HEAD + framing + b"\r\n" + sent)) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request()))
        await p.settled()
    assert (got.status, got.complete, got.rest) == (200, True, b"")
    assert before_error(got.body) == sent[: sent.rfind(b"\n\n") + 2]
    assert got.last_error()["code"] == "lmstudio_failed"
    assert p.outcomes() == {"failed": 1}


# -- 4, 5. an answer that is not SSE ------------------------------------------------------------
ERROR = b'{"error": {"message": "Model unloaded.", "type": "invalid_request_error"}}'
HOPS = (
    b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nTrailer: X-Checksum\r\n"
    b"Connection: X-Hop-Named\r\nX-Hop-Named: 1\r\n"  # named by Connection: hop-by-hop too (RFC 9110 7.6.1)
)
THEIRS = [("X-Request-Id", "req-7"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Powered-By", "Express")]
OWN_HEAD = b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in THEIRS)


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        pytest.param(b"Content-Length: %d\r\n" % len(ERROR), ERROR, id="length"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n", chunk(ERROR[:9]) + chunk(ERROR[9:]) + b"0\r\n\r\n", id="chunked"
        ),
        pytest.param(b"Connection: close\r\n", ERROR, id="close"),
    ],
)
async def test_a_json_answer_to_a_stream_request_is_passed_on_as_it_is(framing: bytes, body: bytes) -> None:
    """LM Studio's JSON error to a stream request: the client gets its status and reason,
    every header but the hop-by-hop ones (repeated ones repeated), and the body byte-exact."""
    head = b"HTTP/1.1 400 Bad Model\r\nContent-Type: application/json; charset=utf-8\r\n" + OWN_HEAD + HOPS
    async with Upstream(answer(head + framing + b"\r\n" + body)) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request()))
        await p.settled()
    assert (got.status, got.reason, got.body, got.complete, got.rest) == (400, b"Bad Model", ERROR, True, b"")
    assert [h for h in got.headers if h in THEIRS] == THEIRS
    assert got.header("Content-Type") == "application/json; charset=utf-8"
    hop = {"keep-alive", "proxy-authenticate", "upgrade", "trailer", "x-hop-named"}
    assert [n for n, _ in got.headers if n.lower() in hop] == []
    assert p.outcomes() == {"served": 1}


async def test_a_json_answer_cut_before_its_first_byte_is_a_502() -> None:
    """A non-SSE head whose body never came (LM Studio closed first): nothing of it was passed
    on, so the client gets a clean 502 ``lmstudio_failed``; counted ``failed``."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
    async with Upstream(answer(head)) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request()))
        await p.settled()
    assert (got.status, got.complete, json.loads(got.body)["error"]["code"]) == (502, True, "lmstudio_failed")
    assert p.outcomes() == {"failed": 1}


@pytest.mark.parametrize(
    ("framing", "sent"),
    [
        pytest.param(b"Content-Length: %d\r\n" % len(ERROR), ERROR[:20], id="length"),
        pytest.param(b"Transfer-Encoding: chunked\r\n", chunk(ERROR[:20]) + b"30\r\nabc", id="chunked"),
    ],
)
async def test_a_json_answer_cut_after_its_first_bytes_is_short_and_closed(framing: bytes, sent: bytes) -> None:
    """A non-SSE answer cut mid-body: the client has its head and the bytes that came, then
    the connection closes (its framing unfinished: the client knows it is short, never waits)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + b"\r\n"
    async with Upstream(answer(head + sent)) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request(close=False)))  # EOF comes from the proxy, not from "Connection: close"
        await p.settled()
    assert (got.status, got.complete) == (200, False)
    assert got.body.startswith(ERROR[:20])
    assert p.outcomes() == {"failed": 1}


# -- 6. unanswered ---------------------------------------------------------------------------------
GARBAGE = b"SSH-2.0-OpenSSH_9.6\r\n\r\n"


async def babble(up: Arrived) -> None:
    """Answer something that is not HTTP, and keep the connection open: the proxy must end it."""
    up.writer.write(GARBAGE)
    await up.eof()


UNANSWERED = [pytest.param(hang_up(), id="closed"), pytest.param(babble, id="garbage")]


@pytest.mark.parametrize("first", UNANSWERED)
async def test_an_unanswered_stream_request_is_held_and_sent_again_after_a_sign_of_life(first: Script) -> None:
    """LM Studio read the request and closed without an answer (or answered something that is
    not HTTP and kept the connection open): the request is held until LM Studio shows it answers, then sent once more,
    byte-exact, and served; counted ``held_served``."""
    second = answer(SSE_HEAD + b"Content-Length: %d\r\n\r\n" % len(WHOLE) + WHOLE)
    async with Upstream(first, second) as upstream, proxied(upstream) as p:
        with capture(p.proxy) as logged:
            client = asyncio.ensure_future(ask(p.port, request()))
            async with asyncio.timeout(WAIT):
                sent = await upstream.arrived.get()
                await logged.event("proxy_request_unanswered")  # held now: no second try before a sign
            assert (upstream.arrived.empty(), p.proxy.held) == (True, 1)
            p.supervisor.sign_of_life()
            got = parsed(await client)
            again = upstream.arrived.get_nowait()
        await p.settled()
    assert (again.head, again.body) == (sent.head, sent.body)
    assert (got.status, got.complete, got.events()) == (200, True, EVENTS)
    assert p.outcomes() == {"held_served": 1}


@pytest.mark.parametrize("first", UNANSWERED)
async def test_an_unanswered_stream_request_is_a_502_without_resend(first: Script) -> None:
    """With ``resend_unanswered = false`` the same request is answered 502 ``lmstudio_failed`` at once."""
    async with Upstream(first) as upstream, proxied(upstream, resend_unanswered=False) as p:
        got = parsed(await ask(p.port, request()))
        await p.settled()
    assert (got.status, json.loads(got.body)["error"]["code"]) == (502, "lmstudio_failed")
    assert (upstream.arrived.qsize(), p.outcomes()) == (1, {"failed": 1})


# -- 7, 8. an early hint; an HTTP/1.0 client --------------------------------------------------------
async def test_an_early_hints_head_before_the_answer_is_skipped() -> None:
    """``103 Early Hints`` (its own headers) then the real answer: the client sees only the
    answer, with none of the hint's headers."""
    hint = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    sse = SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunk(e) for e in EVENTS) + b"0\r\n\r\n"
    async with Upstream(answer(hint, sse)) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request()))
        await p.settled()
    assert (got.status, got.complete, got.events(), got.header("Link")) == (200, True, EVENTS, None)
    assert p.outcomes() == {"served": 1}


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        pytest.param(
            b"Transfer-Encoding: chunked\r\n", b"".join(chunk(e) for e in EVENTS) + b"0\r\n\r\n", id="chunked"
        ),
        pytest.param(b"", WHOLE, id="close"),
    ],
)
async def test_an_http_1_0_client_gets_the_stream_ended_by_close(framing: bytes, body: bytes) -> None:
    """HTTP/1.0 knows no chunks: the stream is written as it is, ended by closing the connection."""
    async with Upstream(answer(SSE_HEAD + framing + b"\r\n" + body)) as upstream, proxied(upstream) as p:
        raw = await ask(p.port, request(version="1.0", close=False))
        await p.settled()
    head, _, got = raw.partition(b"\r\n\r\n")
    assert (head.startswith(b"HTTP/1.0 200 "), b"transfer-encoding" in head.lower(), got) == (True, False, WHOLE)
    assert p.outcomes() == {"served": 1}


# -- 10. a client that leaves -----------------------------------------------------------------------
def leave(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (SO_LINGER 0), as a killed client does."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


@pytest.mark.parametrize(
    "busy", [pytest.param(False, id="upstream-waiting"), pytest.param(True, id="upstream-sending")]
)
async def test_a_client_leaving_mid_stream_closes_lmstudio_s_connection(busy: bool) -> None:
    """The client leaves after the first event, while LM Studio waits to send more or keeps
    sending: LM Studio's connection is closed by the proxy (it sees EOF or a reset), the
    request is counted ``abandoned`` (not ``failed``), nothing stays in flight."""
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def script(up: Arrived) -> None:
        up.writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(EVENTS[0]))
        if busy:
            with contextlib.suppress(ConnectionError):
                for _ in range(100_000):  # bounded: the proxy closes long before
                    up.writer.write(chunk(EVENTS[1]))
                    await up.writer.drain()
                    if up.reader.at_eof():
                        break
        await up.eof()
        closed.set_result(None)

    async with Upstream(script) as upstream, proxied(upstream) as p:
        with capture(p.proxy) as logged:
            async with asyncio.timeout(WAIT):
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                writer.write(request())
                await reader.readuntil(b"\n\n")
                leave(writer)
                await closed
            await p.settled()
    assert (p.outcomes(), p.proxy.in_flight) == ({"abandoned": 1}, 0)
    assert [e for e, _ in logged.events if e == "proxy_request_failed"] == []


# -- 11. the request as LM Studio gets it -------------------------------------------------------------
async def test_the_request_reaches_lmstudio_byte_exact_with_its_own_headers_and_not_the_hops() -> None:
    """``Authorization`` and the client's other headers pass unchanged (repeated ones repeated);
    hop-by-hop ones and ``Expect`` do not; ``Host`` and ``Content-Length`` are the proxy's
    (LM Studio's address, the body's length); the body arrives byte-exact."""
    body = STREAM[:-1] + ', "note": "caf\xc3\xa9 \\u00e9 \\r\\n"}'.encode("latin-1")
    mine = [("Authorization", "Bearer sk-lm-secret"), ("X-Trace", "1"), ("X-Trace", "2"), ("User-Agent", "ua/1")]
    hops = [
        ("Connection", "TE, close, X-Hop-Named"),  # the client's: not the proxy's to LM Studio
        ("X-Hop-Named", "1"),  # named by Connection: hop-by-hop too (RFC 9110 7.6.1)
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("Proxy-Connection", "keep-alive"),
        ("Expect", "100-continue"),
    ]
    done = answer(SSE_HEAD + b"Content-Length: %d\r\n\r\n" % len(WHOLE) + WHOLE)
    async with Upstream(done) as upstream, proxied(upstream) as p:
        raw = await ask(p.port, request(body, headers=mine + hops, close=False))
        got = parsed(raw.removeprefix(CONTINUE))
        sent = upstream.arrived.get_nowait()
    names = [n.lower() for n, _ in sent.headers()]
    assert (raw.startswith(CONTINUE), got.status, sent.body) == (True, 200, body)  # Expect answered by the proxy
    assert sent.head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert [h for h in sent.headers() if h in mine] == mine
    assert [n for n, _ in hops if n.lower() in names] == []  # the proxy's connection is kept alive: HTTP/1.1's default
    assert [v for n, v in sent.headers() if n.lower() in ("host", "content-length")] == [
        f"127.0.0.1:{upstream.port}",
        str(len(body)),
    ]
    assert ("Content-Type", "application/json") in sent.headers()


# -- a stream held first --------------------------------------------------------------------------
async def test_a_stream_held_with_keepalive_comments_then_passed_on_keeps_its_chunk_framing() -> None:
    """A streamed request held while LM Studio recovers gets its SSE head and a keepalive
    comment; once LM Studio serves, its chunked answer follows in the same (chunked) answer,
    validly framed to the end; counted ``held_served``."""
    clock = FakeClock()
    sse = SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunk(e) for e in EVENTS) + b"0\r\n\r\n"
    async with Upstream(answer(sse)) as upstream, proxied(upstream, State.STARTING, clock, keepalive=10) as p:
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(request())
            await p.until(lambda proxy: proxy.held == 1)
            clock.now += 10
            p.supervisor.post(Probed(0, ProbeResult(ok=False, latency_ms=1.0)), State.LOADING_MODELS)  # wakes the hold
            raw = await reader.readuntil(b"\n\n")  # the head and the first comment
            p.supervisor.post(Probed(0, ProbeResult(ok=True, latency_ms=1.0)), State.READY)
            raw += await reader.read()
            writer.close()
        await p.settled()
    got = parsed(raw)
    assert (got.status, got.complete, got.rest) == (200, True, b"")
    assert got.events() == [b": lmstudio recovering (loading_models)\n\n", *EVENTS]
    assert p.outcomes() == {"held_served": 1}


# -- 9. backpressure -------------------------------------------------------------------------------
PIECE = 64 * 1024  # bytes of each SSE event LM Studio sends
PIECES = 1024  # 64 MiB: more than loopback's socket buffers can hold (tcp_rmem/tcp_wmem maxima)
STILL = 200  # loop turns without LM Studio's write moving on: the proxy stopped reading it
HELD_MAX = 4 * 1024 * 1024  # bytes the proxy may allocate while its client does not read


def piece(i: int) -> bytes:
    return b"data: %08d " % i + b"x" * (PIECE - 17) + b"\n\n"


async def test_a_client_that_does_not_read_stops_the_proxy_reading_lmstudio() -> None:
    """LM Studio sends 64 MiB to a client that reads nothing: the proxy stops reading LM
    Studio (its writes stop draining before the end) and allocates no more than a few MiB
    meanwhile; once the client reads, every byte arrives, in order."""
    sent, moved, finished = hashlib.sha256(), [0], asyncio.get_running_loop().create_future()

    async def script(up: Arrived) -> None:
        up.writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIECE)
        up.writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(PIECES):
            data = piece(i)
            sent.update(data)
            up.writer.write(chunk(data))
            await up.writer.drain()
            moved[0] += len(data)
        up.writer.write(b"0\r\n\r\n")
        finished.set_result(None)

    async with Upstream(script) as upstream, proxied(upstream) as p:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PIECE)
        client.setblocking(False)
        async with asyncio.timeout(WAIT):
            await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", p.port))
            reader, writer = await asyncio.open_connection(sock=client)
            writer.write(request())
            await reader.readuntil(b"\r\n\r\n")
        tracemalloc.start()
        try:
            async with asyncio.timeout(WAIT):
                still, last = 0, -1
                while still < STILL and not finished.done():
                    still, last = (still + 1, last) if moved[0] == last else (0, moved[0])
                    await asyncio.sleep(0)
            held = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (finished.done(), held < HELD_MAX) == (False, True)
        got = hashlib.sha256()
        parser = httptools.HttpResponseParser(_Hashing(got))
        parser.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        async with asyncio.timeout(WAIT * 4):
            while data := await reader.read(1 << 20):
                parser.feed_data(data)
            writer.close()
        await p.settled()
    assert (got.hexdigest(), finished.done()) == (sent.hexdigest(), True)
    assert p.outcomes() == {"served": 1}


class _Hashing:
    def __init__(self, into: Any) -> None:
        self.into = into

    def on_body(self, body: bytes) -> None:
        self.into.update(body)


# -- 12. the proxy's kept-alive connections to LM Studio (Upstreams) ---------------------------------
PLAIN = b'{"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}'
REPLY = b'{"choices": [{"message": {"content": "hello"}}]}'
SECOND = b'{"second": true}'
JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def json_answer(body: bytes, head: bytes = JSON_HEAD) -> bytes:
    """An answer with ``body`` framed by its Content-Length."""
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked_answer(body: bytes) -> bytes:
    return JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(body[:10]) + chunk(body[10:]) + b"0\r\n\r\n"


def conns(upstream: Upstream) -> list[int]:
    """The connection each request came on, in order (takes them from ``arrived``)."""
    return [upstream.arrived.get_nowait().conn for _ in range(upstream.arrived.qsize())]


SSE_CHUNKED = SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunk(e) for e in EVENTS) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("body", "first", "expected"),
    [
        pytest.param(PLAIN, json_answer(REPLY), REPLY, id="length"),
        pytest.param(PLAIN, chunked_answer(REPLY), REPLY, id="chunked"),
        pytest.param(STREAM, SSE_CHUNKED, WHOLE, id="sse-chunked"),
        pytest.param(STREAM, SSE_HEAD + b"Content-Length: %d\r\n\r\n" % len(WHOLE) + WHOLE, WHOLE, id="sse-length"),
    ],
)
async def test_requests_one_after_another_go_on_one_kept_connection(body: bytes, first: bytes, expected: bytes) -> None:
    """A client's two requests one after the other: LM Studio gets both on one connection
    (the first answer ended as framed and LM Studio keeps it alive), each byte-exact, and
    the client gets both answers whole, nothing after either."""
    scripts = answer(first, keep=True), answer(json_answer(SECOND), keep=True)
    async with Upstream(*scripts) as upstream, proxied(upstream) as p:
        async with connected(p.port) as client:
            one = await client.ask(request(body, close=False))
            two = await client.ask(request(PLAIN, close=False))
        await p.settled()
        sent = [upstream.arrived.get_nowait() for _ in range(2)]
    assert [(a.conn, a.body) for a in sent] == [(0, body), (0, PLAIN)]
    assert len(upstream.ended) == 1
    assert (one.status, one.complete, one.body, one.rest) == (200, True, expected, b"")
    assert (two.status, two.complete, two.body, two.rest) == (200, True, SECOND, b"")
    assert p.outcomes() == {"served": 2}


@pytest.mark.parametrize(
    ("first", "outcomes"),
    [
        pytest.param(
            answer(json_answer(REPLY, JSON_HEAD + b"Connection: close\r\n"), keep=True),
            {"served": 2},
            id="connection-close",
        ),
        pytest.param(
            answer(json_answer(REPLY, b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"), keep=True),
            {"served": 2},
            id="http-1.0",
        ),
        pytest.param(answer(JSON_HEAD + b"\r\n" + REPLY), {"served": 2}, id="close-framed"),
        pytest.param(answer(json_answer(REPLY)[:-10]), {"failed": 1, "served": 1}, id="cut"),
        pytest.param(
            answer(JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(REPLY[:10]) + b"zz\r\n", keep=True),
            {"failed": 1, "served": 1},
            id="cut-unreadable",
        ),
    ],
)
async def test_a_connection_whose_answer_did_not_end_kept_alive_is_not_used_again(
    first: Script, outcomes: dict[str, float]
) -> None:
    """An answer LM Studio ends with ``Connection: close``, an HTTP/1.0 one, one framed by
    closing the connection, one cut, one cut by bytes that are not chunk framing (LM Studio
    keeping the connection open where it can): the connection is closed, and the next
    request goes on a new one and is served."""
    async with Upstream(first, answer(json_answer(SECOND), keep=True)) as upstream, proxied(upstream) as p:
        await ask(p.port, request(PLAIN))
        await upstream.closed(0)
        got = parsed(await ask(p.port, request(PLAIN)))
        await p.settled()
    assert (got.status, got.complete, got.body) == (200, True, SECOND)
    assert (conns(upstream), p.outcomes()) == ([0, 1], outcomes)


async def test_a_connection_whose_client_left_mid_answer_is_not_used_again() -> None:
    """The client leaves after a stream's first event: LM Studio's connection is closed (the
    rest of that answer must not be read as the next one's), the next request goes on a new
    one and is served."""

    async def script(up: Arrived) -> None:
        up.writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(EVENTS[0]))
        await up.eof()

    async with Upstream(script, answer(json_answer(SECOND), keep=True)) as upstream, proxied(upstream) as p:
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(request())
            await reader.readuntil(b"\n\n")
            leave(writer)
        await upstream.closed(0)
        got = parsed(await ask(p.port, request(PLAIN)))
        await p.settled()
    assert (got.status, got.complete, got.body) == (200, True, SECOND)
    assert (conns(upstream), p.outcomes()) == ([0, 1], {"abandoned": 1, "served": 1})


async def test_an_idle_kept_connection_is_closed_after_keepalive_seconds() -> None:
    """A connection left idle for the pool's ``keepalive`` seconds is closed by the proxy (LM
    Studio sees EOF, before its own timeout could close it under a request); the next
    request opens a new one."""
    scripts = answer(json_answer(REPLY), keep=True), answer(json_answer(SECOND), keep=True)
    async with Upstream(*scripts) as upstream, proxied(upstream, upstream_keepalive=0.05) as p:
        await ask(p.port, request(PLAIN))
        await upstream.closed(0)
        got = parsed(await ask(p.port, request(PLAIN)))
        await p.settled()
    assert (got.status, got.body, conns(upstream), p.outcomes()) == (200, SECOND, [0, 1], {"served": 2})


async def reset(up: Arrived) -> None:
    """A script that resets the connection (RST) without a byte of answer."""
    leave(up.writer)


STALE = [pytest.param(hang_up(), id="closed"), pytest.param(reset, id="reset")]


def hold_count(p: Proxied) -> float:
    """Requests held so far (the hold histogram's count)."""
    return p.registry.get_sample_value("lmsupervisor_proxy_hold_seconds_count") or 0.0


@pytest.mark.parametrize("stale", [*STALE, pytest.param(None, id="closed-after-answer")])
async def test_a_get_on_a_kept_connection_lmstudio_closed_goes_on_a_new_one_at_once(stale: Script | None) -> None:
    """LM Studio closed (or reset) the idle connection as the next request came (it read
    the request, answered nothing), or right after the answer before it: a ``GET`` is sent
    again at once on a new connection, not held, no 502; counted ``served``."""
    first = answer(json_answer(REPLY), keep=stale is not None)
    scripts = [first] + ([stale] if stale is not None else []) + [answer(json_answer(SECOND), keep=True)]
    async with Upstream(*scripts) as upstream, proxied(upstream) as p:
        await ask(p.port, request(PLAIN))
        await p.settled()
        with capture(p.proxy) as logged:
            got = parsed(await ask(p.port, get("/v1/models")))
            await p.settled()
        sent = [upstream.arrived.get_nowait() for _ in range(upstream.arrived.qsize())]
    assert (got.status, got.complete, got.body) == (200, True, SECOND)
    assert [(a.conn, a.head.split(b" ")[0]) for a in sent][-1] == (1, b"GET")
    assert [(a.conn, a.head.split(b" ")[0]) for a in sent][:-1] in ([(0, b"POST")], [(0, b"POST"), (0, b"GET")])
    assert (p.outcomes(), hold_count(p), logged.events) == ({"served": 2}, 0, [])


@pytest.mark.parametrize("stale", STALE)
async def test_a_post_on_a_kept_connection_lmstudio_closed_is_held_and_sent_again(stale: Script) -> None:
    """The same for a ``POST`` (not idempotent: LM Studio may have acted on it): it takes the
    unanswered path, held until LM Studio shows it answers, then sent once more,
    byte-exact, on a new connection; counted ``held_served``."""
    scripts = answer(json_answer(REPLY), keep=True), stale, answer(json_answer(SECOND), keep=True)
    async with Upstream(*scripts) as upstream, proxied(upstream) as p:
        await ask(p.port, request(PLAIN))
        await p.settled()
        with capture(p.proxy) as logged:
            client = asyncio.ensure_future(ask(p.port, request(STREAM[:-1] + b', "n": 2}')))
            async with asyncio.timeout(WAIT):
                await logged.event("proxy_request_unanswered")
            assert (upstream.arrived.qsize(), p.proxy.held) == (2, 1)
            p.supervisor.sign_of_life()
            got = parsed(await client)
        await p.settled()
    sent = [upstream.arrived.get_nowait() for _ in range(3)]
    assert [a.conn for a in sent] == [0, 0, 1]
    assert (sent[2].head, sent[2].body) == (sent[1].head, sent[1].body)
    assert (got.status, got.complete, got.body) == (200, True, SECOND)
    assert p.outcomes() == {"served": 1, "held_served": 1}


UNSOLICITED = json_answer(b'{"unsolicited": true}')


@pytest.mark.parametrize("with_answer", [pytest.param(False, id="idle"), pytest.param(True, id="with-the-answer")])
async def test_bytes_lmstudio_sends_on_an_idle_connection_close_it(with_answer: bool) -> None:
    """LM Studio sends something on a connection with no request on it (later, or in the
    same write as the answer, after its end): it reaches no client, the connection is
    closed, the next request goes on a new one and is served."""
    idle = asyncio.get_running_loop().create_future()

    async def script(up: Arrived) -> bool:
        up.writer.write(json_answer(REPLY) + (UNSOLICITED if with_answer else b""))
        await idle
        up.writer.write(b"" if with_answer else UNSOLICITED)
        return True  # the next request would come here, were the connection kept

    async with Upstream(script, answer(json_answer(SECOND), keep=True)) as upstream, proxied(upstream) as p:
        first = parsed(await ask(p.port, request(PLAIN)))
        await p.settled()
        assert (first.status, first.body, first.rest, first.header("Content-Length")) == (
            200,
            REPLY,
            b"",
            str(len(REPLY)),
        )
        idle.set_result(None)
        await upstream.closed(0)
        got = parsed(await ask(p.port, request(PLAIN)))
        await p.settled()
    assert (got.status, got.body, conns(upstream), p.outcomes()) == (200, SECOND, [0, 1], {"served": 2})


async def test_many_clients_get_their_own_answers_on_no_more_connections_than_clients() -> None:
    """32 clients, each sending 4 requests one after another on its own connection: every
    client gets the answers to its own requests (LM Studio echoes each body, alternately
    Content-Length and chunked), and LM Studio sees no more connections than clients."""
    clients, each = 32, 4

    async def echo(up: Arrived) -> bool:
        up.writer.write(json_answer(up.body) if up.body[-2:-1] in b"02468" else chunked_answer(up.body))
        return True

    async def one(c: int) -> list[bytes]:
        async with connected(p.port) as client:
            return [(await client.ask(request(b'{"id": "%d-%d"}' % (c, n), close=False))).body for n in range(each)]

    async with Upstream(*[echo] * (clients * each)) as upstream, proxied(upstream) as p:
        got = await asyncio.gather(*(one(c) for c in range(clients)))
        await p.settled()
    assert got == [[b'{"id": "%d-%d"}' % (c, n) for n in range(each)] for c in range(clients)]
    assert len(upstream.ended) <= clients
    assert p.outcomes() == {"served": clients * each}


async def test_closing_the_proxy_closes_its_idle_connections_to_lmstudio() -> None:
    """At shutdown the proxy closes the connections it keeps for later requests (LM Studio
    sees EOF), long before their keepalive would."""
    async with Upstream(answer(json_answer(REPLY), keep=True)) as upstream, proxied(upstream) as p:
        await ask(p.port, request(PLAIN))
        await p.settled()
        assert not upstream.ended[0].done()
        await p.proxy.close(WAIT)
        await upstream.closed(0)


@contextlib.asynccontextmanager
async def pooled(upstream: Upstream) -> AsyncIterator[tuple[Upstreams, URL]]:
    """The proxy's pool of connections alone, and ``upstream``'s address."""
    pool = Upstreams(WAIT, KEPT)
    try:
        yield pool, URL(f"http://127.0.0.1:{upstream.port}")
    finally:
        pool.close()


class Behind(asyncio.Transport):
    """A client's transport always over its high-water mark (a client that reads nothing);
    ``written`` has what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 1 << 20

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16 * 1024, 64 * 1024)


class Drained:
    """The client's writer: its ``drain`` returns once the client caught up, or fails as when
    the client left (``left``)."""

    def __init__(self, left: bool) -> None:
        self.left = left

    async def drain(self) -> None:
        if self.left:
            raise ConnectionResetError("Connection lost")


@pytest.mark.parametrize("left", [pytest.param(False, id="client-caught-up"), pytest.param(True, id="client-left")])
async def test_a_kept_connection_paused_for_a_slow_client_as_its_answer_ended_is_read_again(left: bool) -> None:
    """The body's end comes in one read while the client is behind: the proxy stops reading
    LM Studio at that piece, the answer ends, then the client catches up or leaves while the
    proxy waits for it. The answer ended as framed, so the connection is kept, and reading
    resumed: the next request on it gets its answer (no hang).

    On the pool directly, with the client's side faked: through a real client, which read
    brings the body's end and whether the client's transport is then over its high-water
    mark depend on the kernel's socket buffers."""
    body_now = asyncio.get_running_loop().create_future()

    async def script(up: Arrived) -> bool:
        up.writer.write(JSON_HEAD + b"Content-Length: %d\r\n\r\n" % len(REPLY))
        await body_now
        up.writer.write(REPLY)  # one small write: the body and its end come in one read
        return True

    async with Upstream(script, answer(json_answer(SECOND), keep=True)) as upstream, pooled(upstream) as (pool, url):
        async with asyncio.timeout(WAIT):
            ex = await pool.exchange(url, "POST", CHAT, [], PLAIN)
            client = Behind()
            passing = asyncio.ensure_future(ex.pass_on(client, False, cast(AbstractStreamWriter, Drained(left))))
            body_now.set_result(None)  # after pass_on's first step (FIFO): the body comes to an attached client
            with pytest.raises(ConnectionResetError) if left else contextlib.nullcontext():
                await passing
            ex.release()
            again = await pool.exchange(url, "POST", CHAT, [], PLAIN)
            got = await again.whole(len(SECOND) + 1)
            again.release()
    assert (client.written, ex.cut, again.reused, got) == (REPLY, None, True, SECOND)
    assert conns(upstream) == [0, 0]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_request_as_a_kept_connection_is_closed_by_the_proxy_goes_on_a_new_one(method: str) -> None:
    """The proxy closes an idle connection (its keepalive ran out, or LM Studio sent bytes on
    it) in the same loop turn as a request asks for one, before asyncio reports it lost:
    the request goes on a new connection and is answered, a ``POST`` too (it never left the
    proxy: nothing to hold)."""
    scripts = answer(json_answer(REPLY), keep=True), answer(json_answer(SECOND), keep=True)
    async with Upstream(*scripts) as upstream, pooled(upstream) as (pool, url):
        async with asyncio.timeout(WAIT):
            ex = await pool.exchange(url, "POST", CHAT, [], PLAIN)
            assert await ex.whole(len(REPLY) + 1) == REPLY
            ex.release()
            ex.close()  # what its keepalive timer does
            again = await pool.exchange(url, method, CHAT, [], PLAIN if method == "POST" else None)
            got = await again.whole(len(SECOND) + 1)
            again.release()
    assert (again.reused, got, conns(upstream)) == (False, SECOND, [0, 1])


async def test_a_stream_answering_a_body_too_large_to_keep_is_passed_on_in_whole_events_too() -> None:
    """A request body over KEEP_BODY goes through aiohttp's client (streamed on, chunked: not
    kept, so not the passthrough); its SSE answer cut mid-event reaches the client as the
    whole events and then the proxy's ``lmstudio_failed`` event, as on the passthrough."""
    big = b'{"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "%b"}]}' % (
        b"x" * (KEEP_BODY + 1)
    )

    async def script(up: Arrived) -> bool:
        seen = b""
        for _ in range(10_000):  # bounded: the body is ~1 MiB
            data = await up.reader.read(65536)
            seen = (seen + data)[-5:]
            if not data or seen == b"0\r\n\r\n":  # the streamed request body's last chunk
                break
        cut = b"%x\r\n%b" % (len(EVENTS[2]), EVENTS[2][:10])
        up.writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(EVENTS[0]) + chunk(EVENTS[1]) + cut)
        await up.writer.drain()
        return False

    async with Upstream(script) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request(big)))
        sent = upstream.arrived.get_nowait()
        await p.settled()
    assert [v for n, v in sent.headers() if n.lower() == "transfer-encoding"] == ["chunked"]  # aiohttp's client
    assert (got.status, got.complete, got.rest) == (200, True, b"")
    assert before_error(got.body) == EVENTS[0] + EVENTS[1]
    assert got.last_error()["code"] == "lmstudio_failed"
    assert p.outcomes() == {"failed": 1}


# -- the review's findings ------------------------------------------------------------------------
async def test_closing_the_proxy_ends_a_request_in_flight_and_its_connection_to_lmstudio() -> None:
    """At shutdown a stream still being answered past the stage's timeout is ended: its
    connection to LM Studio is closed (as aiohttp's client session did on its path), it is
    counted failed, and nothing stays in flight."""
    ended = asyncio.get_running_loop().create_future()

    async def script(up: Arrived) -> bool:
        up.writer.write(SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(EVENTS[0]))
        await up.writer.drain()
        with contextlib.suppress(ConnectionError):
            await up.reader.read()  # until the proxy closes it
        ended.set_result(None)
        return False

    async with Upstream(script) as upstream, proxied(upstream) as p, connected(p.port) as client:
        client.writer.write(request())
        async with asyncio.timeout(WAIT):
            await client.reader.readuntil(b"\n\n")  # the first event: the stream is under way
            await p.proxy.close(0.05)  # the stage's timeout passes with the stream still open
            await asyncio.shield(ended)
        await p.settled()
        assert p.outcomes() == {"failed": 1}


async def test_an_answer_nobody_takes_yet_is_not_read_past_early_limit() -> None:
    """Bytes of an answer that nobody takes yet (the handler waits on a slow client) are
    read up to EARLY_LIMIT, then LM Studio is not read until they are taken: memory stays
    bounded whatever the answer's size."""
    size = 4 * EARLY_LIMIT

    async def script(up: Arrived) -> bool:
        up.writer.write(JSON_HEAD + b"Content-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            up.writer.write(b"x" * 65536)
            await up.writer.drain()
        return False

    async with Upstream(script) as upstream, pooled(upstream) as (pool, url):
        async with asyncio.timeout(WAIT):
            conn = await pool.exchange(url, "GET", "/big", [], None)
            while conn.buffered <= EARLY_LIMIT:  # bounded by the timeout; each turn reads a piece
                await asyncio.sleep(0)
            for _ in range(50):  # LM Studio's bytes already in flight arrive; no more are read
                await asyncio.sleep(0)
            held = conn.buffered
            taken = len(await conn.first())
        conn.close()
    assert EARLY_LIMIT < held <= EARLY_LIMIT + 256 * 1024  # one read of asyncio's at most past the limit
    assert taken == held


@pytest.mark.parametrize("value", [b"caf\xc3\xa9", b"\xe2\x9c\x93 ok"])
async def test_answer_headers_in_utf_8_reach_the_client_byte_exact(value: bytes) -> None:
    """LM Studio's header bytes go on as they came (read and written as aiohttp does: UTF-8,
    surrogate escapes), not decoded as Latin-1 and encoded again as UTF-8."""
    head = JSON_HEAD + b"X-Name: " + value + b"\r\n"
    async with Upstream(answer(json_answer(REPLY, head))) as upstream, proxied(upstream) as p:
        raw = await ask(p.port, request(PLAIN))
        await p.settled()
    assert [line for line in raw.split(b"\r\n") if line.startswith(b"X-Name")] == [b"X-Name: " + value]


async def test_a_reset_inside_a_close_framed_answer_is_a_cut_not_its_end() -> None:
    """A close-framed answer ends when LM Studio closes the connection; a reset (RST) is a
    failure: the client's answer is cut short (never a complete answer), counted failed."""

    async def reset(up: Arrived) -> bool:
        up.writer.write(JSON_HEAD + b"\r\n" + REPLY[:20])
        await up.writer.drain()
        up.writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        up.writer.transport.abort()  # RST, not FIN
        return False

    async with Upstream(reset) as upstream, proxied(upstream) as p:
        got = parsed(await ask(p.port, request(PLAIN)))
        await p.settled()
    assert (got.status, got.complete, p.outcomes()) == (200, False, {"failed": 1})


async def test_an_http_1_0_keep_alive_client_sees_the_end_of_an_unsized_answer() -> None:
    """An HTTP/1.0 client that asks for keep-alive gets an answer without a length (a
    stream) ended by the connection's close: it sees the end (aiohttp alone kept it open)."""
    async with Upstream(answer(SSE_CHUNKED)) as upstream, proxied(upstream) as p:
        raw = await ask(p.port, request(version="1.0", headers=[("Connection", "keep-alive")], close=False))
        await p.settled()
    assert raw.startswith(b"HTTP/1.0 200") and raw.endswith(EVENTS[-1])


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    """A client that sends ``Expect: 100-continue`` and waits for it before its body gets
    ``100 Continue`` from the proxy (aiohttp's low-level server sends none), then its answer."""
    async with Upstream(answer(json_answer(REPLY))) as upstream, proxied(upstream) as p, connected(p.port) as client:
        whole = request(PLAIN, headers=[("Expect", "100-continue")])
        client.writer.write(whole[: -len(PLAIN)])
        async with asyncio.timeout(WAIT):
            interim = await client.reader.readuntil(b"\r\n\r\n")
            client.writer.write(PLAIN)
            rest = await client.reader.read()
        await p.settled()
    assert (interim, parsed(rest).status, parsed(rest).body) == (b"HTTP/1.1 100 Continue\r\n\r\n", 200, REPLY)
