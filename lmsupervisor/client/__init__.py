"""The public Python API of a running supervisor (documented in the README, "Use it from your program").

::

    from lmsupervisor.client import Client

    client = Client()                     # finds the socket as the CLI does
    if not client.wait_ready(timeout=120):
        raise SystemExit("LM Studio is not ready")
    print(client.status()["server"]["api_endpoint"])

:class:`Client` blocks; :class:`AsyncClient` has the same methods as coroutines. Errors
are :class:`StatusSocketError` (nobody answers, refused, not trusted, unexpected answer).
Events are the classes of :mod:`lmsupervisor.client.events`.

The room: :mod:`~lmsupervisor.client.protocol` is the sans-I/O core both clients share
(requests, answers, errors, the rule of ``wait_ready``); :mod:`~lmsupervisor.client.locate`
finds the socket (or TCP endpoint) and decides whether to trust it;
:mod:`~lmsupervisor.client.sync` and :mod:`~lmsupervisor.client.aio` move the bytes;
:mod:`~lmsupervisor.client.summary` renders a snapshot for people. The client shares
nothing with the server but :mod:`lmsupervisor.endpoint`.

``lmsupervisor status`` imports this package on every call, so the asyncio client and the
event classes (dataclasses) are imported when first asked for.
"""

from __future__ import annotations

from lmsupervisor.client.locate import resolve_socket
from lmsupervisor.client.protocol import Response
from lmsupervisor.client.sync import Client, EventStream, TypedEventStream
from lmsupervisor.errors import StatusSocketError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the name costs nothing this way
if TYPE_CHECKING:
    from lmsupervisor.client.aio import AsyncClient, AsyncEventStream
    from lmsupervisor.client.events import ConfigEvent, Event, ModelEvent, RestartEvent, StateEvent

__all__ = [
    "AsyncClient",
    "AsyncEventStream",
    "Client",
    "ConfigEvent",
    "Event",
    "EventStream",
    "ModelEvent",
    "Response",
    "RestartEvent",
    "StateEvent",
    "StatusSocketError",
    "TypedEventStream",
    "resolve_socket",
]

_LATER = {
    "AsyncClient": "aio",
    "AsyncEventStream": "aio",
    "ConfigEvent": "events",
    "Event": "events",
    "ModelEvent": "events",
    "RestartEvent": "events",
    "StateEvent": "events",
}


def __getattr__(name: str) -> object:
    """The names of :data:`_LATER`, imported from their module when first asked for."""
    module = _LATER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module  # noqa: PLC0415

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
