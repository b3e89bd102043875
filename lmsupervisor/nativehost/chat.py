"""``chat_completion``: LM Studio's ``/v1/chat/completions`` for the browser, plain or streamed.

``{"messages": [...], "settings": {"model", "temperature", "max_tokens", "stream", ...}}``
is forwarded to LM Studio's ``/v1/chat/completions``. Without ``stream``: one answer,
payload ``{"id", "model", "content", "message", "finish_reason", "usage"}``. With
``stream``: one answer per delta, payload ``{"type": "delta", "done": false, "delta":
"..."}``, then ``{"type": "done", "done": true, "finish_reason", "usage", "id", "model"}``
(``usage`` is null when LM Studio does not report it). The deadline is the request's
``"timeout"`` (default :data:`CHAT_TIMEOUT`; for streams, the longest silence between two
events). Over httpx, the stream through httpx-sse; a request without an answer becomes a
:class:`~lmsupervisor.errors.NativeHostError` answer (``timeout``, or ``unreachable`` with
the hint to send ``start_lmstudio``) through
:func:`~lmsupervisor.httperrors.map_http_errors` (:data:`CHAT_ERRORS`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from lmsupervisor.errors import NativeHostError
from lmsupervisor.httperrors import ErrorKinds, map_http_errors
from lmsupervisor.nativehost.protocol import check_sendable, json_bytes, read_seconds, success

CHAT_TIMEOUT = 300.0  # seconds: a cold JIT load can delay the first token for long
JSON_HEADERS = {"Content-Type": "application/json"}  # of the chat bodies sent to LM Studio (json_bytes)
START_FIRST = "send start_lmstudio first"  # the hint of an unreachable server
CHAT_ERRORS = ErrorKinds(  # a request without an answer, as the browser is told (map_http_errors)
    no_answer=lambda message: NativeHostError(message, code="timeout"),
    no_connection=lambda message: NativeHostError(message, code="unreachable", hint=START_FIRST),
    broken=lambda message: NativeHostError(message, code="unreachable", hint=START_FIRST),
)
CHAT_SETTINGS = frozenset(
    {"model", "temperature", "max_tokens", "stream", "top_p", "top_k", "stop", "seed", "presence_penalty",
     "frequency_penalty", "repeat_penalty", "ttl"}
)  # fmt: skip


def chat_request(msg: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The body to send LM Studio for a ``chat_completion`` request (its ``settings``, then
    ``messages`` and ``stream``; no ``model`` added) and the request's timeout in seconds.

    Raises :class:`NativeHostError` (``bad_request``) naming the field: ``messages`` not a
    non-empty array of objects, ``settings`` not an object or with an unknown key, a bad
    ``timeout`` (:func:`~lmsupervisor.nativehost.protocol.read_seconds`), or a value that
    cannot be sent on as JSON (:func:`~lmsupervisor.nativehost.protocol.check_sendable`).
    """
    messages = msg.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise NativeHostError("messages: expected a non-empty array of {role, content} objects")
    settings = msg.get("settings", {})
    if not isinstance(settings, dict):
        raise NativeHostError(f"settings: expected an object, got {type(settings).__name__}")
    unknown = sorted(set(settings) - CHAT_SETTINGS)
    if unknown:
        raise NativeHostError(f"settings: unknown key {unknown[0]!r}; known: {', '.join(sorted(CHAT_SETTINGS))}")
    timeout = read_seconds(msg, "timeout", CHAT_TIMEOUT)
    check_sendable({"messages": messages, "settings": settings})
    return {**settings, "messages": messages, "stream": settings.get("stream") is True}, timeout


class Chat:
    """Chat completions from the LM Studio server at a URL (``http://127.0.0.1:1234``),
    through ``http`` (its auth and transport are the caller's); ``connect`` is the seconds
    a connection may take (``health.timeout``)."""

    def __init__(self, http: httpx.AsyncClient, connect: float) -> None:
        self.http = http
        self.connect = connect

    async def answers(self, url: str, body: dict[str, Any], timeout: float) -> AsyncGenerator[dict[str, Any], None]:
        """The answers to ``body`` (from :func:`chat_request`, ``model`` filled in): one
        success, or with ``body["stream"]`` one per delta and the ``done`` one. Raises
        :class:`NativeHostError`: ``timeout`` after ``timeout`` seconds (of silence, for a
        stream), ``unreachable``, ``lmstudio_error`` with LM Studio's own words."""
        if body["stream"]:
            body["stream_options"] = {"include_usage": True}  # LM Studio 0.3.18+ (facts §4)
            async for answer in self._stream(url, body, timeout):
                yield answer
            return
        target = f"{url}/v1/chat/completions"
        with map_http_errors(target, timeout, CHAT_ERRORS):
            resp = await asyncio.wait_for(
                self.http.post(target, content=json_bytes(body), headers=JSON_HEADERS, timeout=self._timeout(timeout)),
                timeout,
            )
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
        return httpx.Timeout(seconds, connect=min(seconds, self.connect))

    async def _stream(self, url: str, body: dict[str, Any], timeout: float) -> AsyncGenerator[dict[str, Any], None]:
        """One answer per delta, then the ``done`` answer; ``timeout`` is the longest silence."""
        finish: str | None = None
        usage: Any = None
        cid: Any = None
        model: Any = None
        target = f"{url}/v1/chat/completions"
        with map_http_errors(target, timeout, CHAT_ERRORS):  # SSEError is an httpx error too: caught first, below
            try:
                async with aconnect_sse(
                    self.http,
                    "POST",
                    target,
                    content=json_bytes(body),
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
            except SSEError as exc:
                raise NativeHostError(f"LM Studio's stream is not an event stream: {exc}", "lmstudio_error") from exc
        yield success(
            {"type": "done", "done": True, "finish_reason": finish, "usage": usage, "id": cid, "model": model}
        )


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


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
