"""httpx's errors translated once (httperrors.py): one wording per kind for every
client of LM Studio's server (REST v1, the prober, the native host's chat)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from lmsupervisor.config import NotifyConfig
from lmsupervisor.errors import (
    NativeHostError,
    NotifyError,
    ProbeError,
    RestConnectError,
    RestError,
    RestTimeoutError,
)
from lmsupervisor.httperrors import PROBE, REST, map_http_errors, unanswered
from lmsupervisor.lmstudio.probe import Prober
from lmsupervisor.lmstudio.rest import RestClient
from lmsupervisor.nativehost.chat import Chat
from lmsupervisor.notify.delivery import deliver
from lmsupervisor.notify.incidents import Alert

URL = "http://127.0.0.1:1234"
REQUEST = httpx.Request("GET", f"{URL}/api/v1/models")
CHAT_REFUSED = f"cannot connect to {URL}/v1/chat/completions: connection refused (send start_lmstudio first)"


@pytest.mark.parametrize(
    ("raised", "kind", "message", "chained"),
    [
        (httpx.ReadTimeout("timed out", request=REQUEST), RestTimeoutError, "no answer from W within 2.5 s", False),
        (TimeoutError(), RestTimeoutError, "no answer from W within 2.5 s", False),
        (httpx.ConnectError("Errno 111", request=REQUEST), RestConnectError, "cannot connect to W: Errno 111", True),
        (httpx.ConnectError("", request=REQUEST), RestConnectError, "cannot connect to W: connection refused", True),
        (httpx.RemoteProtocolError("gone", request=REQUEST), RestError, "W: RemoteProtocolError: gone", True),
    ],
)  # fmt: skip
def test_each_kind_has_one_wording(raised: Exception, kind: type[RestError], message: str, chained: bool) -> None:
    """A timeout (httpx's or asyncio's), a refused connection and a broken one become the
    kind's exception with the kind's words; httpx's error is the cause except for a timeout."""
    with pytest.raises(RestError) as caught, map_http_errors("W", 2.5, REST):
        raise raised
    assert (type(caught.value), caught.value.message, caught.value.__cause__ is raised) == (kind, message, chained)


@pytest.mark.parametrize("raised", [ValueError("not JSON"), RestError("HTTP 500"), KeyError("x")])
def test_errors_that_are_not_httpx_pass_through(raised: Exception) -> None:
    """Only httpx's errors and TimeoutError are translated; anything else leaves unchanged."""
    with pytest.raises(type(raised)) as caught, map_http_errors("W", 1, PROBE):
        raise raised
    assert caught.value is raised


def test_unanswered_tells_a_missing_answer_from_an_error_answer() -> None:
    """Each translated kind is unanswered; an error LM Studio answered (HTTP 500) is not."""
    translated = []
    for raised in (TimeoutError(), httpx.ConnectError("x"), httpx.ReadError("x")):
        with pytest.raises(RestError) as caught, map_http_errors("W", 1, REST):
            raise raised
        translated.append(unanswered(caught.value))
    assert (translated, unanswered(RestError("HTTP 500"))) == ([True, True, True], False)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def nothing_listens() -> httpx.MockTransport:
    return httpx.MockTransport(refused)


async def error_of(call: Awaitable[object]) -> str:
    """The error ``call`` raises (a native-host error with its code first)."""
    try:
        await call
    except NativeHostError as exc:
        return f"{exc.code}: {exc}"
    except (RestError, ProbeError, NotifyError) as exc:
        return str(exc)
    raise AssertionError("no error")


async def rest_models() -> str:
    return await error_of(RestClient(transport=nothing_listens()).models(URL))


async def rest_cors() -> str:
    return await error_of(RestClient(transport=nothing_listens()).cors(URL))


async def probe_models() -> str:
    return await error_of(Prober(transport=nothing_listens()).models(URL))


async def probe_greeting() -> str:
    return (await Prober(transport=nothing_listens()).greeting(URL)).error or ""


async def probe_ask() -> str:
    return (await Prober(transport=nothing_listens()).ask(URL, "qwen", "llm", 5)).error or ""


async def chat(stream: bool = False) -> str:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    answers = Chat(httpx.AsyncClient(transport=nothing_listens()), 5).answers(URL, body, 5)
    return await error_of(anext(answers))


async def chat_stream() -> str:
    return await chat(stream=True)


async def notify_delivery() -> str:
    client = httpx.AsyncClient(transport=nothing_listens())
    down = Alert("down", "down", "LM Studio is down", 0.0, 0.0)
    return await error_of(deliver(client, NotifyConfig(kind="webhook", url=f"{URL}/hook"), down, "box"))


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (rest_models, f"cannot connect to {URL}/api/v1/models: connection refused"),
        (rest_cors, f"cannot connect to {URL}/lmstudio-greeting: connection refused"),
        (probe_greeting, f"cannot connect to {URL}/lmstudio-greeting: connection refused"),
        (probe_models, f"cannot connect to {URL}/v1/models: connection refused"),
        (probe_ask, f"cannot connect to {URL}/v1/chat/completions: connection refused"),
        (chat, f"unreachable: {CHAT_REFUSED}"),
        (chat_stream, f"unreachable: {CHAT_REFUSED}"),
        (notify_delivery, "cannot connect to webhook 127.0.0.1:1234: connection refused"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
async def test_every_client_words_a_refused_connection_alike(call: Callable[[], Awaitable[str]], says: str) -> None:
    """REST, the prober, the native host's chat and a notification delivery say the same thing
    when nothing listens (the browser is also told to send start_lmstudio)."""
    assert await call() == says
