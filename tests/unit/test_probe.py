"""HTTP probes: a 200 alone is not health; hard deadlines; no sockets (MockTransport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from lmsupervisor.core.observed import base_url
from lmsupervisor.errors import ProbeError
from lmsupervisor.lmstudio.probe import LONG_REPLY_PROMPT, Prober


def prober(handler: object, timeout: float = 1.0) -> Prober:
    return Prober(timeout=timeout, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


async def test_greeting_ok() -> None:
    """200 with {"lmstudio": true} is healthy, with a latency."""
    p = prober(lambda req: httpx.Response(200, json={"lmstudio": True}))
    result = await p.greeting("http://127.0.0.1:1234")
    assert (result.ok, result.status, result.latency_ms >= 0) == (True, 200, True)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"error": "Unexpected endpoint or method. (GET /lmstudio-greeting)"}),
        httpx.Response(200, text="<html>nginx</html>"),
        httpx.Response(200, json={"lmstudio": "yes"}),
        httpx.Response(500, json={"lmstudio": True}),
    ],
)
async def test_greeting_rejects_impostors(response: httpx.Response) -> None:
    """Any other body or status is not LM Studio, even with HTTP 200 (BT#618)."""
    result = await prober(lambda req: response).greeting("http://127.0.0.1:1234")
    assert (result.ok, result.status) == (False, response.status_code)
    assert "not LM Studio" in (result.error or "")


async def test_greeting_refused() -> None:
    """A refused connection is a failed probe with a reason, not an exception."""

    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    result = await prober(refuse).greeting("http://127.0.0.1:1234")
    assert (result.ok, result.status, "cannot connect" in (result.error or "")) == (False, None, True)


async def test_hard_deadline_on_a_hung_server() -> None:
    """A server that never answers fails the probe after the timeout."""

    async def hang(req: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    result = await prober(hang, timeout=0.05).greeting("http://127.0.0.1:1234")
    assert (result.ok, "within 0.05 s" in (result.error or "")) == (False, True)


async def test_models_list() -> None:
    """/v1/models gives data[].id; anything else raises ProbeError."""
    p = prober(lambda req: httpx.Response(200, json={"data": [{"id": "a"}, {"id": "b"}], "object": "list"}))
    assert await p.models("http://x") == ["a", "b"]
    with pytest.raises(ProbeError):
        await prober(lambda req: httpx.Response(200, json={"error": "x"})).models("http://x")


class AuthServer:
    """LM Studio with "Require Authentication" on (facts §4): 401 without ``Bearer <token>``
    on every route but the greeting; records each request's path and Authorization header."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.seen.append((req.url.path, req.headers.get("authorization")))
        if req.url.path == "/lmstudio-greeting":
            return httpx.Response(200, json={"lmstudio": True})
        if req.headers.get("authorization") != f"Bearer {self.token}":
            error = {
                "type": "invalid_request",
                "code": "invalid_api_key",
                "message": "An LM Studio API token is required",
            }
            return httpx.Response(401, json={"error": error})
        if req.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "qwen"}], "object": "list"})
        return httpx.Response(200, json={"choices": [{"message": {"content": "."}}], "data": [{"embedding": []}]})


async def test_token_is_read_at_each_request_and_sent_but_to_the_greeting() -> None:
    """``token()`` is called per request (a config reload applies at once): the answer probe
    and the model list carry ``Authorization: Bearer <token>``; the greeting, LM Studio's
    open identity probe, never does (it may reach a program that is not LM Studio)."""
    server, current = AuthServer("sk-lm-two"), ["sk-lm-one"]
    p = Prober(timeout=1.0, transport=httpx.MockTransport(server), token=lambda: current[0])
    url = "http://127.0.0.1:1234"
    assert (await p.greeting(url)).ok
    refused = await p.ask(url, "qwen", "llm", 1.0)
    current[0] = "sk-lm-two"
    answered = await p.ask(url, "qwen", "llm", 1.0)
    embedded = await p.ask(url, "nomic", "embedding", 1.0)
    assert await p.models(url) == ["qwen"]
    await p.aclose()
    assert (refused.ok, refused.status, "token is required" in (refused.error or "")) == (False, 401, True)
    assert (answered.ok, embedded.ok) == (True, True)
    assert server.seen == [
        ("/lmstudio-greeting", None),
        ("/v1/chat/completions", "Bearer sk-lm-one"),
        ("/v1/chat/completions", "Bearer sk-lm-two"),
        ("/v1/embeddings", "Bearer sk-lm-two"),
        ("/v1/models", "Bearer sk-lm-two"),
    ]


async def test_no_token_sends_no_authorization_header() -> None:
    """Without a token (the default, or ``token()`` giving None) no Authorization header goes out."""
    server = AuthServer("sk-lm-x")
    for p in (
        Prober(transport=httpx.MockTransport(server)),
        Prober(transport=httpx.MockTransport(server), token=lambda: None),
    ):
        result = await p.ask("http://127.0.0.1:1234", "qwen", "llm", 1.0)
        await p.aclose()
        assert (result.ok, result.status) == (False, 401)
    assert [h for _, h in server.seen] == [None, None]


async def test_an_answer_probe_for_many_tokens_asks_for_a_long_reply_and_counts_them() -> None:
    """``tokens`` > 1: ``max_tokens`` is that many, the prompt asks for a long reply (so the
    budget is spent generating), and the reply's ``usage.completion_tokens`` comes back as
    ``tokens``; one token asks "ping" as before, and a reply without usage counts None."""
    sent: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        sent.append(body)
        usage = {"completion_tokens": body["max_tokens"]} if body["max_tokens"] > 1 else None
        return httpx.Response(200, json={"choices": [{"message": {"content": "1 2 3"}}], "usage": usage})

    p = Prober(transport=httpx.MockTransport(handler))
    many = await p.ask("http://127.0.0.1:1234", "qwen", "llm", 1.0, tokens=16)
    one = await p.ask("http://127.0.0.1:1234", "qwen", "llm", 1.0)
    await p.aclose()
    assert [(b["max_tokens"], b["messages"]) for b in sent] == [
        (16, [{"role": "user", "content": LONG_REPLY_PROMPT}]),
        (1, [{"role": "user", "content": "ping"}]),
    ]
    assert ((many.ok, many.tokens), (one.ok, one.tokens)) == ((True, 16), (True, None))


def test_base_url_for_wildcard_binds() -> None:
    """A server bound to 0.0.0.0 or :: is reached on loopback."""
    assert [base_url("0.0.0.0", 1), base_url("::", 2), base_url("10.0.0.5", 3)] == [
        "http://127.0.0.1:1",
        "http://[::1]:2",
        "http://10.0.0.5:3",
    ]
