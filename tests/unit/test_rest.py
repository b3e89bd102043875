"""LM Studio's REST API v1 client (facts §4): shapes, errors at the seam, the token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from lmsupervisor.config import Config, LmStudioConfig
from lmsupervisor.errors import RestAuthError, RestError, RestUnsupportedError
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.rest import RestClient, resolve_token

URL = "http://127.0.0.1:1234"
MODELS = {
    "models": [
        {
            "type": "llm",
            "key": "qwen/qwen3-4b",
            "size_bytes": 5,
            "loaded_instances": [{"id": "qwen/qwen3-4b", "config": {"context_length": 4096}}],
        },
        {"type": "embedding", "key": "nomic", "loaded_instances": []},
    ]
}


def client(handler: Any, token: str | None = None) -> RestClient:
    return RestClient(timeout=1.0, transport=httpx.MockTransport(handler), token=lambda: token)


def test_models_lists_downloaded_and_loaded_instances() -> None:
    """`GET /api/v1/models`: every model by key, and one LoadedModel per loaded instance."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/models"
        return httpx.Response(200, json=MODELS)

    listing = asyncio.run(client(handler).models(URL))
    assert [d.model_key for d in listing.downloaded] == ["qwen/qwen3-4b", "nomic"]
    assert [(i.identifier, i.model_key, i.context_length) for i in listing.loaded] == [
        ("qwen/qwen3-4b", "qwen/qwen3-4b", 4096)
    ]


def test_bearer_token_and_401() -> None:
    """The token goes out as a Bearer header; a 401 is RestAuthError with a problem code."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(
            401, json={"error": {"code": "invalid_api_key", "message": "Invalid LM Studio API token"}}
        )

    with pytest.raises(RestAuthError) as wrong:
        asyncio.run(client(handler, "sk-lm-x").models(URL))
    with pytest.raises(RestAuthError) as missing:
        asyncio.run(client(handler).models(URL))
    assert (wrong.value.code, missing.value.code, seen) == (
        "api_token_invalid",
        "api_token_missing",
        ["Bearer sk-lm-x", None],
    )


def test_unexpected_endpoint_means_no_rest_v1() -> None:
    """0.3.x answers unknown routes with 200 and an error body (BT#618): no REST v1 there."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"error": "Unexpected endpoint or method. (GET /api/v1/models)"})

    with pytest.raises(RestUnsupportedError):
        asyncio.run(client(handler).models(URL))


def test_load_and_download_status() -> None:
    """`/load` returns the instance id; a download job reports bytes, total, rate and ETA."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/load"):
            return httpx.Response(200, json={"instance_id": "k", "status": "loaded"})
        if request.url.path.endswith("/download"):
            return httpx.Response(500, json={"error": {"message": "model_load_failed: out of memory"}})
        return httpx.Response(
            200,
            json={"job_id": "j", "status": "downloading", "downloaded_bytes": 5, "total_size_bytes": 10,
                  "bytes_per_second": 2.5, "estimated_completion": "2026-01-01T00:00:02Z"},
        )  # fmt: skip

    rest = client(handler)
    assert asyncio.run(rest.load(URL, "k", 8192)) == "k"
    job = asyncio.run(rest.download_status(URL, "j"))
    assert job.to_json() == {"job_id": "j", "status": "downloading", "bytes": 5, "total": 10, "rate": 2.5,
                             "eta": "2026-01-01T00:00:02Z"}  # fmt: skip
    with pytest.raises(RestError, match="out of memory"):
        asyncio.run(rest.download(URL, "k"))


def test_cors_probe_sends_an_origin() -> None:
    """CORS is verified with an Origin header and the Access-Control-Allow-Origin answer."""

    def handler(request: httpx.Request) -> httpx.Response:
        allowed = {"Access-Control-Allow-Origin": "*"} if request.headers.get("origin") else {}
        return httpx.Response(200, json={"lmstudio": True}, headers=allowed)

    assert asyncio.run(client(handler).cors(URL)) is True
    assert asyncio.run(client(lambda r: httpx.Response(200, json={"lmstudio": True})).cors(URL)) is False


def test_token_sources(tmp_path: Path) -> None:
    """api_token, else the first line of api_token_file, else LM_API_TOKEN."""
    file = tmp_path / "t"
    file.write_text("sk-lm-file\nignored\n")
    env = {"LM_API_TOKEN": "sk-lm-env"}
    assert [
        resolve_token(Config(lmstudio=LmStudioConfig(api_token="sk-lm-cfg")), env),  # noqa: S106 - a test value
        resolve_token(Config(lmstudio=LmStudioConfig(api_token_file=file)), env),
        resolve_token(Config(), env),
        resolve_token(Config(lmstudio=LmStudioConfig(api_token_file=tmp_path / "gone")), env),
    ] == ["sk-lm-cfg", "sk-lm-file", "sk-lm-env", None]


def test_a_token_file_saved_with_a_bom_and_crlf_gives_the_bare_token(tmp_path: Path) -> None:
    """Windows Notepad saves UTF-8 with a BOM and CRLF: the token is read without either."""
    file = tmp_path / "t"
    file.write_bytes(b"\xef\xbb\xbfsk-lm-abc:def\r\n")
    assert resolve_token(Config(lmstudio=LmStudioConfig(api_token_file=file)), {}) == "sk-lm-abc:def"


def test_a_token_that_is_not_ascii_is_refused_by_lm_studio_not_a_crash() -> None:
    """A pasted non-breaking space: the header goes out as UTF-8 (as curl sends it) and LM
    Studio's 401 is api_token_invalid, on every path that carries the token (REST, the
    answer probe); the greeting and the CORS check carry no token at all."""
    seen: list[bytes | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.headers.raw).get(b"Authorization"))
        if request.url.path == "/lmstudio-greeting":
            return httpx.Response(200, json={"lmstudio": True})
        return httpx.Response(401, json={"error": {"message": "Invalid LM Studio API token"}})

    token = "sk-lm-abc\u00a0def"
    with pytest.raises(RestAuthError) as refused:
        asyncio.run(client(handler, token).models(URL))
    prober = Prober(timeout=1.0, transport=httpx.MockTransport(handler), token=lambda: token)
    answer = asyncio.run(prober.ask(URL, "qwen", "llm", 1.0))
    greeting = asyncio.run(prober.greeting(URL))
    asyncio.run(client(handler, token).cors(URL))
    bearer = "Bearer sk-lm-abc\u00a0def".encode()
    assert (refused.value.code, answer.status, greeting.ok, seen) == (
        "api_token_invalid",
        401,
        True,
        [bearer, bearer, None, None],
    )
