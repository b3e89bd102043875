"""Tool calls through the official ``openai`` client: one call of the first tool, then an answer.

Issue 15 item 3: seeds 000 and 003 call tools, so the simulated models do too
(:mod:`lmsupervisor.simulator.toolcalls`), in OpenAI's ``tool_calls`` shape, plain and
streamed (SSE deltas), and the tool's result comes back in the final answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from lmsupervisor.simulator.home import SimInstall

pytestmark = pytest.mark.integration

QWEN = "qwen/qwen3-4b"
GEMMA = "google/gemma-3-1b"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit"],
        },
    },
}
NEVER_CALLED: Any = {"type": "function", "function": {"name": "second", "parameters": {"type": "object"}}}
ASK: Any = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
def client(sim: SimInstall) -> Iterator[openai.OpenAI]:
    """An ``openai`` client on a serving 0.4 install, no retries."""
    assert sim.lms("server", "start").returncode == 0
    with openai.OpenAI(base_url=f"{sim.http_url}/v1", api_key="lm-studio", max_retries=0, timeout=30) as c:
        yield c


def test_tool_round_trip(client: openai.OpenAI) -> None:
    """Tools offered: one call of the first tool (required arguments from its schema, finish
    "tool_calls"); with the tool's result sent back, a final answer that quotes it."""
    first = client.chat.completions.create(model=QWEN, messages=ASK, tools=[WEATHER, NEVER_CALLED])
    choice = first.choices[0]
    calls = choice.message.tool_calls or []
    assert (choice.finish_reason, choice.message.content, len(calls)) == ("tool_calls", None, 1)
    call: Any = calls[0]
    arguments = json.loads(call.function.arguments)
    assert (call.type, call.function.name, arguments) == (
        "function",
        "get_weather",
        {"city": "example", "unit": "celsius"},
    )
    history: Any = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "21 C and sunny"},
    ]
    final = client.chat.completions.create(model=QWEN, messages=history, tools=[WEATHER])
    assert (final.choices[0].finish_reason, final.choices[0].message.tool_calls) == ("stop", None)
    assert final.choices[0].message.content == f"Simulated reply from {QWEN}. The tool returned: 21 C and sunny"


def test_tool_call_streamed(client: openai.OpenAI) -> None:
    """Streamed, the call arrives as OpenAI's deltas (id and name first, then the arguments) and
    reassembles into the same call; ``tool_choice: "none"`` answers in words instead."""
    stream = client.chat.completions.create(model=QWEN, messages=ASK, tools=[WEATHER], stream=True)
    ids, names, arguments, finishes = [], [], "", []
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0
                ids += [delta.id] if delta.id else []
                names += [delta.function.name] if delta.function and delta.function.name else []
                arguments += (delta.function.arguments or "") if delta.function else ""
            finishes += [choice.finish_reason] if choice.finish_reason else []
    assert (len(ids), names, json.loads(arguments), finishes) == (
        1,
        ["get_weather"],
        {"city": "example", "unit": "celsius"},
        ["tool_calls"],
    )
    plain = client.chat.completions.create(model=QWEN, messages=ASK, tools=[WEATHER], tool_choice="none")
    assert (plain.choices[0].finish_reason, plain.choices[0].message.content) == (
        "stop",
        f"Simulated reply from {QWEN}.",
    )


def test_a_model_not_trained_for_tools_answers_in_words(sim: SimInstall, client: openai.OpenAI) -> None:
    """A model whose ``trainedForToolUse`` is false ignores ``tools`` and answers in words."""
    path = sim.home / ".sim" / "catalog.json"
    models = json.loads(path.read_text())
    for m in models:
        m["trainedForToolUse"] = m["modelKey"] != GEMMA
    path.write_text(json.dumps(models))
    reply = client.chat.completions.create(model=GEMMA, messages=ASK, tools=[WEATHER])
    assert (reply.choices[0].finish_reason, reply.choices[0].message.content) == (
        "stop",
        f"Simulated reply from {GEMMA}.",
    )
