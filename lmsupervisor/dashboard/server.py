"""The dashboard's web server (aiohttp) on ``[dashboard] listen``, loopback only.

Who may look: the token made at each start (``secrets.token_urlsafe``), written 0600 beside
the status socket (:mod:`~lmsupervisor.dashboard.tokenfile`). ``GET /?token=...`` with it
sets an HttpOnly, SameSite=Strict cookie and redirects to ``/`` (the URL is cleaned, as
Jupyter does); every other request needs the cookie (403 without). A request whose
``Host`` is not this loopback address and port is refused (DNS rebinding). A POST must
also come from the page itself: its ``Origin`` must be ``http://<Host>`` (a cross-site
request is refused, 403). The page cannot be framed (``frame-ancestors 'none'``), and it
loads nothing but its own files (a Content-Security-Policy of ``'self'``).

Routes: ``/`` the page, ``/app.js`` and ``/app.css`` its files (shipped in
``dashboard/static/``, gzip-encoded when the browser accepts it), ``/events`` the live
stream (server-sent events), ``POST /api/restart`` (``?daemon=1``) and ``POST /api/reload``
(the status socket's control verbs, posted to the supervisor as its messages).

Live, with no timer: one subscription to the supervisor's event hub (the one
``GET /v1/events`` streams) and its reduced messages (probe and answer latencies) feed the
:class:`~lmsupervisor.dashboard.rings.Rings` and, only while a page is open, that page's
bounded queue. Each stream message is one JSON object (``kind``: ``hello`` with the whole
status and rings, ``event`` with the event and the status after it, ``probe``, ``answer``,
``log``). A page that does not read is dropped once :data:`PAGE_BACKLOG` messages wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hmac
import json
import os
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

from lmsupervisor import logs
from lmsupervisor.clock import Clock
from lmsupervisor.configvalues import listen_address
from lmsupervisor.dashboard.rings import Rings
from lmsupervisor.dashboard.tokenfile import dashboard_path
from lmsupervisor.endpoint import tokenfile

COOKIE = "lmsupervisor_dashboard"
PAGE_BACKLOG = 512  # stream messages waiting for one page before it is dropped
STATIC = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/app.css": ("app.css", "text/css"),
}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REFUSED = "open the link `lmsupervisor dashboard` prints: it carries this start's token\n"


class Watched(Protocol):
    """What the dashboard needs of :class:`lmsupervisor.supervisor.Supervisor`."""

    def snapshot(self) -> dict[str, Any]:
        """The status document of design §5."""

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of every event from now on, None at shutdown."""

    def events(self, q: asyncio.Queue[dict[str, Any] | None] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """The events of ``q`` until shutdown."""

    def observe(self, observer: Callable[[Any, Any], None]) -> None:
        """Call ``observer(message, snapshot)`` after every reduced message."""

    def post(self, kind: str, **data: Any) -> None:
        """Enqueue a request by name: ``restart`` (``daemon``, ``reason``), ``reload``."""


class Dashboard:
    """The dashboard of one supervisor: :meth:`start`, then :meth:`close` at shutdown.

    ``listen`` is ``[dashboard] listen`` (``host:port``, loopback; port 0 picks one);
    ``socket_path`` the status socket, beside which the token file goes; ``clock`` stamps
    the rings. :attr:`url` is the page's address once started (without the token).
    Raises OSError from :meth:`start` when the address cannot be bound.
    """

    def __init__(self, sup: Watched, listen: str, socket_path: Path, clock: Clock, token: str | None = None) -> None:
        address = listen_address(listen)
        if address is None:
            raise ValueError(f"not a listen address: {listen!r}")
        self.sup = sup
        self.host, self.port = address
        self.file = dashboard_path(socket_path)
        self.token = token or secrets.token_urlsafe(32)
        self.rings = Rings(clock)
        self.pages: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.log = structlog.get_logger("lmsupervisor.dashboard")
        self._static = {path: _load(name, kind) for path, (name, kind) in STATIC.items()}
        self._runner: web.AppRunner | None = None
        self._follow: asyncio.Task[None] | None = None
        self._hosts: set[str] = set()

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``."""
        from lmsupervisor.dashboard.tokenfile import url  # noqa: PLC0415

        return url(self.host, self.port)

    async def start(self) -> None:
        """Listen, follow the supervisor, write the token file (0600)."""
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/app.js", self._file)
        app.router.add_get("/app.css", self._file)
        app.router.add_get("/events", self._events)
        app.router.add_post("/api/restart", self._restart)
        app.router.add_post("/api/reload", self._reload)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=False)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        names = {self.host, "localhost", "127.0.0.1"} if self.host in ("localhost", "127.0.0.1") else {self.host}
        self._hosts = {f"[{h}]:{self.port}" if ":" in h else f"{h}:{self.port}" for h in names}
        self._follow = asyncio.get_running_loop().create_task(self._run())
        self.sup.observe(self._observed)
        logs.TAPS.append(self._logged)
        tokenfile.write(self.file, self.port, self.token, os.getpid(), host=self.host)
        self.log.info("dashboard_started", url=self.url)

    async def close(self) -> None:
        """Remove the token file, end every page's stream, stop listening."""
        with contextlib.suppress(FileNotFoundError):
            self.file.unlink()
        with contextlib.suppress(ValueError):
            logs.TAPS.remove(self._logged)
        for q in list(self.pages):
            _offer(q, None)
        if self._follow is not None:
            self._follow.cancel()
            await asyncio.gather(self._follow, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what feeds the pages ------------------------------------------------------------
    async def _run(self) -> None:
        async for event in self.sup.events(self.sup.subscribe()):
            self.rings.event(event)
            if self.pages:
                self._push({"kind": "event", "event": event, "status": self.sup.snapshot()})

    def _observed(self, message: object, snap: object) -> None:
        point = self.rings.observe(message)
        if point is not None and self.pages:
            self._push(point)

    def _logged(self, entry: dict[str, Any]) -> None:
        kept = self.rings.logged(entry)
        if self.pages:
            self._push({"kind": "log", "entry": kept})

    def _push(self, message: dict[str, Any]) -> None:
        for q in list(self.pages):
            if not _offer(q, message):
                self.pages.discard(q)  # a page that does not read: its stream ends

    # -- who may look ----------------------------------------------------------------------
    def _signed_in(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.cookies.get(COOKIE, ""), self.token)

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.host not in self._hosts:
            return _refuse(f"this dashboard answers on {self.url} only\n")
        if request.method == "POST" and request.headers.get("Origin") != f"http://{request.host}":
            return _refuse("refused: a control request must come from the dashboard's own page\n")
        token = request.query.get("token")
        if request.method == "GET" and request.path == "/" and token is not None:
            if not hmac.compare_digest(token, self.token):
                return _refuse("this token is not this start's: " + REFUSED)
            response = web.Response(status=303, headers={"Location": "/"})  # the URL is cleaned: no token in history
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
            response.headers.update(HEADERS)
            return response
        if not self._signed_in(request):
            return _refuse(REFUSED)
        answer = await handler(request)
        answer.headers.update(HEADERS)
        return answer

    # -- routes ----------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.StreamResponse:
        return await self._file(request)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        plain, zipped, kind = self._static[request.path]
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(
                body=zipped, content_type=kind, headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            )
        return web.Response(body=plain, content_type=kind, headers={"Vary": "Accept-Encoding"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(PAGE_BACKLOG)
        q.put_nowait({"kind": "hello", "status": self.sup.snapshot(), "rings": self.rings.to_json()})
        self.pages.add(q)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **HEADERS})
        try:  # the page leaving cancels this handler (handler_cancellation): nothing waits for it
            await response.prepare(request)
            while (message := await q.get()) is not None:
                await response.write(b"data: " + json.dumps(message).encode() + b"\n\n")
        except ConnectionError:
            pass
        finally:
            self.pages.discard(q)
        return response

    async def _restart(self, request: web.Request) -> web.StreamResponse:
        daemon = request.query.get("daemon") == "1"
        self.sup.post("restart", daemon=daemon, reason="restart requested on the dashboard")
        self.log.info("dashboard_restart_requested", daemon=daemon)
        return web.json_response({"accepted": True}, status=202)

    async def _reload(self, request: web.Request) -> web.StreamResponse:
        self.sup.post("reload")
        self.log.info("dashboard_reload_requested")
        return web.json_response({"accepted": True}, status=202)


def _offer(q: asyncio.Queue[dict[str, Any] | None], message: dict[str, Any] | None) -> bool:
    """Put ``message`` on a page's queue; a full queue gets the end instead (False)."""
    try:
        q.put_nowait(message)
    except asyncio.QueueFull:
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)
        return False
    return True


def _refuse(text: str) -> web.Response:
    return web.Response(status=403, text=text, headers=HEADERS)


def _load(name: str, kind: str) -> tuple[bytes, bytes, str]:
    data = resources.files("lmsupervisor.dashboard").joinpath("static", name).read_bytes()
    return data, gzip.compress(data, 9, mtime=0), kind
