"""The asyncio client of the status socket: :class:`AsyncClient` and :class:`AsyncEventStream`.

The twin of :mod:`~lmsupervisor.client.sync` over asyncio streams; what is said and what
the answers mean is :mod:`~lmsupervisor.client.protocol`, where and whom to trust is
:mod:`~lmsupervisor.client.locate`. asyncio is imported when first used, never on the
blocking path.
"""

from __future__ import annotations

import os

from lmsupervisor.client import protocol
from lmsupervisor.client.locate import check_peer, locate, resolve_socket, trusted_uids
from lmsupervisor.client.protocol import TIMEOUT, Parser, Response
from lmsupervisor.endpoint import tokenfile
from lmsupervisor.errors import StatusSocketError
from lmsupervisor.platform import current as this_os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the name costs nothing this way
if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Any

    from lmsupervisor.client.events import Event


class AsyncClient:
    """The asyncio twin of :class:`~lmsupervisor.client.sync.Client`: same methods, awaited;
    ``events()`` is an async iterator of typed events."""

    def __init__(self, socket: str | os.PathLike[str] | None = None, timeout: float = TIMEOUT) -> None:
        self.path = resolve_socket(socket)
        self._named = socket is not None  # else looked for again while waiting (see wait_ready)
        self.timeout = timeout
        self.trusted = trusted_uids()

    async def _open(self, target: str, method: str = "GET") -> tuple[Any, Any, Parser]:
        import asyncio  # noqa: PLC0415 - never on the blocking path

        tcp = locate(self.path, self.trusted)
        try:
            async with asyncio.timeout(self.timeout):
                if tcp is None:
                    reader, writer = await this_os().open_unix_stream(self.path)
                else:
                    reader, writer = await asyncio.open_connection(tokenfile.HOST, tcp[0])
        except OSError as exc:
            raise protocol.connect_error(exc, protocol.address(self.path, tcp), self.timeout) from exc
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None and tcp is None:
                check_peer(sock, self.path, self.trusted)
            writer.write(protocol.request_bytes(method, target, None if tcp is None else tcp[1]))
            parser = Parser(target)
            while not parser.head_done:
                await self._recv(reader, parser, self.timeout)
        except BaseException:
            writer.close()
            raise
        return reader, writer, parser

    async def _recv(self, reader: Any, parser: Parser, timeout: float | None) -> None:
        import asyncio  # noqa: PLC0415

        try:
            async with asyncio.timeout(timeout):
                chunk = await reader.read(65536)
        except OSError as exc:
            raise protocol.recv_error(exc, self.path, parser.target) from exc
        parser.feed(chunk)

    async def request(self, method: str, target: str) -> Response:
        """One HTTP request on a fresh connection; any status is returned, not raised."""
        reader, writer, parser = await self._open(target, method)
        try:
            while not parser.done:
                await self._recv(reader, parser, self.timeout)
        finally:
            writer.close()
        return parser.response()

    async def status(self) -> dict[str, Any]:
        """See :meth:`Client.status <lmsupervisor.client.sync.Client.status>`."""
        return protocol.snapshot(await self.request("GET", "/v1/status"))

    async def health(self) -> dict[str, Any]:
        """See :meth:`Client.health <lmsupervisor.client.sync.Client.health>`."""
        return protocol.health(await self.request("GET", "/v1/health"))

    async def subscribe(self, timeout: float | None = None) -> AsyncEventStream:
        """Subscribe now (connected, head read); iterate the raw event dicts later."""
        reader, writer, parser = await self._open(protocol.EVENTS)
        try:
            protocol.subscribed(parser)
        except StatusSocketError:
            writer.close()
            raise
        return AsyncEventStream(self, reader, writer, parser, timeout)

    async def events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        """Typed events as they happen, until the supervisor stops or ``timeout`` s pass
        without one. Subscribed at the first ``anext``."""
        from lmsupervisor.client.events import parse_event  # noqa: PLC0415

        async with await self.subscribe(timeout) as stream:
            async for raw in stream:
                yield parse_event(raw)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """See :meth:`Client.wait_ready <lmsupervisor.client.sync.Client.wait_ready>`."""
        import asyncio  # noqa: PLC0415

        wait = protocol.ReadyWait(timeout, asyncio.get_running_loop().time)
        while wait.verdict is None:
            if wait.pause is not None:
                await asyncio.sleep(wait.pause)
                if not self._named:  # the system unit's socket may appear later; this may parse the config
                    self.path = await asyncio.to_thread(resolve_socket, None)
            with wait.attempt():
                async with await self.subscribe(wait.remaining()) as stream:
                    wait.reached = True
                    if not wait.saw_health(await self.health()):
                        async for event in stream:
                            if wait.saw(event):
                                break
        return wait.verdict

    async def restart(self, daemon: bool = False) -> None:
        """See :meth:`Client.restart <lmsupervisor.client.sync.Client.restart>`."""
        protocol.accepted(await self.request("POST", protocol.control_target("restart", daemon)))

    async def reload(self) -> None:
        """See :meth:`Client.reload <lmsupervisor.client.sync.Client.reload>`."""
        protocol.accepted(await self.request("POST", protocol.control_target("reload")))


class AsyncEventStream:
    """Async iterator of raw event dicts on an open ``/v1/events`` connection."""

    def __init__(self, client: AsyncClient, reader: Any, writer: Any, parser: Parser, timeout: float | None) -> None:
        self._client, self._reader, self._writer, self._parser = client, reader, writer, parser
        self._timeout = timeout
        self._pending: list[dict[str, Any]] = []

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while not self._pending:
            self._pending.extend(protocol.events_in(self._parser))
            if self._pending:
                break
            if self._parser.done:
                await self.aclose()
                raise StopAsyncIteration
            try:
                await self._client._recv(self._reader, self._parser, self._timeout)
            except StatusSocketError as exc:
                await self.aclose()
                if protocol.stream_timed_out(exc):
                    raise StopAsyncIteration from None
                raise
        return self._pending.pop(0)

    async def aclose(self) -> None:
        """Leave the stream (the server drops the subscription)."""
        self._writer.close()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
