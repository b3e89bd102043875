"""Delivering alerts: one POST per alert over httpx, and per receiver a bounded queue with
a sender that retries with capped backoff.

Nothing here ever delays supervision: :meth:`Receiver.put` only appends to the receiver's
queue (at most :data:`QUEUE_SIZE` alerts; past it the oldest is dropped and counted), and
the receiver's own task sends, waiting :data:`RETRY_FIRST` seconds after a failure, twice
as long after each further one, at most :data:`RETRY_CAP`. Every request has a deadline
(:data:`TIMEOUT` seconds). A receiver waits on an event while its queue is empty: no timer.

Errors are translated where they enter: httpx's, a status that is not 2xx and an
unreadable ``url_file`` all become :class:`~lmsupervisor.errors.NotifyError`, whose message
names the receiver by kind and host only (:func:`label`): a webhook URL's path or query
holds its token and never reaches a log or the status.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from lmsupervisor.clock import Clock
from lmsupervisor.config import NotifyConfig
from lmsupervisor.errors import NotifyError
from lmsupervisor.httperrors import ErrorKinds, map_http_errors
from lmsupervisor.notify.bodies import body
from lmsupervisor.notify.incidents import Alert

TIMEOUT = 10.0  # seconds one delivery may take (connect, send, answer)
NOTIFY = ErrorKinds(NotifyError, NotifyError, NotifyError)  # an unanswered delivery, worded as every request
QUEUE_SIZE = 32  # alerts waiting for one receiver; past it the oldest is dropped
RETRY_FIRST = 1.0  # seconds before the first retry
RETRY_CAP = 300.0  # seconds: the longest wait between two tries


def label(kind: str, url: str) -> str:
    """How messages name a receiver: its kind and host (``ntfy ntfy.sh``), never the URL's
    path or query."""
    parts = urlsplit(url)
    return f"{kind} {parts.netloc.rpartition('@')[2] or url}"


def resolve_url(target: NotifyConfig) -> str:
    """The receiver's URL: ``url``, else the first line of ``url_file`` (read at every
    delivery, so a rotated secret applies at once). Raises :class:`NotifyError` when the
    file cannot be read or holds no http(s) URL."""
    if target.url_file is None:
        return target.url
    where = f"{target.kind} receiver in {target.url_file}"
    try:
        text = target.url_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NotifyError(f"{where}: cannot read it ({exc})", hint="check [[notify]] url_file") from exc
    url = text.strip().splitlines()[0].strip() if text.strip() else ""
    if urlsplit(url).scheme not in ("http", "https"):
        raise NotifyError(f"{where}: its first line is not an http(s) URL", hint="check [[notify]] url_file")
    return url


async def deliver(client: httpx.AsyncClient, target: NotifyConfig, alert: Alert, host: str) -> None:
    """POST ``alert`` to ``target`` as its kind expects (:func:`~lmsupervisor.notify.bodies.body`).

    Raises :class:`NotifyError` when the receiver is unreachable, gives no answer within
    :data:`TIMEOUT` seconds, or answers with a status that is not 2xx."""
    url = resolve_url(target)
    where = label(target.kind, url)
    request = body(target.kind, alert, host)
    with map_http_errors(where, TIMEOUT, NOTIFY):
        answer = await client.post(url, content=request.content, headers=request.headers, timeout=TIMEOUT)
    if not answer.is_success:
        raise NotifyError(f"{where}: answered HTTP {answer.status_code}")


class Receiver:
    """One ``[[notify]]`` target: a bounded queue of alerts and the task that sends them.

    ``report(receiver, error)`` is called after every try (``error`` None when it was
    delivered); ``count(kind, result)`` counts ``ok``, ``failed`` (a try) and ``dropped``
    (an alert pushed out of a full queue). :meth:`start` the sender, :meth:`stop` it.
    """

    def __init__(
        self,
        index: int,
        target: NotifyConfig,
        client: httpx.AsyncClient,
        clock: Clock,
        host: str,
        report: Callable[[Receiver, str | None], None],
        count: Callable[[str, str], None],
    ) -> None:
        self.index = index
        self.target = target
        self.client = client
        self.clock = clock
        self.host = host
        self.report = report
        self.count = count
        self.queue: deque[Alert] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def put(self, alert: Alert) -> None:
        """Queue ``alert`` (returns at once); a full queue drops its oldest alert."""
        if len(self.queue) >= QUEUE_SIZE:
            self.queue.popleft()
            self.count(self.target.kind, "dropped")
        self.queue.append(alert)
        self._wake.set()

    def start(self) -> None:
        """Start the sender task."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"notify[{self.index}]")

    async def stop(self) -> None:
        """Cancel the sender (what is still queued is not sent)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                await self._send(self.queue[0])

    async def _send(self, alert: Alert) -> None:
        """Try ``alert`` until it is delivered or pushed out of the queue; then it leaves the queue."""
        delay = RETRY_FIRST
        while any(a is alert for a in self.queue):
            try:
                await deliver(self.client, self.target, alert, self.host)
            except NotifyError as exc:
                self.count(self.target.kind, "failed")
                self.report(self, exc.message)
                await self.clock.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
                continue
            self.count(self.target.kind, "ok")
            self.report(self, None)
            break
        if self.queue and self.queue[0] is alert:
            self.queue.popleft()
