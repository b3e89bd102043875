"""The simulated LM Studio through the official ``openai`` Python client, as other tools use it.

Issue 10 item 6: the simulator must be complete enough for real clients. Each test drives
the real client against a real simulated daemon (facts §4 endpoints).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from lmsupervisor.simulator.home import SimInstall

pytestmark = pytest.mark.integration

QWEN = "qwen/qwen3-4b"
NOMIC = "text-embedding-nomic-embed-text-v1.5"


def serving(sim: SimInstall) -> SimInstall:
    """``sim`` with its HTTP server started (the daemon woken by `lms server start`)."""
    result = sim.lms("server", "start")
    assert result.returncode == 0, result.stderr
    return sim


def client_for(sim: SimInstall, api_key: str = "lm-studio") -> openai.OpenAI:
    """An ``openai`` client on the simulator, no retries, so failures show at once."""
    return openai.OpenAI(base_url=f"{sim.http_url}/v1", api_key=api_key, max_retries=0, timeout=30)


@pytest.fixture
def client(sim: SimInstall) -> Iterator[openai.OpenAI]:
    """A client on a serving 0.4 install (JIT on: models load on first use)."""
    with client_for(serving(sim)) as c:
        yield c


def test_models_list(client: openai.OpenAI) -> None:
    """`models.list()` returns the downloaded models (JIT on), as `data[].id`."""
    ids = {m.id for m in client.models.list()}
    assert {"openai/gpt-oss-20b", QWEN, NOMIC} <= ids


def test_chat_plain_and_streamed(client: openai.OpenAI) -> None:
    """A chat answers the same text plain and streamed; the stream ends with finish_reason and usage."""
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    plain = client.chat.completions.create(model=QWEN, messages=messages)
    assert (plain.model, plain.choices[0].finish_reason, plain.usage is not None) == (QWEN, "stop", True)
    text = plain.choices[0].message.content or ""
    assert text.startswith("Simulated reply")
    stream = client.chat.completions.create(
        model=QWEN, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert (streamed, finishes, chunks[-1].usage is not None) == (text, ["stop"], True)


def test_one_token_budget(client: openai.OpenAI) -> None:
    """`max_tokens: 1` (a readiness probe's budget) answers one token with finish_reason "length"."""
    reply = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "x"}], max_tokens=1)
    assert (reply.choices[0].finish_reason, reply.usage and reply.usage.completion_tokens) == ("length", 1)


def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    """`/v1/completions` answers text_completion, plain and streamed, with the same text."""
    plain = client.completions.create(model=QWEN, prompt="Once")
    streamed = "".join(c.choices[0].text for c in client.completions.create(model=QWEN, prompt="Once", stream=True))
    assert (plain.object, plain.choices[0].text.startswith("Simulated"), streamed) == (
        "text_completion",
        True,
        plain.choices[0].text,
    )


def test_embeddings(client: openai.OpenAI) -> None:
    """`/v1/embeddings` returns one unit vector per input, equal for equal texts, in both encodings."""
    default = client.embeddings.create(model=NOMIC, input=["hello", "world", "hello"])  # the client asks base64
    floats = client.embeddings.create(model=NOMIC, input="hello", encoding_format="float")
    vectors = [d.embedding for d in default.data]
    assert ([len(v) for v in vectors], [d.index for d in default.data]) == ([768, 768, 768], [0, 1, 2])
    assert (vectors[0] == vectors[2], vectors[0] == vectors[1]) == (True, False)
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-4)


def test_embeddings_refuse_an_llm(client: openai.OpenAI) -> None:
    """Asking an LLM for embeddings is a 400 from the server, not a crash."""
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=QWEN, input="hello")


def test_responses_plain_and_streamed(client: openai.OpenAI) -> None:
    """`/v1/responses` (what codex uses) answers output_text, and streams created/delta/completed."""
    plain = client.responses.create(model=QWEN, input="hi")
    assert (plain.status, plain.output_text.startswith("Simulated reply")) == ("completed", True)
    events = list(client.responses.create(model=QWEN, input="hi", stream=True))
    types = [e.type for e in events]
    deltas = "".join(getattr(e, "delta", "") for e in events if e.type == "response.output_text.delta")
    assert (types[0], types[-1], deltas) == ("response.created", "response.completed", plain.output_text)


def test_unknown_model_is_a_400(client: openai.OpenAI) -> None:
    """An unknown model with JIT on: 400 model_not_found (facts §4), raised by the client."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="nobody/nothing", messages=[{"role": "user", "content": "hi"}])
    assert "Invalid model identifier" in str(caught.value)


def test_api_token(make_sim: Callable[..., SimInstall]) -> None:
    """With "Require Authentication" on, a wrong key raises AuthenticationError and the token works."""
    token = "sk-lm-Abcd1234:Abcdefghij0123456789"
    sim = serving(make_sim(api_token=token))
    with client_for(sim, "sk-lm-Abcd1234:Xbcdefghij0123456789") as wrong, pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with client_for(sim, token) as right:
        assert QWEN in {m.id for m in right.models.list()}
