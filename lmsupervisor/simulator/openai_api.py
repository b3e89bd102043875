"""The bodies of LM Studio's OpenAI-compatible answers, as pure functions of the request.

Facts §4: ``/v1/chat/completions`` (``chat.completion`` JSON, or ``chat.completion.chunk``
SSE ending in ``data: [DONE]``; ``stream_options.include_usage`` adds a last chunk with
``usage`` and no choices), ``/v1/completions`` (``text_completion``), ``/v1/embeddings``
and ``/v1/responses`` (SSE events ``response.created``, ``response.output_text.delta``,
``response.completed``). Shapes follow OpenAI's, which the official ``openai`` client
parses (tests/integration/test_simulator_openai.py drives it).

Simulator choices, documented: the reply is a fixed sentence naming the instance, one
"token" per word; ``max_tokens`` (``max_output_tokens`` for responses) cuts it, with
``finish_reason`` ``"length"``, and ``-1`` means unlimited. A chat with ``tools`` gets one
call of the first tool, then an answer quoting the tool's result
(:mod:`lmsupervisor.simulator.toolcalls`). Embeddings are 768 floats
(nomic-embed-text-v1.5's width) derived from a hash of the text, unit length, so equal
texts embed equally; ``encoding_format: "base64"`` returns little-endian float32 bytes in
base64 as OpenAI does (whether LM Studio honours it is UNCONFIRMED).

Stdlib only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
import uuid
from typing import Any

from lmsupervisor.simulator import toolcalls

EMBEDDING_DIM = 768
PROMPT_TOKENS = 10  # a fixed, plausible prompt count: the simulator does not tokenize


def reply_words(identifier: str, limit: Any) -> tuple[list[str], str]:
    """The reply's words under ``limit`` (None or -1: unlimited) and its finish reason."""
    return toolcalls.answer_words(identifier, [], limit)


def _chat_turn(identifier: str, body: dict[str, Any]) -> tuple[list[str], str, dict[str, Any] | None]:
    """``(words, finish_reason, tool_call)`` of a chat: a ``tool_calls`` entry when the model calls
    a tool now (:mod:`lmsupervisor.simulator.toolcalls`: ``tools`` offered, no tool result yet;
    ``tool_choice: "none"`` forbids it), else the words of the answer."""
    messages = toolcalls.openai_messages(body.get("messages"))
    tools = [] if body.get("tool_choice") == "none" else toolcalls.tools_from(body.get("tools"))
    call = toolcalls.next_call(tools, messages)
    if call is not None:
        tool_call = {
            "id": f"call_{uuid.uuid4().hex[:20]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
        }
        return [], "tool_calls", tool_call
    words, finish = toolcalls.answer_words(identifier, messages, body.get("max_tokens"))
    return words, finish, None


def _usage(completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
    }


def chat_completion(identifier: str, body: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` object; id like ``chatcmpl-i3gkjwthhw96whukek9tz`` (facts §4).

    A tool call is ``message.tool_calls`` ``[{"id","type":"function","function":{"name",
    "arguments": JSON text}}]`` with ``content`` null and ``finish_reason`` ``"tool_calls"``
    (OpenAI's shape).
    """
    words, finish, tool_call = _chat_turn(identifier, body)
    message: dict[str, Any] = {"role": "assistant", "content": " ".join(words) if tool_call is None else None}
    if tool_call is not None:
        message["tool_calls"] = [tool_call]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:21],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": identifier,
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": finish,
                "message": message,
            }
        ],
        "usage": _usage(len(words) or 1),
        "stats": {},
        "system_fingerprint": identifier,
    }


def chat_chunks(identifier: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed chat, in order (without [DONE]).

    A tool call streams as OpenAI's deltas: ``{"role","content":null,"tool_calls":[{"index":0,
    "id","type":"function","function":{"name","arguments":""}}]}``, then the arguments in
    ``{"tool_calls":[{"index":0,"function":{"arguments"}}]}``, then ``finish_reason``
    ``"tool_calls"``.
    """
    words, finish, tool_call = _chat_turn(identifier, body)
    cid, created = "chatcmpl-" + uuid.uuid4().hex[:21], int(time.time())

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": identifier,
            "system_fingerprint": identifier,
            "choices": choices,
        }

    chunks = [
        chunk(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": w} if n == 0 else {"content": " " + w},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
        for n, w in enumerate(words)
    ]
    if tool_call is not None:
        head = {**tool_call, "index": 0, "function": {"name": tool_call["function"]["name"], "arguments": ""}}
        args = {"index": 0, "function": {"arguments": tool_call["function"]["arguments"]}}
        for delta in ({"role": "assistant", "content": None, "tool_calls": [head]}, {"tool_calls": [args]}):
            chunks.append(chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]))
    chunks.append(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        chunks.append({**chunk([]), "usage": _usage(len(words) or 1)})
    return chunks


def completion(identifier: str, body: dict[str, Any]) -> dict[str, Any]:
    """A legacy ``text_completion`` object for ``/v1/completions``."""
    words, finish = reply_words(identifier, body.get("max_tokens"))
    return {
        "id": "cmpl-" + uuid.uuid4().hex[:21],
        "object": "text_completion",
        "created": int(time.time()),
        "model": identifier,
        "choices": [{"index": 0, "text": " ".join(words), "logprobs": None, "finish_reason": finish}],
        "usage": _usage(len(words)),
    }


def completion_chunks(identifier: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``text_completion`` chunks of a streamed completion (without [DONE])."""
    words, finish = reply_words(identifier, body.get("max_tokens"))
    cid, created = "cmpl-" + uuid.uuid4().hex[:21], int(time.time())
    texts = [w if n == 0 else " " + w for n, w in enumerate(words)]
    reasons: list[str | None] = [None] * (len(texts) - 1) + [finish]
    return [
        {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": identifier,
            "choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": r}],
        }
        for t, r in zip(texts, reasons, strict=True)
    ]


def embedding_vector(text: str) -> list[float]:
    """A unit vector of :data:`EMBEDDING_DIM` floats determined by ``text``."""
    raw = b""
    counter = 0
    while len(raw) < EMBEDDING_DIM * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(v / 2**31) - 1.0 for v in struct.unpack(f"<{EMBEDDING_DIM}I", raw[: EMBEDDING_DIM * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embeddings(identifier: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """An embeddings ``list`` for ``body["input"]`` (a string or a list of them); None if invalid."""
    given = body.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs:
        return None
    data = []
    for i, item in enumerate(inputs):
        vector = embedding_vector(item if isinstance(item, str) else repr(item))
        value: list[float] | str = vector
        if body.get("encoding_format") == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": value, "index": i})
    tokens = sum(max(1, len(str(i).split())) for i in inputs)
    return {
        "object": "list",
        "data": data,
        "model": identifier,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def response(
    identifier: str, body: dict[str, Any], rid: str | None = None, words: list[str] | None = None
) -> dict[str, Any]:
    """A completed ``response`` object for ``/v1/responses``."""
    if words is None:
        words, _ = reply_words(identifier, body.get("max_output_tokens"))
    rid = rid or f"resp_{uuid.uuid4().hex[:24]}"
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": identifier,
        "output": [
            {
                "id": f"msg_{rid[5:]}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": " ".join(words), "annotations": []}],
            }
        ],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": PROMPT_TOKENS,
            "output_tokens": len(words),
            "total_tokens": PROMPT_TOKENS + len(words),
        },
    }


def response_events(identifier: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of a streamed response, ``response.created`` to ``.completed``."""
    words, _ = reply_words(identifier, body.get("max_output_tokens"))
    rid = f"resp_{uuid.uuid4().hex[:24]}"
    done = response(identifier, body, rid, words)
    started = {**done, "status": "in_progress", "output": []}
    events: list[tuple[str, dict[str, Any]]] = [("response.created", {"type": "response.created", "response": started})]
    item_id = done["output"][0]["id"]
    for n, w in enumerate(words):
        events.append(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": w if n == 0 else " " + w,
                },
            )
        )
    events.append(("response.completed", {"type": "response.completed", "response": done}))
    for n, (_, data) in enumerate(events):
        data["sequence_number"] = n
    return events
