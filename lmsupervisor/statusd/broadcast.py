"""``GET /v1/events`` fan-out: one subscription to the supervisor, one write per open stream.

A connection streaming events does not read the supervisor's queue itself: waking 100
tasks and encoding each event 100 times made one state change take 10 ms to reach 100
subscribers. Instead one :class:`Broadcast` (created with the first stream, ended with the
last) takes each batch of events from its single queue, encodes it once (NDJSON, and as
an HTTP/1.1 chunk), and writes it to every stream's transport in one loop.

A stream whose client does not read is dropped once :data:`STREAM_BUFFER` bytes wait
for it (the transport is aborted): memory per subscriber stays bounded, and nobody waits
on it. When the supervisor stops (None on the queue) every stream gets its last chunk.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from lmsupervisor.statusd.http1 import chunk

STREAM_BUFFER = 256 * 1024  # bytes waiting for one subscriber before it is dropped


class Publisher(Protocol):
    """What a broadcast needs of the supervisor."""

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of every event from now on, None at shutdown."""

    def events(self, q: asyncio.Queue[dict[str, Any] | None] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """The events of ``q`` until shutdown; ending it unsubscribes ``q``."""


class Stream:
    """One open ``/v1/events`` answer: ``done`` is True once ended cleanly (the supervisor
    stopped and the last chunk went out), False when dropped."""

    __slots__ = ("chunked", "done", "writer")

    def __init__(self, writer: asyncio.StreamWriter, chunked: bool) -> None:
        self.writer = writer
        self.chunked = chunked
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def send(self, raw: bytes, framed: bytes) -> None:
        """Write one batch (``framed`` on HTTP/1.1, else ``raw``); drop a client that does not read."""
        if self.done.done():
            return
        transport = self.writer.transport
        if transport.is_closing():
            self.done.set_result(False)
            return
        transport.write(framed if self.chunked else raw)
        if transport.get_write_buffer_size() > STREAM_BUFFER:
            self.done.set_result(False)
            transport.abort()

    def end(self) -> None:
        """The supervisor stopped: the last chunk, then done."""
        if self.done.done():
            return
        if self.chunked and not self.writer.transport.is_closing():
            self.writer.transport.write(chunk(b""))
        self.done.set_result(True)


class Broadcast:
    """One subscription feeding :attr:`streams`; subscribed at construction (nothing
    published afterwards is missed), ended by :meth:`close` or by the supervisor."""

    def __init__(self, publisher: Publisher) -> None:
        self.streams: set[Stream] = set()
        self.closing = False
        self._queue = publisher.subscribe()
        self._events = publisher.events(self._queue)
        self.task = asyncio.ensure_future(self._run())

    def close(self) -> None:
        """End the subscription (no stream left); the open streams, if any, are not ended."""
        self.closing = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def _run(self) -> None:
        ended = False
        try:
            async for event in self._events:
                batch = [event]
                while not self._queue.empty():  # what arrived meanwhile goes out in the same write
                    more = self._queue.get_nowait()
                    if more is None:
                        ended = True
                        break
                    batch.append(more)
                if not self.closing:
                    raw = b"".join(json.dumps(e).encode() + b"\n" for e in batch)
                    framed = chunk(raw)
                    for stream in list(self.streams):
                        stream.send(raw, framed)
                if ended:
                    break
        finally:
            await self._events.aclose()  # unsubscribes the queue (a no-op if the generator ended)
        if not self.closing:  # the supervisor stopped
            for stream in list(self.streams):
                stream.end()
