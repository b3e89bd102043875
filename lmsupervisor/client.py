"""The public Python API of a running supervisor (documented in the README, "Use it from your program").

::

    from lmsupervisor.client import Client

    client = Client()                     # finds the socket as the CLI does
    if not client.wait_ready(timeout=120):
        raise SystemExit("LM Studio is not ready")
    print(client.status()["server"]["api_endpoint"])

:class:`Client` blocks; :class:`AsyncClient` has the same methods as coroutines. Errors
are :class:`StatusSocketError` (nobody answers, refused, not trusted, unexpected answer).
Events are the classes of :mod:`lmsupervisor.api.events`.
"""

from __future__ import annotations

from lmsupervisor.api.client import (
    AsyncClient,
    AsyncEventStream,
    Client,
    EventStream,
    Response,
    TypedEventStream,
    resolve_socket,
)
from lmsupervisor.api.events import ConfigEvent, Event, ModelEvent, RestartEvent, StateEvent
from lmsupervisor.errors import StatusSocketError

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
