"""The simulator's tool-call rule (:mod:`lmsupervisor.simulator.toolcalls`), without processes."""

from __future__ import annotations

from typing import Any

import pytest

from lmsupervisor.simulator import toolcalls

TOOL: Any = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "example"),
        ({"type": "integer"}, 1),
        ({"type": "number"}, 1.5),
        ({"type": "boolean"}, True),
        ({"type": ["null", "integer"]}, 1),
        ({"type": "string", "enum": ["b", "a"]}, "b"),
        ({"type": "number", "default": 7}, 7),
        ({"anyOf": [{"type": "boolean"}, {"type": "string"}]}, True),
        ({"type": "array", "items": {"type": "integer"}}, [1]),
        ({"type": "object", "properties": {"x": {"type": "string"}}}, {"x": "example"}),
        (
            {"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer"}}, "required": ["y"]},
            {"y": 1},
        ),
    ],
)
def test_example_value_satisfies_the_schema(schema: Any, expected: Any) -> None:
    """Each JSON-schema shape gets a value of its type; objects get their required properties."""
    assert toolcalls.example_value(schema) == expected


def test_both_tool_lists_read_alike() -> None:
    """OpenAI ``tools`` and the SDK's ``llm.prediction.tools`` setting name the same tools."""
    setting = {"type": "toolArray", "tools": [TOOL]}
    assert (
        toolcalls.tools_from([TOOL])
        == toolcalls.tools_from(setting)
        == [{"name": "f", "parameters": TOOL["function"]["parameters"]}]
    )
    assert toolcalls.tools_from({"type": "none"}) == []


def test_a_call_until_a_tool_result_follows_the_last_user_message() -> None:
    """No result yet: call; a result after the last user message: answer; a new user turn: call again."""
    tools = toolcalls.tools_from([TOOL])
    user = {"role": "user", "content": "q"}
    result = {"role": "tool", "content": "42"}
    assert toolcalls.next_call(tools, [user]) == {"name": "f", "arguments": {}}
    assert toolcalls.next_call(tools, [user, result]) is None
    assert toolcalls.next_call(tools, [user, result, user]) is not None
    assert toolcalls.next_call([], [user]) is None
    assert toolcalls.answer_words("m", [user, result], None) == (
        ["Simulated", "reply", "from", "m.", "The", "tool", "returned:", "42"],
        "stop",
    )


def test_sdk_history_parts_become_text() -> None:
    """``ChatHistoryData`` parts (text, tool results) read as role and text."""
    history = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "tool", "content": [{"type": "toolCallResult", "content": "3", "toolCallId": "1"}]},
        ]
    }
    assert toolcalls.history_messages(history) == [{"role": "user", "content": "hi"}, {"role": "tool", "content": "3"}]


def test_a_budget_beyond_the_sentence_is_spent_on_a_longer_reply() -> None:
    """max_tokens beyond the sentence: the reply runs on to exactly that many words (finish
    "length"), at most LONG_REPLY_WORDS (then "stop"); within it, it is cut; without one,
    it is the sentence."""
    sentence = ["Simulated", "reply", "from", "m."]
    assert toolcalls.answer_words("m", [], None) == (sentence, "stop")
    assert toolcalls.answer_words("m", [], 2) == (sentence[:2], "length")
    assert toolcalls.answer_words("m", [], 4) == (sentence, "stop")
    assert toolcalls.answer_words("m", [], 16) == ([*sentence, *[str(n) for n in range(1, 13)]], "length")
    words, finish = toolcalls.answer_words("m", [], 100_000)
    assert (len(words), finish) == (toolcalls.LONG_REPLY_WORDS, "stop")
