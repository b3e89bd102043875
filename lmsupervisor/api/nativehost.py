"""The browser native-messaging host: `lmsupervisor native-host` (issue 10 item 2).

A browser extension talks to it through ``runtime.connectNative()`` /
``runtime.sendNativeMessage()``; the browser starts this process and speaks on its
stdin/stdout. Wire format (Chrome "Native messaging protocol", MDN "Native messaging"):
each message is UTF-8 JSON preceded by its length as a 32-bit unsigned integer in
native byte order. Limits, from the same documents and the browsers' sources:

- host -> browser: at most 1 MiB (Chromium ``kMaximumNativeMessageSize``, Firefox
  ``MAX_READ = 1024 * 1024``); a larger answer would make the browser drop the
  connection, so it is replaced by an error answer (:data:`MAX_OUTGOING`).
- browser -> host: Chrome sends at most 64 MiB (its documented limit; Firefox allows up
  to 4 GiB). Anything larger is read, discarded and answered with an error, and the loop
  goes on (:data:`MAX_INCOMING`).

One message at a time, until stdin closes. Requests are JSON objects with ``"action"``;
an ``"id"`` (an integer, or a string of at most :data:`MAX_ID_BYTES` bytes of UTF-8) is
echoed in every answer to it; an id that cannot be echoed (longer, or holding a lone
UTF-16 surrogate, which has no UTF-8 form) gets a ``bad_request`` answer without it. A
``"timeout"`` is seconds in (0, :data:`MAX_TIMEOUT`]; anything else is ``bad_request``. So
is JSON nested deeper than Python's reader goes, and, in what ``chat_completion`` sends on
to LM Studio (``messages``, ``settings``), a NaN or an infinity, or a string with a lone
surrogate: the answer names the place (``settings.temperature``). Answers:
``{"status": "success", "payload": {...}}`` or ``{"status": "error", "error": "...",
"code": "..."}``. Actions:

``check_lmstudio``
    payload ``{"installed", "bootstrapped", "server_running", "api_endpoint",
    "current_model", "loaded_models", "server_error", "supervisor": {"running", "socket",
    "state", "ready", ...}, "config_error"}``. When LM Studio's saved ``networkInterface``
    (and no ``[server] bind``) is no address a server can bind (``server_address_invalid``),
    ``api_endpoint`` is null and ``server_error`` names it with its fix; ``start_lmstudio``
    and ``chat_completion`` are then refused (``lmstudio_error``) saying the same.
``start_lmstudio`` (``"timeout"`` seconds, default ``server.start_timeout``)
    asks the running supervisor (waits for ``ready``; in ``backoff`` it posts
    ``/v1/restart`` so the attempt happens now), else starts LM Studio itself with the
    supervisor's own bring-up (:func:`lmsupervisor.lmstudio.bringup.start_once`, rung START,
    dependencies from :func:`lmsupervisor.lmstudio.wiring.wire`): the install's detected
    capabilities decide ``lms daemon up`` and ``--bind``, and ``lms server start`` gets the
    declared server settings, else LM Studio's own, so CORS/LAN choices survive. A server
    that answers already is left alone (``"how": "already_running"``).
``stop_lmstudio`` (``"daemon": true`` also runs ``lms daemon down`` where this `lms` has it)
    refused with code ``supervised`` while a supervisor runs: it would start LM Studio
    again at its next health check, and the status socket has no stop verb. Without a
    supervisor: ``lms server stop``. Nothing running is success (``stopped`` /
    ``daemon_stopped`` false), not an error.

The API token for LM Studio's "Require Authentication" is the supervisor's:
``[lmstudio] api_token``, ``api_token_file``, else ``$LM_API_TOKEN``, read per request.
``chat_completion``
    ``{"messages": [...], "settings": {"model", "temperature", "max_tokens", "stream",
    ...}}`` forwarded to LM Studio's ``/v1/chat/completions``. Without ``stream``: one
    answer, payload ``{"id", "model", "content", "message", "finish_reason", "usage"}``.
    With ``stream``: one answer per delta, payload ``{"type": "delta", "done": false,
    "delta": "..."}``, then ``{"type": "done", "done": true, "finish_reason", "usage",
    "id", "model"}`` (``usage`` is null when LM Studio does not report it).

Every external call has a deadline: the status socket :data:`SUPERVISOR_TIMEOUT`, each
``lms`` call its own, HTTP probes ``health.timeout``, chat ``"timeout"`` (default
:data:`CHAT_TIMEOUT`; for streams, the longest silence between two events). No error
ends the host: a malformed or failing request gets an error answer and the loop goes
on. Logs go to stderr (the browser keeps stdout for the protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import httpx
import structlog
from httpx_sse import SSEError, aconnect_sse

from lmsupervisor.config import Config, finite
from lmsupervisor.core.messages import BringUpFailed, NotInstalled, ServerUp
from lmsupervisor.core.observed import Install, ProbeResult, base_url, effective_server, usable_server
from lmsupervisor.core.problems import Problem
from lmsupervisor.errors import LmsError, LmSupervisorError, StatusSocketError
from lmsupervisor.lmstudio.bringup import start_once
from lmsupervisor.lmstudio.install import DOWNLOAD_URL, Platform, detect
from lmsupervisor.lmstudio.lms import LmsRunner
from lmsupervisor.lmstudio.rest import BearerAuth, parse_models
from lmsupervisor.lmstudio.wiring import wire
from lmsupervisor.statefile import default_folder as state_dir

log = structlog.get_logger("lmsupervisor.nativehost")

MAX_OUTGOING = 1024 * 1024  # bytes of JSON, host -> browser (Chrome and Firefox)
MAX_INCOMING = 64 * 1024 * 1024  # bytes of JSON, browser -> host (Chrome's documented maximum)
HEADER = struct.Struct("=I")  # 32-bit unsigned, native byte order, no padding
MAX_ID_BYTES = 64 * 1024  # bytes of UTF-8: a longer "id" is refused, never echoed (it would crowd out the answer)
MAX_TIMEOUT = 3600.0  # seconds: the largest "timeout" a request may ask (as server.start_timeout)
SHOWN_CHARS = 40  # characters of a refused value's JSON quoted in an error answer
JSON_HEADERS = {"Content-Type": "application/json"}  # of the chat bodies sent to LM Studio (_json_bytes)
SUPERVISOR_TIMEOUT = 2.0  # seconds for one status-socket request
LMS_TIMEOUT = 15.0  # seconds for `lms` status and stop calls
CHAT_TIMEOUT = 300.0  # seconds: a cold JIT load can delay the first token for long
WAIT_INTERVAL = 0.25  # seconds between /v1/status reads while waiting for the supervisor
CHAT_SETTINGS = frozenset(
    {"model", "temperature", "max_tokens", "stream", "top_p", "top_k", "stop", "seed", "presence_penalty",
     "frequency_penalty", "repeat_penalty", "ttl"}
)  # fmt: skip
UP_STATES = frozenset({"ready", "degraded"})  # server healthy (degraded: a declared model failed)
GONE_STATES = frozenset({"stopping", "stopped"})  # the supervisor is leaving: it no longer restarts anything


class NativeHostError(LmSupervisorError):
    """A request failed; ``message`` is the ``error`` answered, ``code`` its kind.

    Codes: ``bad_request``, ``too_large``, ``not_installed``, ``unreachable``,
    ``lmstudio_error``, ``timeout``, ``supervised``, ``internal``.
    """

    def __init__(self, message: str, code: str = "bad_request", hint: str = "") -> None:
        super().__init__(message, hint)
        self.code = code


class TruncatedFrameError(NativeHostError):
    """stdin ended inside a frame: the browser is gone, nothing more can be read."""


class OversizedFrameError(NativeHostError):
    """An incoming message over :data:`MAX_INCOMING`; its bytes were read and discarded."""


# -- framing ------------------------------------------------------------------------
def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO, limit: int = MAX_INCOMING) -> bytes | None:
    """Read one message body from ``stream`` (blocking); None when it ended cleanly.

    Raises :class:`TruncatedFrameError` if it ends inside a frame and
    :class:`OversizedFrameError` for a body over ``limit`` bytes (after discarding it,
    in 64 KiB pieces, so the next frame is read from the right place).
    """
    head = _read_exactly(stream, HEADER.size)
    if not head:
        return None
    if len(head) < HEADER.size:
        raise TruncatedFrameError(f"stdin ended inside a length prefix ({len(head)} of {HEADER.size} bytes)")
    (length,) = HEADER.unpack(head)
    if length > limit:
        left = length
        while left:
            chunk = stream.read(min(left, 65536))
            if not chunk:
                raise TruncatedFrameError(f"stdin ended inside an oversized message of {length} bytes")
            left -= len(chunk)
        raise OversizedFrameError(
            f"message of {length} bytes refused: browsers send at most {limit} bytes", code="too_large"
        )
    body = _read_exactly(stream, length)
    if len(body) < length:
        raise TruncatedFrameError(f"stdin ended inside a message ({len(body)} of {length} bytes)")
    return body


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8, each lone UTF-16 surrogate (legal in JSON text and in Python
    strings, not in UTF-8) replaced by U+FFFD; a surrogate pair becomes its character."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def encode_frame(message: Mapping[str, Any], limit: int = MAX_OUTGOING) -> bytes:
    """Length prefix + UTF-8 JSON; never raises for text (lone surrogates become U+FFFD).
    Raises ValueError for NaN or an infinity (no JSON a browser parses) and TypeError for
    a value JSON cannot hold: :func:`serve` answers an internal error instead.

    An answer over ``limit`` bytes (the browsers' 1 MiB) is replaced by a ``too_large``
    error answer saying so, so the browser never drops the connection. That answer
    echoes the request's ``id`` only if it still fits within ``limit``; otherwise the id
    is dropped and the error says so.
    """
    body = _utf8(json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")))
    if len(body) <= limit:
        return HEADER.pack(len(body)) + body
    small: dict[str, Any] = {
        "status": "error",
        "error": f"the answer is {len(body)} bytes, over the {limit} bytes a browser accepts from a native host"
        + ("; ask with settings.stream = true" if message.get("status") == "success" else ""),
        "code": "too_large",
    }
    plain = _utf8(json.dumps(small, ensure_ascii=False, separators=(",", ":")))
    if "id" in message:
        with_id = _utf8(json.dumps({**small, "id": message["id"]}, ensure_ascii=False, separators=(",", ":")))
        if len(with_id) <= limit:
            return HEADER.pack(len(with_id)) + with_id
        small["error"] += "; the request's id was dropped: echoed, it would make this answer too large as well"
        plain = _utf8(json.dumps(small, ensure_ascii=False, separators=(",", ":")))
    return HEADER.pack(len(plain)) + plain


def success(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A success answer: ``{"status": "success", "payload": {...}}`` (a copy of ``payload``)."""
    return {"status": "success", "payload": dict(payload)}


def failure(message: str, code: str = "internal") -> dict[str, Any]:
    """An error answer: ``{"status": "error", "error": message, "code": code}`` (codes: :class:`NativeHostError`)."""
    return {"status": "error", "error": message, "code": code}


# -- the running supervisor --------------------------------------------------------
class SupervisorLink(Protocol):
    """What the host asks of a running supervisor (a fake implements it in tests)."""

    socket: str

    async def status(self) -> dict[str, Any] | None:
        """The snapshot (design §5), or None when no supervisor answers."""
        ...

    async def restart(self) -> None:
        """``POST /v1/restart``; raises :class:`NativeHostError` if refused."""
        ...


class SocketSupervisor:
    """The supervisor behind the status socket ``socket``, through :mod:`lmsupervisor.api.client`."""

    def __init__(self, socket: str, timeout: float = SUPERVISOR_TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout

    async def _request(self, method: str, target: str) -> tuple[int, Any]:
        from lmsupervisor.api.client import request  # noqa: PLC0415 - client.py is being rewritten; call late

        return await asyncio.to_thread(request, self.socket, method, target, self.timeout)

    async def status(self) -> dict[str, Any] | None:
        """``GET /v1/status`` within ``timeout`` seconds: the snapshot (design §5).

        None when nobody answers on the socket, it answers badly, or with a status other
        than 200; never raises for that.
        """
        try:
            code, body = await self._request("GET", "/v1/status")
        except StatusSocketError:
            return None
        return body if code == 200 and isinstance(body, dict) else None

    async def restart(self) -> None:
        """``POST /v1/restart`` within ``timeout`` seconds; the supervisor answers 202.

        Raises :class:`NativeHostError` with code ``unreachable`` when the socket does not
        answer, ``supervised`` when it answers anything but 202.
        """
        try:
            code, body = await self._request("POST", "/v1/restart")
        except StatusSocketError as exc:
            raise NativeHostError(f"the supervisor did not take the restart: {exc}", code="unreachable") from exc
        if code != 202:
            reason = body.get("error") if isinstance(body, dict) else None
            raise NativeHostError(f"the supervisor refused the restart ({code}: {reason})", code="supervised")


# -- the host ---------------------------------------------------------------------
@dataclass(frozen=True)
class Clock:
    """Monotonic time and sleeping, passed in so waits are testable without real time."""

    now: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]


REAL_CLOCK = Clock(lambda: asyncio.get_running_loop().time(), asyncio.sleep)


class NativeHost:
    """Answers native messages. Every I/O seam is an argument: ``supervisor`` (the status
    socket), ``runner_factory`` (`lms`), ``transport`` (httpx, for probes and chat)."""

    def __init__(
        self,
        config: Config,
        platform: Platform,
        supervisor: SupervisorLink,
        *,
        config_error: str | None = None,
        runner_factory: Callable[[Path], LmsRunner] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = REAL_CLOCK,
        cache_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.platform = platform
        self.supervisor = supervisor
        self.config_error = config_error
        # The supervisor's own LM Studio dependencies (lms, prober with the API token,
        # detection, processes, capability cache in ``cache_dir``, REST): one wiring.
        self.io = wire(
            platform, lambda: self.config, cache_dir=cache_dir, runner_factory=runner_factory, transport=transport
        )
        self.prober = self.io.prober
        self.http = httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            auth=BearerAuth(self.io.token),  # the supervisor's resolver: api_token, api_token_file, LM_API_TOKEN
            timeout=httpx.Timeout(CHAT_TIMEOUT, connect=config.health.timeout),
            # A fresh loopback connection costs about a millisecond; a kept-alive one can
            # stall 40 ms per request on a server that writes head and body apart (Nagle
            # against delayed ACK: the simulator does, on every request).
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.clock = clock
        self.actions: dict[str, Callable[[dict[str, Any]], AsyncGenerator[dict[str, Any], None]]] = {
            "check_lmstudio": self.check_lmstudio,
            "start_lmstudio": self.start_lmstudio,
            "stop_lmstudio": self.stop_lmstudio,
            "chat_completion": self.chat_completion,
        }

    async def aclose(self) -> None:
        """Close the prober's, REST's and the chat's HTTP clients; the host is unusable afterwards."""
        await self.io.aclose()
        await self.http.aclose()

    # -- dispatch ------------------------------------------------------------------
    async def handle(self, raw: bytes) -> AsyncGenerator[dict[str, Any], None]:
        """The answers to one raw message, in order; never raises (errors are answers)."""
        request_id: Any = None
        try:
            try:
                msg = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise NativeHostError(f"the message is not UTF-8 ({exc.reason} at byte {exc.start})") from None
            except ValueError as exc:
                raise NativeHostError(f"the message is not JSON ({exc})") from None
            except RecursionError:  # json.loads recurses per nesting level
                raise NativeHostError("the message is not usable JSON: arrays or objects nested too deeply") from None
            if not isinstance(msg, dict):
                raise NativeHostError(f"expected a JSON object with an action, got {type(msg).__name__}")
            request_id = _request_id(msg.get("id"))
            action = msg.get("action")
            handler = self.actions.get(action) if isinstance(action, str) else None
            if handler is None:
                raise NativeHostError(f"action: expected one of {', '.join(self.actions)}, got {action!r}")
            async with contextlib.aclosing(handler(msg)) as answers:
                async for answer in answers:
                    yield _with_id(answer, request_id)
        except NativeHostError as exc:
            yield _with_id(failure(str(exc), exc.code), request_id)
        except Exception as exc:  # the host must survive anything one request does
            log.error("native_message_failed", error=repr(exc), exc_info=True)
            yield _with_id(failure(f"internal error: {exc.__class__.__name__}: {exc}"), request_id)

    # -- what LM Studio looks like ----------------------------------------------------
    def _install(self) -> Install:
        return detect(self.platform, self.config.lmstudio.home, self.config.lmstudio.lms)

    def _endpoint(self, install: Install, snap: Mapping[str, Any] | None) -> str:
        """The supervisor's endpoint when one runs (it knows its config), else ours: the
        declared server settings, else LM Studio's own. Raises :class:`NativeHostError`
        (``lmstudio_error``, naming ``networkInterface`` and the fix) when the bind they
        give is no address (``server_address_invalid``, :func:`lmsupervisor.core.observed.usable_server`):
        nothing can reach or start a server there."""
        server = snap.get("server") if snap else None
        if isinstance(server, dict) and isinstance(server.get("api_endpoint"), str):
            return str(server["api_endpoint"])
        cfg = self.config.server
        usable = usable_server(effective_server(cfg.bind, cfg.port, cfg.cors, install.server), install)
        if isinstance(usable, Problem):
            raise NativeHostError(usable.message, code="lmstudio_error", hint=usable.fix)
        return base_url(usable.bind, usable.port)

    async def _loaded_models(self, url: str) -> list[str] | None:
        """API identifiers of the loaded models: REST v1 (0.4), else v0 (0.3.6+); None if unknown."""
        limit = self.config.health.timeout
        try:
            resp = await asyncio.wait_for(self.http.get(f"{url}/api/v1/models", timeout=limit), limit)
            body = _json(resp)
            if resp.status_code == 200 and isinstance(body, dict) and isinstance(body.get("models"), list):
                return [inst.identifier for inst in parse_models(body).loaded]  # the supervisor's parser
            resp = await asyncio.wait_for(self.http.get(f"{url}/api/v0/models", timeout=limit), limit)
            body = _json(resp)
            if resp.status_code == 200 and isinstance(body, dict) and isinstance(body.get("data"), list):
                return [
                    str(m["id"])
                    for m in body["data"]
                    if isinstance(m, dict) and m.get("state") == "loaded" and "id" in m
                ]
        except (httpx.HTTPError, TimeoutError):
            return None
        return None

    async def _payload(self, snap: dict[str, Any] | None) -> dict[str, Any]:
        install = self._install()
        url: str | None = None
        try:
            endpoint = self._endpoint(install, snap)
        except NativeHostError as exc:  # no address to probe: not running, and why
            probe = ProbeResult(ok=False, latency_ms=0.0, error=str(exc))
        else:
            url, probe = endpoint, await self.prober.greeting(endpoint)
        loaded = await self._loaded_models(url) if url is not None and probe.ok else []
        if loaded is None and snap is not None:  # the server answers but lists nothing we can read
            loaded = [
                str(m.get("identifier") or m.get("key"))
                for m in snap.get("models") or []
                if isinstance(m, dict) and m.get("state") == "loaded"
            ]
        lm = snap.get("lmstudio") if snap else None
        lm = lm if isinstance(lm, dict) else {}
        return {
            "installed": bool(lm.get("installed", install.installed)),
            "bootstrapped": bool(lm.get("bootstrapped", install.bootstrapped)),
            "server_running": probe.ok,
            "api_endpoint": url,
            "current_model": loaded[0] if loaded else None,
            "loaded_models": loaded or [],
            "server_error": None if probe.ok else probe.error,
            "supervisor": _supervisor_view(self.supervisor.socket, snap),
            "config_error": self.config_error,
        }

    # -- actions ----------------------------------------------------------------
    async def check_lmstudio(self, msg: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """``check_lmstudio``: one answer with the installation, server and supervisor."""
        yield success(await self._payload(await self.supervisor.status()))

    async def start_lmstudio(self, msg: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """``start_lmstudio``: through the running supervisor, else by ourselves."""
        timeout = _seconds(msg, "timeout", self.config.server.start_timeout)
        snap = await self.supervisor.status()
        if snap is not None and snap.get("state") not in GONE_STATES:
            state = snap.get("state")
            if state == "not_installed":
                raise NativeHostError(
                    f"the supervisor finds no LM Studio: install it from {DOWNLOAD_URL}", code="not_installed"
                )
            how = "already_running"
            if state not in UP_STATES:
                if state == "backoff":  # waiting for its next attempt: ask for it now
                    await self.supervisor.restart()
                    how = "restart_requested"
                else:
                    how = "waited"
                snap = await self._wait_up(timeout)
            payload = await self._payload(snap)
            yield success({**payload, "started_by": "supervisor", "how": how})
            return
        how = await self._start_ourselves(timeout)
        yield success({**(await self._payload(snap)), "started_by": "native_host", "how": how})

    async def _wait_up(self, timeout: float) -> dict[str, Any]:
        """Poll the supervisor (its snapshot) until ready/degraded; the status socket is
        local and answers in about a millisecond, so a 250 ms poll costs nothing."""
        deadline = self.clock.now() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = await self.supervisor.status()
            if last is not None and last.get("state") in UP_STATES:
                return last
            if last is None or last.get("state") in GONE_STATES:
                raise NativeHostError("the supervisor stopped while LM Studio was starting", code="unreachable")
            if self.clock.now() >= deadline:
                raise NativeHostError(
                    f"the supervisor is still in state {last.get('state')!r} after {timeout:g} s "
                    "(it keeps trying; check_lmstudio shows its progress)",
                    code="timeout",
                )
            await self.clock.sleep(WAIT_INTERVAL)

    async def _start_ourselves(self, timeout: float) -> str:
        """Start LM Studio with the supervisor's own bring-up (:func:`start_once` at
        rung START: the detected capabilities decide ``daemon up`` and ``--bind``, the
        declared server settings else LM Studio's own are applied); ``"already_running"``
        when its server answers already, else ``"started"``. Raises :class:`NativeHostError`:
        ``not_installed``, ``lmstudio_error`` (LM Studio's or `lms`'s words, with the
        problems found), ``timeout`` after ``timeout`` seconds."""
        install = self._install()
        if not install.installed:
            raise NativeHostError(f"LM Studio is not installed: get it from {DOWNLOAD_URL}", code="not_installed")
        if (await self.prober.greeting(self._endpoint(install, None))).ok:
            return "already_running"  # never restarted from here, even with other settings
        server = replace(self.config.server, start_timeout=min(self.config.server.start_timeout, timeout))
        config = replace(self.config, server=server)
        try:
            result = await asyncio.wait_for(
                start_once(self.io, config, lambda m: log.info("bring_up_progress", message=repr(m))), timeout
            )
        except TimeoutError:
            raise NativeHostError(f"LM Studio did not come up within {timeout:g} s", code="timeout") from None
        if isinstance(result, ServerUp):
            log.info("lmstudio_started", reason=result.reason)
            return "already_running" if result.adopted else "started"
        if isinstance(result, NotInstalled):
            raise NativeHostError(f"LM Studio cannot be started: {result.reason}", code="not_installed")
        if isinstance(result, BringUpFailed):
            found = "".join(f"; {p.message} ({p.fix})" for p in result.problems)
            raise NativeHostError(f"could not start LM Studio: {result.reason}{found}", code="lmstudio_error")
        raise NativeHostError(f"the bring-up ended with {result!r}", code="internal")

    async def stop_lmstudio(self, msg: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """``stop_lmstudio``: refused under a supervisor; else ``lms server stop`` and, with
        ``"daemon": true``, ``lms daemon down`` where this `lms` has it (detected
        capabilities). Nothing running is done, not an error: payload ``stopped`` /
        ``daemon_stopped`` say whether the server / daemon was running and is stopped now;
        ``daemon_note`` says why the daemon was left alone."""
        snap = await self.supervisor.status()
        if snap is not None and snap.get("state") not in GONE_STATES:
            pid = (snap.get("supervisor") or {}).get("pid")
            raise NativeHostError(
                f"lmsupervisor (pid {pid}) keeps LM Studio running and would start it again at its next "
                "health check; stop the supervisor first (its service, or Ctrl-C on `lmsupervisor run`), "
                "then stop LM Studio",
                code="supervised",
            )
        install = self._install()
        if install.lms is None:
            raise NativeHostError("LM Studio's lms CLI was not found; nothing to stop with", code="not_installed")
        client = self.io.lms_factory(install.lms)
        daemon_stopped, note = False, None
        try:
            was_running = await client.server_stop(timeout=LMS_TIMEOUT)
            if msg.get("daemon") is True:
                caps = await self.io.capabilities.get(install.lms, client)
                if "down" in caps.daemon:
                    daemon_stopped = await client.daemon_down(timeout=LMS_TIMEOUT)
                else:  # before 2025-11-29 (facts §8, §9): the app holds the service
                    note = "this lms has no `daemon down` (LM Studio before 0.4): quit the LM Studio app to stop it"
        except LmsError as exc:
            raise NativeHostError(f"could not stop LM Studio: {exc.message}", code="lmstudio_error") from exc
        payload = await self._payload(None)
        extra = {"daemon_note": note} if note else {}
        yield success({**payload, "stopped": was_running, "daemon_stopped": daemon_stopped, **extra})

    async def chat_completion(self, msg: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """``chat_completion``: LM Studio's ``/v1/chat/completions``, plain or streamed."""
        messages = msg.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise NativeHostError("messages: expected a non-empty array of {role, content} objects")
        settings = msg.get("settings", {})
        if not isinstance(settings, dict):
            raise NativeHostError(f"settings: expected an object, got {type(settings).__name__}")
        unknown = sorted(set(settings) - CHAT_SETTINGS)
        if unknown:
            raise NativeHostError(f"settings: unknown key {unknown[0]!r}; known: {', '.join(sorted(CHAT_SETTINGS))}")
        timeout = _seconds(msg, "timeout", CHAT_TIMEOUT)
        _check_sendable({"messages": messages, "settings": settings})
        snap = await self.supervisor.status()
        url = self._endpoint(self._install(), snap)
        body: dict[str, Any] = {**settings, "messages": messages, "stream": settings.get("stream") is True}
        if not body.get("model"):
            model = await self._default_model(url)
            if model:
                body["model"] = model
        if body["stream"]:
            body["stream_options"] = {"include_usage": True}  # LM Studio 0.3.18+ (facts §4)
            async for answer in self._stream(url, body, timeout):
                yield answer
            return
        try:
            resp = await asyncio.wait_for(
                self.http.post(
                    f"{url}/v1/chat/completions",
                    content=_json_bytes(body),
                    headers=JSON_HEADERS,
                    timeout=self._timeout(timeout),
                ),
                timeout,
            )
        except (TimeoutError, httpx.TimeoutException):
            raise NativeHostError(f"LM Studio did not answer within {timeout:g} s", code="timeout") from None
        except httpx.HTTPError as exc:
            raise _unreachable(url, exc) from exc
        data = _json(resp)
        _raise_lmstudio_error(resp.status_code, data, resp.text)
        choice = (data.get("choices") or [{}])[0] if isinstance(data, dict) else {}
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(data, dict) or not isinstance(message, dict):
            raise NativeHostError(f"LM Studio answered without a message: {resp.text[:200]!r}", "lmstudio_error")
        yield success(
            {
                "id": data.get("id"),
                "model": data.get("model"),
                "content": message.get("content"),
                "message": message,
                "finish_reason": choice.get("finish_reason"),
                "usage": data.get("usage"),
            }
        )

    def _timeout(self, seconds: float) -> httpx.Timeout:
        return httpx.Timeout(seconds, connect=min(seconds, self.config.health.timeout))

    async def _default_model(self, url: str) -> str | None:
        """The model a request without one goes to: the first loaded, else the first declared."""
        loaded = await self._loaded_models(url)
        if loaded:
            return loaded[0]
        if self.config.models:
            return self.config.models[0].identifier or self.config.models[0].key
        return None

    async def _stream(self, url: str, body: dict[str, Any], timeout: float) -> AsyncGenerator[dict[str, Any], None]:
        """One answer per delta, then the ``done`` answer; ``timeout`` is the longest silence."""
        finish: str | None = None
        usage: Any = None
        cid: Any = None
        model: Any = None
        target = f"{url}/v1/chat/completions"
        try:
            async with aconnect_sse(
                self.http,
                "POST",
                target,
                content=_json_bytes(body),
                headers=dict(JSON_HEADERS),  # aconnect_sse adds its own to this dict
                timeout=self._timeout(timeout),
            ) as source:
                resp = source.response
                if resp.status_code != 200 or "text/event-stream" not in resp.headers.get("content-type", ""):
                    await resp.aread()
                    _raise_lmstudio_error(resp.status_code, _json(resp), resp.text)
                    raise NativeHostError(
                        f"LM Studio answered {resp.status_code} without an event stream: {resp.text[:200]!r}",
                        "lmstudio_error",
                    )
                async for event in source.aiter_sse():
                    if event.data.strip() == "[DONE]":
                        break
                    try:
                        chunk = json.loads(event.data)
                    except ValueError:
                        msg = f"LM Studio sent a broken event: {event.data[:200]!r}"
                        raise NativeHostError(msg, "lmstudio_error") from None
                    _raise_lmstudio_error(200, chunk, event.data)
                    if not isinstance(chunk, dict):
                        continue
                    cid, model = chunk.get("id", cid), chunk.get("model", model)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        if not isinstance(choice, dict):
                            continue
                        delta = choice.get("delta") or {}
                        piece: dict[str, Any] = {"type": "delta", "done": False, "index": choice.get("index", 0)}
                        if isinstance(delta, dict):
                            for key in ("content", "reasoning", "reasoning_content"):
                                if delta.get(key):
                                    piece["delta" if key == "content" else "reasoning"] = delta[key]
                        if len(piece) > 3:
                            yield success(piece)
                        finish = choice.get("finish_reason") or finish
        except (TimeoutError, httpx.TimeoutException):
            raise NativeHostError(f"LM Studio sent nothing for {timeout:g} s", code="timeout") from None
        except SSEError as exc:
            raise NativeHostError(f"LM Studio's stream is not an event stream: {exc}", "lmstudio_error") from exc
        except httpx.HTTPError as exc:
            raise _unreachable(url, exc) from exc
        yield success(
            {"type": "done", "done": True, "finish_reason": finish, "usage": usage, "id": cid, "model": model}
        )


def _request_id(value: Any) -> str | int | None:
    """The ``id`` to echo: a string or an integer (not a bool); None for anything else.

    Raises :class:`NativeHostError` (``bad_request``, the id not echoed) for an id that
    cannot be echoed: a string with a lone UTF-16 surrogate (``"\\ud800"`` is legal JSON
    text but has no UTF-8 form), or longer than :data:`MAX_ID_BYTES` bytes of UTF-8 (its
    echo would crowd the answer out of the browser's 1 MiB).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int):
        return value
    size = len(_encoded("id", value, "; use an integer or a plain string id (this answer carries none)"))
    if size > MAX_ID_BYTES:
        raise NativeHostError(
            f"id: expected at most {MAX_ID_BYTES} bytes, got {size}; use an integer or a short string id "
            "(this answer carries none)"
        )
    return value


def _encoded(path: str, text: str, advice: str = "") -> bytes:
    """``text`` as UTF-8. Raises :class:`NativeHostError` (``bad_request``) naming ``path``
    for a string holding a lone UTF-16 surrogate (``"\\ud800"`` is legal JSON text, but has
    no UTF-8 form, so it can neither be echoed nor sent on); ``advice`` ends the message."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NativeHostError(
            f"{path}: expected text, got a string with a lone UTF-16 surrogate (U+{ord(text[exc.start]):04X} at "
            f"character {exc.start}), which has no UTF-8 form{advice}"
        ) from None


def _json_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, the body LM Studio is sent (as httpx 0.28+ writes
    ``json=``; written here so every httpx writes it alike, and once). Raises ValueError for
    NaN or an infinity, UnicodeEncodeError (a ValueError) for a lone UTF-16 surrogate,
    RecursionError for nesting deeper than the writer goes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _check_sendable(parts: Mapping[str, Any]) -> None:
    """Refuse request values that cannot be sent on to LM Studio as JSON: raises
    :class:`NativeHostError` (``bad_request``) naming the first offending place
    (``settings.temperature``, ``messages[0].content``): NaN or an infinity (Python's JSON
    reader takes ``NaN``, ``Infinity`` and ``1e999``; no JSON writer may send them), a
    string or object key with a lone UTF-16 surrogate (:func:`_encoded`), or nesting too
    deep for the writer (JSON the reader took can be that deep). ``parts`` maps each
    part's name to its value. The writer tries first, so a sound request costs one
    C-speed pass; only a refused one is walked to find the place."""
    try:
        _json_bytes(parts)
    except RecursionError:
        raise NativeHostError(f"{' or '.join(parts)}: nested too deeply to be sent on as JSON") from None
    except ValueError as exc:
        for name, value in parts.items():
            _name_unsendable(name, value)
        raise NativeHostError(f"{' or '.join(parts)}: cannot be sent on as JSON ({exc})") from None


def _name_unsendable(path: str, value: Any) -> None:
    """Raise :class:`NativeHostError` for the first value under ``path`` that has no JSON
    form (see :func:`_check_sendable`). Depth first over iterators: memory grows with the
    depth, not the size, and a place's name is spelled out only when it is refused."""
    names = [path]  # the name of each level down to the current item: "messages", "[0]", ".content"
    levels: list[Iterator[tuple[str, Any]]] = []
    item = value
    while True:
        if isinstance(item, float) and not finite(item):
            raise NativeHostError(
                f"{''.join(names)}: expected a finite number, got {json.dumps(item)}, which JSON cannot carry"
            )
        if isinstance(item, str):
            _encoded("".join(names), item)
        elif isinstance(item, dict | list):
            levels.append(_members(names, item))
            names.append("")
        while levels:  # the next item: the current level's next member, else the parent's
            member = next(levels[-1], None)
            if member is not None:
                names[-1], item = member
                break
            levels.pop()
            names.pop()
        else:
            return


def _members(names: list[str], item: dict[str, Any] | list[Any]) -> Iterator[tuple[str, Any]]:
    """``(".key", value)`` for an object (each key checked as text, named after ``names``
    as they are when it is reached), ``("[i]", value)`` for an array."""
    if isinstance(item, list):
        yield from ((f"[{i}]", v) for i, v in enumerate(item))
        return
    for key, v in item.items():
        _encoded(f"{''.join(names[:-1])} (a key)", key)
        yield f".{key}", v


def _with_id(answer: dict[str, Any], request_id: Any) -> dict[str, Any]:
    return answer if request_id is None else {**answer, "id": request_id}


def _seconds(msg: Mapping[str, Any], key: str, default: float) -> float:
    """``msg[key]`` (else ``default``) as seconds in (0, :data:`MAX_TIMEOUT`]; raises
    :class:`NativeHostError` (``bad_request``) naming ``key`` and the range for anything
    else: not a number, a bool, NaN, an infinity, zero, negative or larger (an integer of
    any size, ``10**400`` too, is compared as an integer: :func:`lmsupervisor.config.finite`)."""
    value = msg.get(key, default)
    if not finite(value) or not 0 < value <= MAX_TIMEOUT:
        shown = json.dumps(value)
        shown = shown if len(shown) <= SHOWN_CHARS else f"{shown[:SHOWN_CHARS]}... ({len(shown)} characters)"
        raise NativeHostError(f"{key}: expected seconds > 0 and <= {MAX_TIMEOUT:g}, got {shown}")
    return float(value)


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _unreachable(url: str, exc: Exception) -> NativeHostError:
    return NativeHostError(
        f"LM Studio's server does not answer at {url} ({exc.__class__.__name__}); send start_lmstudio first",
        code="unreachable",
    )


def _raise_lmstudio_error(status: int, data: Any, text: str) -> None:
    """LM Studio's own error message, from ``{"error": {"message"}}`` or ``{"error": "..."}``
    (unknown routes answer 200 with the latter, facts §4)."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        error = error.get("message") or json.dumps(error)
    if error:
        raise NativeHostError(f"LM Studio: {error}", code="lmstudio_error")
    if status != 200:
        raise NativeHostError(f"LM Studio answered {status}: {text[:200]!r}", code="lmstudio_error")


def _supervisor_view(socket: str, snap: Mapping[str, Any] | None) -> dict[str, Any]:
    """The supervisor part of ``check_lmstudio``: whether it runs, and its state."""
    if snap is None:
        return {"running": False, "socket": socket}
    sup = snap.get("supervisor")
    sup = sup if isinstance(sup, dict) else {}
    return {
        "running": snap.get("state") not in GONE_STATES,
        "socket": socket,
        "state": snap.get("state"),
        "ready": snap.get("ready"),
        "since": snap.get("since"),
        "pid": sup.get("pid"),
        "version": sup.get("version"),
        "models": snap.get("models", []),
        "restarts": snap.get("restarts"),
        "problems": snap.get("problems", []),
    }


# -- the process ---------------------------------------------------------------------
async def serve(host: NativeHost, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Read, answer, repeat, until stdin closes (or the browser stops reading stdout)."""

    def write(answer: Mapping[str, Any]) -> None:
        try:
            data = encode_frame(answer)
        except (TypeError, ValueError) as exc:  # not JSON-serialisable: a bug of ours, not a reason to die
            log.error("native_answer_unencodable", error=repr(exc))
            fallback = failure(f"internal error: the answer could not be encoded as JSON: {exc}")
            data = encode_frame({**fallback, "id": answer["id"]} if "id" in answer else fallback)
        stdout.write(data)
        stdout.flush()

    while True:
        try:
            raw = await asyncio.to_thread(read_frame, stdin)
        except OversizedFrameError as exc:
            write(failure(str(exc), exc.code))
            continue
        except TruncatedFrameError as exc:
            log.warning("native_input_truncated", error=exc.message)
            return
        if raw is None:
            return
        async with contextlib.aclosing(host.handle(raw)) as answers:
            async for answer in answers:
                write(answer)


def host_main(config_path: Path | None, socket_cli: str | os.PathLike[str] | None) -> int:
    """`lmsupervisor native-host`: serve the browser on stdin/stdout; 0 when stdin closes.

    stdout is the protocol channel: it is duplicated for the answers, and file
    descriptor 1 is pointed at stderr so a stray print (ours or a library's) cannot
    corrupt a frame.
    """
    from lmsupervisor import config, logs  # noqa: PLC0415
    from lmsupervisor.api.client import resolve_socket  # noqa: PLC0415
    from lmsupervisor.errors import ConfigError  # noqa: PLC0415

    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logs.configure(os.environ.get("LMSUPERVISOR_NATIVE_LOG_LEVEL", "warning"), "json", sys.stderr)
    config_error = None
    try:
        cfg, _ = config.load(config_path)
    except ConfigError as exc:
        cfg, config_error = Config(), str(exc)
    if config_path is None:  # exactly as the CLI finds it
        socket = resolve_socket(socket_cli)
    else:  # the named config's status.socket, unless --socket or $LMSUPERVISOR_SOCKET says otherwise
        socket = str(config.socket_path(cfg, None if socket_cli is None else Path(socket_cli)))

    async def main() -> None:
        host = NativeHost(
            cfg, Platform.current(), SocketSupervisor(socket), config_error=config_error, cache_dir=state_dir()
        )
        try:
            await serve(host, sys.stdin.buffer, out)
        finally:
            await host.aclose()

    try:
        asyncio.run(main())
    except BrokenPipeError:  # the browser closed our stdout: it is gone
        pass
    finally:
        with contextlib.suppress(OSError):
            out.close()
    return 0
