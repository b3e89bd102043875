"""When a request may go to LM Studio: the pure hold decision of the holding proxy.

:func:`view_of` reads what the proxy needs of the supervisor's snapshot (the only place
that reads it): whether LM Studio's server serves, where, and the state of each declared
model under every name a request may give it (its identifier and its model key).
:func:`decide` answers, for one request, "forward now" (None) or why it is held. Pure:
no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lmsupervisor.core.messages import Message, Probed
from lmsupervisor.core.observed import base_url
from lmsupervisor.core.snapshot import Snapshot
from lmsupervisor.core.states import State

# States in which LM Studio's server answers and the declared models are as the load pass
# left them; in every other one (starting, loading models, backoff...) requests wait.
SERVING = frozenset({State.READY, State.DEGRADED})
# A declared model in one of these states is served by LM Studio as it is: loaded, or
# unloaded by its own TTL (LM Studio's JIT brings it back, as the user declared).
SERVED = frozenset({"loaded", "idle_unloaded"})


@dataclass(frozen=True)
class View:
    """What the proxy knows of LM Studio, from one snapshot.

    ``state`` is the supervisor's state (design §5), ``url`` the effective server's base
    URL (``http://127.0.0.1:1234``), ``models`` the state of each declared model by every
    name a request may use (identifier and model key; a key declared twice is served when
    any of its instances is)."""

    state: str = State.STOPPED.value
    ready: bool = False
    url: str = ""
    models: Mapping[str, str] = field(default_factory=dict)

    @property
    def serving(self) -> bool:
        """Whether LM Studio's server is up with the declared models as planned."""
        return self.state in SERVING


def view_of(snap: Snapshot) -> View:
    """The :class:`View` of a supervisor snapshot."""
    models: dict[str, str] = {}
    for declared in snap.config.models:
        name = declared.identifier or declared.key
        status = snap.model(name)
        state = status.state if status is not None else "pending"
        models[name] = state
        if declared.key != name and models.get(declared.key) not in SERVED:
            models[declared.key] = state
    return View(snap.state.value, snap.ready, base_url(snap.lmstudio.server.bind, snap.lmstudio.server.port), models)


def decide(view: View, model: str | None) -> str | None:
    """None when a request naming ``model`` (None: no model named) may be forwarded now,
    else why it is held, as shown in SSE keepalive comments (``lmstudio recovering
    (backoff)``, ``model qwen loading``). A model that is not declared is forwarded
    whenever the server serves: LM Studio's JIT decides."""
    if not view.serving:
        return f"lmstudio recovering ({view.state})"
    state = view.models.get(model) if model is not None else None
    if state is None or state in SERVED:
        return None
    return f"model {model} {state}"


def alive(message: Message) -> bool:
    """Whether a reduced message shows LM Studio's server answering: a successful health
    probe (the greeting, or REST v1's model list). A request that went unanswered waits for
    such a sign, or for a recovery, before it is sent again."""
    return isinstance(message, Probed) and message.result.ok


def requested(body: bytes, content_type: str) -> tuple[str | None, bool]:
    """``(model, stream)`` named by a JSON request body (OpenAI, Anthropic and LM Studio's
    REST requests all say ``"model"`` and ``"stream": true``); ``(None, False)`` for a body
    that is not a JSON object."""
    if not body or "json" not in content_type:
        return None, False
    try:
        data = json.loads(body)
    except ValueError:
        return None, False
    if not isinstance(data, dict):
        return None, False
    model = data.get("model")
    return (model if isinstance(model, str) else None), data.get("stream") is True


# The last event of each streamed answer LM Studio serves, by path: a stream that LM Studio
# ends by closing the connection (no HTTP framing to say it was cut) and lacks it was cut.
LAST_EVENTS: dict[str, tuple[bytes, ...]] = {
    "/v1/chat/completions": (b"data: [DONE]",),
    "/v1/completions": (b"data: [DONE]",),
    "/api/v0/chat/completions": (b"data: [DONE]",),
    "/api/v0/completions": (b"data: [DONE]",),
    "/v1/responses": (b"event: response.completed", b"event: response.failed", b"event: response.incomplete"),
    "/v1/messages": (b"event: message_stop",),
}
TAIL = 4096  # bytes of a stream's end kept to find its last event
SSE = "text/event-stream"  # the content type of a streamed answer


def complete(path: str, tail: bytes) -> bool:
    """Whether a streamed answer to ``path`` whose last bytes are ``tail`` ended as its
    protocol ends (OpenAI's ``data: [DONE]``, the Responses API's ``response.completed``,
    Anthropic's ``message_stop``); True for a path without a known last event."""
    last = LAST_EVENTS.get(path)
    if last is None:
        return True
    events = tail.rstrip().rsplit(b"\n\n", 1)
    return tail.endswith(b"\n\n") and any(events[-1].lstrip().startswith(e) for e in last)


PENDING_LIMIT = 65536  # bytes of an unfinished SSE event held back; past them it is passed on as it is


def whole_events(pending: bytes, data: bytes) -> tuple[bytes, bytes]:
    """``(now, pending)``: of a stream's unsent bytes ``pending`` and the ``data`` that
    follows them, the whole SSE events to pass on now (up to the last blank line, ``\n\n``
    or ``\r\n\r\n``) and the unfinished event held back until its end comes. A stream
    LM Studio cuts mid-event then shows the client no broken event, only whole ones and the
    proxy's error event. An unfinished part over :data:`PENDING_LIMIT` bytes goes at once."""
    buf = pending + data if pending else data
    if buf.endswith(b"\n\n"):
        return buf, b""
    lf, crlf = buf.rfind(b"\n\n"), buf.rfind(b"\r\n\r\n")
    end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
    if len(buf) - end > PENDING_LIMIT:
        return buf, b""
    return buf[:end], buf[end:]


ENDING = 4  # bytes of a stream's end that tell whether it ends between events (b"\r\n\r\n")


def tail_after(tail: bytes, data: bytes, last_event: bool) -> bytes:
    """A stream's last bytes once ``data`` follows ``tail``: :data:`TAIL` of them when its
    last event is looked for (:func:`complete`), else the :data:`ENDING` that
    :func:`event_break` reads. Copies no more of ``data`` than it keeps."""
    keep = TAIL if last_event else ENDING
    return (tail + data[-keep:])[-keep:]


def event_break(tail: bytes) -> bytes:
    """What to write after a stream whose last bytes are ``tail`` so that the next event
    stands alone: ``b"\\n\\n"`` after a partial event (LM Studio cut mid-event: that one
    reaches the client broken, the proxy's error event after it whole), ``b""`` after a
    blank line or an empty stream."""
    return b"" if not tail or tail.endswith((b"\n\n", b"\r\n\r\n")) else b"\n\n"


# Headers that belong to one connection, never forwarded (RFC 9110 7.6.1; Proxy-* and
# Keep-Alive as every proxy drops them).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


# Request headers the proxy sets itself (Host: LM Studio's address; Content-Length: the
# body it sends) or drops (Expect: the proxy answers 100 Continue and sends the body at once).
REQUEST_OWN = frozenset({"host", "content-length", "expect"})


def forwarded(headers: Iterable[tuple[str, str]], also: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The ``(name, value)`` headers a proxy passes on, in order: all but the hop-by-hop
    ones (:data:`HOP_BY_HOP`), those the ``Connection`` header names (RFC 9110 7.6.1), and
    ``also`` (lower-case names the proxy sets itself)."""
    headers = list(headers)
    named = {n.strip().lower() for k, v in headers if k.lower() == "connection" for n in v.split(",")}
    dropped = HOP_BY_HOP | named | set(also)
    return [(k, v) for k, v in headers if k.lower() not in dropped]


def recovering_body(hold_timeout: float, why: str) -> dict[str, object]:
    """The OpenAI-style error of a request held past ``hold_timeout`` seconds (design §9)."""
    return {
        "error": {
            "message": f"LM Studio is recovering ({why}); not served within {hold_timeout:g} s, try again",
            "type": "service_unavailable",
            "code": "lmstudio_recovering",
        }
    }


def failed_body(message: str) -> dict[str, object]:
    """The error of a request LM Studio stopped answering mid-way (502, or the last SSE event)."""
    return {"error": {"message": message, "type": "bad_gateway", "code": "lmstudio_failed"}}
