"""LM Studio's native REST API v1 (0.4.0+, facts §4), over httpx: what `lms` answers, without `lms`.

On 0.4 one local HTTP request replaces an `lms` process (a Node/bun start and a websocket
handshake, facts §8): :meth:`RestClient.models` lists downloaded models and their
``loaded_instances``; :meth:`load`, :meth:`unload`, :meth:`download` and
:meth:`download_status` do the rest. `lms` stays for the daemon and the server's lifecycle.

Errors are translated here (:mod:`lmsupervisor.errors`): :class:`RestUnsupportedError`
when the route answers LM Studio's ``Unexpected endpoint`` 200 (0.3.x has no v1),
:class:`RestAuthError` on 401 ("Require Authentication" on: the token is missing or
wrong), :class:`RestError` for another error answer; a request without an answer is
:class:`RestConnectError` when nothing listens, :class:`RestTimeoutError` when no answer
comes in time, :class:`RestError` when the connection broke (one wording for all:
:func:`~lmsupervisor.httperrors.map_http_errors`). The API token comes from
``token()`` at each request (``[lmstudio] api_token``, ``api_token_file`` or ``LM_API_TOKEN``, see
:func:`resolve_token`) and goes out as ``Authorization: Bearer``.

Also here: the CORS check (``Origin`` header, ``Access-Control-Allow-Origin`` answer),
``/lms-status`` on the API port (the app/llmster version), and what a 401 means to the
user (:func:`token_problem`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lmsupervisor.config import Config
from lmsupervisor.core.observed import DownloadedModel, DownloadProgress, LoadedModel
from lmsupervisor.core.problems import Problem
from lmsupervisor.errors import RestAuthError, RestError, RestUnsupportedError
from lmsupervisor.httperrors import REST, map_http_errors
from lmsupervisor.lmstudio.lmsoutput import error_line

TOKEN_ENV = "LM_API_TOKEN"  # noqa: S105 - a variable name, not a secret. [js] and [docs]; [py] 1.6.0b1 reads LMSTUDIO_API_TOKEN (facts §5)
CORS_ORIGIN = "http://lmsupervisor.invalid"


def resolve_token(config: Config, env: Mapping[str, str]) -> str | None:
    """The API token: ``[lmstudio] api_token``, else the first line of ``api_token_file``,
    else ``$LM_API_TOKEN``, else None. The file is read as UTF-8 with or without a BOM
    (Windows Notepad writes one), surrounding whitespace and CRLF dropped. A file that
    cannot be read gives None (the 401 that follows names the fix)."""
    lm = config.lmstudio
    if lm.api_token:
        return lm.api_token
    if lm.api_token_file is not None:
        try:
            text = Path(lm.api_token_file).read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text.splitlines()[0].strip() if text else None
    return env.get(TOKEN_ENV, "").strip() or None


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token()>`` on each request when ``token()`` gives one (read
    per request, so a reload applies at once). A token that is not ASCII (a pasted
    non-breaking space) goes out as UTF-8, as curl would send it: LM Studio refuses it
    with a 401 (``api_token_invalid``) instead of the request failing here with a
    ``UnicodeEncodeError``. A request made with ``auth=None`` goes without it."""

    def __init__(self, token: Callable[[], str | None]) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """httpx's hook: sets the header (when there is a token) and sends ``request`` once."""
        token = self.token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"  # httpx encodes a set header as UTF-8
        yield request


@dataclass(frozen=True)
class Listing:
    """``GET /api/v1/models``: the downloaded models (``path`` is the ``key``: v1 has no
    paths) and the loaded instances (``loaded_instances[].id``)."""

    downloaded: tuple[DownloadedModel, ...]
    loaded: tuple[LoadedModel, ...]


def parse_models(body: Any) -> Listing:
    """Parse the ``{"models": [...]}`` body of ``GET /api/v1/models``; raises :class:`RestError`."""
    if not isinstance(body, dict) or not isinstance(body.get("models"), list):
        raise RestError(f"/api/v1/models: expected {{'models': [...]}}, got {str(body)[:120]!r}")
    downloaded, loaded = [], []
    for item in body["models"]:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            continue
        key, kind = item["key"], str(item.get("type", "llm"))
        size = item.get("size_bytes")
        size = size if isinstance(size, int) and not isinstance(size, bool) else 0
        downloaded.append(DownloadedModel(key, key, kind, size, str(item.get("display_name") or key)))
        for inst in item.get("loaded_instances") or ():
            if not isinstance(inst, dict) or not isinstance(inst.get("id"), str):
                continue
            cfg = inst.get("config")
            ctx = cfg.get("context_length") if isinstance(cfg, dict) else None
            ctx = ctx if isinstance(ctx, int) and not isinstance(ctx, bool) else None
            loaded.append(LoadedModel(inst["id"], key, key, kind, "idle", ctx, None, size))
    return Listing(tuple(downloaded), tuple(loaded))


def parse_job(body: Any) -> DownloadProgress:
    """A download job from ``POST /download`` or ``GET /download/status/:id``; raises :class:`RestError`."""
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise RestError(f"download: expected a job with a status, got {str(body)[:120]!r}")

    def num(name: str) -> Any:
        v = body.get(name)
        return v if isinstance(v, int | float) and not isinstance(v, bool) else None

    job_id = body.get("job_id")
    return DownloadProgress(
        job_id if isinstance(job_id, str) else None,
        body["status"],
        int(num("downloaded_bytes") or 0),
        None if num("total_size_bytes") is None else int(num("total_size_bytes")),
        num("bytes_per_second"),
        body.get("estimated_completion") if isinstance(body.get("estimated_completion"), str) else None,
    )


KEEPALIVE = 60.0
"""Seconds an idle connection to LM Studio's server is kept: longer than the health interval
(default 5 s), so each idle round on 0.4 reuses one connection instead of opening a new one."""


class RestClient:
    """REST v1 calls against a server URL (``http://127.0.0.1:1234``); ``timeout`` seconds per
    request; ``transport`` is for tests (``httpx.MockTransport``); ``token`` gives the API token.

    The v1 calls go straight to the client's transport (one pool, connections kept
    :data:`KEEPALIVE` seconds) with the ``Authorization`` header of :class:`BearerAuth`:
    they need none of the client's redirects, cookies or URL merging, and skipping them
    is a fifth of an idle health round's CPU (``bench/idle.py``)."""

    def __init__(
        self,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        token: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.timeout = timeout
        self.token = token
        self._auth = BearerAuth(token)
        self._transport = transport or httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=KEEPALIVE))
        self._client = httpx.AsyncClient(transport=self._transport, timeout=timeout, trust_env=False, auth=self._auth)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def _call(self, method: str, url: str, body: dict[str, Any] | None, timeout: float | None) -> Any:
        limit = self.timeout if timeout is None else timeout
        with map_http_errors(url, limit, REST):
            async with asyncio.timeout(limit):  # the whole request, however the server trickles
                response = await self._send(method, url, body)
        try:
            data = response.json()
        except ValueError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if response.status_code == 401:
            message = error.get("message") if isinstance(error, dict) else None
            code = "api_token_invalid" if self.token() else "api_token_missing"
            raise RestAuthError(str(message or f"{url}: HTTP 401"), code)
        if isinstance(error, str) and error.startswith("Unexpected endpoint"):
            raise RestUnsupportedError(f"{method} {url}: {error}")  # facts §4: 200 for unknown routes
        if response.status_code != 200 or error is not None:
            text = error.get("message") if isinstance(error, dict) else error
            raise RestError(str(text or f"{method} {url}: HTTP {response.status_code}"))
        return data

    async def _send(self, method: str, url: str, body: dict[str, Any] | None) -> httpx.Response:
        """One request on the transport, read whole. No httpx timeouts: :meth:`_call`'s one
        ``asyncio`` deadline bounds the whole request (and says it in the same words), and
        each of httpcore's phase timeouts would be a timer of its own on every idle round."""
        request = next(self._auth.auth_flow(httpx.Request(method, url, json=body)))
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def models(self, url: str, timeout: float | None = None) -> Listing:
        """``GET {url}/api/v1/models``: downloaded models and loaded instances."""
        return parse_models(await self._call("GET", f"{url}/api/v1/models", None, timeout))

    async def load(self, url: str, key: str, context_length: int | None = None, timeout: float | None = None) -> str:
        """``POST {url}/api/v1/models/load``; returns the ``instance_id``. Not idempotent
        (a second call adds ``key:2``): callers list first and verify after."""
        body: dict[str, Any] = {"model": key}
        if context_length:
            body["context_length"] = context_length
        data = await self._call("POST", f"{url}/api/v1/models/load", body, timeout)
        instance = data.get("instance_id") if isinstance(data, dict) else None
        if not isinstance(instance, str):
            raise RestError(f"load {key}: no instance_id in {str(data)[:120]!r}")
        return instance

    async def unload(self, url: str, instance_id: str, timeout: float | None = None) -> None:
        """``POST {url}/api/v1/models/unload`` ``{"instance_id"}``."""
        await self._call("POST", f"{url}/api/v1/models/unload", {"instance_id": instance_id}, timeout)

    async def download(self, url: str, key: str, timeout: float | None = None) -> DownloadProgress:
        """``POST {url}/api/v1/models/download``: a job (``status`` ``downloading``...) or
        ``already_downloaded`` (no ``job_id``)."""
        return parse_job(await self._call("POST", f"{url}/api/v1/models/download", {"model": key}, timeout))

    async def download_status(self, url: str, job_id: str, timeout: float | None = None) -> DownloadProgress:
        """``GET {url}/api/v1/models/download/status/{job_id}``: bytes, rate, ETA."""
        return parse_job(await self._call("GET", f"{url}/api/v1/models/download/status/{job_id}", None, timeout))

    async def cors(self, url: str, timeout: float | None = None) -> bool:
        """Whether the server answers a cross-origin request: ``GET {url}/lmstudio-greeting``
        with an ``Origin`` header, checking ``Access-Control-Allow-Origin``. Raises :class:`RestError`."""
        limit = self.timeout if timeout is None else timeout
        target = f"{url}/lmstudio-greeting"
        with map_http_errors(target, limit, REST):
            response = await asyncio.wait_for(
                self._client.get(target, headers={"Origin": CORS_ORIGIN}, timeout=limit, auth=None), limit
            )
        allowed = response.headers.get("access-control-allow-origin")
        return allowed in ("*", CORS_ORIGIN)

    async def service_version(self, api_port: int, timeout: float | None = None) -> str | None:
        """The app/llmster version from ``GET http://127.0.0.1:{api_port}/lms-status`` (2025-11+),
        None when it does not answer so."""
        try:
            data = await self._call("GET", f"http://127.0.0.1:{api_port}/lms-status", None, timeout)
        except RestError:
            return None
        version = data.get("version") if isinstance(data, dict) else None
        return version if isinstance(version, str) else None


def token_problem(code: str, message: str) -> Problem:
    """``api_token_missing`` or ``api_token_invalid`` (``code``): LM Studio answered 401
    ("Require Authentication" is on) with ``message``, to a REST v1 request
    (:class:`~lmsupervisor.errors.RestAuthError`) or an answer probe."""
    return Problem(
        code,
        f"LM Studio refused lmsupervisor's request (HTTP 401): {error_line(message)}",
        "create an API token in LM Studio's Developer page and set [lmstudio] api_token (or api_token_file, "
        "or LM_API_TOKEN); meanwhile lmsupervisor uses lms",
        "warning",
    )
