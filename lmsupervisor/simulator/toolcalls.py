"""When a simulated model calls a tool, with which arguments, and what it answers after.

One rule for every way in: ``/v1/chat/completions`` (OpenAI ``tools`` and ``tool_calls``,
:mod:`lmsupervisor.simulator.openai_api`) and the websocket ``predict`` channel (config
``llm.prediction.tools``, :mod:`lmsupervisor.simulator.wsapi`). The simulator's choice,
documented: a tool-capable model (``trainedForToolUse``) offered tools answers a turn that
has no tool result yet with **one call of the first tool**, its arguments built from the
tool's JSON schema (:func:`example_value`); once a tool result follows the last user
message it answers in words, quoting that result. Real models choose freely; seeds 000 and
003 (tools called once, then a final answer) need exactly this round trip.

Stdlib only.
"""

from __future__ import annotations

from typing import Any

RESULT_QUOTE_CHARS = 200  # how much of a tool's result the final answer quotes
LONG_REPLY_WORDS = 512  # the longest reply: what a max_tokens beyond the sentence runs on to
LONG_REPLY = tuple(str(n) for n in range(1, LONG_REPLY_WORDS + 1))  # the words it runs on with


def example_value(schema: Any) -> Any:
    """A value that satisfies the JSON ``schema`` (``default``, ``enum[0]``, ``const``, else by ``type``).

    ``object``: its required properties (all of them when ``required`` is absent);
    ``string`` ``"example"``, ``integer`` 1, ``number`` 1.5, ``boolean`` true, ``array`` one item;
    ``anyOf``/``oneOf`` take the first branch. Unknown shapes give ``"example"``.
    """
    if not isinstance(schema, dict):
        return "example"
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_value(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        return arguments_for(schema)
    if kind == "array":
        return [example_value(schema.get("items"))]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "example")


def arguments_for(parameters: Any) -> dict[str, Any]:
    """The arguments of a call: :func:`example_value` of each required property (all when none is marked)."""
    if not isinstance(parameters, dict):
        return {}
    props = parameters.get("properties")
    if not isinstance(props, dict):
        props = {}
    required = parameters.get("required")
    names = [n for n in required if n in props] if isinstance(required, list) else list(props)
    return {name: example_value(props[name]) for name in names}


def tools_from(value: Any) -> list[dict[str, Any]]:
    """``[{"name", "parameters"}]`` from OpenAI ``tools`` (a list) or ``llm.prediction.tools``
    (``{"type":"toolArray","tools":[...]}``); both list ``{"type":"function","function":{name,parameters}}``."""
    if isinstance(value, dict):
        value = value.get("tools") if value.get("type") == "toolArray" else None
    found = []
    for tool in value if isinstance(value, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            found.append({"name": function["name"], "parameters": function.get("parameters")})
    return found


def openai_messages(messages: Any) -> list[dict[str, str]]:
    """``[{"role", "content"}]`` (text) from OpenAI chat ``messages``."""
    found = []
    for m in messages if isinstance(messages, list) else []:
        if isinstance(m, dict):
            content = m.get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            found.append({"role": str(m.get("role")), "content": "" if content is None else str(content)})
    return found


def history_messages(history: Any) -> list[dict[str, str]]:
    """``[{"role", "content"}]`` (text) from an SDK ``ChatHistoryData`` ``{messages:[{role, content:[parts]}]}``
    (parts ``text``, ``toolCallRequest``, ``toolCallResult``, [js] ``ChatHistoryData.ts``)."""
    messages = history.get("messages") if isinstance(history, dict) else None
    found = []
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        parts = m.get("content")
        if not isinstance(parts, list):
            parts = []
        texts = [str(p.get("text") or p.get("content") or "") for p in parts if isinstance(p, dict)]
        found.append({"role": str(m.get("role")), "content": " ".join(t for t in texts if t)})
    return found


def _tool_result(messages: list[dict[str, str]]) -> str | None:
    """The content of the tool results after the last user message, or None when there is none."""
    results: list[str] = []
    for m in messages:
        if m["role"] == "user":
            results = []
        elif m["role"] == "tool":
            results.append(m["content"])
    return " ".join(results) if results else None


def next_call(tools: list[dict[str, Any]], messages: list[dict[str, str]]) -> dict[str, Any] | None:
    """``{"name", "arguments"}`` of the call to make now, or None to answer in words."""
    if not tools or _tool_result(messages) is not None:
        return None
    return {"name": tools[0]["name"], "arguments": arguments_for(tools[0]["parameters"])}


def answer_words(identifier: str, messages: list[dict[str, str]], limit: Any) -> tuple[list[str], str]:
    """The words of a text answer and its finish reason (``"stop"`` / ``"length"``).

    ``Simulated reply from <id>.``, one "token" per word; after a tool result
    ``Simulated reply from <id>. The tool returned: <result>`` (the result cut to
    :data:`RESULT_QUOTE_CHARS`). ``limit`` (None or -1: unlimited) cuts the words, with
    finish reason ``"length"``. A ``limit`` beyond the reply is spent as a model that runs
    on would spend it: the reply goes on with :data:`LONG_REPLY` (counting words) up to
    ``limit``, at most :data:`LONG_REPLY_WORDS`, so an answer probe asking for 16 tokens
    gets 16 (and takes 16 tokens' time, see :mod:`lmsupervisor.simulator.hardware`).
    """
    result = _tool_result(messages)
    text = f"Simulated reply from {identifier}."
    if result is not None:
        text += f" The tool returned: {result[:RESULT_QUOTE_CHARS]}"
    words = text.split()
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return words, "stop"
    if limit < len(words):
        return words[:limit], "length"
    if len(words) < limit <= LONG_REPLY_WORDS:
        return [*words, *LONG_REPLY[: limit - len(words)]], "length"
    if limit > LONG_REPLY_WORDS:
        return [*words, *LONG_REPLY[: max(0, LONG_REPLY_WORDS - len(words))]], "stop"
    return words, "stop"
