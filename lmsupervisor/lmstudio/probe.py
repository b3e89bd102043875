"""HTTP probes of LM Studio's server (facts §4), over httpx.

A 200 alone proves nothing: LM Studio answers unknown routes with 200 and an error body
(BT#618), and another program may hold the port. The greeting probe therefore requires
the body ``{"lmstudio": true}``. Every probe has a hard overall deadline (``timeout``
seconds), not just httpx's per-phase timeouts, so a server that trickles bytes cannot
stall the supervisor. The transport is a constructor argument: tests pass
``httpx.MockTransport`` and open no sockets.

With LM Studio's "Require Authentication" on (0.4.0+, facts §4) every route but the
greeting needs ``Authorization: Bearer <token>``. The token comes from ``token()`` at each
request (:func:`lmsupervisor.lmstudio.rest.resolve_token` over the config in force, so a
reload applies at once); the greeting goes without it, since it may reach a program that
is not LM Studio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from lmsupervisor.core.observed import ProbeResult
from lmsupervisor.errors import ProbeError
from lmsupervisor.httperrors import PROBE, map_http_errors
from lmsupervisor.lmstudio.rest import BearerAuth

LONG_REPLY_PROMPT = "Count from 1 to 200, separated by spaces."  # an answer probe that measures speed


def _no_token() -> str | None:
    return None


class Prober:
    """Probes LM Studio's HTTP server; ``timeout`` is seconds per probe; ``token`` gives the
    API token at each request (None: no ``Authorization`` header), as for
    :class:`~lmsupervisor.lmstudio.rest.RestClient`."""

    def __init__(
        self,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        token: Callable[[], str | None] = _no_token,
    ) -> None:
        self.timeout = timeout
        self.token = token
        # No keep-alive: each probe connects afresh, as a new client would, so a server
        # that stopped accepting is noticed even if an old connection still answers.
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            auth=BearerAuth(token),
        )

    async def aclose(self) -> None:
        """Close the underlying :class:`httpx.AsyncClient`; the prober is unusable afterwards."""
        await self._client.aclose()

    async def _get(self, url: str, timeout: float | None, auth: bool = True) -> tuple[httpx.Response, float]:
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        with map_http_errors(url, limit, PROBE):
            request = self._client.get(url, timeout=limit) if auth else self._client.get(url, timeout=limit, auth=None)
            response = await asyncio.wait_for(request, limit)
        return response, (time.monotonic() - started) * 1000

    async def greeting(self, url: str, timeout: float | None = None) -> ProbeResult:
        """``GET {url}/lmstudio-greeting``; ok only for 200 with body ``{"lmstudio": true}``."""
        started = time.monotonic()
        try:
            response, ms = await self._get(f"{url}/lmstudio-greeting", timeout, auth=False)
        except ProbeError as exc:
            return ProbeResult(False, (time.monotonic() - started) * 1000, None, exc.message)
        body = _json(response)
        if response.status_code == 200 and isinstance(body, dict) and body.get("lmstudio") is True:
            return ProbeResult(True, ms, 200)
        snippet = response.text[:120].replace("\n", " ")
        return ProbeResult(
            False,
            ms,
            response.status_code,
            f'{url} answered {response.status_code} {snippet!r}, not LM Studio\'s greeting {{"lmstudio":true}}',
        )

    async def ask(self, url: str, model: str, kind: str, timeout: float, tokens: int = 1) -> ProbeResult:
        """Deep readiness: one request with a ``tokens`` budget to ``model`` (an instance
        identifier): ``POST {url}/v1/chat/completions`` with ``max_tokens: tokens`` for an
        LLM (more than one: a prompt that asks for a long reply, so the budget is spent
        generating), ``POST {url}/v1/embeddings`` when ``kind`` is ``"embedding"`` (facts
        §4). ``ok`` only for a 200 carrying ``choices`` (or ``data``), with ``tokens`` from
        its ``usage.completion_tokens``; otherwise ``error`` is LM Studio's own message (a
        401 when the API token is missing or refused). Never raises; ``timeout`` is seconds."""
        started = time.monotonic()
        body: dict[str, Any]
        if kind == "embedding":
            target, body, field = "/v1/embeddings", {"model": model, "input": "ping"}, "data"
        else:
            messages = [{"role": "user", "content": "ping" if tokens <= 1 else LONG_REPLY_PROMPT}]
            target, field = "/v1/chat/completions", "choices"
            body = {"model": model, "messages": messages, "max_tokens": tokens, "stream": False}
        try:
            with map_http_errors(f"{url}{target}", timeout, PROBE):
                request = self._client.post(f"{url}{target}", json=body, timeout=timeout)
                response = await asyncio.wait_for(request, timeout)
        except ProbeError as exc:
            return ProbeResult(False, (time.monotonic() - started) * 1000, None, exc.message)
        ms = (time.monotonic() - started) * 1000
        data = _json(response)
        if response.status_code == 200 and isinstance(data, dict) and isinstance(data.get(field), list):
            usage = data.get("usage")
            generated = usage.get("completion_tokens") if isinstance(usage, dict) else None
            counted = generated if isinstance(generated, int) and not isinstance(generated, bool) else None
            return ProbeResult(True, ms, 200, tokens=counted)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            error = error.get("message")
        text = str(error) if error else response.text[:200].replace("\n", " ")
        return ProbeResult(False, ms, response.status_code, f"{model} did not answer: {text}")

    async def models(self, url: str, timeout: float | None = None) -> list[str]:
        """Model ids from ``GET {url}/v1/models`` (``data[].id``); raises :class:`ProbeError`."""
        response, _ = await self._get(f"{url}/v1/models", timeout)
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise ProbeError(f"{url}/v1/models answered {response.status_code} without a model list")
        return [str(m["id"]) for m in body["data"] if isinstance(m, dict) and "id" in m]


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
