"""The native host's actions (:class:`NativeHost`), the loop that serves them (:func:`serve`)
and `lmsupervisor native-host` (:func:`host_main`); what each action answers is in
:mod:`lmsupervisor.nativehost`, the wire in :mod:`lmsupervisor.nativehost.protocol`.

The host drives LM Studio only with the supervisor's own code: one wiring
(:func:`lmsupervisor.lmstudio.wiring.wire`: `lms`, detection, the prober and REST with the
API token, the capability cache), the bring-up's :func:`~lmsupervisor.lmstudio.bringup.start_once`,
and the supervisor's REST listing. Logs go to stderr (the browser keeps stdout for the
protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import structlog

from lmsupervisor.clock import Clock, within
from lmsupervisor.config import Config
from lmsupervisor.core.messages import BringUpFailed, NotInstalled, ServerUp
from lmsupervisor.core.observed import Install, ProbeResult, base_url, effective_server, usable_server
from lmsupervisor.core.problems import Problem
from lmsupervisor.errors import (
    LmsError,
    NativeHostError,
    OversizedFrameError,
    RestError,
    RestTimeoutError,
    TruncatedFrameError,
)
from lmsupervisor.httperrors import REST, map_http_errors, unanswered
from lmsupervisor.lmstudio.bringup import start_once
from lmsupervisor.lmstudio.install import DOWNLOAD_URL, Platform, detect
from lmsupervisor.lmstudio.lms import LmsRunner
from lmsupervisor.lmstudio.rest import BearerAuth
from lmsupervisor.lmstudio.wiring import wire
from lmsupervisor.nativehost.chat import CHAT_TIMEOUT, Chat, chat_request
from lmsupervisor.nativehost.link import GONE_STATES, UP_STATES, SocketSupervisor, SupervisorLink, supervisor_view
from lmsupervisor.nativehost.protocol import echo_id, encode_frame, failure, read_frame, read_seconds, success, with_id
from lmsupervisor.statefile import default_folder as state_dir

log = structlog.get_logger("lmsupervisor.nativehost")

LMS_TIMEOUT = 15.0  # seconds for `lms` status and stop calls
WAIT_INTERVAL = 0.25  # seconds between /v1/status reads while waiting for the supervisor


# -- the host ---------------------------------------------------------------------
class NativeHost:
    """Answers native messages. Every I/O seam is an argument: ``supervisor`` (the status
    socket), ``runner_factory`` (`lms`), ``transport`` (httpx, for probes, REST and chat),
    ``clock`` (:class:`lmsupervisor.clock.Clock`, for waiting on the supervisor; default:
    the wiring's :class:`~lmsupervisor.clock.SystemClock`, the one the bring-up uses)."""

    def __init__(
        self,
        config: Config,
        platform: Platform,
        supervisor: SupervisorLink,
        *,
        config_error: str | None = None,
        runner_factory: Callable[[Path], LmsRunner] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
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
        self.chat = Chat(self.http, connect=config.health.timeout)
        self.clock = clock if clock is not None else self.io.clock
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
            request_id = echo_id(msg.get("id"))
            action = msg.get("action")
            handler = self.actions.get(action) if isinstance(action, str) else None
            if handler is None:
                raise NativeHostError(f"action: expected one of {', '.join(self.actions)}, got {action!r}")
            async with contextlib.aclosing(handler(msg)) as answers:
                async for answer in answers:
                    yield with_id(answer, request_id)
        except NativeHostError as exc:
            yield with_id(failure(str(exc), exc.code), request_id)
        except Exception as exc:  # the host must survive anything one request does
            log.error("native_message_failed", error=repr(exc), exc_info=True)
            yield with_id(failure(f"internal error: {exc.__class__.__name__}: {exc}"), request_id)

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
        """API identifiers of the loaded models: REST v1 (0.4, the supervisor's
        :meth:`~lmsupervisor.lmstudio.rest.RestClient.models`), else v0 (0.3.6+); None if
        unknown. Each request gets ``health.timeout`` seconds; no answer at all ends the
        search (v0 would get none either)."""
        limit = self.config.health.timeout
        try:
            if self.io.rest is not None:  # wire() always gives one
                return [inst.identifier for inst in (await self.io.rest.models(url, timeout=limit)).loaded]
        except RestTimeoutError:
            return None
        except RestError as exc:  # an answer that is no v1 listing (0.3's "Unexpected endpoint", a 401...): try v0
            if unanswered(exc):  # no answer: refused, or the connection broke
                return None
        try:
            with map_http_errors(f"{url}/api/v0/models", limit, REST):
                resp = await asyncio.wait_for(self.http.get(f"{url}/api/v0/models", timeout=limit), limit)
            body = resp.json()
        except (RestError, ValueError):  # ValueError: not JSON
            return None
        if resp.status_code == 200 and isinstance(body, dict) and isinstance(body.get("data"), list):
            return [
                str(m["id"]) for m in body["data"] if isinstance(m, dict) and m.get("state") == "loaded" and "id" in m
            ]
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
            "supervisor": supervisor_view(self.supervisor.socket, snap),
            "config_error": self.config_error,
        }

    # -- actions ----------------------------------------------------------------
    async def check_lmstudio(self, msg: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """``check_lmstudio``: one answer with the installation, server and supervisor."""
        yield success(await self._payload(await self.supervisor.status()))

    async def start_lmstudio(self, msg: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """``start_lmstudio``: through the running supervisor, else by ourselves."""
        timeout = read_seconds(msg, "timeout", self.config.server.start_timeout)
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
        deadline = self.clock.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = await self.supervisor.status()
            if last is not None and last.get("state") in UP_STATES:
                return last
            if last is None or last.get("state") in GONE_STATES:
                raise NativeHostError("the supervisor stopped while LM Studio was starting", code="unreachable")
            if self.clock.monotonic() >= deadline:
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
        progress = lambda m: log.info("bring_up_progress", message=repr(m))  # noqa: E731
        try:
            result = await within(
                self.io.clock, start_once(self.io, config, progress), timeout
            )  # the bring-up's own clock
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
        """``chat_completion``: LM Studio's ``/v1/chat/completions``, plain or streamed
        (:mod:`lmsupervisor.nativehost.chat`); a request without a model goes to
        :meth:`_default_model`."""
        body, timeout = chat_request(msg)
        snap = await self.supervisor.status()
        url = self._endpoint(self._install(), snap)
        if not body.get("model"):
            model = await self._default_model(url)
            if model:
                body["model"] = model
        async for answer in self.chat.answers(url, body, timeout):
            yield answer

    async def _default_model(self, url: str) -> str | None:
        """The model a request without one goes to: the first loaded, else the first declared."""
        loaded = await self._loaded_models(url)
        if loaded:
            return loaded[0]
        if self.config.models:
            return self.config.models[0].identifier or self.config.models[0].key
        return None


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
    from lmsupervisor.client import resolve_socket  # noqa: PLC0415
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
