"""The holding proxy: LM Studio's whole HTTP surface, forwarded, held while it recovers.

Served with aiohttp's server. Forwarded on the proxy's own kept-alive connections, each
answer written on from the socket callback as it arrives (:mod:`~lmsupervisor.proxy.passthrough`:
no task wakes per chunk); a request body too large to keep, and ``HEAD``, go through aiohttp's
client. Bodies both ways are streamed, headers pass unchanged but for the hop-by-hop ones,
``Authorization`` included; the proxy never adds LM Studio's token.

Each request, on arrival, asks :func:`~lmsupervisor.proxy.hold.decide` whether it may go:
while LM Studio is not serving, or the declared model it names is not loaded, it is held
(no polling: a :class:`~lmsupervisor.proxy.gate.Gate` is woken by the supervisor's snapshot changes) up to
``[proxy] hold_timeout`` seconds, then answered 503 with ``Retry-After`` and the
OpenAI-style ``lmstudio_recovering`` body. A held streaming request gets an SSE comment
every ``[proxy] keepalive`` seconds (its answer then starts as 200 ``text/event-stream``;
whatever comes later, an error too, arrives as SSE ``data:`` events).

When LM Studio fails under a request:

- it never reached LM Studio (connection refused): held again until LM Studio is back;
- it reached LM Studio and got no byte back: held until LM Studio shows it answers (a new
  recovery or a good health probe), then sent again once (``resend_unanswered``, for a
  body the proxy kept: up to :data:`KEEP_BODY` bytes), else 502;
- the answer had started: an SSE stream ends with a last ``data: {"error": ...}`` event
  (a stream LM Studio ends by closing the connection is cut when its last event, such
  as ``data: [DONE]``, is missing: :func:`~lmsupervisor.proxy.hold.complete`),
  an answer whose head was not passed on yet becomes 502 JSON, any other is cut (the
  client sees a short body, never a hang).

A client that leaves while its request is held or answered cancels it (aiohttp's handler
cancellation): nothing stays behind. One whose leaving shows first as a failed write to it
(``ConnectionResetError`` from aiohttp, the answer's last bytes and its end included) is
told apart from LM Studio failing: the proxy reads from LM Studio and writes to the client
in separate steps, and such a request is counted ``abandoned``, with no warning.

Counted in ``[metrics]``: ``lmsupervisor_proxy_requests_total{outcome}`` (:data:`OUTCOMES`),
``lmsupervisor_proxy_hold_seconds`` (histogram of hold times), and the gauges
``lmsupervisor_proxy_in_flight`` and ``lmsupervisor_proxy_held``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from yarl import URL

from lmsupervisor.clock import Clock, SystemClock
from lmsupervisor.config import ProxyConfig
from lmsupervisor.errors import ConfigError, ProxyUnansweredError, ProxyUnreachedError
from lmsupervisor.proxy.answers import Answer, as_error, prepare, sse_end
from lmsupervisor.proxy.gate import Gate, Supervised
from lmsupervisor.proxy.hold import (
    REQUEST_OWN,
    SSE,
    complete,
    decide,
    failed_body,
    forwarded,
    recovering_body,
    requested,
    tail_after,
    whole_events,
)
from lmsupervisor.proxy.passthrough import UpstreamConnection, Upstreams

KEEP_BODY = 1024 * 1024  # bytes of a request body kept (read whole: its model is known, it can be re-sent)
UPSTREAM_KEEPALIVE = 2.0  # seconds an idle connection to LM Studio is kept (below Node's 5 s: never a stale one)
CONNECT_TIMEOUT = 10.0  # seconds to connect to LM Studio (a hung accept queue is the supervisor's to detect)
OUTCOMES = ("served", "held_served", "timed_out", "failed", "abandoned")
HOLD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
NO_LAST_EVENT = "LM Studio closed the stream before its last event"
SSE_OWN = ("content-length",)  # the proxy frames a stream itself: a cut one gets one more event
NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")  # only the client's own pass
NOT_REACHED = (aiohttp.ClientConnectorError, ProxyUnreachedError)  # aiohttp's client, passthrough.py
NOT_ANSWERED = (aiohttp.ClientConnectionError, aiohttp.ClientResponseError, ProxyUnansweredError)  # (after NOT_REACHED)


@dataclass
class _Held:
    """One request on its way: what it names, and its answer if the proxy started one."""

    request: web.BaseRequest
    model: str | None
    streaming: bool
    deadline: float
    after: int | None = None  # Gate.signs at an unanswered failure: wait for a newer sign
    out: web.StreamResponse | None = None  # the answer once started (an SSE one may start with a keepalive comment)
    held_at: float | None = None  # monotonic seconds it was held at, None while not held
    commented_at: float = 0.0  # monotonic seconds of its last SSE keepalive comment (or of its hold)
    why: str = ""


class ProxyMetrics:
    """The proxy's metrics in ``registry`` (the supervisor's: ``/metrics`` serves them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "lmsupervisor_proxy_requests",
            "Requests through the holding proxy, by outcome: served, held_served (held, then "
            "served), timed_out (held past hold_timeout), failed (LM Studio failed mid-answer), "
            "abandoned (the client left).",
            ["outcome"],
            registry=registry,
        )
        self.hold = Histogram(
            "lmsupervisor_proxy_hold_seconds",
            "Seconds requests were held while LM Studio recovered or loaded their model.",
            buckets=HOLD_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "lmsupervisor_proxy_in_flight", "Requests in the holding proxy (held or answering).", registry=registry
        )
        self.held = Gauge("lmsupervisor_proxy_held", "Requests held by the proxy now.", registry=registry)
        self.outcomes = {outcome: self.requests.labels(outcome=outcome) for outcome in OUTCOMES}


class HoldingProxy:
    """The proxy on ``[proxy] listen``: :meth:`start`, then :meth:`close` at shutdown.

    ``supervisor`` gives the snapshot and the messages; ``registry`` receives the metrics;
    ``healthz`` answers ``GET /healthz`` (status and JSON body, see
    :func:`lmsupervisor.proxy.health.healthz`); ``clock`` times the holds; ``upstreams``
    are the connections to LM Studio (by default kept :data:`UPSTREAM_KEEPALIVE` seconds).
    """

    def __init__(
        self,
        supervisor: Supervised,
        registry: CollectorRegistry,
        healthz: Callable[[], tuple[int, dict[str, Any]]],
        clock: Clock | None = None,
        upstreams: Upstreams | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.clock = clock or SystemClock()
        self.healthz = healthz
        self.metrics = ProxyMetrics(registry)
        self.gate = Gate(supervisor.snap)
        supervisor.observe(self.gate.update)
        self.held = 0
        self.in_flight = 0
        self.changes = 0  # bumped with every change of held or in_flight (keys the cached status)
        self.listen: str | None = None
        self.log = structlog.get_logger("lmsupervisor")
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._upstreams = upstreams or Upstreams(CONNECT_TIMEOUT, UPSTREAM_KEEPALIVE)

    @property
    def config(self) -> ProxyConfig:
        """``[proxy]`` of the config in force."""
        return self.supervisor.config.proxy

    def status(self) -> dict[str, Any]:
        """The status document's ``proxy`` key (design §9): ``listen`` (the bound
        ``host:port``), ``held`` and ``in_flight`` (requests now)."""
        return {"listen": self.listen, "held": self.held, "in_flight": self.in_flight}

    async def start(self) -> None:
        """Listen on ``[proxy] listen``; raises :class:`ConfigError` (key ``proxy.listen``)
        when the address cannot be bound."""
        address = self.config.address
        if address is None:
            raise ConfigError("proxy.listen: not set", key="proxy.listen")
        host, port = address
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as exc:
            await self.close(1.0)
            raise ConfigError(f"proxy.listen: cannot listen on {host}:{port}: {exc}", key="proxy.listen") from exc
        bound = self._runner.addresses[0]
        self.listen = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
        self.log.info("proxy_started", listen=self.listen)

    async def close(self, timeout: float) -> None:
        """Stop listening and end every request (each ends as its client leaving would)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            try:
                await asyncio.wait_for(runner.cleanup(), timeout)
            except TimeoutError:
                self.log.warning("shutdown_stage_overran", stage="proxy", in_flight=self.in_flight)
        self._upstreams.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- one request ----------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/healthz" and request.method in ("GET", "HEAD"):
            status, health = self.healthz()
            return web.json_response(health, status=status)
        self._count(in_flight=1)
        outcome = "abandoned"
        held: _Held | None = None
        try:
            body: bytes | aiohttp.StreamReader | None = None
            model, streaming = None, False
            if request.body_exists:
                if (
                    request.headers.get("Expect", "").lower() == "100-continue"
                    and request.version >= aiohttp.HttpVersion11
                ):
                    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # aiohttp's low-level server does not
                if request.content_length is not None and request.content_length <= KEEP_BODY:
                    body = await request.read()
                    model, streaming = requested(body, request.content_type)
                else:
                    body = request.content
            held = _Held(request, model, streaming, self.clock.monotonic() + self.config.hold_timeout)
            try:
                answer, outcome = await self._serve(held, body)
            except ConnectionError:  # a write to the client failed: it left (aiohttp ends the answer quietly)
                if request.transport is not None and not request.transport.is_closing():
                    raise
                return held.out or web.Response()
            return answer
        finally:
            if held is not None and held.held_at is not None:
                self._unhold(held)
            self.metrics.outcomes[outcome].inc()
            self._count(in_flight=-1)

    async def _serve(self, held: _Held, body: bytes | aiohttp.StreamReader | None) -> tuple[web.StreamResponse, str]:
        resent = False
        while True:
            if not await self._hold(held):
                return await self._timed_out(held), "timed_out"
            signs = self.gate.signs
            try:
                upstream = await self._send(held, body)
            except NOT_REACHED:  # never reached LM Studio: wait for it, as on arrival
                held.after = signs
                continue
            except NOT_ANSWERED as exc:  # no byte came back
                if resent or not self.config.resend_unanswered or not isinstance(body, bytes | None):
                    return await self._failed(
                        held, f"LM Studio closed the connection without answering ({exc})"
                    ), "failed"
                resent, held.after = True, signs
                self.log.info("proxy_request_unanswered", path=held.request.path, error=str(exc))
                continue
            if isinstance(upstream, UpstreamConnection):
                answer, ok = await self._pass(held, upstream)
            else:
                answer, ok = await self._relay(held, upstream)
            if not ok:
                return answer, "failed"
            return answer, "held_served" if held.held_at is not None else "served"

    async def _hold(self, held: _Held) -> bool:
        """Wait until ``held`` may go (True), or its deadline (False)."""
        while (why := self._why(held)) is not None:
            now = self.clock.monotonic()
            if held.held_at is None:
                held.held_at = held.commented_at = now
                self._count(held=1)
            held.why = why
            if now >= held.deadline:
                return False
            keepalive = self.config.keepalive
            due = held.commented_at + keepalive if held.streaming and keepalive > 0 else math.inf
            if now >= due:
                await self._comment(held, why)
                held.commented_at, due = now, now + keepalive
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.changed().wait(), min(due, held.deadline) - now)
        return True

    def _why(self, held: _Held) -> str | None:
        if held.after is not None and self.gate.signs <= held.after:
            return "lmstudio not answering"
        return decide(self.gate.view, held.model)

    def _unhold(self, held: _Held) -> None:
        assert held.held_at is not None  # noqa: S101 - only called for a held request
        self.metrics.hold.observe(max(0.0, self.clock.monotonic() - held.held_at))
        held.held_at = None
        self._count(held=-1)

    def _count(self, in_flight: int = 0, held: int = 0) -> None:
        if in_flight:
            self.in_flight += in_flight
            self.metrics.in_flight.inc(in_flight)
        if held:
            self.held += held
            self.metrics.held.inc(held)
        self.changes += 1

    async def _send(
        self, held: _Held, body: bytes | aiohttp.StreamReader | None
    ) -> aiohttp.ClientResponse | UpstreamConnection:
        """Send the request to LM Studio: one whose body was kept (or that has none) on the
        proxy's own connections (:mod:`~lmsupervisor.proxy.passthrough`); a body too large
        to keep, and ``HEAD``, through aiohttp's client."""
        assert self._session is not None  # noqa: S101 - started
        request = held.request
        base = URL(self.gate.view.url)
        if isinstance(body, bytes | None) and request.method != "HEAD" and base.scheme == "http":
            return await self._upstreams.exchange(base, request.method, request.raw_path, request.headers.items(), body)
        headers = forwarded(request.headers.items(), also=REQUEST_OWN)  # aiohttp's client sets Host and the length
        url = URL(self.gate.view.url + request.raw_path, encoded=True)
        return await self._session.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=NO_AUTO_HEADERS,
        )

    async def _relay(self, held: _Held, upstream: aiohttp.ClientResponse) -> tuple[web.StreamResponse, bool]:
        """Pass LM Studio's answer on as it comes; False when it broke off. A write to a
        client that left raises ``ConnectionError`` (reads from LM Studio are caught apart)."""
        async with upstream:
            sse = upstream.content_type == SSE
            if held.out is not None:  # the client already has an SSE head (keepalive comments)
                if not sse:
                    text = await upstream.text(errors="replace")
                    return await sse_end(held.out, as_error(upstream.status, text)), True
                out = held.out
            else:
                first = b""
                if not sse:  # the head goes out with the first byte of the body: a cut before it is a clean 502
                    try:
                        first = await upstream.content.readany()
                    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                        return await self._failed(held, f"LM Studio stopped answering ({exc})"), False
                out = await self._start(held, upstream.status, upstream.reason, upstream.headers.items(), sse)
                if first:
                    await out.write(first)
            # An SSE answer ended by closing the connection (no length, not chunked) says
            # nothing of a cut at the HTTP level: its last event does (hold.complete).
            unframed = (
                sse
                and upstream.content_length is None
                and "chunked" not in upstream.headers.get("Transfer-Encoding", "")
            )
            tail = pending = b""  # pending: an unfinished SSE event held back (hold.whole_events)
            while True:
                try:  # only the read: a failed write to the client is its leaving, not LM Studio's failure
                    data = await upstream.content.readany()
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                    return await self._cut(held, out, sse, str(exc), b"" if pending else tail), False
                if not data:
                    break
                if sse:
                    tail = tail_after(tail, data, unframed)
                    data, pending = whole_events(pending, data)
                if data:
                    await out.write(data)
            if unframed and not complete(held.request.path, tail):
                return await self._cut(held, out, sse, NO_LAST_EVENT, b"" if pending else tail), False
            if pending:
                await out.write(pending)
            await out.write_eof()
            return out, True

    async def _pass(self, held: _Held, ex: UpstreamConnection) -> tuple[web.StreamResponse, bool]:
        """:meth:`_relay` for an :class:`UpstreamConnection`: the same answers, the body written on from
        the upstream socket's callback (:mod:`~lmsupervisor.proxy.passthrough` says why)."""
        request = held.request
        sse = ex.sse
        try:
            if held.out is not None:  # the client already has an SSE head (keepalive comments)
                if not sse:
                    text = (await ex.whole(KEEP_BODY)).decode(errors="replace")
                    return await sse_end(held.out, as_error(ex.status, text)), True
                out = held.out
            else:
                first = b"" if sse else await ex.first()  # a non-SSE head goes out with its first byte
                if not first and ex.cut is not None:
                    return await self._failed(held, f"LM Studio stopped answering ({ex.cut})"), False
                out = await self._start(held, ex.status, ex.reason, ex.headers, sse)
                if first:
                    await out.write(first)
            if request.transport is None:
                raise ConnectionResetError("the client left")
            # framed as the head sent says (aiohttp chunks an unsized answer to an HTTP/1.1 client)
            chunked = "chunked" in out.headers.get("Transfer-Encoding", "")
            await ex.pass_on(request.transport, chunked, request.writer)
            cut = ex.cut
            if cut is None and sse and ex.framing == "close" and not complete(request.path, ex.tail):
                cut = NO_LAST_EVENT
            dropped = ex.finish(whole=cut is None)  # an unfinished last event: the client got whole ones only
        finally:
            ex.release()  # kept for the next request when the answer ended as framed, else closed
        if cut is not None:
            return await self._cut(held, out, sse, cut, b"" if dropped else ex.tail), False
        await out.write_eof()
        return out, True

    async def _cut(self, held: _Held, out: web.StreamResponse, sse: bool, why: str, tail: bytes) -> web.StreamResponse:
        """An answer LM Studio broke off after it started: an SSE one ends with the
        ``lmstudio_failed`` event (after ``tail``, the last bytes the client got), any other
        is cut short (its connection closed: the client sees a short body, never waits)."""
        self.log.warning("proxy_request_failed", path=held.request.path, error=why)
        if sse:
            return await sse_end(out, failed_body(f"LM Studio stopped answering mid-stream ({why})"), tail)
        if held.request.transport is not None:
            held.request.transport.close()
        return out

    async def _start(
        self,
        held: _Held,
        status: int,
        reason: str | None,
        headers: Iterable[tuple[str, str]],
        sse: bool,
    ) -> web.StreamResponse:
        """Start the client's answer with LM Studio's head (but its hop-by-hop headers): an
        SSE one goes out at once (without LM Studio's ``Content-Length``: aiohttp frames it,
        chunked or ended by close), any other with its first body bytes (:class:`Answer`)."""
        out = held.out = (web.StreamResponse if sse else Answer)(status=status, reason=reason)
        for key, value in forwarded(headers, also=SSE_OWN if sse else ()):
            out.headers.add(key, value)
        await prepare(out, held.request)
        return out

    async def _timed_out(self, held: _Held) -> web.StreamResponse:
        timeout = self.config.hold_timeout
        body = recovering_body(timeout, held.why)
        self.log.info("proxy_request_timed_out", path=held.request.path, why=held.why, hold_timeout=timeout)
        if held.out is not None:
            return await sse_end(held.out, body)
        retry = str(max(1, math.ceil(min(timeout, 30.0))))
        return web.json_response(body, status=503, headers={"Retry-After": retry})

    async def _failed(self, held: _Held, message: str) -> web.StreamResponse:
        self.log.warning("proxy_request_failed", path=held.request.path, error=message)
        if held.out is not None:
            return await sse_end(held.out, failed_body(message))
        return web.json_response(failed_body(message), status=502)

    async def _comment(self, held: _Held, why: str) -> None:
        if held.out is None:
            held.out = web.StreamResponse(status=200, headers={"Content-Type": SSE, "Cache-Control": "no-cache"})
            await prepare(held.out, held.request)
        await held.out.write(f": {why}\n\n".encode())
